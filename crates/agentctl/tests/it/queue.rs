//! `max_concurrent_runs`: runs beyond the cap wait `pending` (with a `queued` event), start in
//! the order they were created, and can be stopped while they wait.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Env;

fn capped(limit: u32) -> Env {
    let env = Env::new();
    let config = env.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), format!("max_concurrent_runs = {limit}\n")).unwrap();
    env
}

fn event<'a>(events: &'a [Value], kind: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["data"]["type"] == kind)
}

#[test]
fn runs_over_the_cap_wait_pending_and_start_first_created_first() {
    let env = capped(1);
    let ids: Vec<String> = (0..3)
        .map(|i| env.start(&["--id", &format!("q{i}"), "--", "sh", "-c", "sleep 0.5"]))
        .collect();
    // Never more than one active at a time, while they all go through.
    let started = Instant::now();
    loop {
        let (ls, _) = env.json(&["ls"]);
        let runs = ls["runs"].as_array().unwrap();
        let active = runs
            .iter()
            .filter(|r| matches!(r["state"].as_str(), Some("preparing" | "running" | "stopping")))
            .count();
        assert!(active <= 1, "{ls}");
        if runs.iter().all(|r| r["state"] == "succeeded") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{ls}");
        std::thread::sleep(Duration::from_millis(30));
    }
    let events: Vec<Vec<Value>> = ids.iter().map(|id| env.events(id)).collect();
    let start_ts: Vec<String> = events
        .iter()
        .map(|e| event(e, "started").unwrap()["ts"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = start_ts.clone();
    sorted.sort();
    assert_eq!(start_ts, sorted, "started in the order they were created");
    assert!(event(&events[0], "queued").is_none(), "the first one never waited");
    let q = event(&events[2], "queued").expect("the third one waited");
    assert_eq!(q["data"]["limit"], 1);
    // `queued` comes before `preparing`: the run was pending while it waited.
    let kinds: Vec<&str> = events[2].iter().map(|e| e["data"]["type"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..3], ["created", "queued", "preparing"], "{kinds:?}");
}

#[test]
fn a_queued_run_can_be_stopped_and_a_dead_waiter_does_not_block_the_queue() {
    let env = capped(1);
    let first = env.start(&["--id", "busy", "--", "sh", "-c", "sleep 2"]);
    env.until(&first, Duration::from_secs(10), |v| v["state"] == "running");
    let waiting = env.start(&["--id", "waiting", "--", "true"]);
    let doomed = env.start(&["--id", "doomed", "--", "true"]);
    let last = env.start(&["--id", "last", "--", "true"]);
    for id in [&waiting, &doomed, &last] {
        let started = Instant::now();
        while event(&env.events(id), "queued").is_none() {
            assert!(started.elapsed() < Duration::from_secs(10), "{id} never queued");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(env.show(id)["state"], "pending");
    }
    // Stopped while queued: cancelled, never prepared.
    let (_, out) = env.json(&["stop", &waiting]);
    assert!(out.status.success());
    let end = env.wait(&waiting);
    assert_eq!(end["state"], "cancelled", "{end}");
    assert!(end["reason"].as_str().unwrap().contains("while queued"), "{end}");
    assert!(event(&env.events(&waiting), "preparing").is_none());
    // A waiter killed outright: its ticket is abandoned, and the run behind it still starts.
    let pid = env.show(&doomed)["supervisor_pid"].as_u64();
    let pid = pid.or_else(|| {
        let text = std::fs::read_to_string(env.state.join("runs/doomed/supervisor.pid")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    });
    let pid = pid.expect("the queued run's supervisor pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = env.wait(&last);
    assert_eq!(end["state"], "succeeded", "{end}");
    assert_eq!(env.wait(&doomed)["state"], "lost");
    assert_eq!(env.wait(&first)["state"], "succeeded");
}
