//! Checkpoints through the CLI on real runs: taken while the agent works (watcher-driven and on
//! request), listed, diffed and rolled back — with the agent paused and continued — and the
//! change log complete even for a burst of thousands of writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Env, git};

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["data"]["type"] == kind).collect()
}

fn changed_paths(events: &[Value]) -> BTreeSet<String> {
    of_kind(events, "files_changed")
        .iter()
        .flat_map(|e| e["data"]["paths"].as_array().unwrap().iter())
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

fn tree_files(env: &Env, rev: &str) -> BTreeSet<String> {
    git(&env.repo, &["ls-tree", "-r", "--name-only", rev])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_working_agent_is_checkpointed_from_the_paths_it_changes() {
    let env = Env::new();
    let script = "printf '*.log\\n' > .gitignore; echo a > a.txt; echo b > b.txt; echo c > c.txt; sleep 0.8; \
                  echo a2 >> a.txt; mkdir -p d/e; echo deep > d/e/f; echo noise > x.log; sleep 0.8; \
                  rm b.txt; echo noise >> ignored.log; sleep 0.8";
    let (v, out) = env.json(&[
        "run",
        "--id",
        "busy",
        "--checkpoint-every",
        "1000",
        "--checkpoint-interval",
        "300ms",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{v}");
    let events = env.events("busy");
    let cps = of_kind(&events, "checkpointed");
    assert_eq!(cps[0]["data"]["trigger"], "baseline");
    assert_eq!(cps[0]["data"]["n"], 0);
    let watch: Vec<_> = cps.iter().filter(|c| c["data"]["trigger"] == "watch").collect();
    assert!(watch.len() >= 2, "a checkpoint per burst of activity: {cps:?}");
    // The first burst writes .gitignore: new ignore rules make a path scan unsafe, so that
    // one checkpoint reads the whole tree and says why; the bursts after it read only paths.
    assert_eq!(watch[0]["data"]["scan"], "full", "{watch:?}");
    assert_eq!(
        watch[0]["data"]["full_scan_reason"],
        "ignore rules changed (.gitignore)"
    );
    assert!(
        watch[1..].iter().all(|c| c["data"]["scan"] == "paths"),
        "the watcher's paths are read, not the whole tree: {watch:?}"
    );
    for (i, c) in cps.iter().enumerate() {
        assert_eq!(c["data"]["n"], i as u64, "numbered without gaps");
        if i > 0 {
            assert_eq!(c["data"]["parent"], cps[i - 1]["data"]["commit"], "a chain");
        }
    }
    // The change log has every path the agent touched, and nothing git ignores.
    let paths = changed_paths(&events);
    for p in [".gitignore", "a.txt", "b.txt", "c.txt", "d/e/f"] {
        assert!(paths.contains(p), "{p} missing from the change log: {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.ends_with(".log")), "{paths:?}");
    // The last checkpoint is the worktree as the agent left it.
    let (list, _) = env.json(&["checkpoints", "busy"]);
    let list = list["checkpoints"].as_array().unwrap().clone();
    let last = list.last().unwrap()["git_ref"].as_str().unwrap().to_owned();
    assert_eq!(
        tree_files(&env, &last),
        BTreeSet::from([".gitignore", "README.md", "a.txt", "c.txt", "d/e/f", "src/lib.txt"].map(String::from))
    );
    // Listing shows what each checkpoint changed.
    let total: u64 = list.iter().map(|c| c["files_changed"].as_u64().unwrap()).sum();
    assert!(total >= 5, "{list:?}");
    // The diff of the whole run, as JSON per-file stats and as git text.
    let (d, _) = env.json(&["diff", "busy", "--to", "last"]);
    let files: BTreeSet<&str> = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, BTreeSet::from([".gitignore", "a.txt", "c.txt", "d/e/f"]));
    let a = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "a.txt")
        .unwrap();
    assert_eq!(
        (a["insertions"].as_u64(), a["status"].as_str()),
        (Some(2), Some("added"))
    );
    let text = String::from_utf8(env.run(&["diff", "busy", "--stat", "--", "d"]).stdout).unwrap();
    assert!(text.contains("d/e/f") && !text.contains("a.txt"), "{text}");
    assert!(
        text.contains("1 file changed") && !text.contains("diff --git"),
        "a stat, no patch: {text}"
    );
    let patch = String::from_utf8(env.run(&["diff", "busy", "--", "d"]).stdout).unwrap();
    assert!(
        patch.contains("diff --git a/d/e/f b/d/e/f") && patch.contains("+deep"),
        "{patch}"
    );
    let names = String::from_utf8(env.run(&["diff", "busy", "--from", "1", "--name-only"]).stdout).unwrap();
    assert!(!names.contains(".gitignore") && names.contains("d/e/f"), "{names}");
}

#[test]
fn a_burst_of_5000_writes_is_in_the_change_log_or_overflows_into_a_full_scan() {
    let env = Env::new();
    let script = "for d in $(seq 1 50); do mkdir -p burst/$d; for f in $(seq 1 100); do echo $d.$f > burst/$d/$f; done; done; sleep 1";
    let (v, out) = env.json(&["run", "--id", "burst", "--", "sh", "-c", script]);
    assert!(out.status.success(), "{v}");
    let events = env.events("burst");
    let expected: BTreeSet<String> = (1..=50)
        .flat_map(|d| (1..=100).map(move |f| format!("burst/{d}/{f}")))
        .collect();
    let logged = changed_paths(&events);
    let overflow = events.iter().position(|e| e["data"]["type"] == "watcher_overflow");
    match overflow {
        None => {
            let missing: Vec<_> = expected.difference(&logged).take(5).collect();
            assert!(missing.is_empty(), "lost from the change log: {missing:?}");
        }
        Some(at) => assert!(
            events[at..]
                .iter()
                .any(|e| e["data"]["type"] == "checkpointed" && e["data"]["scan"] == "full"),
            "an overflow must be followed by a full-scan checkpoint"
        ),
    }
    // Either way the checkpoints hold every file.
    let (list, _) = env.json(&["checkpoints", "burst"]);
    let last = list["checkpoints"].as_array().unwrap().last().unwrap()["git_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let files = tree_files(&env, &last);
    assert!(
        expected.is_subset(&files),
        "{} of 5000 files in the last checkpoint",
        expected.intersection(&files).count()
    );
}

#[test]
fn checkpoint_and_rollback_while_the_agent_runs_pause_it_and_can_be_undone() {
    let env = Env::new();
    // The agent appends to a counter every 50 ms until told to stop.
    let script = "echo v1 > f.txt; i=0; while [ ! -f stop ]; do i=$((i+1)); echo $i > .count; sleep 0.05; done";
    // Unsandboxed: a sandboxed agent is paused for every checkpoint (sandbox.rs).
    let id = env.start(&[
        "--id",
        "live",
        "--sandbox",
        "off",
        "--no-watch",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let rec = env.until(&id, Duration::from_secs(10), |v| v["state"] == "running");
    let wt = Path::new(rec["worktree"].as_str().unwrap()).to_owned();
    wait_for(|| wt.join(".count").exists());
    let index_before = std::fs::read(git_dir_file(&wt, "index")).unwrap();
    let head_before = git(&wt, &["rev-parse", "HEAD"]);
    // A checkpoint on request: the supervisor (which holds the run's log) takes it.
    let (cp, out) = env.json(&["checkpoint", &id, "-m", "v1 state"]);
    assert!(out.status.success(), "{cp}");
    assert_eq!(
        (cp["n"].as_u64(), cp["created"].as_bool()),
        (Some(1), Some(true)),
        "{cp}"
    );
    assert_eq!(
        git(
            &env.repo,
            &["show", &format!("{}:f.txt", cp["git_ref"].as_str().unwrap())]
        ),
        "v1\n"
    );
    let manual = env.events(&id);
    let manual = of_kind(&manual, "checkpointed")
        .into_iter()
        .find(|c| c["data"]["trigger"] == "manual")
        .cloned()
        .unwrap();
    assert_eq!(
        manual["data"]["paused"], false,
        "without --consistent-checkpoints a requested checkpoint does not stop the agent"
    );
    // Someone changes things; roll back the whole worktree.
    std::fs::write(wt.join("f.txt"), "v2\n").unwrap();
    std::fs::write(wt.join("junk.txt"), "junk\n").unwrap();
    let (rb, out) = env.json(&["rollback", &id, "1"]);
    assert!(out.status.success(), "{rb}");
    assert_eq!(rb["paused"], true, "a running agent is paused during a rollback: {rb}");
    assert_eq!(std::fs::read_to_string(wt.join("f.txt")).unwrap(), "v1\n");
    assert!(!wt.join("junk.txt").exists());
    let undo = rb["pre_rollback"].as_u64().unwrap().to_string();
    // The agent was continued: its counter moves on.
    let count = || std::fs::read_to_string(wt.join(".count")).unwrap_or_default();
    let seen = count();
    wait_for(|| count() != seen);
    // Undo with the pre-rollback checkpoint.
    let (_, out) = env.json(&["rollback", &id, &undo]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(wt.join("f.txt")).unwrap(), "v2\n");
    assert_eq!(std::fs::read_to_string(wt.join("junk.txt")).unwrap(), "junk\n");
    // A partial rollback touches only the named path.
    let (_, out) = env.json(&["rollback", &id, "base", "--", "junk.txt"]);
    assert!(out.status.success());
    assert!(!wt.join("junk.txt").exists());
    assert_eq!(std::fs::read_to_string(wt.join("f.txt")).unwrap(), "v2\n");
    // The agent's own index, HEAD and branch are untouched by all of it.
    assert_eq!(std::fs::read(git_dir_file(&wt, "index")).unwrap(), index_before);
    assert_eq!(git(&wt, &["rev-parse", "HEAD"]), head_before);
    assert_eq!(git(&wt, &["rev-parse", "agentctl/live"]), head_before);
    std::fs::write(wt.join("stop"), "").unwrap();
    assert_eq!(env.wait(&id)["state"], "succeeded");
    let events = env.events(&id);
    let rolled = of_kind(&events, "rolled_back");
    assert_eq!(rolled.len(), 3);
    assert_eq!(rolled[2]["data"]["paths"], serde_json::json!(["junk.txt"]));
}

#[test]
fn an_unchanged_worktree_is_not_recorded_twice() {
    let env = Env::new();
    env.json(&["run", "--id", "same", "--", "sh", "-c", "echo x > x.txt"]);
    let (first, _) = env.json(&["checkpoint", "same"]);
    assert_eq!(
        first["created"], false,
        "the final checkpoint already has this tree: {first}"
    );
    std::fs::write(env.state.join("worktrees/same/y.txt"), "y").unwrap();
    let (second, _) = env.json(&["checkpoint", "same", "-m", "by hand"]);
    assert_eq!(
        (second["created"].as_bool(), second["trigger"].as_str()),
        (Some(true), Some("manual"))
    );
    let (third, _) = env.json(&["checkpoint", "same"]);
    assert_eq!((third["created"].as_bool(), &third["n"]), (Some(false), &second["n"]));
    let text = String::from_utf8(env.run(&["checkpoints", "same"]).stdout).unwrap();
    assert!(
        text.contains("by hand") && text.contains("baseline") && text.contains("final"),
        "{text}"
    );
}

#[test]
fn a_ref_left_by_a_crashed_checkpoint_does_not_block_the_next_one() {
    let env = Env::new();
    env.json(&["run", "--id", "crashy", "--", "sh", "-c", "echo x > x.txt"]);
    let (list, _) = env.json(&["checkpoints", "crashy"]);
    let next = list["checkpoints"].as_array().unwrap().len();
    // A checkpoint whose ref was written but whose event never was (the process died between
    // the two): the ref points at something the log does not know.
    let stale = format!("refs/agentctl/runs/crashy/{next}");
    git(&env.repo, &["update-ref", &stale, "HEAD"]);
    std::fs::write(env.state.join("worktrees/crashy/y.txt"), "y\n").unwrap();
    let (cp, out) = env.json(&["checkpoint", "crashy"]);
    assert!(out.status.success(), "{cp}");
    assert_eq!(cp["n"].as_u64(), Some(next as u64), "{cp}");
    assert_eq!(
        git(&env.repo, &["rev-parse", &stale]).trim(),
        cp["commit"].as_str().unwrap()
    );
    assert_eq!(git(&env.repo, &["show", &format!("{stale}:y.txt")]), "y\n");
    // And the chain goes on from there.
    std::fs::write(env.state.join("worktrees/crashy/z.txt"), "z\n").unwrap();
    let (after, out) = env.json(&["checkpoint", "crashy"]);
    assert!(out.status.success(), "{after}");
    assert_eq!(after["parent"], cp["commit"]);
}

#[test]
fn consistent_checkpoints_pause_the_agent_around_each_snapshot() {
    let env = Env::new();
    let (v, out) = env.json(&[
        "run",
        "--id",
        "cut",
        "--consistent-checkpoints",
        "--checkpoint-interval",
        "200ms",
        "--",
        "sh",
        "-c",
        "echo 1 > a; sleep 0.6; echo 2 > b; sleep 0.6",
    ]);
    assert!(out.status.success(), "{v}");
    let events = env.events("cut");
    let watch: Vec<_> = of_kind(&events, "checkpointed")
        .into_iter()
        .filter(|c| c["data"]["trigger"] == "watch")
        .collect();
    assert!(!watch.is_empty());
    assert!(watch.iter().all(|c| c["data"]["paused"] == true), "{watch:?}");
}

fn wait_for(cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "condition not reached");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn git_dir_file(wt: &Path, name: &str) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(git(wt, &["rev-parse", "--git-path", name]).trim());
    if p.is_absolute() { p } else { wt.join(p) }
}

/// A rollback to a checkpoint whose objects are gone from under a live worktree (its run's
/// object store deleted by hand) says so with `CHECKPOINT_PRUNED`, not git's failure.
#[test]
fn a_rollback_to_a_checkpoint_whose_objects_are_gone_says_so() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--id", "gone", "--", "sh", "-c", "echo x > x.txt"]);
    assert_eq!(v["state"], "succeeded", "{v}");
    std::fs::remove_dir_all(env.repo.join(".git/agentctl/stores/gone")).unwrap();
    let (err, out) = env.json(&["rollback", "gone", "0"]);
    assert_eq!(err["error"]["code"], "CHECKPOINT_PRUNED", "{err}");
    assert_eq!(out.status.code(), Some(66));
    assert!(Path::new(v["worktree"].as_str().unwrap()).join("x.txt").exists());
}
