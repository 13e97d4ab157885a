//! Hibernating supervisors: a quiet run's supervisor replaces itself with the small keeper
//! (same pid, same lock) and is exec'd again for whatever happens — output, a stop, a signal,
//! a deadline, a change in the worktree, a request. Real runs (sandboxed unless said), with a
//! short quiet period (`AGENTCTL_HIBERNATE_AFTER`).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// The quiet period the tests use.
const QUIET_MS: &str = "300";

/// Starts a detached run with the short quiet period.
fn quick(env: &Env, args: &[&str]) -> String {
    env.start_with(&[("AGENTCTL_HIBERNATE_AFTER", QUIET_MS)], args)
}

fn comm(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Waits until the run's supervisor is hibernating (it runs the keeper); returns its pid, which
/// is the pid the run recorded.
fn wait_hibernating(env: &Env, id: &str) -> u64 {
    let v = env.until(id, Duration::from_secs(20), |v| v["state"] == "running");
    let pid = v["supervisor_pid"].as_u64().expect("supervisor pid");
    let start = Instant::now();
    while comm(pid) != "agentctl-keeper" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the supervisor of {id} never hibernated: {}",
            supervisor_log(env, id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pid
}

fn supervisor_log(env: &Env, id: &str) -> String {
    std::fs::read_to_string(env.state.join("runs").join(id).join("supervisor.log")).unwrap_or_default()
}

/// Why the supervisor was woken, each time, in order.
fn wakes(env: &Env, id: &str) -> Vec<String> {
    supervisor_log(env, id)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "supervisor woke")
        .map(|v| v["woke_for"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The run's log has every sequence number once, in order.
fn assert_seq_contiguous(env: &Env, id: &str) {
    let events = env.events(id);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "sequence numbers of {id}");
}

#[test]
fn a_quiet_run_hibernates_and_wakes_for_its_output() {
    let env = Env::new();
    // The last line is not the agent's last act: output and exit at once wake the keeper for
    // either (CI saw ["output", "signal"]).
    let id = quick(
        &env,
        &[
            "--",
            "sh",
            "-c",
            "echo one; sleep 3; echo two; sleep 3; echo three; sleep 1",
        ],
    );
    let pid = wait_hibernating(&env, &id);
    // Hibernating is running, to everyone.
    let (ls, _) = env.json(&["ls"]);
    assert_eq!(ls["runs"][0]["state"], "running", "{ls}");
    let v = env.wait(&id);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(
        v["supervisor_pid"].as_u64(),
        Some(pid),
        "one supervisor process all along"
    );
    assert_eq!(env.logs(&id), "one\ntwo\nthree\n");
    let woke = wakes(&env, &id);
    assert!(woke.iter().filter(|w| *w == "output").count() >= 2, "{woke:?}");
    assert_seq_contiguous(&env, &id);
}

#[test]
fn a_hibernating_run_stops_on_request_and_on_a_signal() {
    let env = Env::new();
    let marker = format!("hib-stop-{}-x", std::process::id());
    let script = format!("exec -a {marker} sleep 120");
    let by_request = quick(&env, &["--", "bash", "-c", &script]);
    let by_signal = quick(&env, &["--", "bash", "-c", &script]);
    wait_hibernating(&env, &by_request);
    let sup = wait_hibernating(&env, &by_signal);

    let out = env.run(&["stop", &by_request]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = env.wait(&by_request);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("stopped by user"), "{v}");
    assert_eq!(wakes(&env, &by_request).last().map(String::as_str), Some("control"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let v = env.wait(&by_signal);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(wakes(&env, &by_signal).last().map(String::as_str), Some("signal"));
    // The agents got the stop signals (not only SIGKILL): their signal mask was never ours.
    for id in [&by_request, &by_signal] {
        let sent: Vec<Value> = events_of(&env, id, "signal_sent");
        assert_eq!(sent.first().map(|e| e["signal"].clone()), Some("SIGINT".into()));
        assert_eq!(sent.len(), 1, "the agent ended at SIGINT: {sent:?}");
    }
    assert!(!process_with(&marker));
}

#[test]
fn a_hibernating_runs_timeout_wakes_it_on_time() {
    let env = Env::new();
    let started = Instant::now();
    let id = quick(&env, &["--timeout", "6s", "--", "sleep", "60"]);
    wait_hibernating(&env, &id);
    let v = env.wait(&id);
    assert_eq!(v["state"], "timed_out", "{v}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(wakes(&env, &id).last().map(String::as_str), Some("deadline"));
}

#[test]
fn changes_made_while_hibernating_are_recorded_and_checkpointed() {
    let env = Env::new();
    let id = quick(
        &env,
        &[
            "--checkpoint-interval",
            "1s",
            "--",
            "sh",
            "-c",
            "sleep 4; mkdir -p d/e; echo x > d/e/f.txt; echo y > top.txt; sleep 120",
        ],
    );
    wait_hibernating(&env, &id);
    // Woken by the change, it records and checkpoints it, then hibernates again.
    let v = env.until(&id, Duration::from_secs(30), |_| {
        wakes(&env, &id).iter().any(|w| w == "files")
            && events_of(&env, &id, "checkpointed")
                .iter()
                .any(|e| e["trigger"] == "watch")
    });
    assert_eq!(v["state"], "running");
    let changed: Vec<String> = events_of(&env, &id, "files_changed")
        .iter()
        .flat_map(|e| e["paths"].as_array().unwrap().clone())
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(changed.contains(&"top.txt".to_owned()), "{changed:?}");
    assert!(changed.iter().any(|p| p == "d" || p.starts_with("d/")), "{changed:?}");
    let (d, _) = env.json(&["diff", &id, "--from", "0", "--to", "1"]);
    let files: Vec<&str> = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["d/e/f.txt", "top.txt"], "{d}");
    wait_hibernating(&env, &id);
    env.run(&["stop", &id]);
    env.wait(&id);
    assert_seq_contiguous(&env, &id);
}

#[test]
fn a_checkpoint_request_is_answered_by_a_hibernating_run() {
    let env = Env::new();
    let id = quick(&env, &["--no-watch", "--", "sh", "-c", "echo z > z.txt; sleep 120"]);
    wait_hibernating(&env, &id);
    let (v, out) = env.json(&["checkpoint", &id, "-m", "asleep"]);
    assert!(out.status.success(), "{v} {}", stderr(&out));
    assert_eq!(v["n"], 1, "{v}");
    assert_eq!(wakes(&env, &id).last().map(String::as_str), Some("control"));
    let (d, _) = env.json(&["diff", &id, "--from", "0", "--to", "1"]);
    assert_eq!(d["files"][0]["path"], "z.txt", "{d}");
    env.run(&["stop", &id]);
    assert_eq!(env.wait(&id)["state"], "cancelled");
}

#[test]
fn the_keeper_takes_the_samples_and_the_agents_exit_wakes_the_supervisor() {
    let env = Env::new();
    let id = quick(&env, &["--", "sleep", "13"]);
    let pid = wait_hibernating(&env, &id);
    let v = env.wait(&id);
    assert_eq!(v["state"], "succeeded", "{v}");
    // Samples every 10 s: one at least was the keeper's, between the supervisor's last
    // `hibernating` and the wake for the agent's exit.
    let samples = events_of(&env, &id, "resource_sample");
    assert!(samples.len() >= 2, "{samples:?}");
    // The agent's end: its pipes hang up as it exits, then SIGCHLD comes; either wakes it.
    let last = wakes(&env, &id).last().cloned().unwrap_or_default();
    assert!(last == "signal" || last == "output", "{last}");
    assert_eq!(v["supervisor_pid"].as_u64(), Some(pid));
    assert_seq_contiguous(&env, &id);
}

#[test]
fn a_killed_keeper_leaves_a_lost_run_and_no_agent() {
    let env = Env::new();
    let marker = format!("hib-lost-{}-x", std::process::id());
    let id = quick(&env, &["--", "bash", "-c", &format!("exec -a {marker} sleep 120")]);
    let pid = wait_hibernating(&env, &id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_dead(pid as i32);
    let v = env.until(&id, Duration::from_secs(10), |v| v["state"] == "lost");
    assert_eq!(v["state"], "lost");
    let start = Instant::now();
    while process_with(&marker) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent outlived its lost run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reconcile_counts_a_hibernating_supervisor_as_the_runs() {
    let env = Env::new();
    let id = quick(&env, &["--", "sleep", "120"]);
    wait_hibernating(&env, &id);
    let (v, out) = env.json(&["reconcile", "--dry-run"]);
    assert!(out.status.success(), "{v}");
    let about_it: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.to_string().contains(&id))
        .collect();
    assert!(about_it.is_empty(), "{about_it:?}");
    env.run(&["stop", &id]);
    env.wait(&id);
}

#[test]
fn runs_that_cannot_hibernate_stay_awake() {
    let env = Env::new();
    let off = env.start_with(&[("AGENTCTL_HIBERNATE_AFTER", "off")], &["--", "sleep", "120"]);
    // Resource limits are enforced by the supervisor, awake.
    let limited = quick(&env, &["--pids", "64", "--", "sleep", "120"]);
    for id in [&off, &limited] {
        env.until(id, Duration::from_secs(20), |v| v["state"] == "running");
    }
    std::thread::sleep(Duration::from_secs(3));
    for id in [&off, &limited] {
        let pid = env.show(id)["supervisor_pid"].as_u64().unwrap();
        assert_eq!(comm(pid), "agentctl", "{id}");
        env.run(&["stop", id]);
        env.wait(id);
    }
}

#[test]
fn a_run_that_keeps_waking_waits_longer_before_it_hibernates_again() {
    let env = Env::new();
    // A line a second: with a 300 ms quiet period it would be exec'd back and forth every second.
    let id = quick(
        &env,
        &[
            "--",
            "sh",
            "-c",
            "sleep 2; for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 1; done",
        ],
    );
    let v = env.wait(&id);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(env.logs(&id), "1\n2\n3\n4\n5\n6\n7\n8\n");
    let output_wakes = wakes(&env, &id).iter().filter(|w| *w == "output").count();
    // 300 ms, 600 ms, 1.2 s: awake from the third wake on.
    assert!((1..=3).contains(&output_wakes), "{output_wakes} wakes for output");
}

#[test]
fn a_path_policy_stop_is_enforced_for_a_change_made_while_hibernating() {
    let env = Env::new();
    let policy = env.dir.path().join("policy.toml");
    std::fs::write(&policy, "forbidden = [\"secrets/**\"]\non_violation = \"stop\"\n").unwrap();
    let id = quick(
        &env,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "sleep 4; mkdir -p secrets && echo key > secrets/id; sleep 60",
        ],
    );
    wait_hibernating(&env, &id);
    let started = Instant::now();
    let v = env.wait(&id);
    assert_eq!(v["state"], "failed", "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("path policy") && reason.contains("secrets/"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(wakes(&env, &id).iter().any(|w| w == "files"), "{:?}", wakes(&env, &id));
}
