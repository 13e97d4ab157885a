//! Webhooks from a real daemon to a real HTTP receiver on a loopback port: signed deliveries of
//! the events a run writes (whichever process writes them), in order, filtered by type, retried
//! when the receiver fails. Over HTTPS too, to `openssl s_server` with a CA made at test time:
//! delivered when `ca_file` trusts it, refused (certificate error in the daemon's log, retried)
//! when nothing does.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
            let (headers, body) = read_post(&mut r, &line);
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
    let config = env.dir.path().join("config/config.toml");
    let refused = |toml: &str, expect: &str| {
        std::fs::write(&config, format!("[[webhooks]]\nsecret = \"s\"\n{toml}\n")).unwrap();
        let (v, out) = env.json(&["serve", "--listen", "127.0.0.1:0"]);
        assert_eq!(v["error"]["code"], "INVALID_CONFIG", "{v}");
        assert_eq!(out.status.code(), Some(78));
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(expect) && msg.contains(&config.display().to_string()),
            "{toml}: {v}"
        );
    };
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    refused("url = \"ftp://example.test/x\"", "must start with http:// or https://");
    refused(
        "url = \"http://127.0.0.1:1/x\"\nca_file = \"ca.pem\"",
        "ca_file only applies to https://",
    );
    // A relative ca_file is looked for next to config.toml.
    refused(
        "url = \"https://127.0.0.1:1/x\"\nca_file = \"nowhere.pem\"",
        &env.dir.path().join("config/nowhere.pem").display().to_string(),
    );
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

/// Runs `openssl` in `dir` with `args` (split at spaces).
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .expect("these tests need the openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certificates made now in `dir`: `ca.pem` (a CA), `server.pem` + `server.key` (issued by it
/// for localhost and 127.0.0.1), and `other-ca.pem` (an unrelated CA).
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    for name in ["ca", "other-ca"] {
        openssl(
            dir,
            &format!(
                "req -x509 {new_key} -keyout {name}.key -out {name}.pem -days 2 -subj /CN=agentctl-test-{name} \
                 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
            ),
        );
    }
    openssl(
        dir,
        &format!("req {new_key} -keyout server.key -out server.csr -subj /CN=localhost"),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
         -extfile server.ext",
    );
}

/// An HTTPS receiver: `openssl s_server` on a loopback port (one connection at a time, each
/// request's bytes on its stdout), answered 200 through its stdin. Killed when dropped.
struct TlsReceiver {
    child: Child,
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl TlsReceiver {
    fn start(certs: &Path) -> TlsReceiver {
        // A port the kernel just handed out, free again for s_server.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("openssl")
            .current_dir(certs)
            .args(["s_server", "-quiet", "-cert", "server.pem", "-key", "server.key"])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("these tests need the openssl CLI");
        let mut answers = child.stdin.take().unwrap();
        let mut r = BufReader::new(child.stdout.take().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = got.clone();
        std::thread::spawn(move || {
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let (headers, body) = read_post(&mut r, &line);
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                if answers
                    .write_all(answer.as_bytes())
                    .and_then(|()| answers.flush())
                    .is_err()
                {
                    return;
                }
                log.lock().unwrap().push(Received {
                    headers,
                    body,
                    status: 200,
                });
            }
        });
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "openssl s_server never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsReceiver { child, port, got }
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon whose log (JSON lines on stderr) goes to a file, so it can be read while it runs,
/// and whose system root certificates are those of the PEM file `system_roots`; SIGTERM'd when
/// dropped.
struct LoggedDaemon {
    child: Child,
    log: PathBuf,
}

impl LoggedDaemon {
    fn start(env: &Env, system_roots: &Path) -> LoggedDaemon {
        let log = env.dir.path().join("daemon.log");
        let mut cmd = env.cmd();
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        // Where rustls-native-certs looks instead of the system's store.
        cmd.env("SSL_CERT_FILE", system_roots).env_remove("SSL_CERT_DIR");
        let child = cmd.spawn().expect("agentctl serve starts");
        // Started once its endpoint names it: from then on it follows every run's events.
        let endpoint = env.state.join("daemon/endpoint.json");
        let started = Instant::now();
        loop {
            let ep: Option<Value> = std::fs::read_to_string(&endpoint)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if ep.is_some_and(|e| e["pid"] == child.id()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the daemon never started: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        LoggedDaemon { child, log }
    }

    /// The log lines so far.
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for LoggedDaemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A `[[webhooks]]` table for `https://localhost:<port>/hooks/agentctl`.
fn configure_https(env: &Env, port: u16, extra: &str) {
    let dir = env.dir.path().join("config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[[webhooks]]\nurl = \"https://localhost:{port}/hooks/agentctl\"\nsecret = \"s3cret\"\n\
             events = [\"finished\"]\n{extra}"
        ),
    )
    .unwrap();
}

#[test]
fn https_deliveries_trust_the_ca_file() {
    let env = Env::new();
    let certs = env.dir.path().join("certs");
    make_certs(&certs);
    let receiver = TlsReceiver::start(&certs);
    // Relative to the config dir.
    configure_https(&env, receiver.port, "ca_file = \"private/ca.pem\"\n");
    std::fs::create_dir_all(env.dir.path().join("config/private")).unwrap();
    std::fs::copy(certs.join("ca.pem"), env.dir.path().join("config/private/ca.pem")).unwrap();
    // The system's roots: another CA, so only ca_file can make the receiver trusted.
    let d = LoggedDaemon::start(&env, &certs.join("other-ca.pem"));
    let (run, out) = env.json(&["run", "--", "true"]);
    assert!(out.status.success(), "{run}");
    let id = run["id"].as_str().unwrap();
    let started = Instant::now();
    let r = loop {
        if let Some(r) = receiver.got.lock().unwrap().first().cloned() {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing delivered over https: {:?}",
            d.lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.headers["x-agentctl-event"], "finished");
    assert_eq!(r.headers["host"], format!("localhost:{}", receiver.port));
    let ts: i64 = r.headers["x-agentctl-timestamp"].parse().unwrap();
    assert_eq!(
        r.headers["x-agentctl-signature"],
        api::webhooks::signature("s3cret", ts, &r.body)
    );
    let e: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(e["run_id"], id);
    assert_eq!(Some(&e), env.events(id).iter().find(|l| l["seq"] == e["seq"]));
}

#[test]
fn an_untrusted_https_receiver_is_a_logged_retried_failure() {
    let env = Env::new();
    let certs = env.dir.path().join("certs");
    make_certs(&certs);
    let receiver = TlsReceiver::start(&certs);
    configure_https(&env, receiver.port, "");
    // The daemon's system store: one CA, not the one that issued the receiver's certificate.
    let d = LoggedDaemon::start(&env, &certs.join("other-ca.pem"));
    let (run, out) = env.json(&["run", "--", "true"]);
    assert!(out.status.success(), "{run}");
    // The run is not held up by its webhook.
    assert_eq!(run["state"], "succeeded", "{run}");
    let delivery = format!("{}:", run["id"].as_str().unwrap());
    let started = Instant::now();
    let failures = loop {
        let failures: Vec<Value> = d
            .lines()
            .into_iter()
            .filter(|l| {
                l["message"] == "webhook TLS handshake failed"
                    && l["delivery"].as_str().is_some_and(|d| d.starts_with(&delivery))
            })
            .collect();
        if failures.len() >= 2 {
            break failures;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no retried TLS failure in the log: {:?}",
            d.lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(failures[0]["attempt"], 1);
    assert_eq!(failures[1]["attempt"], 2);
    assert_eq!(failures[0]["delivery"], failures[1]["delivery"]);
    assert_eq!(failures[0]["level"], "WARN");
    let error = failures[0]["error"].as_str().unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(receiver.got.lock().unwrap().is_empty(), "nothing is sent");
}

/// The rest of a webhook POST whose request line is `first`: its headers (names lowercased) and
/// body.
fn read_post(r: &mut impl BufRead, first: &str) -> (BTreeMap<String, String>, Vec<u8>) {
    assert!(first.starts_with("POST /hooks/agentctl HTTP/1.1"), "{first}");
    let mut headers = BTreeMap::new();
    let mut line = String::new();
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
    (headers, body)
}
