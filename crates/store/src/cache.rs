//! Rows the projection had for logs that have not changed since: readers that ask for the same
//! run again and again (an API client polling a run, `wait`, followers) are answered with one
//! `stat` of the log instead of a query.
//!
//! An entry is the row read while the projection was current with the log (the size it
//! recorded was the log's size), the log's identity and state then — device, inode, size,
//! modification and change times — and the log file itself, held open. Holding it keeps its
//! inode allocated, so no other file can get the same inode number while the entry lives: a
//! path whose `stat` matches the entry is the very file the row was read for, unchanged (an
//! append or truncation changes its size and times). A match is therefore at least as strong as
//! the projection's own check, which compares sizes only.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use model::RunId;

use crate::RunRecord;

/// Runs remembered at most (each holds one open file).
const CAPACITY: usize = 64;

/// What identifies one state of one log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl LogStamp {
    pub(crate) fn of(m: &Metadata) -> LogStamp {
        LogStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

struct Entry {
    stamp: LogStamp,
    row: RunRecord,
    /// Keeps the inode in `stamp` from being reused while the entry lives.
    _log: File,
}

#[derive(Default)]
pub(crate) struct RowCache {
    entries: Mutex<HashMap<RunId, Entry>>,
}

/// A log opened (and its state taken) before the projection is read, to remember the row
/// read for it.
pub(crate) struct Pinned {
    stamp: LogStamp,
    log: File,
}

impl Pinned {
    pub(crate) fn open(path: &Path) -> Option<Pinned> {
        let log = File::open(path).ok()?;
        let stamp = LogStamp::of(&log.metadata().ok()?);
        Some(Pinned { stamp, log })
    }

    pub(crate) fn stamp(&self) -> LogStamp {
        self.stamp
    }
}

impl RowCache {
    /// The row remembered for `id` if its log is still in the state `now` (just taken).
    pub(crate) fn get(&self, id: &RunId, now: &LogStamp) -> Option<RunRecord> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(id).filter(|e| e.stamp == *now).map(|e| e.row.clone())
    }

    /// Remembers `row`, which the projection had while it was current with `log` — opened
    /// before the projection was read, and which the projection's recorded size matched.
    pub(crate) fn put(&self, id: &RunId, log: Pinned, row: &RunRecord) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(id) {
            let victim = entries.keys().next().cloned();
            if let Some(victim) = victim {
                entries.remove(&victim);
            }
        }
        entries.insert(
            id.clone(),
            Entry {
                stamp: log.stamp,
                row: row.clone(),
                _log: log.log,
            },
        );
    }

    /// Forgets `id` (its log is going away).
    pub(crate) fn forget(&self, id: &RunId) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The state of the log at `path` now, if there is one.
pub(crate) fn stamp(path: &Path) -> Option<LogStamp> {
    fs::metadata(path).ok().map(|m| LogStamp::of(&m))
}
