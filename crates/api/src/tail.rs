//! Follows every run's event log from the daemon, so it learns of each event once, soon after
//! it is appended, whichever process appended it (supervisors write their own logs). Each poll
//! lists the run directories and reads only the bytes appended since the last poll; a line still
//! being written waits for the next. The journal ([`crate::journal`]) decides where a tail starts:
//! where the last daemon stopped reading, or — the first time — the logs' current ends. A log
//! that is gone or shorter than what was read (a run removed, or removed and made again) is
//! reported by [`EventTail::take_restarted`] and read anew.

use std::collections::HashMap;

use model::{Event, RunId};
use store::StateLayout;

/// Where the tail is in each run's log.
#[derive(Debug)]
pub struct EventTail {
    layout: StateLayout,
    offsets: HashMap<RunId, u64>,
    /// Runs whose log is gone or started over since the last poll (removed; or removed and
    /// made again under the same id): what was known of their old log no longer applies.
    restarted: Vec<RunId>,
}

impl EventTail {
    /// A tail that starts at the current end of every log.
    pub fn at_end(layout: StateLayout) -> EventTail {
        let mut offsets = HashMap::new();
        for id in layout.run_ids().unwrap_or_default() {
            let len = std::fs::metadata(layout.events_path(&id)).map_or(0, |m| m.len());
            offsets.insert(id, len);
        }
        EventTail {
            layout,
            offsets,
            restarted: Vec::new(),
        }
    }

    /// A tail that continues from `offsets` (bytes read of each run's log); runs not in it
    /// appeared since and are read from their start.
    pub fn resume(layout: StateLayout, offsets: HashMap<RunId, u64>) -> EventTail {
        EventTail {
            layout,
            offsets,
            restarted: Vec::new(),
        }
    }

    /// Puts the tail back to `offsets` (what [`EventTail::offsets`] said before a poll whose
    /// events could not be recorded), so the next poll reads them again.
    pub fn rewind(&mut self, offsets: HashMap<RunId, u64>) {
        self.offsets = offsets;
    }

    /// The runs whose log was removed or started over since the last call.
    pub fn take_restarted(&mut self) -> Vec<RunId> {
        std::mem::take(&mut self.restarted)
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
        let restarted = &mut self.restarted;
        self.offsets.retain(|id, _| {
            let keep = present.contains(id);
            if !keep {
                restarted.push(id.clone());
            }
            keep
        });
        for id in ids {
            self.read_run(&id, &mut out);
        }
        out
    }

    /// The events appended to the logs of `ids` since they were last read (a run not there is
    /// skipped: removals are noticed by the next full [`EventTail::poll`]).
    pub fn poll_runs(&mut self, ids: &std::collections::HashSet<RunId>) -> Vec<(RunId, Event)> {
        let mut out = Vec::new();
        for id in ids {
            self.read_run(id, &mut out);
        }
        out
    }

    fn read_run(&mut self, id: &RunId, out: &mut Vec<(RunId, Event)>) {
        let path = self.layout.events_path(id);
        let Ok(meta) = std::fs::metadata(&path) else { return };
        let mut from = self.offsets.get(id).copied().unwrap_or(0);
        let len = meta.len();
        if len < from {
            // Shorter than what was read: a new log under the same id.
            self.restarted.push(id.clone());
            from = 0;
            self.offsets.insert(id.clone(), 0);
        }
        if len <= from {
            return;
        }
        match store::eventlog::read_events_from(&path, from) {
            Ok((events, next)) => {
                self.offsets.insert(id.clone(), next);
                out.extend(events.into_iter().map(|e| (id.clone(), e)));
            }
            Err(e) => tracing::warn!(run.id = %id, error = %e, "cannot follow the event log"),
        }
    }
}
