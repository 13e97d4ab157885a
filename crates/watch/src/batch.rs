//! [`ChangeBatch`]: what one [`drain`](crate::ChangeWatcher::drain) hands back — the changed
//! paths, whether changes may be missing (overflow), and when the batch's changes arrived.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

/// Everything a [`ChangeWatcher`](crate::ChangeWatcher) accumulated between two drains.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeBatch {
    /// Changed paths relative to the root (files, symlinks, directories; created, modified,
    /// removed, renamed-from and renamed-to, chmod), deduplicated and sorted. A directory here
    /// stands for itself and possibly everything beneath it: rescan it recursively (see the crate
    /// docs).
    pub paths: BTreeSet<PathBuf>,
    /// The kernel queue overflowed, the watcher errored, or a watch could not be added (e.g.
    /// inotify watch limit): some changes may be missing; the caller must rescan fully.
    pub overflow: bool,
    /// Why overflow was set (human-readable), if it was.
    pub overflow_reason: Option<String>,
    /// When the oldest change in this batch arrived.
    pub first_change: Option<Instant>,
    /// When the newest change in this batch arrived.
    pub last_change: Option<Instant>,
}

impl ChangeBatch {
    /// No path changed and no overflow: nothing to do.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.overflow
    }
}
