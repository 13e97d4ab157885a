//! `reconcile` on fixtures made by hand: a run whose supervisor was killed, a worktree no run
//! owns (clean, and with uncommitted work), a process that claims a run we do not have, and a
//! finished run whose worktree was deleted.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Env, git};

fn findings(env: &Env, dry_run: bool) -> Vec<Value> {
    let args: &[&str] = if dry_run {
        &["reconcile", "--dry-run"]
    } else {
        &["reconcile"]
    };
    let (v, out) = env.json(args);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["dry_run"], dry_run);
    v["findings"].as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], kind: &str, run: &str) -> &'a Value {
    list.iter()
        .find(|f| f["kind"] == kind && f["run"] == run)
        .unwrap_or_else(|| panic!("no {kind} for {run}: {list:?}"))
}

/// The last event's type, read from the log itself (commands that show a run would refresh it).
fn last_event(env: &Env, id: &str) -> String {
    let log = std::fs::read_to_string(env.state.join(format!("runs/{id}/events.jsonl"))).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    last["data"]["type"].as_str().unwrap().to_owned()
}

#[test]
fn reconcile_reports_every_discrepancy_and_fixes_only_what_is_safe() {
    let env = Env::new();
    // 1. A run whose supervisor is killed outright.
    let id = env.start(&["--id", "orphaned", "--", "sleep", "30"]);
    let rec = env.until(&id, Duration::from_secs(10), |v| v["state"] == "running");
    let sup = rec["supervisor_pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), nix::sys::signal::Signal::SIGKILL).unwrap();
    // 2. Worktrees no run owns: one clean, one with work in it.
    let wt = env.state.join("worktrees");
    for name in ["ghost-clean", "ghost-dirty"] {
        let path = wt.join(name);
        git(
            &env.repo,
            &["worktree", "add", "-q", "-b", name, path.to_str().unwrap()],
        );
    }
    std::fs::write(wt.join("ghost-dirty/precious.txt"), "work\n").unwrap();
    // 3. A process claiming to supervise a run this state dir does not have.
    let state = env.state.to_str().unwrap().to_owned();
    let mut impostor = Command::new("sh")
        .args([
            "-c",
            "sleep 30; true",
            "__supervise",
            "--state-dir",
            &state,
            "ghost-run",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // 4. A finished run whose worktree someone deleted.
    let (done, _) = env.json(&["run", "--id", "done", "--", "true"]);
    std::fs::remove_dir_all(done["worktree"].as_str().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let dry = findings(&env, true);
    assert_eq!(find(&dry, "lost_supervisor", "orphaned")["action"], "would_fix");
    assert_eq!(find(&dry, "orphan_worktree", "ghost-clean")["action"], "would_fix");
    assert_eq!(find(&dry, "orphan_worktree", "ghost-dirty")["action"], "reported");
    let imp = find(&dry, "orphan_supervisor", "ghost-run");
    assert_eq!(
        (imp["action"].as_str(), imp["pid"].as_u64()),
        (Some("reported"), Some(impostor.id() as u64))
    );
    assert_eq!(find(&dry, "worktree_missing", "done")["action"], "would_fix");
    // A dry run changed nothing.
    assert_eq!(last_event(&env, "orphaned"), "started");
    assert!(wt.join("ghost-clean").exists());

    let fixed = findings(&env, false);
    assert_eq!(find(&fixed, "lost_supervisor", "orphaned")["action"], "fixed");
    assert_eq!(last_event(&env, "orphaned"), "lost");
    assert!(!wt.join("ghost-clean").exists(), "a clean orphan worktree is removed");
    assert!(!git(&env.repo, &["worktree", "list"]).contains("ghost-clean"));
    assert_eq!(
        std::fs::read_to_string(wt.join("ghost-dirty/precious.txt")).unwrap(),
        "work\n",
        "uncommitted work is never deleted"
    );
    assert!(
        Path::new(&format!("/proc/{}", impostor.id())).exists(),
        "never signalled"
    );
    assert_eq!(env.show("done")["worktree_removed"], true);
    // Fixed things stay fixed; what is only reported is reported again.
    let again = findings(&env, false);
    let kinds: Vec<(&str, &str)> = again
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["run"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("orphan_worktree", "ghost-dirty"), ("orphan_supervisor", "ghost-run")]
    );
    let group = nix::unistd::Pid::from_raw(-(impostor.id() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    impostor.wait().unwrap();
    let (text, _) = (
        String::from_utf8(env.run(&["reconcile", "--dry-run"]).stdout).unwrap(),
        (),
    );
    assert!(text.contains("ghost-dirty") && text.contains("uncommitted"), "{text}");
}
