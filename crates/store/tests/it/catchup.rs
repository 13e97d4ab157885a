//! Catch-up of the projection with logs written behind its back (a writer that crashed after
//! appending but before projecting), via `sync_run` / `sync_all`.

use model::RunState;
use store::{EventLog, LockMode};

use crate::common::*;

#[test]
fn sync_all_catches_up_unprojected_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    let rid = id("crashy");
    store
        .create_run(&rid, spec("claude", &[]), plan(&layout, &rid))
        .unwrap();

    let (log, existing) = EventLog::open(&layout.events_path(&rid), &rid, LockMode::NoWait).unwrap();
    assert_eq!(existing.len(), 1);
    log.append(preparing(31)).unwrap();
    let st = log.append(started(32)).unwrap();
    drop(log);

    let stale = store.get(&rid).unwrap().unwrap();
    assert_eq!(
        (stale.state, stale.last_seq),
        (RunState::Pending, 1),
        "projection was bypassed"
    );
    store.sync_all().unwrap();
    let rec = store.get(&rid).unwrap().unwrap();
    assert_eq!((rec.state, rec.last_seq), (RunState::Running, 3));
    assert_eq!(
        (rec.pid, rec.supervisor_pid, rec.started_at),
        (Some(32), Some(31), Some(st.ts))
    );

    // A writer opened afterwards sees the full history and continues it.
    let mut w = store.writer(&rid, LockMode::NoWait).unwrap();
    assert_eq!(w.state(), Some(RunState::Running));
    assert_eq!(w.append(exited(Some(1))).unwrap().seq, 4);
    drop(w);
    let dump = store.dump().unwrap();
    store.reindex().unwrap();
    assert_eq!(store.dump().unwrap(), dump);
}

#[test]
fn sync_all_discovers_unknown_run_directories() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    let rid = id("stray");
    std::fs::create_dir(layout.run_dir(&rid)).unwrap();
    let (log, _) = EventLog::open(&layout.events_path(&rid), &rid, LockMode::NoWait).unwrap();
    log.append(model::EventData::Created {
        spec: Box::new(spec("codex", &[("origin", "elsewhere")])),
        plan: Box::new(plan(&layout, &rid)),
    })
    .unwrap();
    log.append(finished(RunState::Cancelled, None)).unwrap();
    drop(log);

    assert_eq!(store.get(&rid).unwrap(), None);
    store.sync_all().unwrap();
    let rec = store.get(&rid).unwrap().expect("discovered");
    assert_eq!(
        (rec.state, rec.agent.as_str(), rec.last_seq),
        (RunState::Cancelled, "codex", 2)
    );
    let dump = store.dump().unwrap();
    store.reindex().unwrap();
    assert_eq!(store.dump().unwrap(), dump);
}

#[test]
fn sync_run_is_idempotent_and_skips_illegal_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    let rid = id("odd");
    store
        .create_run(&rid, spec("claude", &[]), plan(&layout, &rid))
        .unwrap();
    // EventLog does not validate transitions; the projection must skip what is illegal.
    let (log, _) = EventLog::open(&layout.events_path(&rid), &rid, LockMode::NoWait).unwrap();
    log.append(started(5)).unwrap(); // illegal from Pending
    log.append(preparing(6)).unwrap();
    drop(log);
    let rec = store.sync_run(&rid).unwrap().unwrap();
    assert_eq!((rec.state, rec.pid, rec.last_seq), (RunState::Preparing, None, 3));
    assert_eq!(store.sync_run(&rid).unwrap().unwrap(), rec);
    assert_eq!(store.get(&rid).unwrap().unwrap(), rec);
    // A writer refuses to continue a log that does not replay.
    assert!(matches!(
        store.writer(&rid, LockMode::NoWait),
        Err(store::StoreError::Transition(_))
    ));
}

/// A terminal run whose `worktree_removed` was appended but never projected.
#[test]
fn sync_all_catches_up_worktree_removed_on_terminal_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    let rid = id("gone");
    store
        .create_run(&rid, spec("claude", &[]), plan(&layout, &rid))
        .unwrap();
    store
        .writer(&rid, LockMode::NoWait)
        .unwrap()
        .append(finished(RunState::Cancelled, None))
        .unwrap();
    let (log, _) = EventLog::open(&layout.events_path(&rid), &rid, LockMode::NoWait).unwrap();
    log.append(worktree_removed(&layout, &rid, true)).unwrap();
    drop(log);
    store.sync_all().unwrap();
    assert!(store.get(&rid).unwrap().unwrap().worktree_removed);
}

/// A new writer appending on top of events a crashed writer never projected.
#[test]
fn writer_appends_on_top_of_unprojected_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    let rid = id("reaped");
    store
        .create_run(&rid, spec("claude", &[]), plan(&layout, &rid))
        .unwrap();
    store
        .writer(&rid, LockMode::NoWait)
        .unwrap()
        .append(preparing(70))
        .unwrap();
    // The supervisor appends `started` and dies before projecting it.
    let (log, _) = EventLog::open(&layout.events_path(&rid), &rid, LockMode::NoWait).unwrap();
    log.append(started(71)).unwrap();
    drop(log);
    // A reaper records the loss through the normal path.
    let mut w = store.writer(&rid, LockMode::NoWait).unwrap();
    assert_eq!(w.state(), Some(RunState::Running));
    w.append(lost("reaper")).unwrap();
    drop(w);
    store.sync_all().unwrap();
    let incremental = store.dump().unwrap();
    let rec = store.get(&rid).unwrap().unwrap();
    store.reindex().unwrap();
    assert_eq!(store.dump().unwrap(), incremental, "projection diverged from the log");
    assert_eq!((rec.state, rec.pid, rec.last_seq), (RunState::Lost, Some(71), 4));
}
