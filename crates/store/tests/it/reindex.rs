//! Reindex equivalence: the incrementally maintained projection equals one rebuilt from the
//! logs, both in place and from a deleted database.

use std::fs;

use model::{EventData, RunState, StopReason};
use store::{LockMode, RunFilter, StateLayout, Store};

use crate::common::*;

/// The events after `Created` for scenario `i` (20 distinct shapes, repeated).
fn scenario(i: usize, layout: &StateLayout, rid: &model::RunId) -> Vec<EventData> {
    let pid = 2000 + i as u32;
    let mut evs = match i % 10 {
        0 => vec![],
        1 => vec![preparing(pid), worktree_ready(layout, rid)],
        2 => vec![
            preparing(pid),
            started(pid + 1),
            exited(Some(0)),
            finished(RunState::Succeeded, Some(0)),
        ],
        3 => vec![
            preparing(pid),
            started(pid + 1),
            exited(Some(3)),
            finished(RunState::Failed, Some(3)),
        ],
        4 => vec![
            preparing(pid),
            hook("pre-run", 0),
            started(pid + 1),
            stop(StopReason::User),
            signal("SIGTERM", pid + 1),
            exited(None),
            finished(RunState::Cancelled, None),
        ],
        5 => vec![preparing(pid), started(pid + 1), lost("reaper")],
        6 => vec![lost("ls")],
        7 if i < 10 => vec![preparing(pid), started(pid + 1), paused()],
        7 => vec![preparing(pid), started(pid + 1), hook("pre-run", 1)],
        8 => vec![finished(RunState::Cancelled, None)],
        _ => vec![
            preparing(pid),
            started(pid + 1),
            paused(),
            resumed(),
            stop(StopReason::IdleTimeout),
            exited(None),
            finished(RunState::TimedOut, None),
        ],
    };
    if i >= 10
        && evs
            .last()
            .is_some_and(|e| matches!(e, EventData::Finished { .. } | EventData::Lost { .. }))
    {
        evs.push(worktree_removed(layout, rid, i.is_multiple_of(2)));
    }
    evs
}

fn populate(store: &Store) {
    let layout = store.layout().clone();
    for i in 0..20 {
        let rid = id(&format!("run-{i:02}"));
        let labels: Vec<(String, String)> = match i % 3 {
            0 => vec![],
            1 => vec![("team".into(), format!("t{}", i % 4))],
            _ => vec![("team".into(), "core".into()), ("batch".into(), (i / 5).to_string())],
        };
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let agent = ["claude", "codex", "command"][i % 3];
        store
            .create_run(&rid, spec(agent, &labels), plan(&layout, &rid))
            .unwrap();
        let mut w = store.writer(&rid, LockMode::NoWait).unwrap();
        for ev in scenario(i, &layout, &rid) {
            w.append(ev).unwrap();
        }
    }
}

#[test]
fn reindex_reproduces_the_incremental_projection() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    populate(&store);
    let before = store.dump().unwrap();
    assert_eq!(before.lines().filter(|l| l.starts_with("runs|")).count(), 20);
    assert!(before.contains("run_labels|"), "labels are part of the dump");
    let states: Vec<RunState> = store
        .list(&RunFilter::default())
        .unwrap()
        .iter()
        .map(|r| r.state)
        .collect();
    for st in [
        RunState::Pending,
        RunState::Preparing,
        RunState::Running,
        RunState::Paused,
        RunState::Lost,
    ] {
        assert!(states.contains(&st), "no run in {st}");
    }
    assert_eq!(store.reindex().unwrap(), 20);
    assert_eq!(store.dump().unwrap(), before);
    // Idempotent.
    assert_eq!(store.reindex().unwrap(), 20);
    assert_eq!(store.dump().unwrap(), before);
}

#[test]
fn reindex_rebuilds_a_deleted_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    populate(&store);
    let before = store.dump().unwrap();
    let db = store.layout().db_path();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", db.display());
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{p}: {e}"),
        }
    }
    assert!(!db.exists());

    let store = open_store(dir.path());
    assert_eq!(store.dump().unwrap(), "", "a fresh database starts empty");
    assert_eq!(store.reindex().unwrap(), 20);
    assert_eq!(store.dump().unwrap(), before);
}

#[test]
fn reindex_skips_runs_without_events_and_drops_deleted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    populate(&store);
    let layout = store.layout().clone();
    // A run directory whose creation never wrote an event, and a directory that is no run.
    fs::create_dir(layout.run_dir(&id("empty"))).unwrap();
    fs::create_dir(layout.runs_dir().join(".tmp-junk-1")).unwrap();
    // A row whose directory vanished behind the store's back.
    fs::rename(layout.run_dir(&id("run-03")), dir.path().join("elsewhere")).unwrap();
    assert_eq!(store.reindex().unwrap(), 19);
    assert_eq!(store.get(&id("run-03")).unwrap(), None);
    assert_eq!(store.get(&id("empty")).unwrap(), None);
    assert!(!store.dump().unwrap().contains("run-03"));
}
