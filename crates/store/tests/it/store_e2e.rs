//! `Store` end to end: create, write a whole run through `RunWriter`, query it back with
//! filters, reject illegal transitions before they reach the log, idempotent creation.

use model::{EventData, RunState, StopReason};
use store::{CreateOutcome, EventLogError, LockMode, RunFilter, StoreError};

use crate::common::*;

#[test]
fn run_lifecycle_is_recorded_and_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    let rid = id("fix-flaky-1");
    let spec = spec("claude", &[("team", "infra"), ("ticket", "T-42")]);

    let created = match store.create_run(&rid, spec.clone(), plan(&layout, &rid)).unwrap() {
        CreateOutcome::Created(ev) => *ev,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!((created.seq, created.run_id.clone()), (1, rid.clone()));
    assert!(layout.events_path(&rid).is_file());
    let rec = store.get(&rid).unwrap().expect("projected on create");
    assert_eq!(rec.state, RunState::Pending);
    assert_eq!(rec.labels.get("ticket").map(String::as_str), Some("T-42"));
    assert_eq!(rec.branch, "agentctl/fix-flaky-1");
    assert_eq!(rec.worktree, layout.worktree_path(&rid));
    assert_eq!(rec.created_at, created.ts);

    let mut w = store.writer(&rid, LockMode::Wait).unwrap();
    assert_eq!(w.state(), Some(RunState::Pending));
    w.append(preparing(4242)).unwrap();
    w.append(worktree_ready(&layout, &rid)).unwrap();
    let started_ev = w.append(started(4343)).unwrap();
    assert_eq!(store.get(&rid).unwrap().unwrap().state, RunState::Running);
    w.append(exited(Some(0))).unwrap();
    let fin = w.append(finished(RunState::Succeeded, Some(0))).unwrap();
    assert_eq!(fin.seq, 6);
    assert_eq!(w.state(), Some(RunState::Succeeded));

    let rec = store.get(&rid).unwrap().unwrap();
    assert_eq!(rec.state, RunState::Succeeded);
    assert_eq!(rec.supervisor_pid, Some(4242));
    assert_eq!(rec.pid, Some(4343));
    assert_eq!(rec.exit_code, Some(0));
    assert_eq!(rec.started_at, Some(started_ev.ts));
    assert_eq!(rec.finished_at, Some(fin.ts));
    assert_eq!(rec.updated_at, fin.ts);
    assert_eq!(rec.reason.as_deref(), Some("agent ended as succeeded"));
    assert_eq!(rec.last_seq, 6);
    assert!(!rec.worktree_removed);

    // Illegal: a second start after the end. Rejected before the log.
    match w.append(started(1)) {
        Err(StoreError::Transition(e)) => {
            assert_eq!(e.from, Some(RunState::Succeeded));
            assert_eq!(e.event, "started");
        }
        other => panic!("expected Transition, got {other:?}"),
    }
    assert!(matches!(w.append(lost("reaper")), Err(StoreError::Transition(_))));
    assert_eq!(w.events().len(), 6);
    assert_eq!(store.events(&rid).unwrap().len(), 6);
    assert_eq!(store.get(&rid).unwrap().unwrap(), rec);

    // Bookkeeping after the end is still allowed.
    w.append(worktree_removed(&layout, &rid, false)).unwrap();
    let rec = store.get(&rid).unwrap().unwrap();
    assert!(rec.worktree_removed);
    assert_eq!((rec.state, rec.last_seq), (RunState::Succeeded, 7));
    drop(w);

    // Same id again: reported, not overwritten.
    match store.create_run(&rid, spec, plan(&layout, &rid)).unwrap() {
        CreateOutcome::Exists(events) => {
            assert_eq!(events.len(), 7);
            assert_eq!(events[0], created);
        }
        other => panic!("expected Exists, got {other:?}"),
    }
}

#[test]
fn list_filters_by_state_agent_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    let runs = [
        ("a1", "claude", &[("team", "infra")][..]),
        ("a2", "claude", &[("team", "web"), ("prio", "high")][..]),
        ("a3", "codex", &[("team", "infra"), ("prio", "high")][..]),
        ("a4", "command", &[][..]),
    ];
    for (name, agent, labels) in runs {
        let rid = id(name);
        store
            .create_run(&rid, spec(agent, labels), plan(&layout, &rid))
            .unwrap();
    }
    let mut w = store.writer(&id("a2"), LockMode::NoWait).unwrap();
    w.append(preparing(1)).unwrap();
    w.append(started(2)).unwrap();
    drop(w);
    let mut w = store.writer(&id("a3"), LockMode::NoWait).unwrap();
    w.append(finished(RunState::Cancelled, None)).unwrap();
    drop(w);

    let ids = |f: RunFilter| -> Vec<String> {
        let mut v: Vec<String> = store.list(&f).unwrap().into_iter().map(|r| r.id.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(RunFilter::default()), ["a1", "a2", "a3", "a4"]);
    let by_state = |states: Vec<RunState>| RunFilter {
        states,
        ..Default::default()
    };
    assert_eq!(ids(by_state(vec![RunState::Pending])), ["a1", "a4"]);
    assert_eq!(
        ids(by_state(vec![RunState::Running, RunState::Cancelled])),
        ["a2", "a3"]
    );
    assert!(ids(by_state(vec![RunState::Lost])).is_empty());
    let by_agent = RunFilter {
        agent: Some("claude".into()),
        ..Default::default()
    };
    assert_eq!(ids(by_agent), ["a1", "a2"]);
    let label = |pairs: &[(&str, &str)]| RunFilter {
        labels: pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        ..Default::default()
    };
    assert_eq!(ids(label(&[("team", "infra")])), ["a1", "a3"]);
    assert_eq!(ids(label(&[("team", "infra"), ("prio", "high")])), ["a3"]);
    assert!(ids(label(&[("team", "nobody")])).is_empty());
    let combined = RunFilter {
        states: vec![RunState::Running],
        agent: Some("claude".into()),
        labels: vec![("prio".into(), "high".into())],
        limit: None,
    };
    assert_eq!(ids(combined), ["a2"]);
    let limited = RunFilter {
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(store.list(&limited).unwrap().len(), 2);
    // Newest first.
    let all = store.list(&RunFilter::default()).unwrap();
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
}

#[test]
fn writer_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    assert!(matches!(
        store.writer(&id("ghost"), LockMode::NoWait),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.events(&id("ghost")), Err(StoreError::NotFound(_))));
    assert_eq!(store.get(&id("ghost")).unwrap(), None);

    let rid = id("busy");
    store
        .create_run(&rid, spec("claude", &[]), plan(&layout, &rid))
        .unwrap();
    let w = store.writer(&rid, LockMode::NoWait).unwrap();
    assert!(matches!(
        store.writer(&rid, LockMode::NoWait),
        Err(StoreError::EventLog(EventLogError::Locked { .. }))
    ));
    drop(w);
    let mut w = store.writer(&rid, LockMode::NoWait).unwrap();
    // Not legal from Pending: stop, start, a non-cancel finish, a second create.
    for ev in [
        stop(StopReason::User),
        started(1),
        finished(RunState::Succeeded, Some(0)),
        EventData::Created {
            spec: Box::new(spec("claude", &[])),
            plan: Box::new(plan(&layout, &rid)),
        },
    ] {
        assert!(matches!(w.append(ev), Err(StoreError::Transition(_))));
    }
    assert_eq!(store.events(&rid).unwrap().len(), 1);
}

#[test]
fn resolve_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    for name in ["alpha-1", "alpha-2", "beta"] {
        let rid = id(name);
        store
            .create_run(&rid, spec("claude", &[]), plan(&layout, &rid))
            .unwrap();
    }
    assert_eq!(store.resolve("beta").unwrap(), id("beta"));
    assert_eq!(store.resolve("be").unwrap(), id("beta"));
    assert_eq!(store.resolve("alpha-2").unwrap(), id("alpha-2"));
    match store.resolve("alpha") {
        Err(StoreError::Ambiguous { matches, .. }) => assert_eq!(matches, [id("alpha-1"), id("alpha-2")]),
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    assert!(matches!(store.resolve("gamma"), Err(StoreError::NotFound(_))));
}

#[test]
fn delete_run_removes_dir_row_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    let rid = id("doomed");
    store
        .create_run(&rid, spec("claude", &[("team", "x")]), plan(&layout, &rid))
        .unwrap();
    store.delete_run(&rid).unwrap();
    assert!(!layout.run_dir(&rid).exists());
    assert_eq!(store.get(&rid).unwrap(), None);
    assert!(!store.dump().unwrap().contains("doomed"), "label rows must go too");
    assert!(layout.run_ids().unwrap().is_empty(), "no leftovers under runs/");
    // The id can be reused.
    assert!(matches!(
        store
            .create_run(&rid, spec("claude", &[]), plan(&layout, &rid))
            .unwrap(),
        CreateOutcome::Created(_)
    ));
}

#[test]
fn concurrent_creates_of_one_id_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layout = store.layout().clone();
    for round in 0..20 {
        let rid = id(&format!("race-{round}"));
        let barrier = std::sync::Barrier::new(8);
        let outcomes: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        store.create_run(&rid, spec("claude", &[]), plan(&layout, &rid))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut created = 0;
        for o in &outcomes {
            match o {
                Ok(CreateOutcome::Created(_)) => created += 1,
                Ok(CreateOutcome::Exists(evs)) => assert_eq!(evs.len(), 1, "round {round}"),
                Err(e) => panic!("round {round}: create failed: {e}"),
            }
        }
        assert_eq!(created, 1, "round {round}");
        assert_eq!(store.events(&rid).unwrap().len(), 1);
    }
}

#[test]
fn a_database_from_a_newer_agentctl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_store(dir.path()));
    let db = rusqlite::Connection::open(dir.path().join("agentctl.db")).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let err = store::Store::open(store::StateLayout::new(dir.path())).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}
