//! Test harness: a temp dir holding a git repository (with workflows), a state dir and a user
//! config dir; a daemon serving the state dir; HTTP/1.1 exchanges over TCP and the unix socket.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What the child process is to be: `serve` or `supervise`.
const ROLE: &str = "AGENTCTL_API_TEST_ROLE";
/// The state dir (both roles).
const STATE: &str = "AGENTCTL_API_TEST_STATE";
/// The run to supervise.
const RUN: &str = "AGENTCTL_API_TEST_RUN";

/// The arguments that make this test binary run only [`crate::child_process`].
const CHILD_ARGS: [&str; 5] = ["--exact", "child_process", "--nocapture", "--test-threads=1", "--quiet"];

/// Becomes the daemon or a supervisor when the environment says so (and never returns then).
pub fn child_process() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let state = PathBuf::from(std::env::var_os(STATE).expect("the state dir"));
    let code = match role.as_str() {
        "serve" => serve(&state),
        "supervise" => {
            let run = std::env::var(RUN).expect("the run id");
            let id = model::RunId::parse(&run).expect("a run id");
            engine::supervisor::run_supervisor(store::StateLayout::new(&state), &id)
        }
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

/// The daemon: as `agentctl serve --listen 127.0.0.1:0`, with the engine `agentctl` would build
/// (the user's workflows in `<tmp>/config/workflows`), whose supervisors are this binary.
fn serve(state: &Path) -> i32 {
    let layout = store::StateLayout::new(state);
    let store = store::Store::open(layout.clone()).expect("the state dir opens");
    let provider = supervise::LocalProvider::new(supervisor_script(state), state.to_owned(), layout.runs_dir());
    let config = engine::EngineConfig {
        user_workflows_dir: Some(config_dir(state).join("workflows")),
        ..Default::default()
    };
    let engine = engine::Engine::new(store, Arc::new(provider), config);
    let opts = api::ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_remote: false,
        request_timeout: Duration::from_secs(30),
        webhooks: Vec::new(),
    };
    match api::serve(engine, opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("serve: {} {}", e.code, e.message);
            1
        }
    }
}

/// The user's config dir next to the state dir.
fn config_dir(state: &Path) -> PathBuf {
    state.parent().unwrap().join("config")
}

/// What the provider starts as `SCRIPT __supervise --state-dir DIR RUN`: this binary as that
/// run's supervisor. Written next to the state dir.
fn supervisor_script(state: &Path) -> PathBuf {
    state.parent().unwrap().join("supervise.sh")
}

fn write_supervisor_script(state: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().expect("a UTF-8 test binary path");
    assert!(!exe.contains('\''), "{exe}");
    let body = format!(
        "#!/bin/sh\n\
         [ $# -eq 4 ] && [ \"$1\" = __supervise ] && [ \"$2\" = --state-dir ] || exit 64\n\
         {ROLE}=supervise {STATE}=\"$3\" {RUN}=\"$4\" exec '{exe}' {}\n",
        CHILD_ARGS.join(" ")
    );
    let path = supervisor_script(state);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temp dir with a repository (one commit), a state dir and a user config dir.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub state: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "# sample\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "initial"]);
        let state = dir.path().join("state");
        std::fs::create_dir_all(config_dir(&state)).unwrap();
        Env { dir, repo, state }
    }

    /// Writes the repository's workflow `name` (not committed: workflows are read from the
    /// checkout).
    pub fn workflow(&self, name: &str, toml: &str) {
        let dir = self.repo.join(".agentctl/workflows");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.toml")), toml).unwrap();
    }

    /// Writes the user's workflow `name`.
    pub fn user_workflow(&self, name: &str, toml: &str) {
        let dir = config_dir(&self.state).join("workflows");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.toml")), toml).unwrap();
    }
}

/// A daemon serving `env`'s state dir; stopped with SIGTERM when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    pub socket: PathBuf,
    pub token: String,
    /// The daemon's stderr.
    log: PathBuf,
}

impl Daemon {
    /// Starts a daemon; panics with what it logged if it exits or does not come up in time.
    pub fn start(env: &Env) -> Daemon {
        write_supervisor_script(&env.state);
        let log = env.dir.path().join("daemon.log");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(CHILD_ARGS)
            .env(ROLE, "serve")
            .env(STATE, &env.state)
            .env_remove(RUN)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the daemon starts");
        let started = Instant::now();
        let ep = loop {
            let ep = api::server::read_endpoint(&env.state);
            if let Some(ep) = ep.filter(|e| e.pid == child.id()) {
                break ep;
            }
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(20) {
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
            addr: ep.listen.to_string(),
            socket: ep.socket,
            token: token.trim().to_owned(),
            log,
        }
    }

    /// A request with the default token, over TCP.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, _, body) = self.raw(method, path, Some(&self.token), body.map(Value::to_string));
        (status, body)
    }

    /// A request over TCP with any token (or none) and any body text.
    pub fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Option<String>) -> (u16, String, Value) {
        let stream = std::net::TcpStream::connect(&self.addr).expect("connect");
        exchange(stream, method, path, token, body)
    }

    /// A request with the default token, over the unix socket.
    pub fn call_unix(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let stream = std::os::unix::net::UnixStream::connect(&self.socket).expect("connect");
        let (status, _, body) = exchange(stream, method, path, Some(&self.token), body.map(Value::to_string));
        (status, body)
    }

    /// Creates a run (201) and returns it.
    pub fn create(&self, body: &Value) -> Value {
        let (status, run) = self.call("POST", "/v1/runs", Some(body));
        assert_eq!(status, 201, "{run}\ndaemon log:\n{}", self.log_text());
        run
    }

    /// Polls `GET path` until `done` holds for the answer (at most 8 s).
    pub fn until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, v) = self.call("GET", path, None);
            assert_eq!(status, 200, "GET {path}: {v}");
            if done(&v) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "GET {path} stays {v}\ndaemon log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops run `id` (one second between signals) and waits until it has ended.
    pub fn stop(&self, id: &str) -> Value {
        let (status, run) = self.call("POST", &format!("/v1/runs/{id}/stop?grace_ms=1000"), None);
        assert!(status == 200 || status == 202, "{status} {run}");
        self.until(&format!("/v1/runs/{id}"), |r| is_terminal(r["state"].as_str().unwrap()))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

pub fn is_terminal(state: &str) -> bool {
    state.parse::<model::RunState>().expect("a run state").is_terminal()
}

/// One HTTP/1.1 exchange on `stream` (the server closes it after answering): the status, the
/// head and the body as JSON (`null` when it is not JSON).
fn exchange<S: Read + Write>(
    mut stream: S,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, String, Value) {
    let body = body.unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
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

/// The error code of an error answer.
pub fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// A workflow whose one step is a gate that sleeps (long enough for any test).
pub const SLEEPING_WORKFLOW: &str =
    "name = \"wf\"\ndescription = \"sleeps\"\n\n[[steps]]\nid = \"only\"\ngate = \"sleep 30\"\n";

/// The body creating a run of workflow `name` in `env`'s repository. Unsandboxed: this test
/// binary plays the supervisor, and cannot be the sandbox's first process (`agentctl
/// __sandbox-exec`); the agentctl binary's tests run workflows sandboxed.
pub fn workflow_run(env: &Env, name: &str) -> Value {
    json!({"repo": env.repo, "workflow": name, "prompt": "the task", "isolation": {"sandbox": "off"}})
}
