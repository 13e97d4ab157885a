//! Secrets kept out of the sandbox (`--secret NAME@HOST` in `--network proxy`): the agent gets
//! a placeholder, and the egress proxy — terminating TLS for that host with the run's own CA,
//! which the agent's tools are pointed at — puts the real value in on the way out and takes it
//! out again on the way back. Against a real HTTPS server (Python's `ssl`, a test CA made with
//! the `openssl` CLI) and real `curl` inside bubblewrap.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::harness::{Env, all_files, contains, events_of, stderr};

/// An HTTPS server on 127.0.0.1 with a certificate for `localhost` from a test CA; it appends
/// each request's `Authorization` header to a file and answers with it.
struct Upstream {
    child: Child,
    port: u16,
    seen: PathBuf,
    ca: PathBuf,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        with open(sys.argv[3], "a") as f:
            f.write(auth + "\n")
        body = ("you sent: " + auth + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn upstream(dir: &Path) -> Upstream {
    sh(
        dir,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=agentctl-test-ca 2>/dev/null && \
         openssl req -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr -subj /CN=localhost 2>/dev/null && \
         printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > leaf.ext && \
         openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile leaf.ext 2>/dev/null",
    );
    let seen = dir.join("seen.log");
    let mut child = Command::new("python3")
        .args(["-c", SERVER])
        .arg(dir.join("leaf.pem"))
        .arg(dir.join("leaf.key"))
        .arg(&seen)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| panic!("no port: {line:?}"));
    Upstream {
        child,
        port,
        seen,
        ca: dir.join("ca.pem"),
    }
}

#[test]
fn a_proxied_secret_never_enters_the_sandbox_and_reaches_only_its_host() {
    let env = Env::new();
    let up = upstream(env.dir.path());
    let secret = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz";
    let port = up.port.to_string();
    // The agent records what it was given, calls its API host with it, and sends it to a
    // host the secret is not bound to (tunneled untouched: the placeholder arrives there).
    let script = r#"set -e
printf '%s' "$API_KEY" > given.txt
curl -sS --fail -m 10 "https://localhost:$1/v1" -H "Authorization: Bearer $API_KEY"
curl -sS -k -m 10 "https://127.0.0.1:$1/other" -H "Authorization: Bearer $API_KEY" > /dev/null
# Fronting: the bound host's tunnel, another site's Host header. Refused before anything goes up.
echo "fronted=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "https://localhost:$1/x" -H 'Host: other.example' -H "Authorization: Bearer $API_KEY")"
"#;
    let out = env
        .cmd()
        .env("API_KEY", secret)
        .env("AGENTCTL_PROXY_CA_FILE", &up.ca)
        .args([
            "--json",
            "run",
            "--network",
            "proxy",
            "--allow-internal-network",
            "--allow-domain",
            "127.0.0.1",
            "--secret",
            "API_KEY@localhost",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &port,
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "succeeded", "{v}\n{}", env.logs(&id));
    // Inside: a placeholder of the same length, not the key.
    let wt = PathBuf::from(v["worktree"].as_str().unwrap());
    let given = std::fs::read_to_string(wt.join("given.txt")).unwrap();
    assert_ne!(given, secret);
    assert_eq!(given.len(), secret.len());
    // The bound host got the key; the other one only the placeholder.
    let seen = std::fs::read_to_string(&up.seen).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 2, "{seen}");
    assert_eq!(lines[0], format!("Bearer {secret}"));
    assert_eq!(lines[1], format!("Bearer {given}"));
    // The answer echoing the key came back with the placeholder in its place.
    let log = env.logs(&id);
    assert!(log.contains(&format!("you sent: Bearer {given}")), "{log}");
    assert!(log.contains("fronted=421"), "{log}");
    let refused = events_of(&env, &id, "network_refused");
    assert!(
        refused
            .iter()
            .any(|r| r["reason"].as_str().unwrap_or("").contains("host")),
        "{refused:?}"
    );
    // Recorded by name.
    let iso = &events_of(&env, &id, "isolated")[0];
    assert_eq!(iso["proxied_secrets"], serde_json::json!(["API_KEY"]), "{iso}");
    let injected = events_of(&env, &id, "secret_injected");
    assert!(!injected.is_empty(), "no secret_injected event");
    assert_eq!(injected[0]["host"], "localhost");
    assert_eq!(injected[0]["secrets"], serde_json::json!(["API_KEY"]));
    // The key is nowhere under the state dir, nor in the worktree.
    let mut files = Vec::new();
    all_files(&env.state, &mut files);
    let holding: Vec<&PathBuf> = files
        .iter()
        .filter(|(_, bytes)| contains(bytes, secret.as_bytes()))
        .map(|(p, _)| p)
        .collect();
    assert!(holding.is_empty(), "the key was written to {holding:?}");
}

#[test]
fn a_proxied_secret_needs_the_proxy_and_a_value_long_enough() {
    let env = Env::new();
    // Not in proxy mode: refused at create time, nothing made.
    let out = env
        .cmd()
        .env("API_KEY", "sk-test-0123456789abcdefghijklmnop")
        .args(["--json", "run", "--secret", "API_KEY@api.example.com", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--network proxy"),
        "{v}"
    );
    // Too short to stand in for: the run fails before the agent starts, saying why.
    let out = env
        .cmd()
        .env("API_KEY", "short-key")
        .args([
            "--json",
            "run",
            "--network",
            "proxy",
            "--secret",
            "API_KEY@api.example.com",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("API_KEY"), "{v}");
    assert!(events_of(&env, v["id"].as_str().unwrap(), "started").is_empty());
}
