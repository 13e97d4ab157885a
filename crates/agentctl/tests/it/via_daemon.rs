//! The CLI through the daemon: with `agentctl serve` running for the state dir, commands go
//! through its API — and print exactly what they print with `--direct`, with the same exit codes
//! and errors. With no daemon answering (none started, or one killed with -9 leaving its socket),
//! they work directly.

use std::process::Output;

use crate::api::Daemon;
use crate::harness::{Env, stderr, stdout};

/// Runs `args` with `AGENTCTL_LOG=debug` and says whether it went through the daemon.
fn traced(env: &Env, args: &[&str]) -> (Output, bool) {
    let out = env
        .cmd()
        .env("AGENTCTL_LOG", "agentctl=debug")
        .args(args)
        .output()
        .unwrap();
    let via = stderr(&out).contains("going through the daemon");
    (out, via)
}

/// The same command through the daemon and directly: same stdout, same status.
fn same_both_ways(env: &Env, args: &[&str]) -> String {
    let (through, via) = traced(env, args);
    assert!(via, "{args:?} did not go through the daemon: {}", stderr(&through));
    let mut direct_args = vec!["--direct"];
    direct_args.extend_from_slice(args);
    let (direct, via) = traced(env, &direct_args);
    assert!(!via, "--direct went through the daemon");
    assert_eq!(stdout(&through), stdout(&direct), "stdout of {args:?}");
    assert_eq!(through.status.code(), direct.status.code(), "status of {args:?}");
    stdout(&through)
}

#[test]
fn every_run_command_prints_the_same_through_the_daemon_as_directly() {
    let env = Env::new();
    let id = env.start(&[
        "--label",
        "k=v",
        "--",
        "sh",
        "-c",
        "echo hi; echo oops >&2; echo x > new.txt; exit 3",
    ]);
    env.wait(&id);
    let short = &id[..12];
    let _d = Daemon::start(&env);
    for args in [
        vec!["ls"],
        vec!["--json", "ls"],
        vec!["--json", "ls", "--label", "k=v", "--state", "failed"],
        vec!["show", short],
        vec!["--json", "show", "--events", &id],
        vec!["logs", &id],
        vec!["--json", "logs", short],
        vec!["logs", "-f", &id],
        vec!["wait", &id],
        vec!["--json", "wait", &id],
        vec!["checkpoints", &id],
        vec!["--json", "checkpoints", &id],
        vec!["diff", &id],
        vec!["diff", "--stat", &id],
        vec!["--json", "diff", &id, "--from", "base", "--to", "last"],
        vec!["agents", "--no-version"],
        vec!["--json", "agents", "--no-version"],
        vec!["gc", "--dry-run", "--older-than", "0s"],
        vec!["--json", "gc", "--dry-run", "--older-than", "0s", "--prune-refs"],
        vec!["reconcile", "--dry-run"],
        vec!["--json", "reconcile", "--dry-run"],
    ] {
        same_both_ways(&env, &args);
    }
    let logs = same_both_ways(&env, &["logs", &id]);
    assert_eq!(logs, "hi\n");
    // Errors: the same code, message and exit status.
    for args in [
        vec!["show", "nope"],
        vec!["--json", "show", "nope"],
        vec!["rollback", &id, "99"],
    ] {
        let (through, _) = traced(&env, &args);
        let mut direct_args = vec!["--direct"];
        direct_args.extend_from_slice(&args);
        let direct = env.run(&direct_args);
        assert_eq!(stdout(&through), stdout(&direct), "{args:?}");
        assert_eq!(through.status.code(), direct.status.code(), "{args:?}");
        let first_line = |o: &Output| stderr(o).lines().find(|l| l.starts_with("error")).map(str::to_owned);
        assert_eq!(first_line(&through), first_line(&direct), "{args:?}");
    }
}

#[test]
fn commands_that_change_runs_work_through_the_daemon() {
    let env = Env::new();
    let _d = Daemon::start(&env);
    // A run to follow: `logs -f` streams it to its end through the daemon.
    let id = env.start(&["--", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"]);
    let (out, via) = traced(&env, &["logs", "-f", &id]);
    assert!(via && out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n2\n3\n");
    // `run` follows through the daemon too, and exits with the agent's outcome.
    let (out, via) = traced(&env, &["run", "--", "sh", "-c", "echo ran; exit 4"]);
    assert!(via, "{}", stderr(&out));
    assert_eq!((stdout(&out).as_str(), out.status.code()), ("ran\n", Some(4)));
    // Checkpoint, rollback, stop and rm.
    let id = env.start(&["--", "sh", "-c", "echo a > a.txt; sleep 30"]);
    env.until(&id, std::time::Duration::from_secs(20), |v| v["state"] == "running");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (out, via) = traced(&env, &["--json", "checkpoint", &id, "-m", "by hand"]);
    assert!(via && out.status.success(), "{}", stderr(&out));
    let cp: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(cp["message"], "by hand");
    let (out, via) = traced(&env, &["rollback", &id, "base"]);
    assert!(via && out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("of run {id} to checkpoint 0")),
        "{}",
        stdout(&out)
    );
    let (out, via) = traced(&env, &["stop", "--grace", "200ms", &id]);
    assert!(via && out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("{id} cancelled"));
    let (out, via) = traced(&env, &["rm", &id]);
    assert!(via && out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("removed run {id}")),
        "{}",
        stdout(&out)
    );
    let (out, _) = traced(&env, &["show", &id]);
    assert_eq!(out.status.code(), Some(66), "RUN_NOT_FOUND: {}", stderr(&out));
    // gc removes the finished runs' worktrees through the daemon.
    let (out, via) = traced(&env, &["--json", "gc", "--older-than", "0s"]);
    assert!(via && out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let removed = report["runs"].as_array().unwrap();
    assert!(
        !removed.is_empty() && removed.iter().all(|r| r["action"] == "removed"),
        "{report}"
    );
    let (out, via) = traced(&env, &["--json", "reconcile"]);
    assert!(via && out.status.success(), "{}", stderr(&out));
}

#[test]
fn with_no_daemon_answering_commands_work_directly() {
    let env = Env::new();
    let id = env.start(&["--", "sh", "-c", "echo solo"]);
    env.wait(&id);
    let (out, via) = traced(&env, &["logs", &id]);
    assert!(!via && out.status.success());
    // A daemon killed with -9 leaves its socket and endpoint behind: nobody answers there.
    let mut d = Daemon::start(&env);
    let mut child = d.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.state.join("daemon/api.sock").exists());
    let (out, via) = traced(&env, &["logs", &id]);
    assert!(!via, "{}", stderr(&out));
    assert_eq!((stdout(&out).as_str(), out.status.code()), ("solo\n", Some(0)));
}
