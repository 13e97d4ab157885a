//! Shadow runs (`--shadow`, `--gate`, `agentctl promote`): the agent works on its shadow
//! branch; its change reaches the run's branch only after the path policy and the gates pass,
//! in one ref update — and a failing gate, a policy violation, a branch moved meanwhile or a
//! stop leaves the branch exactly where it was. Real git, real bubblewrap, real processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::Daemon;
use crate::harness::{Env, events_of, git, stderr, stdout};

/// An agent that commits one file on its (shadow) branch and leaves another uncommitted, plus
/// an ignored file that must not reach a gate's checkout.
const WORK: &str = r#"set -e
printf 'hello\n' > hello.txt
git add hello.txt
git -c user.name=agent -c user.email=agent@example.com commit -qm "add hello"
printf 'draft\n' > notes.txt
printf 'junk\n' > build.tmp
"#;

fn rev(repo: &Path, name: &str) -> String {
    git(repo, &["rev-parse", name]).trim().to_owned()
}

/// The reflog messages of a branch, newest first.
fn reflog(repo: &Path, branch: &str) -> Vec<String> {
    git(repo, &["reflog", "show", "--format=%gs", branch])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An env whose repository ignores `*.tmp`.
fn env_ignoring_tmp() -> Env {
    let env = Env::new();
    std::fs::write(env.repo.join(".gitignore"), "*.tmp\n").unwrap();
    git(&env.repo, &["add", ".gitignore"]);
    git(&env.repo, &["commit", "-qm", "ignore tmp"]);
    env
}

#[test]
fn a_passing_gate_promotes_the_change_in_one_update() {
    let env = env_ignoring_tmp();
    let base = rev(&env.repo, "HEAD");
    // The gate sees exactly the change, checked out clean: the committed and the uncommitted
    // file, no ignored file, no git metadata, the commit it validates in its environment.
    let gate = "test -f hello.txt && test -f notes.txt && test ! -e build.tmp && test ! -e .git \
                && echo \"validating $AGENTCTL_PROMOTE_COMMIT for $AGENTCTL_RUN_ID\"";
    let (v, out) = env.json(&["run", "--gate", gate, "--", "sh", "-c", WORK]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "succeeded", "{v}\n{}\n{}", stderr(&out), env.logs(&id));
    let branch = format!("agentctl/{id}");
    let shadow = format!("agentctl/_shadow/{id}");
    assert_eq!(v["branch"], branch.as_str());
    // The agent committed on its shadow branch.
    let agent_commit = rev(&env.repo, &shadow);
    assert_eq!(
        git(&env.repo, &["log", "-1", "--format=%s", &shadow]).trim(),
        "add hello"
    );
    // The run's branch: created at the base, then moved once, by the promotion.
    let tip = rev(&env.repo, &branch);
    assert_eq!(
        reflog(&env.repo, &branch),
        vec![format!("agentctl: promote run {id}"), "agentctl: run branch".to_owned()]
    );
    // On top of the agent's commit, one commit of what it left uncommitted.
    assert_eq!(rev(&env.repo, &format!("{tip}^")), agent_commit);
    assert_eq!(rev(&env.repo, &format!("{tip}~2")), base);
    assert_eq!(
        git(&env.repo, &["log", "-1", "--format=%an <%ae>", &tip]).trim(),
        "agentctl <agentctl@localhost>"
    );
    let files = git(&env.repo, &["ls-tree", "-r", "--name-only", &tip]);
    assert!(files.contains("hello.txt") && files.contains("notes.txt"), "{files}");
    assert!(!files.contains("build.tmp"), "{files}");
    // Recorded: started, the gate, promoted.
    let started = events_of(&env, &id, "promotion_started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["commit"], tip.as_str());
    assert_eq!(started[0]["trigger"], "auto");
    let gates = events_of(&env, &id, "gate_finished");
    assert_eq!(gates.len(), 1, "{gates:?}");
    assert_eq!(gates[0]["exit_code"], 0, "{gates:?}");
    let tail = gates[0]["output_tail"].as_str().unwrap();
    assert!(tail.contains(&format!("validating {tip} for {id}")), "{tail}");
    let promoted = events_of(&env, &id, "promoted");
    assert_eq!(promoted.len(), 1);
    assert_eq!(promoted[0]["previous"], base.as_str());
    assert_eq!(promoted[0]["commit"], tip.as_str());
    assert_eq!(promoted[0]["commits"], 2);
    assert_eq!(promoted[0]["files_changed"], 2);
    // `show` tells where the promotion stands.
    let shown = env.show(&id);
    assert_eq!(shown["shadow"]["status"], "promoted", "{shown}");
    assert_eq!(shown["shadow"]["branch"], shadow.as_str());
    assert_eq!(shown["shadow"]["target"], branch.as_str());
    let text = stdout(&env.run(&["show", &id]));
    assert!(text.contains("promotion") && text.contains("promoted"), "{text}");
    // The agent's commit in the sandbox went without a complaint from git.
    let log = env.logs(&id);
    assert!(!log.contains("packed-refs.lock") && !log.contains("error:"), "{log}");
    // Promoting again finds the change there already (though the commit of uncommitted work
    // would be written anew).
    std::thread::sleep(Duration::from_millis(1100));
    let (again, out) = env.json(&["promote", &id]);
    assert!(out.status.success(), "{again}");
    assert_eq!(again["already"], true, "{again}");
    assert_eq!(rev(&env.repo, &branch), tip);
    // The export is gone; the user's checkout is untouched.
    assert!(!env.state.join("runs").join(&id).join("promote").exists());
    assert_eq!(rev(&env.repo, "main"), base);
}

#[test]
fn a_failing_gate_leaves_the_branch_untouched() {
    let env = env_ignoring_tmp();
    let base = rev(&env.repo, "HEAD");
    let (v, out) = env.json(&[
        "run",
        "--gate",
        "echo first gate ok",
        "--gate",
        "echo 'tests: 1 failed'; exit 3",
        "--gate",
        "echo never runs",
        "--",
        "sh",
        "-c",
        WORK,
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "failed", "{v}\n{}", stderr(&out));
    assert_eq!(out.status.code(), Some(65), "run exits PROMOTION_REFUSED's code");
    let waited = env.run(&["wait", &id]);
    assert_eq!(waited.status.code(), Some(65), "and so does wait");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("promotion refused") && reason.contains("exit code 3"),
        "{reason}"
    );
    let branch = format!("agentctl/{id}");
    // Not touched at all: at the base, and never moved.
    assert_eq!(rev(&env.repo, &branch), base);
    assert_eq!(reflog(&env.repo, &branch), vec!["agentctl: run branch".to_owned()]);
    // The agent's work is kept on the shadow branch (and in checkpoints).
    assert_eq!(
        git(
            &env.repo,
            &["log", "-1", "--format=%s", &format!("agentctl/_shadow/{id}")]
        )
        .trim(),
        "add hello"
    );
    let gates = events_of(&env, &id, "gate_finished");
    assert_eq!(gates.len(), 2, "the first failure ends the gates: {gates:?}");
    assert_eq!(gates[1]["exit_code"], 3);
    assert!(gates[1]["output_tail"].as_str().unwrap().contains("tests: 1 failed"));
    let refused = events_of(&env, &id, "promotion_refused");
    assert_eq!(refused.len(), 1);
    assert!(refused[0]["reasons"][0].as_str().unwrap().contains("exit code 3"));
    assert!(events_of(&env, &id, "promoted").is_empty());
    assert_eq!(env.show(&id)["shadow"]["status"], "refused");
}

#[test]
fn a_policy_violation_refuses_the_promotion_before_any_gate() {
    let env = Env::new();
    let base = rev(&env.repo, "HEAD");
    let policy = env.dir.path().join("policy.toml");
    // `flag` lets the agent go on; the promotion still refuses what breaks the policy.
    std::fs::write(&policy, "forbidden = [\"secrets/**\"]\non_violation = \"flag\"\n").unwrap();
    let (v, _) = env.json(&[
        "run",
        "--policy",
        policy.to_str().unwrap(),
        "--gate",
        "echo gate ran",
        "--",
        "sh",
        "-c",
        "mkdir -p secrets && echo k > secrets/key && echo ok > fine.txt",
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("path policy"), "{v}");
    assert_eq!(rev(&env.repo, &format!("agentctl/{id}")), base);
    let refused = events_of(&env, &id, "promotion_refused");
    assert_eq!(refused.len(), 1);
    let violations = refused[0]["violations"].as_array().unwrap();
    assert!(
        violations
            .iter()
            .any(|x| x["path"] == "secrets/key" && x["rule"] == "forbidden"),
        "{violations:?}"
    );
    assert!(
        events_of(&env, &id, "gate_finished").is_empty(),
        "gates ran after a violation"
    );
}

#[test]
fn a_gate_past_its_time_limit_is_killed_and_refuses() {
    let env = Env::new();
    let base = rev(&env.repo, "HEAD");
    let started = Instant::now();
    let (v, _) = env.json(&[
        "run",
        "--gate",
        "sleep 30",
        "--gate-timeout",
        "1s",
        "--",
        "sh",
        "-c",
        "echo x > x.txt",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the gate was not cut short"
    );
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("timed out"), "{v}");
    let gates = events_of(&env, &id, "gate_finished");
    assert_eq!(gates[0]["timed_out"], true, "{gates:?}");
    assert_eq!(rev(&env.repo, &format!("agentctl/{id}")), base);
}

#[test]
fn a_stop_during_the_gates_cancels_the_run_and_promotes_nothing() {
    let env = Env::new();
    let base = rev(&env.repo, "HEAD");
    let id = env.start(&["--gate", "sleep 60", "--", "sh", "-c", "echo x > x.txt"]);
    env.until(&id, Duration::from_secs(30), |_| {
        !events_of(&env, &id, "promotion_started").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = env.run(&["stop", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = env.wait(&id);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("validated"), "{v}");
    assert_eq!(rev(&env.repo, &format!("agentctl/{id}")), base);
    assert!(!crate::harness::process_with("sleep 60"), "the gate outlived the run");
}

#[test]
fn manual_promotion_and_its_errors() {
    let env = env_ignoring_tmp();
    let base = rev(&env.repo, "HEAD");
    let (v, _) = env.json(&[
        "run",
        "--shadow=manual",
        "--gate",
        "test -f hello.txt",
        "--",
        "sh",
        "-c",
        WORK,
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    let branch = format!("agentctl/{id}");
    // The run ends as its agent did; nothing is promoted yet.
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(rev(&env.repo, &branch), base);
    assert_eq!(env.show(&id)["shadow"]["status"], "pending");
    assert!(events_of(&env, &id, "promotion_started").is_empty());
    // Promote: exit 0, the branch moves once.
    let out = env.run(&["promote", &id[..12]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("promoted") && text.contains(&branch), "{text}");
    let tip = rev(&env.repo, &branch);
    assert_ne!(tip, base);
    assert_eq!(reflog(&env.repo, &branch).len(), 2);
    let started = events_of(&env, &id, "promotion_started");
    assert_eq!(started[0]["trigger"], "manual");
    // Again: nothing to do, still exit 0.
    let (again, out) = env.json(&["promote", &id]);
    assert!(out.status.success());
    assert_eq!(again["promoted"], true);
    assert_eq!(again["already"], true);
    assert_eq!(rev(&env.repo, &branch), tip);
    // A run without a shadow workspace.
    let plain = env.start(&["--", "true"]);
    env.wait(&plain);
    let (err, out) = env.json(&["promote", &plain]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(err["error"]["code"], "NOT_A_SHADOW_RUN", "{err}");
    // An active run.
    let busy = env.start(&["--shadow=manual", "--", "sleep", "30"]);
    let (err, out) = env.json(&["promote", &busy]);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(err["error"]["code"], "RUN_ACTIVE", "{err}");
    env.run(&["stop", &busy]);
    env.wait(&busy);
}

/// A shadow run whose checkpoints `gc --prune-refs` deleted (its worktree removed first) has
/// nothing left to promote: a code of its own, not git's failure on the missing tree.
#[test]
fn a_run_whose_checkpoints_were_pruned_has_nothing_to_promote() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--shadow=manual", "--", "sh", "-c", "echo x > x.txt"]);
    let id = v["id"].as_str().unwrap().to_owned();
    let base = rev(&env.repo, &format!("agentctl/{id}"));
    env.json(&["gc", "--older-than", "0s"]);
    let (gc, _) = env.json(&["gc", "--prune-refs"]);
    assert_eq!(gc["pruned_refs"][0]["run"], id.as_str(), "{gc}");
    let (err, out) = env.json(&["promote", &id]);
    assert_eq!(err["error"]["code"], "CHECKPOINT_PRUNED", "{err}");
    assert_eq!(out.status.code(), Some(66));
    assert_eq!(
        rev(&env.repo, &format!("agentctl/{id}")),
        base,
        "the branch did not move"
    );
}

#[test]
fn a_branch_moved_since_the_run_started_is_not_overwritten() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--shadow=manual", "--", "sh", "-c", "echo x > x.txt"]);
    let id = v["id"].as_str().unwrap().to_owned();
    let branch = format!("agentctl/{id}");
    // Someone committed on the run's branch meanwhile.
    let side = env.dir.path().join("side");
    git(&env.repo, &["worktree", "add", "-q", side.to_str().unwrap(), &branch]);
    std::fs::write(side.join("theirs.txt"), "theirs\n").unwrap();
    git(&side, &["add", "-A"]);
    git(&side, &["commit", "-qm", "theirs"]);
    let theirs = rev(&env.repo, &branch);
    let (p, out) = env.json(&["promote", &id]);
    assert_eq!(out.status.code(), Some(65), "{p}");
    assert_eq!(p["promoted"], false);
    assert!(p["reasons"][0].as_str().unwrap().contains("moved"), "{p}");
    assert_eq!(rev(&env.repo, &branch), theirs, "their commit was dropped");
    // Without --json: the reasons on stderr, the stable code.
    let out = env.run(&["promote", &id]);
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("PROMOTION_REFUSED"), "{}", stderr(&out));
}

#[test]
fn an_unsandboxed_shadow_run_commits_on_its_shadow_branch_only() {
    let env = Env::new();
    let base = rev(&env.repo, "HEAD");
    let (v, _) = env.json(&[
        "run",
        "--sandbox=off",
        "--shadow=manual",
        "--gate",
        "test -f hello.txt",
        "--",
        "sh",
        "-c",
        WORK,
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "succeeded", "{v}");
    let branch = format!("agentctl/{id}");
    assert_eq!(
        rev(&env.repo, &branch),
        base,
        "the agent's commit reached the run's branch"
    );
    let (p, out) = env.json(&["promote", &id]);
    assert!(out.status.success(), "{p}");
    assert_eq!(p["commits"], 2);
    // `rm` takes the shadow branch with it once everything on it was promoted.
    let out = env.run(&["rm", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(git(&env.repo, &["branch", "--list", &format!("agentctl/_shadow/{id}")]).is_empty());
    // The run's branch, holding the promoted change, stays.
    assert!(!git(&env.repo, &["branch", "--list", &branch]).trim().is_empty());
}

#[test]
fn rm_keeps_a_shadow_branch_with_unpromoted_commits() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--shadow=manual", "--", "sh", "-c", WORK]);
    let id = v["id"].as_str().unwrap().to_owned();
    let (report, out) = env.json(&["rm", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shadow = format!("agentctl/_shadow/{id}");
    assert_eq!(
        git(&env.repo, &["log", "-1", "--format=%s", &shadow]).trim(),
        "add hello"
    );
    let removed = &report["removed"][0];
    assert_eq!(removed["shadow_branch"], shadow.as_str(), "{report}");
    assert_eq!(removed["shadow_unpromoted"], 1, "{report}");
    assert!(removed.get("shadow_branch_deleted").is_none(), "{report}");
}

#[test]
fn a_promotion_killed_midway_leaves_the_branch_and_the_next_one_succeeds() {
    let env = Env::new();
    let base = rev(&env.repo, "HEAD");
    // Unsandboxed, so the gate sees the host's file that says whether to hang.
    let flag = env.dir.path().join("fast");
    let gate = format!("test -f {} || sleep 20", flag.display());
    let (v, _) = env.json(&[
        "run",
        "--sandbox=off",
        "--shadow=manual",
        "--gate",
        &gate,
        "--",
        "sh",
        "-c",
        "echo x > x.txt",
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    let mut promote = env
        .cmd()
        .args(["promote", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.until(&id, Duration::from_secs(20), |_| {
        !events_of(&env, &id, "promotion_started").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    // One promotion of a run at a time.
    let (err, out) = env.json(&["promote", &id]);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert_eq!(err["error"]["code"], "RUN_ACTIVE", "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("being promoted"),
        "{err}"
    );
    promote.kill().unwrap();
    promote.wait().unwrap();
    let export = env.state.join("runs").join(&id).join("promote");
    assert!(export.exists(), "the export was not there mid-promotion");
    assert_eq!(rev(&env.repo, &format!("agentctl/{id}")), base);
    std::fs::write(&flag, "").unwrap();
    let (p, out) = env.json(&["promote", &id]);
    assert!(out.status.success(), "{p}\n{}", stderr(&out));
    assert_eq!(p["promoted"], true);
    assert_ne!(rev(&env.repo, &format!("agentctl/{id}")), base);
    assert!(!export.exists());
    // The first gate's `sleep` (its own process group, unsandboxed) ends by itself.
}

#[test]
fn promote_through_the_daemon_prints_what_it_prints_directly() {
    let env = Env::new();
    let (a, _) = env.json(&[
        "run",
        "--shadow=manual",
        "--gate",
        "true",
        "--",
        "sh",
        "-c",
        "echo a > a.txt",
    ]);
    let (b, _) = env.json(&[
        "run",
        "--shadow=manual",
        "--gate",
        "exit 4",
        "--",
        "sh",
        "-c",
        "echo b > b.txt",
    ]);
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let _d = Daemon::start(&env);
    let out = env
        .cmd()
        .env("AGENTCTL_LOG", "agentctl=debug")
        .args(["--json", "promote", &a])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("going through the daemon"), "{}", stderr(&out));
    assert!(out.status.success(), "{}", stderr(&out));
    let p: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(p["promoted"], true);
    // A refusal: the same code both ways.
    let through = env.run(&["promote", &b]);
    let direct = env.run(&["--direct", "promote", &b]);
    assert_eq!(through.status.code(), Some(65));
    assert_eq!(direct.status.code(), Some(65));
    assert_eq!(stdout(&through), stdout(&direct));
}

#[test]
fn an_auto_run_that_failed_is_not_promoted_but_can_be_by_hand() {
    let env = Env::new();
    let base = rev(&env.repo, "HEAD");
    let (v, _) = env.json(&[
        "run",
        "--gate",
        "true",
        "--",
        "sh",
        "-c",
        "echo half > half.txt; exit 2",
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "failed", "{v}");
    assert!(events_of(&env, &id, "promotion_started").is_empty());
    assert_eq!(env.show(&id)["shadow"]["status"], "not_attempted");
    assert_eq!(rev(&env.repo, &format!("agentctl/{id}")), base);
    // The user's call: promote it anyway.
    let (p, out) = env.json(&["promote", &id]);
    assert!(out.status.success(), "{p}");
    assert_eq!(git(&env.repo, &["show", &format!("agentctl/{id}:half.txt")]), "half\n");
    assert_eq!(env.show(&id)["shadow"]["status"], "promoted");
}

#[test]
fn each_gate_sees_the_change_as_committed_and_gate_output_is_bounded() {
    let env = Env::new();
    let base = rev(&env.repo, "HEAD");
    // The change's own check fails; the first gate (code the agent could control) rewrites it
    // in the export, locks a directory there and floods its output.
    let (v, _) = env.json(&[
        "run",
        "--gate",
        "echo 'exit 0' > check.sh; mkdir -p locked/in && chmod 000 locked; yes | head -c 20000000",
        "--gate",
        "sh check.sh",
        "--",
        "sh",
        "-c",
        "printf 'echo checking; exit 5\\n' > check.sh",
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "failed", "{v}");
    let gates = events_of(&env, &id, "gate_finished");
    assert_eq!(gates.len(), 2, "{gates:?}");
    assert_eq!(gates[0]["exit_code"], 0);
    assert!(gates[0]["output_tail"].as_str().unwrap().len() <= 4096);
    assert_eq!(
        gates[1]["exit_code"], 5,
        "the second gate ran on a rewritten export: {gates:?}"
    );
    assert_eq!(rev(&env.repo, &format!("agentctl/{id}")), base);
    // The locked export was removed all the same.
    assert!(!env.state.join("runs").join(&id).join("promote").exists());
}

#[test]
fn a_path_that_is_not_utf8_refuses_the_promotion() {
    let env = Env::new();
    let base = rev(&env.repo, "HEAD");
    let (v, _) = env.json(&[
        "run",
        "--shadow",
        "--",
        "sh",
        "-c",
        "printf '#!/bin/sh\\n' > \"$(printf 'run\\377.sh')\" && chmod +x \"$(printf 'run\\377.sh')\"",
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("UTF-8"), "{v}");
    assert_eq!(rev(&env.repo, &format!("agentctl/{id}")), base);
}

#[test]
fn a_later_checkpoint_is_promoted_on_top_of_the_earlier_promotion() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--shadow=manual", "--", "sh", "-c", "echo one > one.txt"]);
    let id = v["id"].as_str().unwrap().to_owned();
    let branch = format!("agentctl/{id}");
    let (p, out) = env.json(&["promote", &id]);
    assert!(out.status.success(), "{p}");
    let first = rev(&env.repo, &branch);
    // You finish the work in the worktree, record it, and promote again.
    let wt = PathBuf::from(v["worktree"].as_str().unwrap());
    std::fs::write(wt.join("two.txt"), "two\n").unwrap();
    let out = env.run(&["checkpoint", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (p, out) = env.json(&["promote", &id]);
    assert!(out.status.success(), "{p}");
    assert_eq!(p["already"], Value::Null, "{p}");
    let second = rev(&env.repo, &branch);
    assert_eq!(rev(&env.repo, &format!("{second}^")), first);
    assert_eq!(git(&env.repo, &["show", &format!("{branch}:two.txt")]), "two\n");
}

/// A gate runs code the agent wrote (its tests), so it takes on the run's resource limits: in
/// the supervisor's promotion and in `agentctl promote`, a gate that forks past `--pids` is
/// refused the forks (the same gate without limits passes), and no cgroup is left behind.
#[test]
fn gates_take_on_the_runs_resource_limits() {
    if crate::limits::cgroups().is_none() {
        eprintln!("skipped: no cgroup backend on this host");
        return;
    }
    let env = env_ignoring_tmp();
    let gate = r#"python3 -c '
import subprocess, sys
procs = []
for i in range(80):
    try:
        procs.append(subprocess.Popen(["sleep", "5"]))
    except OSError as e:
        print("fork refused after", len(procs), "processes")
        break
for p in procs:
    p.kill()
sys.exit(0 if len(procs) == 80 else 7)
'"#;
    // Without limits the gate passes: the forks are what a limit refuses.
    let (free, _) = env.json(&["run", "--gate", gate, "--", "sh", "-c", WORK]);
    assert_eq!(free["state"], "succeeded", "{free}");
    // In the supervisor's promotion.
    let (v, _) = env.json(&["run", "--pids", "40", "--gate", gate, "--", "sh", "-c", WORK]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "failed", "{v}");
    let gates = events_of(&env, &id, "gate_finished");
    assert_eq!(gates[0]["exit_code"], 7, "{gates:?}");
    assert!(
        gates[0]["output_tail"].as_str().unwrap().contains("fork refused"),
        "{gates:?}"
    );
    // In `agentctl promote`.
    let (v, _) = env.json(&[
        "run",
        "--shadow=manual",
        "--pids",
        "40",
        "--gate",
        gate,
        "--",
        "sh",
        "-c",
        WORK,
    ]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "succeeded", "{v}");
    let (p, out) = env.json(&["promote", &id]);
    assert_eq!(out.status.code(), Some(65), "{p}");
    let gates = events_of(&env, &id, "gate_finished");
    assert_eq!(gates[0]["exit_code"], 7, "{gates:?}");
    let left: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/pids")
        .into_iter()
        .chain(std::fs::read_dir("/sys/fs/cgroup"))
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&id))
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}
