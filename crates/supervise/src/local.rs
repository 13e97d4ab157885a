//! The local-process provider: each run's supervisor is a detached process of this same binary
//! (`agentctl __supervise <run-id>`), in its own session, that outlives the command that started
//! it. Files in the run's directory are the whole protocol between it and everyone else:
//!
//! - `supervisor.lock`: the supervisor holds an exclusive `flock` on it for its whole life, so
//!   "lock free" proves the supervisor is gone, whatever happened to it (even SIGKILL);
//! - `supervisor.pid`: its pid; `agent.pid`: the agent's pid, start time and process group;
//! - `control/stop.json`: a stop request, picked up within one tick;
//! - `control/req-<id>.json`: a request that expects an answer (checkpoint, rollback). The
//!   supervisor claims it by renaming it to `work-<id>.json` and answers in `resp-<id>.json`;
//!   a caller that finds the supervisor gone withdraws its request by renaming it away, so
//!   exactly one of them does the work;
//! - `output.jsonl`: captured output ([`crate::output`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use model::RunId;
use model::provider::{ControlRequest, LogBatch, Provider, ProviderError, RequestOutcome, SupervisorStatus};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{output, proctree};

const NAME: &str = "local";

fn err(message: impl Into<String>, source: impl Into<Option<io::Error>>) -> ProviderError {
    ProviderError {
        provider: NAME,
        message: message.into(),
        source: source
            .into()
            .map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

/// The files of one run that the local provider and its supervisor share.
#[derive(Clone, Debug)]
pub struct RunFiles {
    dir: PathBuf,
}

impl RunFiles {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        RunFiles { dir: run_dir.into() }
    }
    /// The run's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("supervisor.lock")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    pub fn agent_pid_path(&self) -> PathBuf {
        self.dir.join("agent.pid")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    pub fn control_dir(&self) -> PathBuf {
        self.dir.join("control")
    }
    pub fn stop_request_path(&self) -> PathBuf {
        self.control_dir().join("stop.json")
    }
    pub fn output_path(&self) -> PathBuf {
        self.dir.join("output.jsonl")
    }

    /// Whether a live process holds the supervisor lock.
    pub fn supervisor_alive(&self) -> io::Result<Option<bool>> {
        let file = match File::open(self.lock_path()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_released_on_drop) => Ok(Some(false)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(Some(true)),
            Err((_, e)) => Err(io::Error::from(e)),
        }
    }

    /// Takes the supervisor lock (for the life of the returned guard), then writes the pid file.
    ///
    /// A probe ([`Self::supervisor_alive`]) holds a shared lock for an instant, so a busy lock is
    /// retried for a short while before concluding that another supervisor owns the run.
    pub fn acquire_supervisor_lock(&self) -> io::Result<SupervisorLock> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path())?;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "another supervisor owns this run",
                    ));
                }
                Err((_, e)) => return Err(io::Error::from(e)),
            }
        };
        // Written only once the lock is held: "pid file present, lock free" proves a supervisor
        // took the run and is gone; "lock file present, no pid file" is a supervisor starting.
        write_atomic(&self.pid_path(), format!("{}\n", std::process::id()).as_bytes())?;
        Ok(SupervisorLock { _lock: lock })
    }

    /// Records the agent's fingerprint so a later cleanup can prove a process is the run's.
    pub fn write_agent_pid(&self, pid: u32, start_time: u64, pgid: u32) -> io::Result<()> {
        write_atomic(
            &self.agent_pid_path(),
            format!("{pid} {start_time} {pgid}\n").as_bytes(),
        )
    }

    fn read_agent_pid(&self) -> Option<(u32, u64, u32)> {
        let text = fs::read_to_string(self.agent_pid_path()).ok()?;
        let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
        Some((it.next()?? as u32, it.next()??, it.next()?? as u32))
    }

    /// Takes a pending stop request, if any.
    pub fn take_stop(&self) -> Option<ControlRequest> {
        let path = self.stop_request_path();
        if fs::symlink_metadata(&path).is_err() {
            return None;
        }
        let text = read_request(&path);
        let _ = fs::remove_file(&path);
        serde_json::from_str(&text?).ok()
    }

    /// Takes a pending control request: a stop first, then the oldest request that expects an
    /// answer (claimed, so its sender will wait for [`Self::answer`]).
    pub fn take_control(&self) -> Option<ControlRequest> {
        if let Some(stop) = self.take_stop() {
            return Some(stop);
        }
        // Oldest request first (ids start with the sender's pid, so their order says nothing).
        let mut found: Vec<(std::time::SystemTime, String)> = fs::read_dir(self.control_dir())
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let age = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((age, name))
            })
            .filter(|(_, n)| n.starts_with("req-") && n.ends_with(".json"))
            .collect();
        found.sort();
        for (_, name) in found {
            let id = &name["req-".len()..name.len() - ".json".len()];
            if !valid_request_id(id) {
                let _ = fs::remove_file(self.control_dir().join(&name));
                continue;
            }
            let work = self.control_dir().join(format!("work-{id}.json"));
            if fs::rename(self.control_dir().join(&name), &work).is_err() {
                continue;
            }
            // The request answers under the id its file name carries, and no other.
            let parsed = read_request(&work)
                .and_then(|t| serde_json::from_str::<ControlRequest>(&t).ok())
                .filter(|r| r.request_id().is_none_or(|rid| rid == id));
            match parsed {
                Some(req) => return Some(req),
                None => {
                    let _ = self.answer(
                        id,
                        r#"{"error":{"code":"INVALID_ARGUMENT","message":"unreadable request"}}"#,
                    );
                }
            }
        }
        None
    }

    /// [`Self::take_control`], for a caller that polls: the control directory is listed only when
    /// it changed since the last look that found it empty, which one `stat` tells (every request
    /// is created by a rename into it, which sets its modification time), so an idle run's poll
    /// neither opens nor lists anything. `idle` is the caller's memory of that look.
    ///
    /// A modification time is trusted only once it is two seconds old: a change made within
    /// the filesystem's timestamp granularity of the one before it (a clock tick; two seconds on
    /// FAT) can carry the same time, but not a change made later.
    pub fn poll_control(&self, idle: &mut Option<ControlStamp>) -> Option<ControlRequest> {
        let stamp = ControlStamp::of(&self.control_dir());
        if stamp.is_some() && stamp == *idle {
            return None;
        }
        let found = self.take_control();
        *idle = match (&found, stamp) {
            (None, Some(s)) if s.settled() => Some(s),
            _ => None,
        };
        found
    }

    /// Claims every unclaimed request that `matches` and answers it with `body` at once,
    /// without handing it to the supervisor (e.g. messages from a workflow step that was cut
    /// short: their sender is gone). Claimed by rename as [`Self::take_control`] does, so
    /// exactly one party handles each.
    pub fn reject_unclaimed(&self, matches: impl Fn(&ControlRequest) -> bool, body: &str) {
        let Ok(entries) = fs::read_dir(self.control_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("req-").and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !valid_request_id(id) {
                continue;
            }
            let wanted = read_request(&entry.path())
                .and_then(|t| serde_json::from_str::<ControlRequest>(&t).ok())
                .is_some_and(|r| matches(&r));
            let work = self.control_dir().join(format!("work-{id}.json"));
            if wanted && fs::rename(entry.path(), &work).is_ok() {
                let _ = self.answer(id, body);
            }
        }
    }

    /// Answers a claimed request.
    pub fn answer(&self, request_id: &str, body: &str) -> io::Result<()> {
        if !valid_request_id(request_id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid request id"));
        }
        write_atomic(
            &self.control_dir().join(format!("resp-{request_id}.json")),
            body.as_bytes(),
        )?;
        let _ = fs::remove_file(self.control_dir().join(format!("work-{request_id}.json")));
        Ok(())
    }
}

/// What one `stat` of the control directory says: which directory it is and when its entries
/// last changed. See [`RunFiles::poll_control`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControlStamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
}

impl ControlStamp {
    /// How old a modification time must be before an unchanged one proves nothing was added.
    const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

    /// The directory as it is now (`None` when it cannot be read).
    pub fn of(dir: &Path) -> Option<ControlStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(dir).ok()?;
        Some(ControlStamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }

    fn settled(&self) -> bool {
        let (secs, nanos) = self.mtime;
        let then = std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(
            secs.max(0) as u64,
            nanos.clamp(0, 999_999_999) as u32,
        ));
        then.and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= Self::SETTLED)
    }
}

/// Held by a live supervisor; dropping it (or dying) releases the run.
#[derive(Debug)]
pub struct SupervisorLock {
    _lock: Flock<File>,
}

impl SupervisorLock {
    /// The lock's descriptor: kept open across an exec of this process (see
    /// [`crate::hibernate`]), it keeps the lock held, for [`SupervisorLock::adopt`] in the next
    /// program.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self._lock.as_raw_fd()
    }

    /// Takes up the lock a previous program of this process kept (see
    /// [`SupervisorLock::keep_across_exec`]).
    pub fn adopt(fd: std::os::fd::RawFd) -> io::Result<SupervisorLock> {
        use std::os::fd::FromRawFd;
        // SAFETY: the descriptor was kept open for us across the exec; nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(io::Error::from)?;
        // The lock is this descriptor's already: locking again through it succeeds at once.
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(SupervisorLock { _lock: lock }),
            Err((_, e)) => Err(io::Error::from(e)),
        }
    }
}

/// Writes `bytes` to `path` by a rename, never through a symlink: the control directory is
/// writable by a sandboxed agent, which may plant one where the temporary file goes.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
    };
    let mut file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Removing a planted symlink removes the link, not what it points to.
            fs::remove_file(&tmp)?;
            open()?
        }
        Err(e) => return Err(e),
    };
    file.write_all(bytes)?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Whether `id` can name a request's files: letters, digits, `-`, `_` and `.` (not first), at
/// most 128 bytes. A request id comes from whoever wrote the request — inside a sandbox, the
/// agent — so it never becomes a path otherwise.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Reads a request file: a regular file (not a symlink, FIFO or device), at most 1 MiB.
fn read_request(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Runs supervisors as local processes.
#[derive(Clone, Debug)]
pub struct LocalProvider {
    exe: PathBuf,
    state_dir: PathBuf,
    runs_dir: PathBuf,
}

impl LocalProvider {
    /// `exe` is this binary; the supervisor is started as `exe __supervise --state-dir DIR ID`.
    pub fn new(exe: PathBuf, state_dir: PathBuf, runs_dir: PathBuf) -> Self {
        LocalProvider {
            exe,
            state_dir,
            runs_dir,
        }
    }

    fn files(&self, run: &RunId) -> RunFiles {
        RunFiles::new(self.runs_dir.join(run.as_str()))
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create(&self, run: &RunId) -> Result<(), ProviderError> {
        fs::create_dir_all(self.files(run).control_dir()).map_err(|e| err("cannot create control dir", e))
    }

    fn start(&self, run: &RunId) -> Result<(), ProviderError> {
        self.start_with_env(run, None)
    }

    fn start_with_env(
        &self,
        run: &RunId,
        env: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(), ProviderError> {
        let files = self.files(run);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(files.log_path())
            .map_err(|e| err("cannot open supervisor log", e))?;
        let log2 = log.try_clone().map_err(|e| err("cannot open supervisor log", e))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("__supervise")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg(run.as_str())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        if let Some(env) = env {
            cmd.env_clear().envs(env);
        }
        // SAFETY: fork, _exit and setsid are async-signal-safe. The supervisor is detached
        // twice over: forked once more, so its parent is not us (a long-lived caller such as
        // the daemon would otherwise collect zombies, and the supervisor must not depend on us
        // for anything), and in a session of its own, so a terminal hangup or Ctrl-C aimed at
        // the caller does not reach it.
        unsafe {
            cmd.pre_exec(|| {
                match nix::unistd::fork().map_err(io::Error::from)? {
                    nix::unistd::ForkResult::Parent { .. } => libc::_exit(0),
                    nix::unistd::ForkResult::Child => {}
                }
                nix::unistd::setsid().map_err(io::Error::from)?;
                crate::spawn::close_inherited_fds();
                Ok(())
            });
        }
        let mut intermediate = cmd
            .spawn()
            .map_err(|e| err(format!("cannot start supervisor {}", self.exe.display()), e))?;
        // The intermediate process exits at once; the supervisor lives on under init (or the
        // nearest subreaper), which reaps it.
        let _ = intermediate.wait();
        tracing::debug!(run.id = %run, "supervisor started");
        Ok(())
    }

    fn signal(&self, run: &RunId, request: &ControlRequest) -> Result<(), ProviderError> {
        let files = self.files(run);
        fs::create_dir_all(files.control_dir()).map_err(|e| err("cannot create control dir", e))?;
        let body = serde_json::to_vec(request).expect("control requests serialize");
        write_atomic(&files.stop_request_path(), &body).map_err(|e| err("cannot write control request", e))
    }

    fn request(
        &self,
        run: &RunId,
        request: &ControlRequest,
        timeout: std::time::Duration,
    ) -> Result<RequestOutcome, ProviderError> {
        let files = self.files(run);
        if request.request_id().is_none() {
            return self
                .signal(run, request)
                .map(|()| RequestOutcome::Answered(String::new()));
        }
        // A supervisor that cannot be found counts as gone.
        exchange(&files.control_dir(), request, timeout, &|| {
            let alive = files
                .supervisor_alive()
                .map_err(|e| err("cannot check supervisor", e))?;
            Ok(Some(alive == Some(true)))
        })
    }

    fn status(&self, run: &RunId) -> Result<SupervisorStatus, ProviderError> {
        let files = self.files(run);
        match files
            .supervisor_alive()
            .map_err(|e| err("cannot check supervisor lock", e))?
        {
            None => Ok(SupervisorStatus::NotStarted),
            // Lock free: gone if it ever took the run (pid file), else not started (yet).
            Some(false) if files.pid_path().exists() => Ok(SupervisorStatus::Gone),
            Some(false) => Ok(SupervisorStatus::NotStarted),
            Some(true) => {
                let pid = fs::read_to_string(files.pid_path())
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                Ok(SupervisorStatus::Alive { pid })
            }
        }
    }

    fn list(&self) -> Result<Vec<RunId>, ProviderError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.runs_dir).map_err(|e| err("cannot list runs", e))?;
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(|n| RunId::parse(n).ok()) else {
                continue;
            };
            if matches!(self.status(&id)?, SupervisorStatus::Alive { .. }) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn logs(&self, run: &RunId, offset: u64) -> Result<LogBatch, ProviderError> {
        output::read_from(&self.files(run).output_path(), offset).map_err(|e| err("cannot read output", e))
    }

    fn last_error(&self, run: &RunId) -> Option<String> {
        // The supervisor logs JSON lines; the last ERROR among the final 64 KiB is enough.
        use std::io::{Read, Seek, SeekFrom};
        let mut file = File::open(self.files(run).log_path()).ok()?;
        let len = file.metadata().ok()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024))).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        text.lines().rev().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v.get("level")?.as_str()? == "ERROR").then(|| {
                let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("error");
                match v.get("error").and_then(|e| e.as_str()) {
                    Some(e) => format!("{message}: {e}"),
                    None => message.to_owned(),
                }
            })
        })
    }

    fn destroy(&self, run: &RunId) -> Result<(), ProviderError> {
        let files = self.files(run);
        if files
            .supervisor_alive()
            .map_err(|e| err("cannot check supervisor lock", e))?
            == Some(true)
        {
            return Err(err("the run's supervisor is still alive; stop the run first", None));
        }
        // A supervisor that died (e.g. SIGKILL) may have left the agent running: kill its process
        // group, but only if it is the one we started: its leader still is the process recorded,
        // or — the leader gone (a sandbox's outer bubblewrap dies with the supervisor, its inner
        // one may not if that happened as it started) — a member of the group's own session
        // carries the run's id. The agent records its pid itself before it execs, so the group
        // is on record however early the supervisor died.
        if let Some((pid, start_time, pgid)) = files.read_agent_pid()
            && (proctree::is_same_process(pid, start_time)
                // No such group (a finished run's, as a rule): no need to read every process.
                || (killpg(Pid::from_raw(pgid as i32), None).is_ok()
                    && proctree::group_carries_env(pgid, model::RUN_ID_ENV, run.as_str())))
        {
            tracing::info!(run.id = %run, agent.pid = pid, "killing agent left by a dead supervisor");
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        }
        Ok(())
    }
}

/// Hands `request` (one that expects an answer) to the supervisor that polls control directory
/// `dir` and waits for its answer. `alive` says whether that supervisor still runs (`None`:
/// cannot tell); without a way to know (inside a sandbox) pass `|| Ok(None)`: the request is
/// then withdrawn once `timeout` passes unclaimed.
pub fn exchange(
    dir: &Path,
    request: &ControlRequest,
    timeout: std::time::Duration,
    alive: &dyn Fn() -> Result<Option<bool>, ProviderError>,
) -> Result<RequestOutcome, ProviderError> {
    let Some(id) = request.request_id() else {
        return Err(err("this request expects no answer", None));
    };
    fs::create_dir_all(dir).map_err(|e| err("cannot create control dir", e))?;
    let req = dir.join(format!("req-{id}.json"));
    let resp = dir.join(format!("resp-{id}.json"));
    let body = serde_json::to_vec(request).expect("control requests serialize");
    write_atomic(&req, &body).map_err(|e| err("cannot write control request", e))?;
    let started = std::time::Instant::now();
    let take_answer = || -> Option<String> {
        let text = fs::read_to_string(&resp).ok()?;
        let _ = fs::remove_file(&resp);
        Some(text)
    };
    // Withdraws the request if nobody claimed it; true when withdrawn.
    let withdraw = || {
        let gone = dir.join(format!("withdrawn-{id}.json"));
        let ok = fs::rename(&req, &gone).is_ok();
        let _ = fs::remove_file(&gone);
        ok
    };
    loop {
        if let Some(text) = take_answer() {
            return Ok(RequestOutcome::Answered(text));
        }
        if alive()? == Some(false) {
            if withdraw() {
                return Ok(RequestOutcome::NotTaken);
            }
            // Claimed: the answer may have been written just before the supervisor ended.
            if let Some(text) = take_answer() {
                return Ok(RequestOutcome::Answered(text));
            }
            return Err(err("the supervisor ended while handling the request", None));
        }
        if started.elapsed() >= timeout {
            if withdraw() {
                return Err(err(
                    format!("the supervisor did not take the request within {}s", timeout.as_secs()),
                    None,
                ));
            }
            // Claimed and in progress: a rollback or checkpoint finishes; wait for it.
            if started.elapsed() >= timeout * 4 {
                return Err(err("no answer from the supervisor", None));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets `dir`'s modification time to `t` seconds after the epoch.
    fn set_mtime(dir: &Path, t: i64) {
        let ts = nix::sys::time::TimeSpec::new(t, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            dir,
            &ts,
            &ts,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    #[test]
    fn rejected_requests_are_answered_and_the_others_stay_for_the_supervisor() {
        let tmp = tempfile::tempdir().unwrap();
        let files = RunFiles::new(tmp.path());
        fs::create_dir_all(files.control_dir()).unwrap();
        let message = ControlRequest::Message {
            request_id: "m1".into(),
            from: None,
            to: None,
            verdict: None,
            text: "stale".into(),
        };
        let checkpoint = ControlRequest::Checkpoint {
            request_id: "c1".into(),
            message: None,
        };
        for (id, req) in [("m1", &message), ("c1", &checkpoint)] {
            let path = files.control_dir().join(format!("req-{id}.json"));
            write_atomic(&path, &serde_json::to_vec(req).unwrap()).unwrap();
        }
        files.reject_unclaimed(|r| matches!(r, ControlRequest::Message { .. }), r#"{"error":1}"#);
        let answer = fs::read_to_string(files.control_dir().join("resp-m1.json")).unwrap();
        assert_eq!(answer, r#"{"error":1}"#);
        assert!(!files.control_dir().join("work-m1.json").exists());
        assert_eq!(files.take_control(), Some(checkpoint), "the other request is untouched");
        assert_eq!(files.take_control(), None);
    }

    #[test]
    fn an_unchanged_control_dir_is_not_listed_and_a_new_request_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let files = RunFiles::new(tmp.path());
        let control = files.control_dir();
        fs::create_dir_all(&control).unwrap();
        let mut idle = None;
        // A directory that changed just now is listed every time: its time proves nothing yet.
        assert!(files.poll_control(&mut idle).is_none());
        assert!(idle.is_none());
        let old = jiff::Timestamp::now().as_second() - 60;
        set_mtime(&control, old);
        assert!(files.poll_control(&mut idle).is_none());
        assert!(idle.is_some(), "a settled, empty directory is remembered");
        // The stamp decides, not a listing: a request slipped in with the time put back is not
        // seen (no writer can do that by accident: a rename sets the time to now).
        let stop = ControlRequest::Stop { grace_ms: 250 };
        let body = serde_json::to_vec(&stop).unwrap();
        write_atomic(&files.stop_request_path(), &body).unwrap();
        set_mtime(&control, old);
        assert!(files.poll_control(&mut idle).is_none(), "skipped without listing");
        fs::remove_file(files.stop_request_path()).unwrap();
        // A request arrives by a rename, which sets the directory's time: it is taken.
        write_atomic(&files.stop_request_path(), &body).unwrap();
        assert_eq!(files.poll_control(&mut idle), Some(stop));
        assert!(idle.is_none());
    }
}
