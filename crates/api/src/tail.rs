//! Follows every run's event log from the daemon, so it learns of each event once, soon after
//! it is appended, whichever process appended it (supervisors write their own logs). Each poll
//! lists the run directories and reads only the bytes appended since the last poll; a line still
//! being written waits for the next. Logs that exist when the daemon starts are followed from
//! their end: what happened before is in the logs and the projection, not news.

use std::collections::HashMap;

use model::{Event, RunId};
use store::StateLayout;

/// Where the tail is in each run's log.
#[derive(Debug)]
pub struct EventTail {
    layout: StateLayout,
    offsets: HashMap<RunId, u64>,
}

impl EventTail {
    /// A tail that starts at the current end of every log.
    pub fn at_end(layout: StateLayout) -> EventTail {
        let mut offsets = HashMap::new();
        for id in layout.run_ids().unwrap_or_default() {
            let len = std::fs::metadata(layout.events_path(&id)).map_or(0, |m| m.len());
            offsets.insert(id, len);
        }
        EventTail { layout, offsets }
    }

    /// A tail that continues from `offsets` (bytes read of each run's log); runs not in it
    /// appeared since and are read from their start.
    pub fn resume(layout: StateLayout, offsets: HashMap<RunId, u64>) -> EventTail {
        EventTail { layout, offsets }
    }

    /// How far each run's log has been read.
    pub fn offsets(&self) -> &HashMap<RunId, u64> {
        &self.offsets
    }

    /// The events appended since the last poll, run by run, each run's in order.
    pub fn poll(&mut self) -> Vec<(RunId, Event)> {
        let mut out = Vec::new();
        let Ok(ids) = self.layout.run_ids() else { return out };
        // Runs removed since (`rm`) are forgotten.
        let present: std::collections::HashSet<&RunId> = ids.iter().collect();
        self.offsets.retain(|id, _| present.contains(id));
        for id in ids {
            let path = self.layout.events_path(&id);
            let from = self.offsets.get(&id).copied().unwrap_or(0);
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            if len <= from {
                continue;
            }
            match store::eventlog::read_events_from(&path, from) {
                Ok((events, next)) => {
                    self.offsets.insert(id.clone(), next);
                    out.extend(events.into_iter().map(|e| (id.clone(), e)));
                }
                Err(e) => tracing::warn!(run.id = %id, error = %e, "cannot follow the event log"),
            }
        }
        out
    }
}
