//! A real daemon for the benches that need one: `agentctl serve` on a free loopback port over a
//! scratch state directory and repository (in a temporary directory that goes with it), and a
//! client for it — the CLI's own ([`crate::client::Daemon`], over the unix socket).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::io_error;
use crate::client::Daemon;
use crate::exit::CliError;

/// A daemon over a scratch state dir and repository; stopped (SIGTERM) when dropped.
pub struct BenchDaemon {
    child: Child,
    /// The scratch repository runs work on.
    pub repo: PathBuf,
    /// The daemon, as the CLI reaches it.
    pub client: Daemon,
    _dir: tempfile::TempDir,
}

impl BenchDaemon {
    /// Makes a scratch repository and state directory and starts a daemon serving them.
    pub fn start() -> Result<BenchDaemon, CliError> {
        let dir = tempfile::tempdir().map_err(|e| io_error("temp dir", e))?;
        let repo = dir.path().join("repo");
        scratch_repo(&repo)?;
        let state = dir.path().join("state");
        let exe = std::env::current_exe().map_err(|e| io_error("agentctl binary", e))?;
        let mut child = Command::new(exe)
            .arg("--state-dir")
            .arg(&state)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("AGENTCTL_CONFIG_DIR", dir.path().join("config"))
            .env("AGENTCTL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io_error("agentctl serve", e))?;
        let endpoint = state.join("daemon/endpoint.json");
        let started = Instant::now();
        loop {
            let ep = std::fs::read_to_string(&endpoint)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok());
            if ep.is_some_and(|e| e["pid"] == child.id()) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(io_error("agentctl serve", format_args!("it exited ({status})")));
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_error("agentctl serve", "it never wrote its endpoint"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(client) = Daemon::find(&state) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io_error("agentctl serve", "it does not answer on its socket"));
        };
        Ok(BenchDaemon {
            child,
            repo,
            client,
            _dir: dir,
        })
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A repository with one commit, for runs to work on.
pub fn scratch_repo(repo: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(repo).map_err(|e| io_error("repo", e))?;
    std::fs::write(repo.join("README.md"), "bench\n").map_err(|e| io_error("repo", e))?;
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-qm",
            "bench",
        ],
    ] {
        let ok = Command::new("git").args(args).current_dir(repo).output();
        if !ok.is_ok_and(|o| o.status.success()) {
            return Err(io_error("git", format!("git {args:?} failed")));
        }
    }
    Ok(())
}
