//! The continuous file-change watcher for a run's worktree. A [`ChangeWatcher`] watches a
//! directory tree with inotify (through `notify`, raw, no debouncer) and accumulates the set of
//! changed paths; the supervisor [drains](ChangeWatcher::drain) it every tick to record changes
//! and to take incremental checkpoints from exactly those paths.
//!
//! # Guarantee
//!
//! Every change made under the root after [`ChangeWatcher::start`] returns is either in the
//! `paths` of some batch drained at or after it, or causes `overflow = true` in a batch drained
//! at or after it. Nothing is lost silently: when the kernel queue overflows, the watcher errors,
//! a watch cannot be added (e.g. the inotify watch limit, `fs.inotify.max_user_watches`) or a new
//! directory cannot be listed, a batch reports overflow and the caller must rescan fully.
//!
//! How to read a batch:
//! - A reported **directory** stands for itself and possibly everything beneath it. Entries of a
//!   directory that is created or moved in are reported individually (it is listed as soon as it
//!   is watched), but those of a directory removed or moved away are not, and changes racing with
//!   a move may be reported under the old name only. Rescan reported directories recursively.
//! - A directory's entries may arrive in a later batch than the directory itself, while it is
//!   being listed ([`ChangeWatcher::is_scanning`]).
//! - After lost events, every directory is re-watched *before* the overflow is reported, so a full
//!   rescan started after draining that overflow misses nothing.
//! - When part of the tree cannot be watched at all (watch limit, permissions, the root itself
//!   removed or moved), the watcher is **degraded**: every batch from then on reports overflow,
//!   with the reason, and [`ChangeWatcher::degraded`] says so; the caller falls back to full scans.
//!   [`ChangeWatcher::start`] still succeeds in that case.
//!
//! Paths under a directory component named `.git` (and a `.git` file or directory itself) are
//! never reported, nor watched. The contents of the tree at start are not reported. Symlinks are
//! reported but never followed (a directory replaced by a symlink in the instant between our
//! check and its watch being added is the one exception). Events on the root itself are ignored,
//! except that its removal or move degrades the watcher.
//!
//! Limits of inotify itself, which no batch can flag: writes through a shared `mmap` produce no
//! event, nor do changes made by another machine on a network filesystem. Linux only in
//! practice: it relies on inotify semantics (one non-recursive watch per directory, events of one
//! inotify instance delivered in order).

mod batch;
pub mod handover;
mod scan;
mod shared;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use notify::{Config, RecommendedWatcher, Watcher};

pub use batch::ChangeBatch;
use shared::Shared;

/// Watches a directory tree and accumulates changed paths until drained. Dropping it stops
/// watching.
pub struct ChangeWatcher {
    shared: Arc<Shared>,
    given_root: PathBuf,
    scanner: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ChangeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeWatcher")
            .field("root", &self.given_root)
            .finish_non_exhaustive()
    }
}

impl ChangeWatcher {
    /// Starts watching `root` recursively. Paths under any directory component named `.git` are
    /// never reported. Fails if `root` is not a directory or inotify cannot be set up at all; if
    /// only part of the tree cannot be watched (e.g. the inotify watch limit is reached), it
    /// succeeds degraded: every batch reports overflow (see the crate docs).
    pub fn start(root: &Path) -> io::Result<ChangeWatcher> {
        let canonical = root.canonicalize()?;
        if !canonical.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        let shared = Arc::new(Shared::new(canonical.clone(), root.to_path_buf()));
        let handler = {
            let shared = Arc::clone(&shared);
            move |result| shared.handle(result)
        };
        let mut watcher =
            RecommendedWatcher::new(handler, Config::default().with_follow_symlinks(false)).map_err(to_io)?;
        // The root must be watchable; failures below it degrade instead.
        if let Err(err) = watcher.watch(&canonical, notify::RecursiveMode::NonRecursive)
            && !matches!(err.kind, notify::ErrorKind::MaxFilesWatch)
        {
            return Err(to_io(err));
        }
        scan::scan(&mut watcher, &shared, canonical, false);
        let scanner = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("agentctl-watch".to_owned())
                .spawn(move || {
                    let scanner = std::panic::AssertUnwindSafe(|| scan::run_scanner(watcher, &shared));
                    if std::panic::catch_unwind(scanner).is_err() {
                        // Unwinding dropped notify's watcher: nothing is watched any more.
                        shared.degrade("the file watcher's scanner thread panicked".to_owned());
                    }
                })?
        };
        Ok(ChangeWatcher {
            shared,
            given_root: root.to_path_buf(),
            scanner: Some(scanner),
        })
    }

    /// Takes everything accumulated since the last drain.
    pub fn drain(&self) -> ChangeBatch {
        self.shared.drain()
    }

    /// Cheap: number of distinct paths pending, and when the oldest pending change (or overflow)
    /// arrived.
    pub fn pending(&self) -> (usize, Option<Instant>) {
        self.shared.pending()
    }

    /// True while directories that appeared are being listed, or the tree re-watched after lost
    /// events: more paths (or an overflow) for changes already made are on their way.
    pub fn is_scanning(&self) -> bool {
        self.shared.is_scanning()
    }

    /// Why the watcher is degraded (every batch reports overflow), if it is.
    pub fn degraded(&self) -> Option<String> {
        self.shared.degraded()
    }

    /// The root as given to [`ChangeWatcher::start`].
    pub fn root(&self) -> &Path {
        &self.given_root
    }
}

impl Drop for ChangeWatcher {
    fn drop(&mut self) {
        self.shared.shut_down();
        if let Some(scanner) = self.scanner.take() {
            // The scanner drops notify's watcher, which stops its thread.
            let _ = scanner.join();
        }
    }
}

fn to_io(err: notify::Error) -> io::Error {
    match err.kind {
        notify::ErrorKind::Io(io) => io,
        notify::ErrorKind::PathNotFound => io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot watch {:?}: not found", err.paths),
        ),
        _ => io::Error::other(err.to_string()),
    }
}

#[cfg(test)]
mod tests;
