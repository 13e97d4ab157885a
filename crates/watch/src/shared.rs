//! The state shared by notify's event thread, the scanner thread and the caller: pending paths,
//! pending overflow, sticky degradation, and the queue of directories to scan. Also the
//! translation of one notify event (or error) into that state — the callback, which runs on
//! notify's thread and therefore only ever takes one short lock and never blocks otherwise.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind};

use crate::batch::ChangeBatch;

/// Longest overflow reason kept; later reasons are counted, not appended, past this.
const MAX_REASON_LEN: usize = 1000;

pub(crate) struct Shared {
    /// The canonical root: every watch is added under it, so every event path starts with it.
    pub root: PathBuf,
    /// The root as the caller gave it, also stripped from paths in case one comes in that form.
    pub given_root: PathBuf,
    state: Mutex<State>,
    /// Wakes the scanner when there is work or on shutdown.
    work: Condvar,
    /// Set (under the lock) when the watcher is dropped; read without it inside long scans.
    shutdown: AtomicBool,
}

#[derive(Default)]
struct State {
    paths: BTreeSet<PathBuf>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Overflow to report in the next batch.
    overflow: Option<String>,
    /// Events were lost, so directories may be unwatched: every directory must be (re)watched
    /// before the overflow is reported. Holds the reason until then.
    rewatch: Option<String>,
    /// Part of the tree cannot be watched: every batch from now on reports overflow.
    degraded: Option<String>,
    /// Absolute directories that appeared and must be watched and listed.
    scan_queue: BTreeSet<PathBuf>,
    /// The scanner is working on something taken from `scan_queue` or `rewatch`.
    scanning: bool,
}

/// What the scanner should do next.
pub(crate) enum Job {
    /// Watch and report everything under these directories.
    Scan(Vec<PathBuf>),
    /// Re-watch the whole tree, then report overflow with this reason.
    Rewatch(String),
}

impl Shared {
    pub fn new(root: PathBuf, given_root: PathBuf) -> Shared {
        Shared {
            root,
            given_root,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Never panics on a poisoned lock: a panic on notify's thread would silently end watching.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The notify callback: records one event or error.
    pub fn handle(&self, result: notify::Result<Event>) {
        let event = match result {
            Ok(event) => event,
            Err(err) => {
                if matches!(err.kind, notify::ErrorKind::MaxFilesWatch) {
                    self.degrade(format!("inotify watch limit reached ({err}); {}", watch_limit_hint()));
                } else {
                    self.request_rewatch(format!("file watcher error: {err}"));
                }
                return;
            }
        };
        if event.need_rescan() {
            self.request_rewatch(format!(
                "kernel event queue overflowed (fs.inotify.max_queued_events = {})",
                read_sysctl("max_queued_events")
            ));
        }
        // Opens and read-only closes change nothing; a close after writing is kept.
        if let EventKind::Access(kind) = event.kind
            && kind != AccessKind::Close(AccessMode::Write)
        {
            return;
        }
        let scan = matches!(
            event.kind,
            EventKind::Any
                | EventKind::Other
                | EventKind::Create(CreateKind::Folder | CreateKind::Any | CreateKind::Other)
                | EventKind::Modify(ModifyKind::Name(
                    RenameMode::To | RenameMode::Both | RenameMode::Any | RenameMode::Other
                ))
        );
        let root_gone = matches!(
            event.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        let now = Instant::now();
        let mut st = self.lock();
        for path in event.paths {
            let Some(rel) = self.relative(&path) else {
                st.note_overflow(format!("event for a path outside the root: {}", path.display()), now);
                continue;
            };
            if rel.as_os_str().is_empty() {
                if root_gone {
                    st.degraded
                        .get_or_insert_with(|| "the watched root was removed or moved".to_owned());
                    st.touch(now);
                }
                continue;
            }
            if in_git_dir(&rel) {
                continue;
            }
            st.paths.insert(rel);
            st.touch(now);
            if scan {
                st.scan_queue.insert(path);
                self.work.notify_one();
            }
        }
    }

    /// `path` relative to the root, if it is under it.
    pub fn relative(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.root)
            .or_else(|_| path.strip_prefix(&self.given_root))
            .ok()
            .map(Path::to_path_buf)
    }

    /// Records paths found by a scan.
    pub fn add_found(&self, found: impl IntoIterator<Item = PathBuf>) {
        let now = Instant::now();
        let mut st = self.lock();
        for rel in found {
            st.paths.insert(rel);
            st.touch(now);
        }
    }

    /// Some changes may be missing, but everything is watched: report overflow once.
    pub fn overflow(&self, reason: String) {
        tracing::warn!(reason, "file watcher overflow");
        self.lock().note_overflow(reason, Instant::now());
    }

    /// Part of the tree is not watched: report overflow in every batch from now on.
    pub fn degrade(&self, reason: String) {
        let mut st = self.lock();
        if st.degraded.is_none() {
            tracing::warn!(reason, "file watcher degraded; every batch will report overflow");
            st.degraded = Some(reason);
        }
        st.touch(Instant::now());
    }

    fn request_rewatch(&self, reason: String) {
        let mut st = self.lock();
        append_reason(&mut st.rewatch, reason);
        st.touch(Instant::now());
        self.work.notify_one();
    }

    /// Blocks until there is a job (marking the scanner busy) or the watcher is shut down (None).
    pub fn next_job(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            st.scanning = false;
            if self.is_shut_down() {
                return None;
            }
            if let Some(reason) = st.rewatch.take() {
                // The overflow the re-watch ends with makes the caller rescan everything, which
                // covers the contents of directories still queued.
                st.scan_queue.clear();
                st.scanning = true;
                return Some(Job::Rewatch(reason));
            }
            if !st.scan_queue.is_empty() {
                st.scanning = true;
                return Some(Job::Scan(outermost(std::mem::take(&mut st.scan_queue))));
            }
            st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Reports a finished re-watch's overflow.
    pub fn rewatched(&self, reason: String) {
        self.overflow(reason);
    }

    pub fn shut_down(&self) {
        let _st = self.lock();
        self.shutdown.store(true, Ordering::SeqCst);
        self.work.notify_all();
    }

    pub fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    pub fn drain(&self) -> ChangeBatch {
        let mut st = self.lock();
        let mut reason = st.overflow.take();
        if let Some(degraded) = &st.degraded {
            append_reason(&mut reason, degraded.clone());
        }
        ChangeBatch {
            paths: std::mem::take(&mut st.paths),
            overflow: reason.is_some(),
            overflow_reason: reason,
            first_change: st.first.take(),
            last_change: st.last.take(),
        }
    }

    pub fn pending(&self) -> (usize, Option<Instant>) {
        let st = self.lock();
        (st.paths.len(), st.first)
    }

    pub fn is_scanning(&self) -> bool {
        let st = self.lock();
        st.scanning || st.rewatch.is_some() || !st.scan_queue.is_empty()
    }

    pub fn degraded(&self) -> Option<String> {
        self.lock().degraded.clone()
    }

    #[cfg(test)]
    pub fn lock_for_test(&self) -> impl Drop + '_ {
        self.lock()
    }
}

impl State {
    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    fn note_overflow(&mut self, reason: String, now: Instant) {
        append_reason(&mut self.overflow, reason);
        self.touch(now);
    }
}

fn append_reason(slot: &mut Option<String>, reason: String) {
    match slot {
        None => *slot = Some(reason),
        Some(existing) if existing.contains(&reason) => {}
        Some(existing) if existing.len() < MAX_REASON_LEN => {
            existing.push_str("; ");
            existing.push_str(&reason);
        }
        Some(_) => {}
    }
}

/// Whether a relative path is a `.git` directory (or file) or lies under one.
pub(crate) fn in_git_dir(rel: &Path) -> bool {
    rel.components().any(|c| c == Component::Normal(".git".as_ref()))
}

/// The directories of `dirs` that are not under another one of them (a scan is recursive).
fn outermost(dirs: BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    // Path order is component-wise, so a directory's descendants directly follow it.
    for dir in dirs {
        if out.last().is_some_and(|last| dir.starts_with(last)) {
            continue;
        }
        out.push(dir);
    }
    out
}

fn read_sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

pub(crate) fn watch_limit_hint() -> String {
    format!(
        "fs.inotify.max_user_watches = {}; new directories are not watched, so changes are found only by full \
         rescans",
        read_sysctl("max_user_watches")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outermost_drops_nested_directories() {
        let dirs: BTreeSet<PathBuf> = ["/r/a", "/r/a/b", "/r/a/b/c", "/r/a-b", "/r/ab", "/r/b/x"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let got: Vec<PathBuf> = outermost(dirs);
        let want: Vec<PathBuf> = ["/r/a", "/r/a-b", "/r/ab", "/r/b/x"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn git_components_are_recognised() {
        assert!(in_git_dir(Path::new(".git")));
        assert!(in_git_dir(Path::new(".git/HEAD")));
        assert!(in_git_dir(Path::new("vendor/dep/.git/objects/ab")));
        assert!(!in_git_dir(Path::new(".gitignore")));
        assert!(!in_git_dir(Path::new("a/.github/workflows")));
        assert!(!in_git_dir(Path::new("a/x.git")));
    }
}
