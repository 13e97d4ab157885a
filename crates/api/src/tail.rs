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
    /// What the polls since the last [`EventTail::settle`] changed (each run's offset before),
    /// so [`EventTail::rewind`] can undo them without a copy of every offset.
    undo: Vec<(RunId, Option<u64>)>,
    /// The offsets changed since [`EventTail::mark_saved`].
    moved: bool,
}

impl EventTail {
    /// A tail that starts at the current end of every log.
    pub fn at_end(layout: StateLayout) -> EventTail {
        let mut offsets = HashMap::new();
        for id in layout.run_ids().unwrap_or_default() {
            let len = std::fs::metadata(layout.events_path(&id)).map_or(0, |m| m.len());
            offsets.insert(id, len);
        }
        EventTail::resume(layout, offsets)
    }

    /// A tail that continues from `offsets` (bytes read of each run's log); runs not in it
    /// appeared since and are read from their start.
    pub fn resume(layout: StateLayout, offsets: HashMap<RunId, u64>) -> EventTail {
        EventTail {
            layout,
            offsets,
            restarted: Vec::new(),
            undo: Vec::new(),
            moved: false,
        }
    }

    /// Puts the tail back where it was at the last [`EventTail::settle`] (the events read since
    /// could not be recorded), so the next poll reads them again.
    pub fn rewind(&mut self) {
        while let Some((id, before)) = self.undo.pop() {
            match before {
                Some(offset) => self.offsets.insert(id, offset),
                None => self.offsets.remove(&id),
            };
        }
        self.restarted.clear();
    }

    /// Keeps what the polls since the last call read (it was recorded).
    pub fn settle(&mut self) {
        self.undo.clear();
    }

    /// Whether the offsets changed since they were last saved.
    pub fn moved(&self) -> bool {
        self.moved
    }

    /// The offsets as they are now are saved.
    pub fn mark_saved(&mut self) {
        self.moved = false;
    }

    /// Sets run `id`'s offset, remembering the old one for [`EventTail::rewind`].
    fn set_offset(&mut self, id: &RunId, offset: Option<u64>) {
        let before = match offset {
            Some(o) => self.offsets.insert(id.clone(), o),
            None => self.offsets.remove(id),
        };
        if before != offset {
            self.undo.push((id.clone(), before));
            self.moved = true;
        }
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
        let gone: Vec<RunId> = self
            .offsets
            .keys()
            .filter(|id| !present.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.set_offset(&id, None);
            self.restarted.push(id);
        }
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
            self.set_offset(id, Some(0));
        }
        if len <= from {
            return;
        }
        match store::eventlog::read_events_from(&path, from) {
            Ok((events, next)) => {
                self.set_offset(id, Some(next));
                out.extend(events.into_iter().map(|e| (id.clone(), e)));
            }
            Err(e) => tracing::warn!(run.id = %id, error = %e, "cannot follow the event log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::EventData;

    #[test]
    fn a_rewound_poll_is_read_again_and_a_settled_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(dir.path());
        layout.ensure().unwrap();
        let id = RunId::parse("r").unwrap();
        std::fs::create_dir_all(layout.run_dir(&id)).unwrap();
        let (log, _) = store::EventLog::open(&layout.events_path(&id), &id, store::LockMode::NoWait).unwrap();
        for reason in ["a", "b"] {
            log.append(EventData::Paused { reason: reason.into() }).unwrap();
        }
        let mut tail = EventTail::resume(layout, HashMap::new());
        assert_eq!(tail.poll().len(), 2);
        assert!(tail.moved());
        tail.rewind();
        assert_eq!(tail.poll().len(), 2, "not recorded: read again");
        tail.settle();
        tail.mark_saved();
        assert!(tail.poll().is_empty());
        assert!(!tail.moved(), "nothing new");
        log.append(EventData::Paused { reason: "c".into() }).unwrap();
        let seqs: Vec<u64> = tail.poll().iter().map(|(_, e)| e.seq).collect();
        assert_eq!(seqs, [3]);
    }
}
