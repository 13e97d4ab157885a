//! Tests that need the watcher's insides: synthetic notify events and errors fed to the callback,
//! and a real kernel queue overflow forced by stalling the callback.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind};

use super::*;

fn event(kind: EventKind, paths: &[&str]) -> notify::Result<Event> {
    let mut event = Event::new(kind);
    for path in paths {
        event = event.add_path(PathBuf::from(path));
    }
    Ok(event)
}

fn set(paths: &[&str]) -> std::collections::BTreeSet<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

#[test]
fn callback_keeps_changes_and_drops_reads() {
    let shared = Shared::new("/r".into(), "/given".into());
    shared.handle(event(
        EventKind::Access(AccessKind::Open(AccessMode::Any)),
        &["/r/opened"],
    ));
    shared.handle(event(
        EventKind::Access(AccessKind::Close(AccessMode::Read)),
        &["/r/read"],
    ));
    assert!(shared.drain().is_empty());
    assert_eq!(shared.pending(), (0, None));

    shared.handle(event(
        EventKind::Access(AccessKind::Close(AccessMode::Write)),
        &["/r/written"],
    ));
    shared.handle(event(
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
        &["/r/old", "/given/new"],
    ));
    shared.handle(event(EventKind::Remove(RemoveKind::File), &["/r/gone", "/r/gone"]));
    shared.handle(event(
        EventKind::Create(CreateKind::File),
        &["/r/.git/index.lock", "/r/sub/.git"],
    ));
    shared.handle(event(EventKind::Modify(ModifyKind::Any), &["/r"]));
    assert_eq!(shared.pending().0, 4);
    assert!(shared.pending().1.is_some());
    let batch = shared.drain();
    assert_eq!(batch.paths, set(&["written", "old", "new", "gone"]));
    assert!(!batch.overflow);
    assert!(batch.first_change.is_some() && batch.first_change <= batch.last_change);
    assert!(shared.drain().is_empty());
}

#[test]
fn queue_overflow_and_foreign_paths_are_overflow() {
    let shared = Shared::new("/r".into(), "/r".into());
    shared.handle(event(EventKind::Modify(ModifyKind::Any), &["/elsewhere/x"]));
    let batch = shared.drain();
    assert!(batch.overflow && batch.paths.is_empty());
    assert!(batch.overflow_reason.unwrap().contains("outside the root"));
    assert!(!shared.drain().overflow, "a one-off overflow is reported once");
}

#[test]
fn watch_limit_and_root_removal_degrade_for_good() {
    let shared = Shared::new("/r".into(), "/r".into());
    shared.handle(Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)));
    for _ in 0..3 {
        let batch = shared.drain();
        assert!(batch.overflow);
        assert!(batch.overflow_reason.unwrap().contains("max_user_watches"));
    }
    assert!(shared.degraded().is_some());

    let shared = Shared::new("/r".into(), "/r".into());
    shared.handle(event(EventKind::Remove(RemoveKind::Folder), &["/r"]));
    assert!(shared.drain().overflow && shared.drain().overflow);
}

fn drain_until(watcher: &ChangeWatcher, what: &str, done: impl Fn(&ChangeBatch) -> bool) -> ChangeBatch {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all = ChangeBatch::default();
    loop {
        let batch = watcher.drain();
        all.paths.extend(batch.paths);
        all.overflow |= batch.overflow;
        all.overflow_reason = all.overflow_reason.or(batch.overflow_reason);
        if done(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; got {all:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn watcher_error_rewatches_then_reports_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let watcher = ChangeWatcher::start(dir.path()).unwrap();
    watcher
        .shared
        .handle(Err(notify::Error::io(std::io::Error::other("read failed"))));
    let batch = drain_until(&watcher, "overflow", |b| b.overflow);
    assert!(batch.overflow_reason.unwrap().contains("read failed"));
    assert!(watcher.degraded().is_none());
    assert!(!watcher.drain().overflow);
}

/// Stalls the callback (by holding the state lock notify's thread needs) while making more
/// changes than the kernel queue holds: the queue overflows for certain. A directory created
/// during the stall loses its create event; the re-watch before the overflow is reported must
/// still watch it.
#[test]
fn kernel_queue_overflow_is_reported_and_recovered() {
    let max_queued: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(usize::MAX);
    if max_queued > 200_000 {
        eprintln!("skipped: fs.inotify.max_queued_events = {max_queued} is too large to overflow quickly");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files = [root.join("a"), root.join("b")];
    for file in &files {
        fs::write(file, "x").unwrap();
    }
    let watcher = ChangeWatcher::start(root).unwrap();
    {
        let _stall = watcher.shared.lock_for_test();
        // Alternating files: the kernel merges an event only with an identical previous one.
        for i in 0..max_queued + 2000 {
            let mode = if i % 4 < 2 { 0o644 } else { 0o600 };
            fs::set_permissions(&files[i % 2], fs::Permissions::from_mode(mode)).unwrap();
        }
        fs::create_dir(root.join("late")).unwrap();
        fs::write(root.join("late/early"), "x").unwrap();
    }
    let batch = drain_until(&watcher, "overflow", |b| b.overflow);
    assert!(batch.overflow_reason.unwrap().contains("queue overflowed"));
    assert!(watcher.degraded().is_none());

    fs::write(root.join("late/after"), "x").unwrap();
    drain_until(&watcher, "late/after", |b| b.paths.contains(Path::new("late/after")));
}
