//! The durable record: events in order, the projection rebuilt from the logs, idempotent
//! creation with `--id`.

use crate::harness::{Env, stdout};

#[test]
fn reindex_reproduces_the_projection() {
    let env = Env::new();
    env.json(&["run", "--label", "team=a", "--", "true"]);
    env.json(&["run", "--label", "team=b", "--", "false"]);
    env.json(&["run", "--timeout", "200ms", "--grace", "100ms", "--", "sleep", "5"]);
    let (ok, _) = env.json(&["run", "--", "true"]);
    env.json(&["gc", "--older-than", "0s"]);
    let (before, _) = env.json(&["ls"]);
    let (r, out) = env.json(&["admin", "reindex"]);
    assert!(out.status.success());
    assert_eq!(r["runs"], 4);
    let (after, _) = env.json(&["ls"]);
    assert_eq!(before, after);
    // From nothing: delete the database and rebuild it.
    for f in ["agentctl.db", "agentctl.db-wal", "agentctl.db-shm"] {
        let _ = std::fs::remove_file(env.state.join(f));
    }
    env.json(&["admin", "reindex"]);
    let (rebuilt, _) = env.json(&["ls"]);
    assert_eq!(before, rebuilt);
    // Filters use the projection.
    let (a, _) = env.json(&["ls", "--label", "team=a"]);
    assert_eq!(a["runs"].as_array().unwrap().len(), 1);
    let (failed, _) = env.json(&["ls", "--state", "failed", "--state", "timed_out"]);
    assert_eq!(failed["runs"].as_array().unwrap().len(), 2);
    let id = ok["id"].as_str().unwrap();
    assert_eq!(env.show(&id[..20])["id"], id, "a unique prefix resolves");
}

#[test]
fn the_event_log_tells_the_whole_story_in_order() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--", "sh", "-c", "echo x > new.txt"]);
    let events = env.events(v["id"].as_str().unwrap());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["data"]["type"].as_str().unwrap())
        // What the watcher saw depends on timing; it is checked in checkpoints.rs.
        .filter(|k| *k != "files_changed")
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "preparing",
            "worktree_ready",
            "isolated",
            "checkpointed",
            "started",
            "exited",
            "checkpointed",
            "finished"
        ]
    );
    let cps: Vec<_> = events.iter().filter(|e| e["data"]["type"] == "checkpointed").collect();
    assert_eq!(cps[0]["data"]["trigger"], "baseline");
    assert_eq!(cps[1]["data"]["trigger"], "final");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["v"], 1);
    }
    // The raw file is JSON lines, one per event.
    let raw = std::fs::read_to_string(
        env.state
            .join("runs")
            .join(v["id"].as_str().unwrap())
            .join("events.jsonl"),
    )
    .unwrap();
    assert_eq!(raw.lines().count(), events.len());
}

#[test]
fn create_with_id_is_idempotent_and_conflicts_are_clear() {
    let env = Env::new();
    let (a, _) = env.json(&["run", "--id", "same", "--", "echo", "x"]);
    let (b, out) = env.json(&["run", "--id", "same", "--", "echo", "x"]);
    assert!(out.status.success());
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["created_at"], b["created_at"]);
    assert_eq!(env.logs("same"), "x\n", "the agent ran once");
    let (c, out) = env.json(&["run", "--id", "same", "--", "echo", "y"]);
    assert_eq!(c["error"]["code"], "RUN_ID_CONFLICT");
    assert_eq!(out.status.code(), Some(75));
    let (list, _) = env.json(&["ls"]);
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
}

#[test]
fn concurrent_creates_with_one_id_make_one_run() {
    let env = Env::new();
    let children: Vec<_> = (0..8)
        .map(|_| {
            env.cmd()
                .args(["--json", "run", "--detach", "--id", "race", "--", "echo", "once"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stdout(&out));
    }
    let v = env.wait("race");
    assert_eq!(v["state"], "succeeded");
    assert_eq!(env.logs("race"), "once\n");
}

#[test]
fn many_simultaneous_runs_on_a_fresh_state_dir_all_succeed() {
    // Races between first uses of a state dir, supervisors taking their locks and readers
    // probing them must never lose a run.
    let env = Env::new();
    let children: Vec<_> = (0..30)
        .map(|_| {
            env.cmd()
                .args(["--json", "run", "--", "true"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(v["state"], "succeeded", "{v}");
    }
    let (list, _) = env.json(&["ls", "--state", "succeeded"]);
    assert_eq!(list["runs"].as_array().unwrap().len(), 30);
}
