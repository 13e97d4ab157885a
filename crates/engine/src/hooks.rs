//! Lifecycle hooks: executables `.agentctl/hooks/pre-run` and `post-run` in the user's repository
//! (never the agent's worktree, whose content the agent controls), run with the worktree as the
//! working directory and the run's identity in the environment.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Keep this much of a hook's output in its event.
pub const TAIL: usize = 4096;

/// How one hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    pub exit_code: Option<i32>,
    /// Killed because the run was asked to stop.
    pub stopped: bool,
    /// Killed because it ran past its time limit.
    pub timed_out: bool,
    pub elapsed: Duration,
    pub output_tail: String,
}

impl HookResult {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// The hook file for `name`, if the repository has one.
pub fn hook_path(repo: &Path, name: &str) -> Option<PathBuf> {
    let p = repo.join(".agentctl").join("hooks").join(name);
    p.is_file().then_some(p)
}

/// Runs a hook to completion (killing it after `limit`). The hook runs in its own process
/// group, so whatever it starts is killed with it and cannot hold the run up.
///
/// `should_stop` is asked every few milliseconds; when it says yes (a stop request for the
/// run), the hook's group is killed and the result says `stopped`.
pub fn run_hook(
    path: &Path,
    cwd: &Path,
    env: &[(String, String)],
    limit: Duration,
    should_stop: &mut dyn FnMut() -> bool,
) -> HookResult {
    let env: Vec<(OsString, OsString)> = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    let command = CommandLine {
        argv: vec![path.as_os_str().to_owned()],
        env,
        env_clear: false,
        keep: TAIL,
        limits: None,
    };
    run_command(&command, cwd, limit, should_stop)
}

/// A program to run as [`run_command`] does: `argv` (a wrapper such as the sandbox's first,
/// when there is one) and its environment — this process's plus `env`, or only `env` when
/// `env_clear`.
pub struct CommandLine {
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub env_clear: bool,
    /// How many bytes of the end of its output to keep (the rest is read and dropped).
    pub keep: usize,
    /// Resource limits the process takes on between fork and exec (a cgroup to join,
    /// rlimits), so what it starts is limited from its first instruction.
    pub limits: Option<sandbox::limits::ChildSetup>,
}

/// Runs a command as [`run_hook`] runs a hook: its own process group, output captured (the
/// tail kept), killed after `limit` or when `should_stop` says so.
pub fn run_command(
    command: &CommandLine,
    cwd: &Path,
    limit: Duration,
    should_stop: &mut dyn FnMut() -> bool,
) -> HookResult {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let Some((program, args)) = command.argv.split_first() else {
        return failed(started, "nothing to run".to_owned());
    };
    let path = Path::new(program);
    let mut cmd = Command::new(program);
    if command.env_clear {
        cmd.env_clear();
    }
    cmd.args(args)
        .current_dir(cwd)
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .process_group(0);
    let limits = command.limits.clone();
    // SAFETY: only async-signal-safe calls between fork and exec (fd closing, writes to
    // cgroup files already open, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(limits) = &limits {
                limits.apply()?;
            }
            supervise::spawn::close_inherited_fds();
            Ok(())
        });
    }
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return failed(started, format!("cannot create pipe: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return failed(started, format!("cannot create pipe: {e}")),
    };
    cmd.stdout(writer).stderr(writer2);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (make it executable: chmod +x)"
            } else {
                ""
            };
            return failed(started, format!("cannot run {}: {e}{hint}", path.display()));
        }
    };
    drop(cmd);
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill_group = || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = command.keep.max(1);
    // Born with the supervisor's signals blocked: it may outlive the hook (a daemon the hook
    // left holds its pipe), and must never take one (see `supervise::signals`).
    supervise::signals::with_blocked(|| {
        std::thread::spawn(move || {
            // Only the tail is kept, however much the command writes.
            let mut reader = reader;
            let mut tail: std::collections::VecDeque<u8> = std::collections::VecDeque::with_capacity(keep);
            let mut chunk = [0u8; 8192];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        tail.extend(&chunk[..n]);
                        let extra = tail.len().saturating_sub(keep);
                        tail.drain(..extra);
                    }
                }
            }
            let _ = tx.send(Vec::from(tail));
        })
    });
    let mut stopped = false;
    let mut timed_out = false;
    let exit_code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if started.elapsed() < limit && !stopped => {
                stopped = should_stop();
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                timed_out = !stopped && started.elapsed() >= limit;
                kill_group();
                let _ = child.wait();
                break None;
            }
        }
    };
    // Output ends when the last holder of the pipe exits: give stragglers a moment, then kill
    // the hook's group so a background process cannot keep the run waiting.
    let out = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_else(|_| {
        kill_group();
        rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
    });
    let start = out.len().saturating_sub(command.keep);
    HookResult {
        exit_code,
        stopped,
        timed_out,
        elapsed: started.elapsed(),
        output_tail: String::from_utf8_lossy(&out[start..]).into_owned(),
    }
}

fn failed(started: Instant, message: String) -> HookResult {
    HookResult {
        exit_code: None,
        stopped: false,
        timed_out: false,
        elapsed: started.elapsed(),
        output_tail: message,
    }
}
