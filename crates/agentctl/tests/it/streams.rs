//! Live streams from a real daemon: a run's output as server-sent events (resumed by byte offset,
//! ended by an `end` message carrying the run), and every run's events from the daemon's
//! journal (`/v1/events`), numbered without gap or duplicate across a `kill -9` of the daemon.

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{Daemon, create_body, wait_state};
use crate::harness::Env;

/// One SSE message: `id`, `event`, parsed `data`.
pub(crate) type Message = (String, String, Value);

/// Reads `path` as an event stream until the server ends it or `enough` says so (then hangs up).
pub(crate) fn read_stream(
    d: &Daemon,
    path: &str,
    headers: &[(&str, &str)],
    enough: impl Fn(&[Message]) -> bool,
) -> Vec<Message> {
    let mut stream = std::net::TcpStream::connect(&d.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n",
        d.token
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        chunked |= line.to_lowercase().starts_with("transfer-encoding: chunked");
    }
    assert!(chunked, "a stream is sent chunked");
    let (mut text, mut out) = (String::new(), Vec::new());
    let (mut id, mut event, mut data) = (None, None, None);
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            return out;
        }
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        let mut buf = vec![0; size + 2];
        r.read_exact(&mut buf).unwrap();
        text.push_str(std::str::from_utf8(&buf[..size]).unwrap());
        while let Some(end) = text.find('\n') {
            let l: String = text.drain(..=end).collect();
            let l = l.trim_end_matches('\n');
            if let Some(v) = l.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = l.strip_prefix("event: ") {
                event = Some(v.to_owned());
            } else if let Some(v) = l.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(v).unwrap());
            } else if l.is_empty()
                && let Some(d) = data.take()
            {
                out.push((id.take().unwrap_or_default(), event.take().unwrap_or_default(), d));
                if enough(&out) {
                    return out;
                }
            }
        }
    }
}

#[test]
fn output_streams_resume_by_offset_and_end_with_the_run() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let script = "for i in $(seq 1 30); do echo line $i; sleep 0.03; done; echo oops >&2";
    let (_, run) = d.call("POST", "/v1/runs", Some(&create_body(&env, script)));
    let id = run["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/runs/{id}/logs?follow=true");
    let first = read_stream(&d, &path, &[], |m| m.len() >= 5);
    assert!(first.iter().all(|(_, e, _)| e == "output"));
    let last = first.last().unwrap().0.clone();
    let rest = read_stream(&d, &path, &[("Last-Event-ID", &last)], |_| false);
    let (end, output) = rest.split_last().expect("the stream ends with a message");
    assert_eq!(end.1, "end", "the last message is the end: {end:?}");
    assert_eq!(end.2["id"], id.as_str());
    assert_eq!(end.2["state"], "succeeded");
    let mut stdout = String::new();
    let mut stderr = String::new();
    for (_, kind, chunk) in first.iter().chain(output) {
        assert_eq!(kind, "output");
        match chunk["stream"].as_str() {
            Some("stdout") => stdout.push_str(chunk["data"].as_str().unwrap()),
            Some("stderr") => stderr.push_str(chunk["data"].as_str().unwrap()),
            other => panic!("unexpected stream {other:?}"),
        }
    }
    let want: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    assert_eq!(stdout, want, "no gap, no duplicate across the reconnect");
    assert_eq!(stderr, "oops\n");
    // The ids are byte offsets: the JSON read from the end's offset has nothing more.
    let (_, page) = d.call("GET", &format!("/v1/runs/{id}/logs?offset={}", end.0), None);
    assert_eq!(page["chunks"].as_array().unwrap().len(), 0, "{page}");
    // Not followed, a stream of a finished run is its whole output and the end.
    let again = read_stream(&d, &format!("/v1/runs/{id}/logs"), &[], |_| false);
    assert_eq!(again.len(), first.len() + rest.len());
}

#[test]
fn output_reaches_a_follower_without_waiting_for_a_poll() {
    let env = Env::new();
    let d = Daemon::start(&env);
    // The agent waits for a file in its worktree (all it sees), then prints once; the
    // follower must see it promptly.
    let script = "while [ ! -e gate ]; do sleep 0.01; done; echo go; sleep 2";
    let (_, run) = d.call("POST", "/v1/runs", Some(&create_body(&env, script)));
    let id = run["id"].as_str().unwrap().to_owned();
    let gate = std::path::PathBuf::from(run["worktree"].as_str().unwrap()).join("gate");
    wait_state(&d, &id, |s| s == "running");
    let opened = std::thread::spawn({
        let gate = gate.clone();
        move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(&gate, b"").unwrap();
            Instant::now()
        }
    });
    let msgs = read_stream(&d, &format!("/v1/runs/{id}/logs?follow=true"), &[], |m| !m.is_empty());
    let seen = Instant::now();
    let opened = opened.join().unwrap();
    assert_eq!(msgs[0].2["data"], "go\n");
    // Well under the one-second fallback: the daemon was told of the write.
    assert!(seen - opened < Duration::from_millis(700), "took {:?}", seen - opened);
    d.call("POST", &format!("/v1/runs/{id}/stop?grace_ms=100"), None);
}

#[test]
fn the_global_stream_numbers_every_event_once_across_a_daemon_kill() {
    let env = Env::new();
    let mut d = Daemon::start(&env);
    let body = create_body(&env, "echo a; sleep 0.5; echo b");
    let (_, one) = d.call("POST", "/v1/runs", Some(&body));
    let one = one["id"].as_str().unwrap().to_owned();
    let first = read_stream(&d, "/v1/events?follow=true", &[], |m| m.len() >= 3);
    let last = first.last().unwrap().0.clone();
    // Kill the daemon; a run made meanwhile (directly) is journaled when the daemon is back.
    let mut child = d.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let two = env.start(&["--", "sh", "-c", "echo c"]);
    let d = Daemon::start(&env);
    wait_state(&d, &one, |s| s == "succeeded");
    wait_state(&d, &two, |s| s == "succeeded");
    let finished = |m: &[Message]| {
        m.iter()
            .filter(|(_, e, _)| e == "finished")
            .map(|(_, _, v)| v["run_id"].as_str().unwrap().to_owned())
            .collect::<HashSet<_>>()
    };
    let rest = read_stream(&d, "/v1/events?follow=true", &[("Last-Event-ID", &last)], |m| {
        finished(m).len() == 2
    });
    let all: Vec<&Message> = first.iter().chain(&rest).collect();
    let gs: Vec<u64> = all.iter().map(|(i, _, _)| i.parse().unwrap()).collect();
    assert_eq!(
        gs,
        (1..=gs.len() as u64).collect::<Vec<_>>(),
        "g without gap or duplicate"
    );
    for (i, kind, v) in &all {
        assert_eq!(v["g"].as_u64().unwrap().to_string(), *i);
        assert_eq!(v["data"]["type"], kind.as_str());
    }
    // Each run's events, in the journal, are its own log exactly.
    for id in [&one, &two] {
        let seqs: Vec<u64> = all
            .iter()
            .filter(|(_, _, v)| v["run_id"] == id.as_str())
            .map(|(_, _, v)| v["seq"].as_u64().unwrap())
            .collect();
        let log = env.events(id);
        assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>(), "run {id}");
    }
    // As JSON pages.
    let (status, page) = d.call("GET", "/v1/events?after=2&limit=3", None);
    assert_eq!(status, 200, "{page}");
    let page_gs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["g"].as_u64().unwrap())
        .collect();
    assert_eq!(page_gs, [3, 4, 5]);
    assert_eq!(page["next_after"], 5);
    let (status, bad) = d.call("GET", "/v1/events?limit=0", None);
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
}

#[test]
fn bench_sse_measures_delivery_against_capture_on_a_real_daemon() {
    let env = Env::new();
    let (v, out) = env.json(&["bench", "sse", "--lines", "20", "--interval", "5ms"]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    let s = &v["sse"];
    assert_eq!(s["lines"], 20);
    let (d50, d99, c50) = (
        s["delivered_p50_ms"].as_f64().unwrap(),
        s["delivered_p99_ms"].as_f64().unwrap(),
        s["captured_p50_ms"].as_f64().unwrap(),
    );
    assert!(0.0 <= c50 && c50 <= d50 && d50 <= d99, "{s}");
    assert!(s["goal_met"].is_boolean() && s["ratio_p50"].is_number(), "{s}");
    // The bench works in a temporary directory of its own, never in the state dir it was given.
    assert!(!env.state.join("runs").exists());
}
