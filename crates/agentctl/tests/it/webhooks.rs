//! Webhooks from a real daemon to a real HTTP receiver on a loopback port: signed deliveries of
//! the events a run writes (whichever process writes them), in order, filtered by type, retried
//! when the receiver fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::Daemon;
use crate::harness::Env;

/// One request the receiver got, and the status it answered.
#[derive(Clone, Debug)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    status: u16,
}

/// An HTTP receiver that fails the first `fail_first` requests with 500.
fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/agentctl", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("POST /hooks/agentctl HTTP/1.1"), "{line}");
            let mut headers = BTreeMap::new();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let Some((k, v)) = line.trim_end().split_once(": ") else {
                    break;
                };
                headers.insert(k.to_lowercase(), v.to_owned());
            }
            let mut body = vec![0; headers["content-length"].parse().unwrap()];
            r.read_exact(&mut body).unwrap();
            let status = if n < fail_first { 500 } else { 200 };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            log.lock().unwrap().push(Received { headers, body, status });
        }
    });
    (url, got)
}

fn configure(env: &Env, url: &str, events: &str) {
    let dir = env.dir.path().join("config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("[[webhooks]]\nurl = \"{url}\"\nsecret = \"s3cret\"\nevents = {events}\n"),
    )
    .unwrap();
}

#[test]
fn run_events_are_posted_signed_in_order_and_retried() {
    let env = Env::new();
    let (url, got) = receiver(1);
    configure(&env, &url, r#"["created", "started", "finished"]"#);
    let _d = Daemon::start(&env);
    // A run made by the CLI, not through the daemon: the daemon still sees its events.
    let (run, out) = env.json(&["run", "--", "true"]);
    assert!(out.status.success(), "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let delivered = loop {
        let seen: Vec<Received> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 200)
            .cloned()
            .collect();
        if seen.iter().any(|r| r.headers["x-agentctl-event"] == "finished") {
            break seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no finished delivery: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let events: Vec<Value> = delivered
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["data"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "started", "finished"], "filtered, in order");
    // Each body is the event exactly as the run's log has it.
    let log = env.events(&id);
    for e in &events {
        assert_eq!(e["run_id"], id.as_str());
        assert_eq!(Some(e), log.iter().find(|l| l["seq"] == e["seq"]));
    }
    for r in &delivered {
        let ts: i64 = r.headers["x-agentctl-timestamp"].parse().unwrap();
        assert_eq!(
            r.headers["x-agentctl-signature"],
            api::webhooks::signature("s3cret", ts, &r.body)
        );
        assert_eq!(r.headers["content-type"], "application/json");
        let e: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.headers["x-agentctl-delivery"], format!("{id}:{}", e["seq"]));
    }
    // The receiver failed the first request: it came again, with the same delivery id.
    let all = got.lock().unwrap().clone();
    assert_eq!(all[0].status, 500);
    assert_eq!(
        all[1].headers["x-agentctl-delivery"],
        all[0].headers["x-agentctl-delivery"]
    );
}

#[test]
fn a_bad_webhook_setting_stops_serve_at_once() {
    let env = Env::new();
    configure(&env, "https://example.test/x", "[]");
    let (v, out) = env.json(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(v["error"]["code"], "INVALID_CONFIG", "{v}");
    assert_eq!(out.status.code(), Some(78));
    configure(&env, "http://127.0.0.1:1/x", "[]");
    std::fs::write(
        env.dir.path().join("config/config.toml"),
        "[[webhooks]]\nurl = \"http://127.0.0.1:1/x\"\nsecret_env = \"AGENTCTL_TEST_UNSET_SECRET\"\n",
    )
    .unwrap();
    let (v, _) = env.json(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(v["error"]["code"], "INVALID_CONFIG", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AGENTCTL_TEST_UNSET_SECRET"),
        "{v}"
    );
}
