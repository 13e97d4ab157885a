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
    // The agent gets the caller's environment, not the daemon's, and none of it is recorded.
    let out = env
        .cmd()
        .env("AGENTCTL_LOG", "agentctl=debug")
        .env("CALLER_ONLY_SECRET", "s3cr3t-value")
        // Unsandboxed: a sandboxed agent gets only the variables it declares (sandbox.rs).
        .args([
            "run",
            "--sandbox",
            "off",
            "--",
            "sh",
            "-c",
            "echo \"[$CALLER_ONLY_SECRET]\"",
        ])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("going through the daemon"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[s3cr3t-value]\n");
    let (list, _) = env.json(&["ls"]);
    let newest = list["runs"][0]["id"].as_str().unwrap().to_owned();
    let recorded = std::fs::read_to_string(env.state.join("runs").join(&newest).join("events.jsonl")).unwrap();
    assert!(
        !recorded.contains("s3cr3t-value"),
        "the caller's environment is never recorded"
    );
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

#[test]
fn ctrl_c_stops_a_run_followed_through_the_daemon_as_it_does_directly() {
    let env = Env::new();
    let _d = Daemon::start(&env);
    let agent = "echo up; trap 'exit 5' INT; while :; do sleep 0.1; done";
    let mut codes = Vec::new();
    for direct in [false, true] {
        let mut cmd = env.cmd();
        if direct {
            cmd.arg("--direct");
        }
        let child = cmd
            .env("AGENTCTL_LOG", "agentctl=debug")
            .args(["run", "--grace", "1s", "--", "sh", "-c", agent])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the agent's first line, then Ctrl-C the CLI.
        let started = std::time::Instant::now();
        loop {
            let (list, _) = env.json(&["--direct", "ls", "--state", "running"]);
            if list["runs"].as_array().is_some_and(|r| !r.is_empty()) {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "the run never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            stderr(&out).contains("going through the daemon"),
            !direct,
            "{}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "up\n");
        codes.push(out.status.code());
        let (list, _) = env.json(&["--direct", "ls"]);
        assert_eq!(list["runs"][0]["state"], "cancelled", "{list}");
    }
    assert_eq!(codes[0], codes[1], "the same exit status either way");
    assert_eq!(codes[0], Some(130));
}

#[test]
fn a_daemon_stopping_ends_its_streams_and_a_follower_carries_on_directly() {
    let env = Env::new();
    let mut d = Daemon::start(&env);
    // The agent waits for a file in its worktree (all it sees).
    let script = "echo before; while [ ! -e gate ]; do sleep 0.05; done; echo after";
    let id = env.start(&["--", "sh", "-c", script]);
    let gate = std::path::PathBuf::from(env.show(&id)["worktree"].as_str().unwrap()).join("gate");
    let follower = env
        .cmd()
        .env("AGENTCTL_LOG", "agentctl=debug")
        .args(["logs", "-f", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    // SIGTERM: the open stream does not hold the daemon up.
    let asked = std::time::Instant::now();
    let (status, _) = d.terminate();
    assert!(status.success());
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(3),
        "the daemon took {:?} to stop",
        asked.elapsed()
    );
    // The follower goes on without it, from where the stream left off.
    std::fs::write(&gate, b"").unwrap();
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("going through the daemon"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "before\nafter\n", "nothing lost, nothing twice");
}

#[test]
fn a_launch_environment_is_refused_over_tcp() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let mut body = crate::api::create_body(&env, "true");
    body["launch_env"] = serde_json::json!({"LD_PRELOAD": "/tmp/x.so"});
    let (status, v) = d.call("POST", "/v1/runs", Some(&body));
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{v}"
    );
    let (_, list) = d.call("GET", "/v1/runs", None);
    assert_eq!(list["runs"].as_array().unwrap().len(), 0, "no run made");
}
