//! A daemon killed with SIGKILL and started again, at every point of a run's life: every live
//! run is found as its supervisor kept it (same agent, output and events continuous, timeouts
//! enforced all along), runs that ended meanwhile show their real outcome, only a run whose
//! supervisor is really gone becomes `lost`, and no run is ever duplicated.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{Daemon, create_body, wait_state};
use crate::harness::Env;

/// The longest any one wait in this file may take.
const LIMIT: Duration = Duration::from_secs(15);

const TERMINAL: [&str; 5] = ["succeeded", "failed", "cancelled", "timed_out", "lost"];

/// Starts a daemon on `env`'s state dir, saying what it logged if it exits or does not come up.
fn start(env: &Env) -> Daemon {
    Daemon::start(env)
}

/// SIGKILLs the daemon (no cleanup of any kind) and returns what it logged.
fn kill9(d: Daemon) -> String {
    d.kill9()
}

fn run_dir(env: &Env, id: &str) -> PathBuf {
    env.state.join("runs").join(id)
}

/// The run's events as its log holds them (read without any daemon or command).
fn log_events(env: &Env, id: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(run_dir(env, id).join("events.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["data"]["type"].as_str().unwrap().to_owned())
        .collect()
}

fn count(events: &[Value], kind: &str) -> usize {
    kinds(events).iter().filter(|k| *k == kind).count()
}

/// Waits (reading the log itself) until the run has recorded an event of type `kind`.
fn until_logged(env: &Env, id: &str, kind: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let events = log_events(env, id);
        if count(&events, kind) > 0 {
            return events;
        }
        assert!(
            started.elapsed() < LIMIT,
            "run {id} never logged `{kind}`: {:?}",
            kinds(&events)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a live process (a zombie is not: it has ended, nobody reaped it yet).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

fn until_dead(pid: u64) {
    let started = Instant::now();
    while alive(pid) {
        assert!(started.elapsed() < LIMIT, "process {pid} is still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid in the run's `supervisor.pid` file.
fn supervisor_pid_file(env: &Env, id: &str) -> Option<u64> {
    std::fs::read_to_string(run_dir(env, id).join("supervisor.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The pid in the run's `agent.pid` file (`pid start_time pgid`).
fn agent_pid_file(env: &Env, id: &str) -> Option<u64> {
    std::fs::read_to_string(run_dir(env, id).join("agent.pid"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn get(d: &Daemon, id: &str) -> Value {
    let (status, run) = d.call("GET", &format!("/v1/runs/{id}"), None);
    assert_eq!(status, 200, "{run}");
    run
}

/// Every run is listed exactly once (and every run directory is a listed run); no run is
/// active with a dead supervisor. Returns the listed runs.
fn assert_consistent(env: &Env, d: &Daemon) -> Vec<Value> {
    let (status, list) = d.call("GET", "/v1/runs?limit=500", None);
    assert_eq!(status, 200, "{list}");
    let runs = list["runs"].as_array().unwrap().clone();
    let ids: BTreeSet<String> = runs.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), runs.len(), "a run listed twice: {list}");
    let dirs: BTreeSet<String> = std::fs::read_dir(env.state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(ids, dirs, "the listing and the run directories");
    for r in &runs {
        let id = r["id"].as_str().unwrap();
        if TERMINAL.contains(&r["state"].as_str().unwrap()) {
            continue;
        }
        let sup = supervisor_pid_file(env, id);
        if let (Some(file), Some(rec)) = (sup, r["supervisor_pid"].as_u64()) {
            assert_eq!(
                file, rec,
                "run {id}: the recorded supervisor is the one holding the run"
            );
        }
        match sup {
            Some(pid) if alive(pid) => {}
            // It may have ended since the listing: then the run is terminal now.
            Some(pid) => {
                let now = get(d, id);
                assert!(
                    TERMINAL.contains(&now["state"].as_str().unwrap()),
                    "run {id} is {} but its supervisor {pid} is dead",
                    now["state"]
                );
            }
            // No supervisor took it yet: only a pending run may be without one.
            None => assert_eq!(r["state"], "pending", "run {id} has no supervisor: {r}"),
        }
    }
    runs
}

/// Concatenated output text of `/v1/runs/{id}/logs` chunks.
fn chunk_text(logs: &Value) -> String {
    logs["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["data"].as_str().unwrap())
        .collect()
}

/// The whole output, read from offset 0.
fn output(d: &Daemon, id: &str) -> String {
    let (status, logs) = d.call("GET", &format!("/v1/runs/{id}/logs"), None);
    assert_eq!(status, 200, "{logs}");
    chunk_text(&logs)
}

/// One POST /v1/runs with an `Idempotency-Key`: (status, body).
fn create_with_key(d: &Daemon, key: &str, body: &Value) -> (u16, Value) {
    let (status, _, v) = d.raw(
        "POST",
        "/v1/runs",
        Some(&d.token),
        &[("Idempotency-Key", key)],
        Some(body.to_string()),
    );
    (status, v)
}

/// Sends one request without waiting for anything but the write; the answer (if any) is read
/// and dropped on another thread, which tolerates the daemon dying mid-answer.
fn fire(
    d: &Daemon,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::thread::JoinHandle<Option<u16>> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {}\r\n",
        d.token
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut stream = std::net::TcpStream::connect(&d.addr).unwrap();
    stream.write_all(req.as_bytes()).unwrap();
    std::thread::spawn(move || {
        let mut resp = Vec::new();
        let _ = stream.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp);
        text.split(' ').nth(1).and_then(|s| s.parse().ok())
    })
}

/// Follows the run's events as server-sent events from after `after`, sending each
/// `(id, event)` to `tx` until the stream ends or breaks (the daemon died).
fn follow_events(d: &Daemon, id: &str, after: u64, tx: mpsc::Sender<(u64, Value)>) -> std::thread::JoinHandle<()> {
    let mut stream = std::net::TcpStream::connect(&d.addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let req = format!(
        "GET /v1/runs/{id}/events?follow=true HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\nLast-Event-ID: {after}\r\n\r\n",
        d.token
    );
    stream.write_all(req.as_bytes()).unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        // Headers, then chunks (size line, bytes, CRLF) holding SSE lines.
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        let (mut text, mut sse_id, mut data) = (String::new(), None, None);
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
                return;
            };
            if size == 0 {
                return;
            }
            let mut buf = vec![0; size + 2];
            if r.read_exact(&mut buf).is_err() {
                return;
            }
            text.push_str(std::str::from_utf8(&buf[..size]).unwrap());
            while let Some(end) = text.find('\n') {
                let l: String = text.drain(..=end).collect();
                let l = l.trim_end_matches('\n');
                if let Some(v) = l.strip_prefix("id: ") {
                    sse_id = Some(v.parse::<u64>().unwrap());
                } else if let Some(v) = l.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(v).unwrap());
                } else if l.is_empty()
                    && let (Some(i), Some(e)) = (sse_id.take(), data.take())
                    && tx.send((i, e)).is_err()
                {
                    return;
                }
            }
        }
    })
}

/// The run as the daemon shows it, which must be in one of the states `now` unless its log has
/// moved on (`next` logged) meanwhile; never `lost`.
fn at_step(env: &Env, d: &Daemon, id: &str, now: &[&str], next: &str) -> Value {
    let run = get(d, id);
    let state = run["state"].as_str().unwrap();
    assert_ne!(state, "lost", "{run}");
    if count(&log_events(env, id), next) == 0 {
        assert!(now.contains(&state), "expected {now:?}: {run}");
    }
    run
}

#[test]
fn a_run_is_readopted_by_daemons_killed_at_every_point_of_its_life() {
    let env = Env::new();
    // A pre-run hook keeps the run `preparing` for a while, a post-run hook keeps it after
    // the agent exited: the daemon dies at each step.
    let hooks = env.repo.join(".agentctl/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    env.script("pre", "#!/bin/sh\nsleep 1.2\n");
    env.script("post", "#!/bin/sh\nsleep 0.8\n");
    std::fs::rename(env.dir.path().join("pre"), hooks.join("pre-run")).unwrap();
    std::fs::rename(env.dir.path().join("post"), hooks.join("post-run")).unwrap();
    let body = create_body(&env, "for i in $(seq 1 30); do echo line $i; sleep 0.05; done");
    let key = "life-1";

    // 1. Right after the create returned: the supervisor is only starting.
    let d = start(&env);
    let (status, run) = create_with_key(&d, key, &body);
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    kill9(d);
    let d = start(&env);
    at_step(&env, &d, &id, &["pending", "preparing"], "started");
    let (status, same) = create_with_key(&d, key, &body);
    assert_eq!((status, same["id"].as_str()), (200, Some(id.as_str())), "{same}");
    assert_consistent(&env, &d);

    // 2. Preparing: the worktree made, the pre-run hook in flight.
    until_logged(&env, &id, "worktree_ready");
    let sup = supervisor_pid_file(&env, &id).expect("a supervisor took the run");
    kill9(d);
    let d = start(&env);
    let again = at_step(&env, &d, &id, &["preparing"], "started");
    assert_eq!(again["supervisor_pid"].as_u64(), Some(sup));
    assert_consistent(&env, &d);

    // 3. Running: the agent writes output.
    until_logged(&env, &id, "started");
    let before = wait_state(&d, &id, |s| s == "running");
    let pid = before["pid"].as_u64().unwrap();
    assert_eq!(agent_pid_file(&env, &id), Some(pid));
    kill9(d);
    let d = start(&env);
    let again = at_step(&env, &d, &id, &["running"], "exited");
    assert_eq!(
        (again["pid"].as_u64(), again["supervisor_pid"].as_u64()),
        (Some(pid), Some(sup)),
        "the same agent and supervisor: {again}"
    );
    assert!(alive(sup));
    let (status, same) = create_with_key(&d, key, &body);
    assert_eq!((status, same["id"].as_str()), (200, Some(id.as_str())), "{same}");
    assert_consistent(&env, &d);

    // 4. The agent exited; the post-run hook is in flight.
    until_logged(&env, &id, "exited");
    kill9(d);
    let d = start(&env);
    at_step(&env, &d, &id, &["running"], "finished");
    assert_consistent(&env, &d);

    // The end: the run's own outcome, every line once, every event once.
    let end = wait_state(&d, &id, |s| TERMINAL.contains(&s));
    assert_eq!(
        (end["state"].as_str(), end["exit_code"].as_i64()),
        (Some("succeeded"), Some(0)),
        "{end}"
    );
    let want: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    assert_eq!(output(&d, &id), want);
    let events = log_events(&env, &id);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    for kind in [
        "created",
        "preparing",
        "worktree_ready",
        "started",
        "exited",
        "finished",
    ] {
        assert_eq!(count(&events, kind), 1, "{kind}: {:?}", kinds(&events));
    }
    assert_eq!(count(&events, "lost"), 0);
    let (status, same) = create_with_key(&d, key, &body);
    assert_eq!((status, same["state"].as_str()), (200, Some("succeeded")), "{same}");
    assert_eq!(assert_consistent(&env, &d).len(), 1, "one run");
}

#[test]
fn a_running_agent_keeps_its_pid_output_and_event_stream_across_a_daemon_kill() {
    let env = Env::new();
    let d = start(&env);
    let lines = 30;
    let script = format!("for i in $(seq 1 {lines}); do echo out $i; echo err $i >&2; sleep 0.04; done");
    let (status, run) = d.call("POST", "/v1/runs", Some(&create_body(&env, &script)));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let (tx, rx) = mpsc::channel();
    let first = follow_events(&d, &id, 0, tx);
    // Output is read in pieces, by offset, before and after the daemon's death.
    let mut text = String::new();
    let mut offset = 0;
    let started = Instant::now();
    while !text.contains("out 5\n") {
        assert!(started.elapsed() < LIMIT, "no output: {text:?}");
        let (_, logs) = d.call("GET", &format!("/v1/runs/{id}/logs?offset={offset}"), None);
        text.push_str(&chunk_text(&logs));
        offset = logs["next_offset"].as_u64().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = get(&d, &id);
    assert_eq!(before["state"], "running", "{before}");
    let (pid, sup) = (
        before["pid"].as_u64().unwrap(),
        before["supervisor_pid"].as_u64().unwrap(),
    );
    assert_eq!(agent_pid_file(&env, &id), Some(pid));
    assert_eq!(supervisor_pid_file(&env, &id), Some(sup));

    // The stream is live: it has delivered the agent's start.
    let mut seen: Vec<(u64, Value)> = Vec::new();
    let waited = Instant::now();
    while !seen.iter().any(|(_, e)| e["data"]["type"] == "started") {
        let left = LIMIT.saturating_sub(waited.elapsed());
        match rx.recv_timeout(left) {
            Ok(e) => seen.push(e),
            Err(_) => panic!("the stream never delivered `started`: {seen:?}"),
        }
    }
    kill9(d);
    first.join().unwrap();
    seen.extend(rx.try_iter());
    assert!(
        alive(pid) || count(&log_events(&env, &id), "exited") > 0,
        "the agent outlives the daemon"
    );
    let d = start(&env);
    let again = at_step(&env, &d, &id, &["running"], "exited");
    assert_eq!(
        (again["pid"].as_u64(), again["supervisor_pid"].as_u64()),
        (Some(pid), Some(sup)),
        "re-adopted, never restarted: {again}"
    );
    // The stream resumes from the last event seen, on the new daemon, to the run's end.
    let last = seen.last().unwrap().0;
    let (tx, rx) = mpsc::channel();
    let second = follow_events(&d, &id, last, tx);
    let started = Instant::now();
    loop {
        let (_, logs) = d.call("GET", &format!("/v1/runs/{id}/logs?offset={offset}"), None);
        text.push_str(&chunk_text(&logs));
        offset = logs["next_offset"].as_u64().unwrap();
        if text.contains(&format!("err {lines}\n")) && text.contains(&format!("out {lines}\n")) {
            break;
        }
        assert!(started.elapsed() < LIMIT, "output stops: {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    second.join().unwrap();
    let rest: Vec<(u64, Value)> = rx.try_iter().collect();
    let end = get(&d, &id);
    assert_eq!(
        (end["state"].as_str(), end["exit_code"].as_i64()),
        (Some("succeeded"), Some(0)),
        "{end}"
    );

    // Output: every line once, in order, per stream; the same as one read from offset 0.
    let per = |prefix: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    };
    let want = |prefix: &str| -> Vec<String> { (1..=lines).map(|i| format!("{prefix} {i}")).collect() };
    assert_eq!(per("out"), want("out"), "no gap, no duplicate");
    assert_eq!(per("err"), want("err"));
    assert_eq!(text, output(&d, &id));
    // Events: what both streams delivered is the log, every event once.
    let log = log_events(&env, &id);
    let got: Vec<&Value> = seen.iter().chain(&rest).map(|(_, e)| e).collect();
    assert_eq!(got, log.iter().collect::<Vec<_>>(), "no gap, no duplicate");
    for (i, e) in seen.iter().chain(&rest) {
        assert_eq!(e["seq"].as_u64(), Some(*i));
    }
    assert_eq!(count(&log, "finished"), 1);
    assert_consistent(&env, &d);
}

#[test]
fn runs_that_change_while_the_daemon_is_down_show_their_real_outcome_and_only_a_dead_supervisors_run_is_lost() {
    let env = Env::new();
    let d = start(&env);
    let create = |id: &str, script: &str, extra: Value| {
        let mut body = create_body(&env, script);
        body["id"] = json!(id);
        body["grace_ms"] = json!(300);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, run) = d.call("POST", "/v1/runs", Some(&body));
        assert_eq!(status, 201, "{run}");
    };
    // The long ones first: the short ones must not end before the daemon is killed.
    // Unsandboxed: a sandboxed agent ends with its supervisor (bubblewrap's --die-with-parent),
    // so only an unconfined one can be left behind.
    create(
        "orphan",
        "echo orphan; sleep 30",
        json!({"isolation": {"sandbox": "off"}}),
    );
    create("live", "echo live; sleep 30", json!({}));
    create("ok", "echo ok; sleep 1.2", json!({}));
    create("bad", "echo bad; sleep 1.2; exit 3", json!({}));
    create("timeout", "echo start; sleep 30", json!({"timeout_ms": 1200}));
    let ids = ["timeout", "ok", "bad", "orphan", "live"];
    // Agent and supervisor pids, as the runs' logs record them.
    let pids: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let events = until_logged(&env, id, "started");
            let of = |kind: &str, key: &str| {
                let e = events.iter().find(|e| e["data"]["type"] == kind).unwrap();
                e["data"][key].as_u64().unwrap()
            };
            (of("started", "pid"), of("preparing", "supervisor_pid"))
        })
        .collect();
    let pid = |i: usize| pids[i].0;
    kill9(d);
    for id in ["timeout", "ok", "bad"] {
        assert_eq!(count(&log_events(&env, id), "finished"), 0, "{id} ended too soon");
    }

    // With no daemon: the supervisor of `orphan` is killed outright (its pid from the run's
    // files, as its log has it); the others time out, succeed and fail on their own.
    let sup = supervisor_pid_file(&env, "orphan").unwrap();
    assert_eq!(pids[3].1, sup);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    until_dead(sup);
    for id in ["timeout", "ok", "bad"] {
        until_logged(&env, id, "finished");
    }
    assert!(alive(pid(3)), "the dead supervisor's agent is left running");
    assert!(alive(pid(4)));

    let mut d = start(&env);
    // The daemon's start-up reconcile found the lost run, and only it.
    let lost = log_events(&env, "orphan");
    assert_eq!(lost.last().unwrap()["data"]["type"], "lost", "{:?}", kinds(&lost));
    assert_eq!(lost.last().unwrap()["data"]["detected_by"], "reconcile");
    until_dead(pid(3));
    let runs: Vec<Value> = ids.iter().map(|id| get(&d, id)).collect();
    let state = |i: usize| runs[i]["state"].as_str().unwrap();
    assert_eq!(state(0), "timed_out", "{}", runs[0]);
    assert!(runs[0]["reason"].as_str().unwrap().contains("timeout"), "{}", runs[0]);
    assert!(!alive(pid(0)), "the supervisor enforced the timeout");
    assert_eq!((state(1), runs[1]["exit_code"].as_i64()), ("succeeded", Some(0)));
    assert_eq!((state(2), runs[2]["exit_code"].as_i64()), ("failed", Some(3)));
    assert_eq!(state(3), "lost", "{}", runs[3]);
    assert_eq!(
        (state(4), runs[4]["pid"].as_u64()),
        ("running", Some(pid(4))),
        "a live run is not lost: {}",
        runs[4]
    );
    for id in ["timeout", "ok", "bad", "live"] {
        assert_eq!(count(&log_events(&env, id), "lost"), 0, "{id}");
    }
    assert_eq!(output(&d, "ok"), "ok\n");
    assert_eq!(output(&d, "bad"), "bad\n");
    assert_consistent(&env, &d);
    // The survivor still answers to its supervisor.
    let (status, _) = d.call("POST", "/v1/runs/live/stop?grace_ms=300", None);
    assert_eq!(status, 202);
    assert_eq!(wait_state(&d, "live", |s| TERMINAL.contains(&s))["state"], "cancelled");
    assert_consistent(&env, &d);
    let (status, log) = d.terminate();
    assert!(status.success(), "{log}");
    let found: Vec<&str> = log.lines().filter(|l| l.contains("lost_supervisor")).collect();
    assert_eq!(found.len(), 1, "{log}");
    assert!(found[0].contains("orphan"), "{log}");
}

#[test]
fn a_checkpoint_or_a_stop_in_flight_when_the_daemon_dies_is_done_once() {
    let env = Env::new();
    let d = start(&env);
    // The agent takes a while to honour a stop, so the daemon dies while it is `stopping`. Its
    // handler runs once however many times the signal comes (the supervisor signals the
    // agent's group and then each process in it, so a group member may get SIGINT twice).
    let script = "trap 'trap \"\" INT TERM; echo stopping; sleep 0.5; echo bye; exit 0' INT TERM; \
                  echo ready; while :; do sleep 0.1; done";
    let mut body = create_body(&env, script);
    body["grace_ms"] = json!(5000);
    body["checkpoints"] = json!({"watch": false});
    let (status, run) = d.call("POST", "/v1/runs", Some(&body));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    wait_state(&d, &id, |s| s == "running");
    let worktree = PathBuf::from(run["worktree"].as_str().unwrap());
    let control = run_dir(&env, &id).join("control");
    // A request written in full (`req-ID.json`, renamed into place) or claimed (`work-ID.json`).
    let pending = |prefix: &str| {
        std::fs::read_dir(&control)
            .map(|dir| {
                dir.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(prefix) && name.ends_with(".json")
                })
            })
            .unwrap_or(false)
    };

    // A checkpoint request the supervisor has not answered yet when the daemon dies. (When an
    // attempt is answered before the daemon can be caught waiting, it is simply made again.)
    let mut d = Some(d);
    let mut asked = 0;
    let mut caught = false;
    while !caught {
        asked += 1;
        assert!(asked <= 20, "never caught a checkpoint request in flight");
        std::fs::write(worktree.join(format!("f{asked}.txt")), "x\n").unwrap();
        let daemon = d.take().unwrap();
        let answer = fire(
            &daemon,
            "POST",
            &format!("/v1/runs/{id}/checkpoints"),
            &[],
            Some(&json!({})),
        );
        let started = Instant::now();
        loop {
            if pending("req-") || pending("work-") {
                caught = true;
                break;
            }
            if answer.is_finished() || started.elapsed() > LIMIT {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if caught {
            kill9(daemon);
            answer.join().unwrap();
        } else {
            assert_eq!(answer.join().unwrap(), Some(201));
            d = Some(daemon);
        }
    }
    let d = start(&env);
    // The supervisor did the work once; nothing is left pending.
    let started = Instant::now();
    while pending("req-") || pending("work-") {
        let files: Vec<_> = std::fs::read_dir(&control)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(started.elapsed() < LIMIT, "the request is never handled: {files:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let manual = |d: &Daemon| -> Vec<u64> {
        let (status, cps) = d.call("GET", &format!("/v1/runs/{id}/checkpoints"), None);
        assert_eq!(status, 200, "{cps}");
        let cps = cps["checkpoints"].as_array().unwrap().clone();
        let ns: Vec<u64> = cps.iter().map(|c| c["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, (0..cps.len() as u64).collect::<Vec<_>>(), "numbered without gaps");
        cps.iter()
            .filter(|c| c["trigger"] == "manual")
            .map(|c| c["n"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(manual(&d).len(), asked, "each request made one checkpoint");
    // A new request is answered as usual.
    std::fs::write(worktree.join("after.txt"), "x\n").unwrap();
    let (status, cp) = d.call("POST", &format!("/v1/runs/{id}/checkpoints"), Some(&json!({})));
    assert_eq!((status, cp["trigger"].as_str()), (201, Some("manual")), "{cp}");
    assert_eq!(manual(&d).len(), asked + 1);
    assert_eq!(get(&d, &id)["state"], "running");

    // A stop: the daemon dies as soon as it has handed the request on (to be picked up by the
    // supervisor, or already picked up).
    let answer = fire(&d, "POST", &format!("/v1/runs/{id}/stop"), &[], None);
    let stop = control.join("stop.json");
    let started = Instant::now();
    while !stop.exists() && count(&log_events(&env, &id), "stop_requested") == 0 {
        assert!(started.elapsed() < LIMIT, "the stop never reaches the supervisor");
        std::thread::sleep(Duration::from_micros(200));
    }
    kill9(d);
    answer.join().unwrap();
    let d = start(&env);
    let again = get(&d, &id);
    assert!(
        ["running", "stopping", "cancelled"].contains(&again["state"].as_str().unwrap()),
        "{again}"
    );
    assert_consistent(&env, &d);
    let end = wait_state(&d, &id, |s| TERMINAL.contains(&s));
    assert_eq!(end["state"], "cancelled", "{end}");
    let events = log_events(&env, &id);
    assert_eq!(output(&d, &id), "ready\nstopping\nbye\n", "{events:#?}");
    assert_eq!(count(&events, "stop_requested"), 1, "{:?}", kinds(&events));
    assert_eq!(count(&events, "finished"), 1);
    assert_eq!(count(&events, "lost"), 0);
    assert_consistent(&env, &d);
}

#[test]
fn a_create_cut_short_by_the_daemons_death_and_retried_makes_one_run_that_runs() {
    let env = Env::new();
    let body = create_body(&env, "echo once");
    let runs = env.state.join("runs");
    let listed = || -> BTreeSet<String> {
        std::fs::read_dir(&runs)
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The daemon dies as soon as the run is recorded: frozen first, to see whether it got as
    // far as starting the supervisor (it opens the supervisor's log before). Until it is caught
    // before that, the same is tried again with another key.
    let mut made = Vec::new();
    let mut unstarted = None;
    for attempt in 1..=10 {
        let key = format!("retry-{attempt}");
        let d = start(&env);
        let pid = nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32);
        let known = listed();
        let answer = fire(&d, "POST", "/v1/runs", &[("Idempotency-Key", &key)], Some(&body));
        let started = Instant::now();
        let id = loop {
            if let Some(new) = listed().difference(&known).next() {
                break new.clone();
            }
            assert!(started.elapsed() < LIMIT, "the run is never recorded");
            std::hint::spin_loop();
        };
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let caught = !run_dir(&env, &id).join("supervisor.log").exists();
        kill9(d);
        answer.join().unwrap();
        made.push((key, id.clone()));
        if caught {
            unstarted = Some(id);
            break;
        }
    }
    let unstarted = unstarted.expect("the daemon was never caught between recording and starting a run");

    let mut d = start(&env);
    // The clients got no answer: they retry, concurrently even, with the same keys.
    for (key, id) in &made {
        let results: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| create_with_key(&d, key, &body))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            results.iter().all(|(s, v)| *s == 200 && v["id"] == json!(id)),
            "{results:?}"
        );
        // The run is not stuck `pending`: it runs, once.
        let end = wait_state(&d, id, |s| TERMINAL.contains(&s));
        assert_eq!(end["state"], "succeeded", "{end}");
        assert_eq!(output(&d, id), "once\n");
        assert_eq!(count(&log_events(&env, id), "started"), 1);
    }
    assert_eq!(assert_consistent(&env, &d).len(), made.len());
    let (_, log) = d.terminate();
    assert!(
        log.lines()
            .any(|l| l.contains("unstarted_run") && l.contains(&unstarted) && l.contains("fixed")),
        "the daemon started the run's supervisor at start-up: {log}"
    );
}
