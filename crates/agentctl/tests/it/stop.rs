//! Stopping runs: escalation order, process-tree cleanup (including setsid'd grandchildren and
//! processes that ignore signals), and supervisors that die.

use std::time::Duration;

use crate::harness::{Env, process_with, wait_dead};

#[test]
fn stop_escalates_and_leaves_nothing_behind() {
    let env = Env::new();
    let marker = format!("stubborn-{}-", std::process::id());
    let script = env.script(
        "stubborn.sh",
        &format!(
            "#!/bin/bash\ntrap '' INT TERM\nsetsid bash -c \"trap '' INT TERM; exec -a {marker}-grandchild sleep 300\" &\n\
             (trap '' INT TERM; exec -a {marker}-child sleep 300) &\necho ready\nwhile true; do sleep 0.1; done\n"
        ),
    );
    let id = env.start(&["--grace", "300ms", "--", &script]);
    env.until(&id, Duration::from_secs(10), |v| v["state"] == "running");
    let start = std::time::Instant::now();
    while !(process_with(&format!("{marker}-grandchild")) && process_with(&format!("{marker}-child"))) {
        assert!(start.elapsed() < Duration::from_secs(10), "helpers never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (v, out) = env.json(&["stop", "--grace", "300ms", &id]);
    assert!(out.status.success());
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(!process_with(&marker), "a process of the run survived the stop");
    let signals: Vec<String> = env
        .events(&id)
        .iter()
        .filter(|e| e["data"]["type"] == "signal_sent")
        .map(|e| e["data"]["signal"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(signals, ["SIGINT", "SIGTERM", "SIGKILL"]);
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("stopped by user"), "{reason}");
}

#[test]
fn a_cooperative_agent_stops_at_sigint() {
    let env = Env::new();
    let script = env.script(
        "polite.sh",
        "#!/bin/sh\ntrap 'echo bye; exit 0' INT\necho hi\nwhile true; do sleep 0.1; done\n",
    );
    let id = env.start(&["--", &script]);
    env.until(&id, Duration::from_secs(10), |v| v["state"] == "running");
    std::thread::sleep(Duration::from_millis(200));
    let (v, _) = env.json(&["stop", &id]);
    assert_eq!(v["state"], "cancelled");
    let signals: Vec<_> = env
        .events(&id)
        .into_iter()
        .filter(|e| e["data"]["type"] == "signal_sent")
        .collect();
    assert_eq!(signals.len(), 1, "SIGINT was enough: {signals:?}");
    assert!(env.logs(&id).contains("bye"));
}

#[test]
fn processes_left_by_a_finished_agent_are_cleaned_up() {
    let env = Env::new();
    let marker = format!("leftover-{}-", std::process::id());
    let (v, _) = env.json(&[
        "run",
        "--grace",
        "300ms",
        "--",
        "sh",
        "-c",
        &format!("setsid bash -c 'exec -a {marker} sleep 300' > /dev/null 2>&1 & echo started"),
    ]);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(!process_with(&marker), "a daemonised grandchild outlived the run");
}

#[test]
fn killed_supervisor_shows_as_lost_not_running() {
    let env = Env::new();
    // Suffixed, so that a marker made the same way by another test process (`orphan-{pid}7…`)
    // does not contain it. Likewise below.
    let marker = format!("orphan-{}-agent", std::process::id());
    let id = env.start(&["--", "bash", "-c", &format!("exec -a {marker} sleep 300")]);
    let v = env.until(&id, Duration::from_secs(10), |v| v["state"] == "running");
    let sup = v["supervisor_pid"].as_u64().unwrap() as i32;
    // What a supervisor that failed to record would have logged last (e.g. a full disk).
    use std::io::Write;
    let log = env.state.join("runs").join(&id).join("supervisor.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    writeln!(
        f,
        r#"{{"level":"ERROR","message":"cannot record event","error":"No space left on device"}}"#
    )
    .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_dead(sup);
    let run = listed(&env, &id);
    assert_eq!(run["state"], "lost", "{run}");
    let lost = env
        .events(&id)
        .into_iter()
        .find(|e| e["data"]["type"] == "lost")
        .unwrap();
    assert_eq!(lost["data"]["detected_by"], "list");
    let reason = lost["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("No space left on device"),
        "the lost reason carries the last error: {reason}"
    );
    // The agent the dead supervisor left behind is ours (pid + start time match): it is killed.
    let start = std::time::Instant::now();
    while process_with(&marker) {
        assert!(start.elapsed() < Duration::from_secs(5), "orphaned agent still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    // `wait` on a lost run returns at once with exit 125.
    assert_eq!(env.run(&["wait", &id]).status.code(), Some(125));
}

#[test]
fn a_lost_runs_process_group_is_killed_even_once_its_leader_is_gone() {
    // A sandbox's outer bubblewrap (the group's leader) dies with its supervisor; the inner
    // one may outlive it when that happens as it starts. Here: an unsandboxed leader killed
    // right after its supervisor, leaving a member of its group.
    let env = Env::new();
    let marker = format!("straggler-{}-", std::process::id());
    let id = env.start(&[
        "--sandbox",
        "off",
        "--",
        "bash",
        "-c",
        &format!("(exec -a {marker}-member sleep 300) & exec -a {marker}-leader sleep 300"),
    ]);
    let v = env.until(&id, Duration::from_secs(10), |v| v["state"] == "running");
    let sup = v["supervisor_pid"].as_u64().unwrap() as i32;
    let start = std::time::Instant::now();
    while !(process_with(&format!("{marker}-member")) && process_with(&format!("{marker}-leader"))) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent's processes never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let leader = env
        .events(&id)
        .into_iter()
        .find(|e| e["data"]["type"] == "started")
        .expect("started event")["data"]["pid"]
        .as_u64()
        .unwrap() as i32;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(leader), Signal::SIGKILL).unwrap();
    wait_dead(sup);
    wait_dead(leader);
    let run = listed(&env, &id);
    assert_eq!(run["state"], "lost", "{run}");
    let start = std::time::Instant::now();
    while process_with(&format!("{marker}-member")) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the group's surviving member was left running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stopping_a_finished_run_is_harmless() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--", "true"]);
    let id = v["id"].as_str().unwrap();
    let (v, out) = env.json(&["stop", id]);
    assert!(out.status.success());
    assert_eq!(v["state"], "succeeded");
}

#[test]
fn hooks_cannot_leave_processes_behind() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let marker = format!("hook-leftover-{}-", std::process::id());
    let hooks = env.repo.join(".agentctl/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let post = hooks.join("post-run");
    // Detached from the hook's session and output: only the supervisor's tree still holds it.
    std::fs::write(
        &post,
        format!("#!/bin/bash\nsetsid bash -c 'exec -a {marker} sleep 300' </dev/null >/dev/null 2>&1 &\nexit 0\n"),
    )
    .unwrap();
    std::fs::set_permissions(&post, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (v, _) = env.json(&["run", "--grace", "300ms", "--", "true"]);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(
        !process_with(&marker),
        "the post-run hook's background process outlived the run"
    );
    // A failing pre-run hook ends the run before any agent: what it started ends too.
    std::fs::remove_file(&post).unwrap();
    let pre = hooks.join("pre-run");
    std::fs::write(
        &pre,
        format!("#!/bin/bash\nsetsid bash -c 'exec -a {marker}-pre sleep 300' </dev/null >/dev/null 2>&1 &\nexit 3\n"),
    )
    .unwrap();
    std::fs::set_permissions(&pre, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (v, _) = env.json(&["run", "--", "true"]);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        !process_with(&format!("{marker}-pre")),
        "the pre-run hook's background process outlived the run"
    );
}

#[test]
fn a_stop_during_the_pre_run_hook_ends_the_hook_and_cancels_the_run() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let hooks = env.repo.join(".agentctl/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let pre = hooks.join("pre-run");
    std::fs::write(&pre, "#!/bin/sh\nsleep 300\n").unwrap();
    std::fs::set_permissions(&pre, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = env.start(&["--", "touch", "agent-ran"]);
    env.until(&id, Duration::from_secs(10), |v| v["state"] == "preparing");
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let (v, _) = env.json(&["stop", &id]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stop waited for the hook"
    );
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["reason"], "stopped during the pre-run hook");
    let wt = std::path::PathBuf::from(v["worktree"].as_str().unwrap());
    assert!(!wt.join("agent-ran").exists());
}

#[test]
fn a_run_started_inside_a_run_ends_with_it_and_says_why() {
    let env = Env::new();
    // The outer agent starts an inner run (detached) and exits at once; the inner run is part
    // of the outer run's process tree, so it ends with it — and its record says so.
    let bin = crate::harness::bin();
    let inner = format!(
        "{} --json run --sandbox off --detach --id inner -- sleep 300 > /dev/null",
        bin.display()
    );
    // Unsandboxed: a sandboxed agent cannot reach agentctl's state to start a run.
    let (v, _) = env.json(&["run", "--sandbox", "off", "--grace", "3s", "--", "sh", "-c", &inner]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let inner = env.wait("inner");
    let reason = inner["reason"].as_str().unwrap();
    // A supervisor signalled while it is still starting (before its handlers are in place)
    // dies without a word: the run is then found lost, never left running. Seen on a loaded
    // machine; otherwise it is cancelled and says why.
    if inner["state"] == "lost" {
        assert!(reason.contains("supervisor"), "{inner}");
        return;
    }
    assert_eq!(inner["state"], "cancelled", "{inner}");
    assert!(reason.contains("the run that started this one ended"), "{inner}");
}

/// `stop` returns once the outcome is recorded, while the supervisor may still hold the run's
/// log for a moment as it exits: an `rm` right then waits that moment out instead of failing.
/// (The holder here is `flock(1)` on the log, standing in for the exiting supervisor.)
#[test]
fn rm_waits_for_a_finishing_supervisor_to_let_go_of_the_log() {
    let env = Env::new();
    let id = env.start(&["--", "sh", "-c", "echo changed > a.txt"]);
    env.wait(&id);
    let log = env.state.join("runs").join(&id).join("events.jsonl");
    let mut holder = std::process::Command::new("flock")
        .args(["-x", log.to_str().unwrap(), "sleep", "1"])
        .spawn()
        .expect("flock(1) runs");
    // Until the holder has the lock (`flock -n` fails while it does).
    let held = || {
        !std::process::Command::new("flock")
            .args(["-n", log.to_str().unwrap(), "true"])
            .status()
            .unwrap()
            .success()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !held() {
        assert!(std::time::Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = env.run(&["rm", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // rm could only go on once the holder had let go, that is once it had ended.
    assert!(holder.try_wait().unwrap().is_some(), "rm did not wait for the log");
    holder.wait().unwrap();
}

/// The run `id` as `ls` lists it (listing is what notices a lost supervisor here).
fn listed(env: &Env, id: &str) -> serde_json::Value {
    let (list, _) = env.json(&["ls"]);
    list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap()
        .clone()
}
