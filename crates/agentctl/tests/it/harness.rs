//! Test harness: a temp dir holding a git repository and a state dir, and a way to run the
//! real `agentctl` binary against them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub state: PathBuf,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentctl"))
}

/// `PATH` with the directory of the binary under test first.
pub fn path_with_bin() -> std::ffi::OsString {
    let dir = bin().parent().expect("binary dir").to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).expect("PATH joins")
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

impl Env {
    /// A repository with one commit (README.md, src/lib.txt) and an empty state dir.
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "# sample\n").unwrap();
        std::fs::write(repo.join("src/lib.txt"), "one\ntwo\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "initial"]);
        let state = dir.path().join("state");
        Env { dir, repo, state }
    }

    /// A command for the binary with `--state-dir` set and the repo as working directory.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(&self.repo)
            // Agents that call `agentctl` (the workflow examples' `msg send`) find this build.
            .env("PATH", path_with_bin())
            .env("AGENTCTL_STATE_DIR", &self.state)
            .env("NO_COLOR", "1")
            .env("AGENTCTL_CONFIG_DIR", self.dir.path().join("config"))
            .env_remove("AGENTCTL_LOG")
            .env_remove("AGENTCTL_ROUTER_MODEL")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("agentctl runs")
    }

    /// Runs with `--json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> (Value, Output) {
        let out = self.cmd().arg("--json").args(args).output().expect("agentctl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {text:?}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (v, out)
    }

    /// Starts a detached run and returns its id.
    pub fn start(&self, args: &[&str]) -> String {
        self.start_with(&[], args)
    }

    /// [`Env::start`] with more environment variables (the supervisor inherits them).
    pub fn start_with(&self, vars: &[(&str, &str)], args: &[&str]) -> String {
        let out = self
            .cmd()
            .envs(vars.iter().copied())
            .args(["--json", "run", "--detach"])
            .args(args)
            .output()
            .expect("agentctl runs");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr)));
        assert!(out.status.success(), "run failed: {v}");
        v["id"].as_str().expect("id").to_owned()
    }

    pub fn show(&self, id: &str) -> Value {
        self.json(&["show", id]).0
    }

    pub fn events(&self, id: &str) -> Vec<Value> {
        let (v, _) = self.json(&["show", "--events", id]);
        v["events"].as_array().expect("events").clone()
    }

    pub fn wait(&self, id: &str) -> Value {
        let (v, _) = self.json(&["wait", "--timeout", "60s", id]);
        v
    }

    /// Polls `show` until `pred` holds (at most `limit`).
    pub fn until(&self, id: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.show(id);
            if pred(&v) {
                return v;
            }
            assert!(start.elapsed() < limit, "condition not reached in {limit:?}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self, id: &str) -> String {
        let out = self.run(&["logs", id]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes an executable script into the temp dir (outside the repo) and returns its path.
    pub fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    }
}

/// Every file under `dir`, recursively (symlinks not followed), with its bytes.
pub fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            all_files(&p, out);
        } else if ft.is_file()
            && let Ok(bytes) = std::fs::read(&p)
        {
            out.push((p, bytes));
        }
    }
}

/// Whether `needle` (not empty) occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The `data` of each of a run's events of type `kind`, in order.
pub fn events_of(env: &Env, id: &str, kind: &str) -> Vec<Value> {
    env.events(id)
        .into_iter()
        .filter(|e| e["data"]["type"] == kind)
        .map(|e| e["data"].clone())
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits (up to 10 s) until process `pid` has died, not merely been signalled: every one of its
/// threads has exited (a multi-threaded process's first thread shows as a zombie while the
/// others still run, holding its files and locks).
pub fn wait_dead(pid: i32) {
    let start = Instant::now();
    let alive = |task: std::fs::DirEntry| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with(['Z', 'X']))
        })
    };
    while std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| tasks.flatten().any(alive)) {
        assert!(start.elapsed() < Duration::from_secs(10), "process {pid} did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether any live process has `needle` in its command line.
pub fn process_with(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
                !zombie && String::from_utf8_lossy(&c).replace('\0', " ").contains(needle)
            })
            .unwrap_or(false)
    })
}
