//! Wake-ups for live streams. One inotify watch (through `notify`) on the runs directory tells
//! the daemon the moment any run's event log or output log grows — whichever process wrote it —
//! so a follower answers within milliseconds instead of a poll interval. A notification can be
//! missed (the watch failed to start, or the kernel queue overflowed): every waiter also wakes
//! after [`FALLBACK`] and reads anyway, so a miss costs latency, never data.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use model::RunId;
use notify::Watcher as _;
use tokio::sync::Notify;

/// The file name of a run's event log in its directory.
const EVENT_LOG: &str = "events.jsonl";

/// Longest a waiter sleeps without a notification.
pub const FALLBACK: Duration = Duration::from_millis(1000);

/// The daemon's change notifications, per run and for any run.
#[derive(Clone)]
pub struct Wakeups {
    inner: Arc<Inner>,
    /// Kept alive for as long as any clone; `None` when the watch could not start.
    _watcher: Option<Arc<notify::RecommendedWatcher>>,
}

struct Inner {
    runs_dir: PathBuf,
    runs: Mutex<HashMap<RunId, Weak<Notify>>>,
    any: Notify,
    /// Runs whose event log changed (or that appeared) since [`Wakeups::take_dirty`]; `None`
    /// when that is not known (no watch, or the kernel dropped notifications).
    dirty: Mutex<Option<HashSet<RunId>>>,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("runs_dir", &self.inner.runs_dir)
            .field("watching", &self._watcher.is_some())
            .finish()
    }
}

impl Wakeups {
    /// Watches `runs_dir` (recursively: new runs' directories are picked up as they appear).
    pub fn start(runs_dir: &Path) -> Wakeups {
        let inner = Arc::new(Inner {
            runs_dir: runs_dir.to_path_buf(),
            runs: Mutex::new(HashMap::new()),
            any: Notify::new(),
            dirty: Mutex::new(None),
        });
        let handler = {
            let inner = Arc::downgrade(&inner);
            move |res: notify::Result<notify::Event>| {
                let Some(inner) = inner.upgrade() else { return };
                match res {
                    // Reads (ours included: `Access` events) are no news; writes, new files
                    // and renames are.
                    Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => {}
                    Ok(ev) => {
                        for path in &ev.paths {
                            inner.changed(path);
                        }
                    }
                    // An overflow or watch error: wake everyone, they will read and see.
                    Err(_) => inner.wake_all(),
                }
            }
        };
        let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(runs_dir, notify::RecursiveMode::Recursive)?;
            Ok(w)
        });
        let watcher = match watcher {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                tracing::warn!(error = %e, dir = %runs_dir.display(), "cannot watch the runs; live streams poll every second");
                None
            }
        };
        Wakeups {
            inner,
            _watcher: watcher,
        }
    }

    /// Wake-ups without a watch: waiters rely on [`FALLBACK`] alone (tests, and a daemon whose
    /// watch failed).
    pub fn polling(runs_dir: &Path) -> Wakeups {
        Wakeups {
            inner: Arc::new(Inner {
                runs_dir: runs_dir.to_path_buf(),
                runs: Mutex::new(HashMap::new()),
                any: Notify::new(),
                dirty: Mutex::new(None),
            }),
            _watcher: None,
        }
    }

    /// The notification for changes to run `id`'s files (shared by all its waiters).
    pub fn of(&self, id: &RunId) -> Arc<Notify> {
        let mut runs = self.inner.runs.lock().expect("wakeups lock");
        if let Some(n) = runs.get(id).and_then(Weak::upgrade) {
            return n;
        }
        runs.retain(|_, w| w.strong_count() > 0);
        let n = Arc::new(Notify::new());
        runs.insert(id.clone(), Arc::downgrade(&n));
        n
    }

    /// The runs whose event log changed since the last call, or `None` when every run must be
    /// looked at (no watch, or notifications were lost).
    pub fn take_dirty(&self) -> Option<HashSet<RunId>> {
        self._watcher.as_ref()?;
        self.inner.dirty.lock().expect("wakeups lock").replace(HashSet::new())
    }

    /// The notification for a change to any run's event log (or a new run).
    pub fn any(&self) -> &Notify {
        &self.inner.any
    }

    /// Waits until `notified` fires (true) or [`FALLBACK`] passes (false). Create and `enable`
    /// the future *before* reading, so a change made during the read is not missed.
    pub async fn wait(notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        tokio::time::timeout(FALLBACK, notified).await.is_ok()
    }
}

impl Inner {
    fn changed(&self, path: &Path) {
        let Ok(rel) = path.strip_prefix(&self.runs_dir) else {
            return;
        };
        let Some(first) = rel.components().next() else { return };
        let Some(name) = first.as_os_str().to_str() else { return };
        if let Ok(id) = RunId::parse(name) {
            let n = self.runs.lock().expect("wakeups lock").get(&id).and_then(Weak::upgrade);
            if let Some(n) = n {
                n.notify_waiters();
            }
        }
        // Only event logs (and new run directories) concern the daemon-wide follower: output
        // alone is frequent and no news to it.
        let event_log = rel.components().nth(1).is_none_or(|f| f.as_os_str() == EVENT_LOG);
        if event_log {
            if let (Ok(id), Some(dirty)) = (RunId::parse(name), self.dirty.lock().expect("wakeups lock").as_mut()) {
                dirty.insert(id);
            }
            self.any.notify_waiters();
        }
    }

    fn wake_all(&self) {
        *self.dirty.lock().expect("wakeups lock") = None;
        let all: Vec<Arc<Notify>> = self
            .runs
            .lock()
            .expect("wakeups lock")
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for n in all {
            n.notify_waiters();
        }
        self.any.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_to_a_runs_file_wakes_its_waiters_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = RunId::parse("r1").unwrap();
        std::fs::create_dir_all(dir.path().join("r1")).unwrap();
        let w = Wakeups::start(dir.path());
        let n = w.of(&id);
        let notified = n.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let path = dir.path().join("r1/output.jsonl");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(path, b"x\n").unwrap();
        });
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .expect("woken");
        assert!(started.elapsed() < FALLBACK, "woken by the write, not the timer");
    }

    #[tokio::test]
    async fn a_new_run_directory_is_watched_too() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wakeups::start(dir.path());
        std::fs::create_dir_all(dir.path().join("r2")).unwrap();
        // Give the recursive watch a moment to add the new directory.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = w.of(&RunId::parse("r2").unwrap());
        let notified = n.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        std::fs::write(dir.path().join("r2/events.jsonl"), b"{}\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn reading_a_runs_files_wakes_nobody() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("r3")).unwrap();
        std::fs::write(dir.path().join("r3/events.jsonl"), b"{}\n").unwrap();
        let w = Wakeups::start(dir.path());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = w.of(&RunId::parse("r3").unwrap());
        let notified = n.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let any = w.any().notified();
        tokio::pin!(any);
        any.as_mut().enable();
        for _ in 0..5 {
            std::fs::read(dir.path().join("r3/events.jsonl")).unwrap();
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(300), notified)
                .await
                .is_err()
        );
        assert!(tokio::time::timeout(Duration::from_millis(10), any).await.is_err());
    }

    #[tokio::test]
    async fn the_runs_whose_event_log_changed_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for r in ["r4", "r5"] {
            std::fs::create_dir_all(dir.path().join(r)).unwrap();
        }
        let w = Wakeups::start(dir.path());
        assert_eq!(w.take_dirty(), None, "nothing is known before the first call");
        std::fs::write(dir.path().join("r4/events.jsonl"), b"{}\n").unwrap();
        std::fs::write(dir.path().join("r5/output.jsonl"), b"{}\n").unwrap();
        let started = std::time::Instant::now();
        let dirty = loop {
            let d = w.take_dirty().unwrap();
            if !d.is_empty() || started.elapsed() > Duration::from_secs(5) {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            dirty,
            HashSet::from([RunId::parse("r4").unwrap()]),
            "output alone is not news"
        );
    }
}
