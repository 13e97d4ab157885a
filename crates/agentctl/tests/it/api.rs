//! The `/v1` API against a real daemon process (`agentctl serve` on a loopback port picked by
//! the kernel, and its unix socket): auth, every route's success and error paths, idempotent
//! create under concurrent duplicates, pagination, one daemon per state dir, graceful SIGTERM.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::Env;

/// A daemon serving `env`'s state dir; stopped with SIGTERM when dropped.
pub(crate) struct Daemon {
    pub(crate) child: Option<Child>,
    pub(crate) addr: String,
    pub(crate) socket: PathBuf,
    pub(crate) token: String,
    /// The daemon's stderr.
    log: PathBuf,
}

impl Daemon {
    /// Starts a daemon; panics with what it logged if it exits or does not come up in time.
    pub(crate) fn start(env: &Env) -> Daemon {
        // The log goes to a file: a pipe nobody reads would block a chatty daemon.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let log = env.state.parent().unwrap().join(format!("daemon-{nanos}.log"));
        let mut child = env
            .cmd()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("agentctl serve starts");
        let endpoint = env.state.join("daemon/endpoint.json");
        let started = Instant::now();
        // This daemon's endpoint (a killed one's file may still be there).
        let ep = loop {
            let ep: Option<Value> = std::fs::read_to_string(&endpoint)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if let Some(ep) = ep.filter(|e| e["pid"] == child.id()) {
                break ep;
            }
            let exited = child.try_wait().unwrap();
            if exited.is_some() || started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "the daemon did not come up in {:?} ({status}): {}",
                    started.elapsed(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let token = std::fs::read_to_string(env.state.join("daemon/token")).unwrap();
        Daemon {
            child: Some(child),
            addr: ep["listen"].as_str().unwrap().to_owned(),
            socket: PathBuf::from(ep["socket"].as_str().unwrap()),
            token: token.trim().to_owned(),
            log,
        }
    }

    /// SIGKILLs the daemon (no cleanup of any kind); returns what it logged.
    pub(crate) fn kill9(mut self) -> String {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// A request with the default token.
    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, _, body) = self.raw(method, path, Some(&self.token), &[], body.map(Value::to_string));
        (status, body)
    }

    pub(crate) fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (u16, String, Value) {
        let stream = std::net::TcpStream::connect(&self.addr).expect("connect");
        exchange(stream, method, path, token, headers, body)
    }

    /// Stops the daemon with SIGTERM; returns its exit status and its log.
    pub(crate) fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        (status, log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
    }
}

/// One HTTP/1.1 exchange on `stream` (the server closes it after answering).
fn exchange<S: Read + Write>(
    mut stream: S,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, String, Value) {
    let body = body.unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(rest).unwrap_or(Value::Null);
    (status, head.to_owned(), json)
}

pub(crate) fn wait_state(d: &Daemon, id: &str, done: impl Fn(&str) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, run) = d.call("GET", &format!("/v1/runs/{id}"), None);
        assert_eq!(status, 200, "{run}");
        if done(run["state"].as_str().unwrap()) {
            return run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run {id} stays {}",
            run["state"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn create_body(env: &Env, script: &str) -> Value {
    json!({ "command": ["sh", "-c", script], "repo": env.repo })
}

#[test]
fn health_needs_no_token_and_every_other_route_does() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let (status, _, body) = d.raw("GET", "/v1/healthz", None, &[], None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _, body) = d.raw("GET", "/v1/readyz", None, &[], None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    for (method, path) in [
        ("GET", "/v1/runs"),
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs/x"),
        ("DELETE", "/v1/runs/x"),
        ("POST", "/v1/runs/x/stop"),
        ("GET", "/v1/runs/x/events"),
        ("GET", "/v1/runs/x/logs"),
        ("GET", "/v1/runs/x/checkpoints"),
        ("POST", "/v1/runs/x/checkpoints"),
        ("GET", "/v1/runs/x/diff"),
        ("POST", "/v1/runs/x/rollback"),
        ("GET", "/v1/agents"),
    ] {
        let (status, head, body) = d.raw(method, path, None, &[], None);
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{method} {path}: {body}");
        assert!(head.to_lowercase().contains("www-authenticate: bearer"), "{head}");
        let (status, _, body) = d.raw(method, path, Some("agentctl_wrong"), &[], None);
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHORIZED")));
    }
    let (status, body) = d.call("GET", "/v1/runs", None);
    assert_eq!((status, &body["runs"]), (200, &json!([])));
    let (status, body) = d.call("GET", "/v1/nope", None);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, body) = d.call("PUT", "/v1/runs", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("INVALID_ARGUMENT"))
    );
    let (status, body) = d.call("GET", "/v1/runs/nope", None);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("RUN_NOT_FOUND")));
    let (status, body) = d.call("GET", "/v1/agents", None);
    assert_eq!(status, 200);
    assert!(
        body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "command"),
        "{body}"
    );
}

#[test]
fn a_run_through_the_api_looks_as_it_does_through_the_cli() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let (status, run) = d.call(
        "POST",
        "/v1/runs",
        Some(&create_body(&env, "echo hello from the agent; echo hi > hi.txt")),
    );
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let done = wait_state(&d, &id, |s| s == "succeeded");
    let (cli, _) = env.json(&["show", &id]);
    for key in [
        "id",
        "state",
        "agent",
        "worktree",
        "branch",
        "base_commit",
        "exit_code",
        "created_at",
    ] {
        assert_eq!(done[key], cli[key], "{key}");
    }
    let (status, logs) = d.call("GET", &format!("/v1/runs/{id}/logs"), None);
    assert_eq!(status, 200);
    assert_eq!(logs["chunks"][0]["data"], "hello from the agent\n", "{logs}");
    let (_, events) = d.call("GET", &format!("/v1/runs/{id}/events"), None);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"created"), "{kinds:?}");
    assert!(kinds.contains(&"finished"), "{kinds:?}");
    let (_, after) = d.call("GET", &format!("/v1/runs/{id}/events?after=1"), None);
    assert_eq!(after["events"][0]["seq"], 2);
    // Checkpoints: list, diff, take, roll back.
    let (status, cps) = d.call("GET", &format!("/v1/runs/{id}/checkpoints"), None);
    assert_eq!(status, 200);
    let cps = cps["checkpoints"].as_array().unwrap().clone();
    assert!(cps.len() >= 2, "baseline and final: {cps:?}");
    let (status, diff) = d.call("GET", &format!("/v1/runs/{id}/diff?from=base&format=stat"), None);
    assert_eq!(status, 200, "{diff}");
    assert_eq!(diff["files"][0]["path"], "hi.txt", "{diff}");
    assert!(diff["text"].as_str().unwrap().contains("hi.txt"), "{diff}");
    let (status, cp) = d.call(
        "POST",
        &format!("/v1/runs/{id}/checkpoints"),
        Some(&json!({"message": "m"})),
    );
    assert_eq!((status, cp["created"].as_bool()), (200, Some(false)), "unchanged: {cp}");
    std::fs::write(Path::new(done["worktree"].as_str().unwrap()).join("more.txt"), "more\n").unwrap();
    let (status, cp) = d.call("POST", &format!("/v1/runs/{id}/checkpoints"), None);
    assert_eq!((status, cp["trigger"].as_str()), (201, Some("manual")), "{cp}");
    let (status, rb) = d.call("POST", &format!("/v1/runs/{id}/rollback"), Some(&json!({"to": 0})));
    assert_eq!(status, 200, "{rb}");
    assert!(!Path::new(done["worktree"].as_str().unwrap()).join("hi.txt").exists());
    let (status, rb) = d.call("POST", &format!("/v1/runs/{id}/rollback"), Some(&json!({"to": 999})));
    assert_eq!(
        (status, rb["error"]["code"].as_str()),
        (404, Some("CHECKPOINT_NOT_FOUND"))
    );
    let (status, rb) = d.call("POST", &format!("/v1/runs/{id}/rollback"), Some(&json!({"to": true})));
    assert_eq!((status, rb["error"]["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
    let (status, diff) = d.call("GET", &format!("/v1/runs/{id}/diff?format=html"), None);
    assert_eq!(
        (status, diff["error"]["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    // Delete, then it is gone.
    let (status, rm) = d.call("DELETE", &format!("/v1/runs/{id}"), None);
    assert_eq!(status, 200, "{rm}");
    let (status, gone) = d.call("GET", &format!("/v1/runs/{id}"), None);
    assert_eq!((status, gone["error"]["code"].as_str()), (404, Some("RUN_NOT_FOUND")));
}

#[test]
fn stop_and_delete_of_an_active_run() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let (_, run) = d.call("POST", "/v1/runs", Some(&create_body(&env, "sleep 30")));
    let id = run["id"].as_str().unwrap().to_owned();
    wait_state(&d, &id, |s| s == "running");
    let (status, rm) = d.call("DELETE", &format!("/v1/runs/{id}"), None);
    assert_eq!(
        (status, rm["error"]["code"].as_str()),
        (409, Some("RUN_ACTIVE")),
        "{rm}"
    );
    let (status, stopped) = d.call("POST", &format!("/v1/runs/{id}/stop?grace_ms=500"), None);
    assert!(status == 202 || status == 200, "{status} {stopped}");
    let end = wait_state(&d, &id, |s| s == "cancelled");
    assert_eq!(end["state"], "cancelled");
    let (status, bad) = d.call("POST", &format!("/v1/runs/{id}/stop?grace_ms=soon"), None);
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
}

/// What the API fuzzer found: once `gc` removed a run's worktree and a later pruning `gc`
/// deleted its refs and object store, listing its checkpoints was a 500 (git's "bad object").
/// The list answers, marking them pruned; a diff of one is a 410 with a code of its own.
#[test]
fn checkpoints_of_a_pruned_run_are_listed_as_pruned_and_diffs_are_gone() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let (_, run) = d.call("POST", "/v1/runs", Some(&create_body(&env, "echo hi > hi.txt")));
    let id = run["id"].as_str().unwrap().to_owned();
    wait_state(&d, &id, |s| s == "succeeded");
    let (status, gc) = d.call("POST", "/v1/gc", Some(&json!({"older_than_ms": 0})));
    assert_eq!(
        (status, gc["runs"][0]["action"].as_str()),
        (200, Some("removed")),
        "{gc}"
    );
    let (status, cps) = d.call("GET", &format!("/v1/runs/{id}/checkpoints"), None);
    assert_eq!(status, 200, "{cps}");
    assert!(
        cps["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["pruned"] == false),
        "{cps}"
    );
    let (status, gc) = d.call("POST", "/v1/gc", Some(&json!({"prune_refs": true})));
    assert_eq!(
        (status, gc["pruned_refs"][0]["run"].as_str()),
        (200, Some(id.as_str())),
        "{gc}"
    );
    let (status, cps) = d.call("GET", &format!("/v1/runs/{id}/checkpoints"), None);
    assert_eq!(status, 200, "{cps}");
    let list = cps["checkpoints"].as_array().unwrap();
    assert!(list.len() >= 2, "{cps}");
    for cp in list {
        assert_eq!(
            (cp["pruned"].as_bool(), cp["files_changed"].is_null()),
            (Some(true), true),
            "{cps}"
        );
    }
    for query in ["to=last", "from=0"] {
        let (status, diff) = d.call("GET", &format!("/v1/runs/{id}/diff?{query}"), None);
        assert_eq!(
            (status, diff["error"]["code"].as_str()),
            (410, Some("CHECKPOINT_PRUNED")),
            "{diff}"
        );
    }
    let (status, rb) = d.call("POST", &format!("/v1/runs/{id}/rollback"), Some(&json!({"to": 0})));
    assert_eq!(
        (status, rb["error"]["code"].as_str()),
        (410, Some("WORKTREE_GONE")),
        "{rb}"
    );
}

#[test]
fn idempotent_create_under_50_concurrent_duplicates_makes_one_run() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let body = create_body(&env, "true").to_string();
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    let (status, _, v) = d.raw(
                        "POST",
                        "/v1/runs",
                        Some(&d.token),
                        &[("Idempotency-Key", "deploy-42")],
                        Some(body.clone()),
                    );
                    (status, v)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{results:?}");
    assert!(results.iter().all(|(s, _)| *s == 200 || *s == 201), "{results:?}");
    let ids: std::collections::BTreeSet<&str> = results.iter().map(|(_, v)| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (_, list) = d.call("GET", "/v1/runs", None);
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
    // The same key with another body is a conflict; an id and a key together are refused.
    let other = create_body(&env, "false").to_string();
    let (status, _, v) = d.raw(
        "POST",
        "/v1/runs",
        Some(&d.token),
        &[("Idempotency-Key", "deploy-42")],
        Some(other),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("RUN_ID_CONFLICT")),
        "{v}"
    );
    let both = json!({"id": "x1", "command": ["true"], "repo": env.repo}).to_string();
    let (status, _, v) = d.raw(
        "POST",
        "/v1/runs",
        Some(&d.token),
        &[("Idempotency-Key", "k")],
        Some(both),
    );
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
}

#[test]
fn bad_bodies_get_clear_errors() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let post = |body: String| {
        let (status, _, v) = d.raw("POST", "/v1/runs", Some(&d.token), &[], Some(body));
        (status, v["error"]["code"].as_str().unwrap_or_default().to_owned(), v)
    };
    let (status, code, _) = post("{not json".into());
    assert_eq!((status, code.as_str()), (400, "INVALID_ARGUMENT"));
    let (status, code, v) = post(json!({"command": ["true"], "repo": env.repo, "colour": 1}).to_string());
    assert_eq!((status, code.as_str()), (400, "INVALID_ARGUMENT"), "unknown field: {v}");
    let (status, code, _) = post(json!({"command": ["true"], "repo": "relative"}).to_string());
    assert_eq!((status, code.as_str()), (400, "INVALID_ARGUMENT"));
    let (status, code, _) = post(json!({"command": ["true"], "repo": "/"}).to_string());
    assert_eq!((status, code.as_str()), (422, "NOT_A_GIT_REPO"));
    let (status, code, _) = post(json!({"agent": "nobody", "prompt": "x", "repo": env.repo}).to_string());
    assert_eq!((status, code.as_str()), (404, "AGENT_NOT_FOUND"));
    let (status, code, _) = post(json!({"id": "bad id", "command": ["true"], "repo": env.repo}).to_string());
    assert_eq!((status, code.as_str()), (400, "INVALID_ARGUMENT"));
    let huge = json!({"command": ["true"], "repo": env.repo, "prompt": "x".repeat(2 << 20)}).to_string();
    let (status, code, _) = post(huge);
    assert_eq!((status, code.as_str()), (413, "PAYLOAD_TOO_LARGE"));
}

#[test]
fn listing_filters_and_pages_newest_first() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let mut made = Vec::new();
    for i in 0..5 {
        let mut body = create_body(&env, "true");
        body["labels"] = json!({"batch": if i % 2 == 0 { "even" } else { "odd" }});
        body["id"] = json!(format!("r{i}"));
        let (status, run) = d.call("POST", "/v1/runs", Some(&body));
        assert_eq!(status, 201, "{run}");
        made.push(run["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/runs?limit=2".to_owned();
    loop {
        let (status, page) = d.call("GET", &path, None);
        assert_eq!(status, 200, "{page}");
        let runs = page["runs"].as_array().unwrap();
        assert!(runs.len() <= 2);
        seen.extend(runs.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/runs?limit=2&cursor={c}"),
            None => break,
        }
    }
    made.reverse();
    assert_eq!(seen, made, "every run once, newest first");
    let (_, even) = d.call("GET", "/v1/runs?label=batch=even", None);
    assert_eq!(even["runs"].as_array().unwrap().len(), 3);
    let (_, none) = d.call("GET", "/v1/runs?state=running,pending&agent=command", None);
    assert!(none["runs"].as_array().unwrap().len() <= 5);
    for bad in ["state=sleepy", "limit=0", "limit=x", "cursor=zzz", "label=nokey"] {
        let (status, v) = d.call("GET", &format!("/v1/runs?{bad}"), None);
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("INVALID_ARGUMENT")),
            "{bad}: {v}"
        );
    }
}

#[test]
fn tokens_are_managed_from_the_cli_and_take_effect_at_once() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let (made, out) = env.json(&["token", "create", "--name", "ci"]);
    assert!(out.status.success(), "{made}");
    let token = made["token"].as_str().unwrap().to_owned();
    let (status, _, _) = d.raw("GET", "/v1/runs", Some(&token), &[], None);
    assert_eq!(status, 200);
    let (list, _) = env.json(&["token", "list"]);
    let ids: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", made["id"].as_str().unwrap()]);
    assert!(!list.to_string().contains(&token), "values are never listed");
    let (_, out) = env.json(&["token", "revoke", made["id"].as_str().unwrap()]);
    assert!(out.status.success());
    let (status, _, _) = d.raw("GET", "/v1/runs", Some(&token), &[], None);
    assert_eq!(status, 401, "revoked tokens are refused at once");
    let (v, out) = env.json(&["token", "revoke", "nope"]);
    assert_eq!(
        (v["error"]["code"].as_str(), out.status.code()),
        (Some("TOKEN_NOT_FOUND"), Some(66))
    );
}

#[test]
fn one_daemon_per_state_dir_and_sigterm_leaves_runs_running() {
    let env = Env::new();
    let mut d = Daemon::start(&env);
    let (v, out) = env.json(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(v["error"]["code"], "DAEMON_RUNNING", "{v}");
    assert_eq!(out.status.code(), Some(75));
    // The unix socket serves the same API.
    let stream = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let (status, _, body) = exchange(stream, "GET", "/v1/runs", Some(&d.token), &[], None);
    assert_eq!((status, &body["runs"]), (200, &json!([])));
    let (_, run) = d.call(
        "POST",
        "/v1/runs",
        Some(&create_body(&env, "sleep 2; echo done > done.txt")),
    );
    let id = run["id"].as_str().unwrap().to_owned();
    wait_state(&d, &id, |s| s == "running");
    let (status, log) = d.terminate();
    assert!(status.success(), "{status}: {log}");
    assert!(log.lines().any(|l| l.contains("shutting down")), "{log}");
    assert!(
        log.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "JSON logs: {log}"
    );
    assert!(!env.state.join("daemon/endpoint.json").exists());
    assert!(!d.socket.exists());
    // The run belongs to its supervisor, not to the daemon.
    let end = env.wait(&id);
    assert_eq!(end["state"], "succeeded", "{end}");
    // Refused: a non-loopback address without --allow-remote.
    let (v, out) = env.json(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(
        (v["error"]["code"].as_str(), out.status.code()),
        (Some("INVALID_ARGUMENT"), Some(64))
    );
}

/// Opens an SSE request and returns the events it delivers (`id`, parsed `data`), stopping
/// after `limit` events (then dropping the connection) or when the server ends the stream.
pub(crate) fn sse(d: &Daemon, path: &str, headers: &[(&str, &str)], limit: Option<usize>) -> Vec<(u64, Value)> {
    crate::streams::read_stream(d, path, headers, |m| limit.is_some_and(|n| m.len() >= n))
        .into_iter()
        .map(|(id, _, data)| (id.parse().unwrap(), data))
        .collect()
}

#[test]
fn event_streams_resume_after_a_disconnect_without_gap_or_duplicate() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let script = "for i in 1 2 3 4 5 6; do echo $i > f$i.txt; sleep 0.3; done";
    let mut body = create_body(&env, script);
    body["checkpoints"] = json!({"every_ms": 100});
    let (_, run) = d.call("POST", "/v1/runs", Some(&body));
    let id = run["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/runs/{id}/events?follow=true");
    // Read a few events live, hang up, and come back with the last id seen.
    let first = sse(&d, &path, &[], Some(4));
    assert_eq!(first.len(), 4);
    let last = first.last().unwrap().0.to_string();
    let rest = sse(&d, &path, &[("Last-Event-ID", &last)], None);
    let got: Vec<u64> = first.iter().chain(&rest).map(|(i, _)| *i).collect();
    // The stream ended with the run: the concatenation is the log, every event once, in order.
    let (_, log) = d.call("GET", &format!("/v1/runs/{id}/events"), None);
    let log: Vec<Value> = log["events"].as_array().unwrap().clone();
    let want: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(&got[..], &want[..got.len()], "no gap, no duplicate");
    assert!(
        rest.iter().any(|(_, e)| e["data"]["type"] == "finished"),
        "the followed stream runs to the end of the run"
    );
    for (i, e) in first.iter().chain(&rest) {
        assert_eq!(e["seq"].as_u64(), Some(*i), "the SSE id is the event's seq");
        assert_eq!(Some(e), log.iter().find(|l| l["seq"].as_u64() == Some(*i)));
    }
    // Without follow, a stream sends what is there and ends; a bad Last-Event-ID is refused.
    let all = sse(&d, &format!("/v1/runs/{id}/events"), &[], None);
    assert_eq!(all.len(), log.len());
    let (status, _, v) = d.raw("GET", &path, Some(&d.token), &[("Last-Event-ID", "x")], None);
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
}

#[test]
fn a_daemon_killed_with_sigkill_is_restarted_and_finds_its_runs_as_they_are() {
    let env = Env::new();
    let mut d = Daemon::start(&env);
    let (_, run) = d.call(
        "POST",
        "/v1/runs",
        Some(&create_body(&env, "echo one; sleep 1.5; echo two")),
    );
    let id = run["id"].as_str().unwrap().to_owned();
    let before = wait_state(&d, &id, |s| s == "running");
    let mut child = d.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    assert!(
        env.state.join("daemon/endpoint.json").exists(),
        "left behind by the killed daemon"
    );
    let d = Daemon::start(&env);
    let again = wait_state(&d, &id, |_| true);
    assert_eq!(again["state"], "running", "{again}");
    assert_eq!(again["pid"], before["pid"], "the same agent, never restarted");
    let end = wait_state(&d, &id, |s| s != "running");
    assert_eq!(end["state"], "succeeded", "{end}");
    let (_, logs) = d.call("GET", &format!("/v1/runs/{id}/logs"), None);
    let out: String = logs["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["data"].as_str().unwrap())
        .collect();
    assert_eq!(out, "one\ntwo\n", "output continuous across the daemon's death");
}

#[test]
fn metrics_count_runs_starts_checkpoints_and_event_lag() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let (_, run) = d.call("POST", "/v1/runs", Some(&create_body(&env, "echo x > x.txt")));
    let id = run["id"].as_str().unwrap().to_owned();
    wait_state(&d, &id, |s| s == "succeeded");
    let (status, _, _) = d.raw("GET", "/metrics", None, &[], None);
    assert_eq!(status, 401, "metrics need a token too");
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    // The daemon sees events within a few hundred ms of their append.
    let started = Instant::now();
    let text = loop {
        let mut stream = std::net::TcpStream::connect(&d.addr).unwrap();
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
            d.token
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        stream.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let body = resp.split_once("\r\n\r\n").unwrap().1.to_owned();
        if metric(&body, "agentctl_run_duration_seconds_count") >= 1.0 || started.elapsed() > Duration::from_secs(10) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(metric(&text, "agentctl_runs{state=\"succeeded\"}"), 1.0, "{text}");
    assert_eq!(metric(&text, "agentctl_runs{state=\"running\"}"), 0.0);
    assert_eq!(metric(&text, "agentctl_run_starts_total"), 1.0);
    assert_eq!(metric(&text, "agentctl_run_duration_seconds_count"), 1.0);
    assert!(
        metric(&text, "agentctl_checkpoint_duration_seconds_count") >= 2.0,
        "baseline and final"
    );
    assert!(metric(&text, "agentctl_event_log_lag_seconds_count") >= 5.0);
    assert!(
        metric(&text, "agentctl_event_log_lag_seconds_bucket{le=\"1\"}") >= 5.0,
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        value.parse::<f64>().unwrap_or_else(|_| panic!("not a sample: {line}"));
    }
}

#[test]
fn the_daemon_is_not_the_parent_of_the_supervisors_it_starts() {
    let env = Env::new();
    let d = Daemon::start(&env);
    for _ in 0..3 {
        let (_, run) = d.call("POST", "/v1/runs", Some(&create_body(&env, "true")));
        wait_state(&d, run["id"].as_str().unwrap(), |s| s == "succeeded");
    }
    // No child processes left behind (zombies included): supervisors belong to no caller.
    let pid = d.child.as_ref().unwrap().id();
    let mut children = String::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        children.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    }
    assert_eq!(children.trim(), "", "children of the daemon");
}

#[test]
fn bench_api_measures_both_routes_on_a_real_daemon() {
    let env = Env::new();
    let (v, out) = env.json(&["bench", "api", "--connections", "2", "--seconds", "0.3"]);
    assert!(out.status.success(), "{v}");
    let api = &v["api"];
    let (run, hello) = (
        api["run_get_per_s"].as_f64().unwrap(),
        api["healthz_per_s"].as_f64().unwrap(),
    );
    assert!(run > 0.0 && hello > 0.0, "{v}");
    assert!((api["ratio"].as_f64().unwrap() - run / hello).abs() < 1e-9);
    assert_eq!(api["goal_ratio"], 0.6);
    let (v, out) = env.json(&["bench", "api", "--connections", "0"]);
    assert_eq!(
        (v["error"]["code"].as_str(), out.status.code()),
        (Some("INVALID_ARGUMENT"), Some(64))
    );
}
