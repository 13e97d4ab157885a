//! Starting the agent: in its own session and process group, with piped stdout/stderr or a
//! pseudo-terminal, and the prompt on stdin when the agent definition says so.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::SyncSender;
use std::thread;

use model::provider::Stream;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::supervisor::LoopEvent;

/// What to start.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    /// A command the argv runs under (e.g. a sandbox: `bwrap [OPTIONS] --`); empty for none.
    /// Events record `argv` only.
    pub wrapper: Vec<OsString>,
    pub cwd: PathBuf,
    /// Start from an empty environment instead of the supervisor's.
    pub env_clear: bool,
    /// Variables set on top of the supervisor's own environment (or of none, with `env_clear`).
    pub env: Vec<(OsString, OsString)>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<OsString>,
    /// Bytes written to stdin, which is then closed; `None` gives an empty stdin.
    pub stdin: Option<Vec<u8>>,
    /// Run on a pseudo-terminal (stdout and stderr merge into one stream).
    pub tty: bool,
    /// Resource limits the process takes on before it runs: it joins the run's cgroup and sets
    /// its rlimits between fork and exec, so nothing it starts escapes them.
    pub limits: Option<sandbox::limits::ChildSetup>,
    /// Start with the stop signals ignored (SIGINT, SIGTERM, SIGHUP, SIGQUIT): for a wrapper
    /// such as bubblewrap, which must outlive a stop signal its agent handles (the agent gets
    /// their default action back inside, see `sandbox::bwrap::exec_with_default_signals`).
    pub shield_signals: bool,
    /// A file the process records `"PID 0 PGID"` in (see `RunFiles::write_agent_pid`) before it
    /// execs, so that a supervisor dying at any moment after the fork leaves the agent's process
    /// group on record; the supervisor rewrites it with the start time once the process runs.
    pub pid_file: Option<PathBuf>,
}

/// A started agent.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub pgid: u32,
}

/// Starts the agent and threads that forward its output (and an end-of-stream marker per
/// stream) to `tx`. Returns how many streams will report.
pub fn spawn(spec: &ProcessSpec, tx: &SyncSender<LoopEvent>) -> io::Result<(Spawned, Readers)> {
    if spec.argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    // A wrapper (the sandbox) would start and then fail to run a missing program: say so as
    // directly as an unwrapped start would.
    if !spec.wrapper.is_empty() && !program_exists(spec) {
        return Err(io::Error::new(io::ErrorKind::NotFound, "No such file or directory"));
    }
    let full: Vec<OsString> = spec
        .wrapper
        .iter()
        .cloned()
        .chain(spec.argv.iter().map(OsString::from))
        .collect();
    let mut cmd = Command::new(&full[0]);
    cmd.args(&full[1..]).current_dir(&spec.cwd);
    if spec.env_clear {
        cmd.env_clear();
    }
    for var in &spec.env_remove {
        cmd.env_remove(var);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if spec.tty {
        spawn_pty(cmd, spec, tx)
    } else {
        spawn_pipes(cmd, spec, tx)
    }
}

fn spawn_pipes(mut cmd: Command, spec: &ProcessSpec, tx: &SyncSender<LoopEvent>) -> io::Result<(Spawned, Readers)> {
    cmd.stdin(if spec.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let limits = spec.limits.clone();
    let shield = spec.shield_signals;
    let pid_file = pid_file_paths(spec);
    let parent = std::process::id();
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; joining a
    // cgroup and setting rlimits are single writes and setrlimit calls, without allocation.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            close_inherited_fds();
            if let Some(setup) = &limits {
                setup.apply()?;
            }
            if shield {
                for sig in sandbox::bwrap::STOP_SIGNALS {
                    libc::signal(sig, libc::SIG_IGN);
                }
                // A sandbox ends with its supervisor: bubblewrap's own --die-with-parent is
                // set only once it runs, too late if the supervisor dies as it starts.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
            }
            if let Some((tmp, path)) = &pid_file {
                record_own_pid(tmp, path);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let prompt = write_stdin(child.stdin.take(), spec.stdin.clone());
    let out: OwnedFd = child.stdout.take().expect("piped stdout").into();
    let err: OwnedFd = child.stderr.take().expect("piped stderr").into();
    // The child is reaped by the supervisor's waitpid loop, not through `child`.
    std::mem::forget(child);
    let mut readers = forward_pipes(vec![(Stream::Stdout, out), (Stream::Stderr, err)], tx)?;
    readers.prompt = prompt;
    Ok((Spawned { pid, pgid: pid }, readers))
}

fn spawn_pty(mut cmd: Command, spec: &ProcessSpec, tx: &SyncSender<LoopEvent>) -> io::Result<(Spawned, Readers)> {
    let size = nix::pty::Winsize {
        ws_row: 50,
        ws_col: 200,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).map_err(io::Error::from)?;
    let slave: OwnedFd = pty.slave;
    let master: OwnedFd = pty.master;
    // openpty does not set close-on-exec: nothing else we start may hold the terminal.
    for fd in [&slave, &master] {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(io::Error::from)?;
    }
    // A prompt goes through a pipe, not the terminal: a terminal's line discipline would echo it
    // into the output and cut lines at 4 KiB.
    let stdin = if spec.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::from(slave.try_clone()?)
    };
    cmd.stdin(stdin)
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    let term_given = spec.env.iter().any(|(k, v)| k == "TERM" && !v.is_empty());
    let inherited = if spec.env_clear { None } else { std::env::var_os("TERM") };
    if !term_given && inherited.is_none_or(|t| t.is_empty()) {
        cmd.env("TERM", "xterm-256color");
    }
    let limits = spec.limits.clone();
    let shield = spec.shield_signals;
    let pid_file = pid_file_paths(spec);
    let parent = std::process::id();
    // SAFETY: setsid, ioctl and the fd calls are async-signal-safe; fd 1 is the pty slave here.
    // Joining a cgroup and setting rlimits are single writes and setrlimit calls.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            if libc::ioctl(1, libc::TIOCSCTTY as _, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            close_inherited_fds();
            if let Some(setup) = &limits {
                setup.apply()?;
            }
            if shield {
                for sig in sandbox::bwrap::STOP_SIGNALS {
                    libc::signal(sig, libc::SIG_IGN);
                }
                // A sandbox ends with its supervisor: bubblewrap's own --die-with-parent is
                // set only once it runs, too late if the supervisor dies as it starts.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
            }
            if let Some((tmp, path)) = &pid_file {
                record_own_pid(tmp, path);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // Watched from now on: the agent is our child and nothing reaps it before the supervision
    // loop starts, so the pid is still the agent's.
    let agent = ExitWatch::new(pid);
    let prompt = write_stdin(child.stdin.take(), spec.stdin.clone());
    std::mem::forget(child);
    // Our copy of the slave is not dropped here but held until the agent has exited: see
    // `forward_pty`.
    forward_pty(master, slave, agent, tx.clone());
    Ok((
        Spawned { pid, pgid: pid },
        Readers {
            open: 1,
            stop: None,
            threads: Vec::new(),
            prompt,
        },
    ))
}

/// Forwards a terminal's output, closing the master only once the agent has exited.
///
/// Closing the master hangs the terminal up, which sends SIGHUP to the session leader — the
/// agent. Reading the master fails with EIO as soon as the last descriptor of the slave is
/// closed, and an agent closes its stdio *before* it exits (every coreutils program does, in
/// `close_stdout` at exit). If the master were closed on that EIO, the agent would be killed by
/// the hangup in the moment between closing its stdout and exiting. So we hold a copy of the
/// slave while the agent lives (the master cannot report EIO then), waiting for output and for
/// the agent's exit together; after it has exited, our copy goes and the master is read until
/// every process left on the terminal has let go of it.
fn forward_pty(master: OwnedFd, slave: OwnedFd, agent: ExitWatch, tx: SyncSender<LoopEvent>) {
    thread::spawn(move || {
        let mut master = File::from(master);
        let mut held = Some(slave);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if held.is_some() {
                let (readable, exited) = agent.poll_with(&master);
                if exited {
                    held = None;
                }
                if !readable {
                    continue;
                }
            }
            match master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if tx.send(LoopEvent::Output(Stream::Pty, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => {
                    // EIO: the slave was closed by the last process holding it. With our copy
                    // still open it can only be a hangup (the agent called vhangup): even then
                    // the master is not closed under a live agent.
                    if held.take().is_some() {
                        agent.wait();
                    }
                    break;
                }
            }
        }
        let _ = tx.send(LoopEvent::Eof(Stream::Pty));
    });
}

/// Tells when the agent, a child not yet reaped, has exited: a pidfd (readable once the process
/// has exited, zombie or not), or on kernels before 5.3 its `/proc` entry, checked every
/// `EXIT_POLL`.
struct ExitWatch {
    pid: u32,
    pidfd: Option<OwnedFd>,
    start_time: Option<u64>,
}

const EXIT_POLL: u16 = 100;

impl ExitWatch {
    fn new(pid: u32) -> Self {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor (always
        // close-on-exec) or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
        // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        let start_time = match pidfd {
            Some(_) => None,
            None => crate::proctree::stat(pid).map(|s| s.start_time),
        };
        ExitWatch { pid, pidfd, start_time }
    }

    /// Waits until `fd` is readable (or hung up) or the agent exits; returns which happened.
    fn poll_with(&self, fd: &impl AsFd) -> (bool, bool) {
        let wanted = PollFlags::POLLIN;
        let mut fds = vec![PollFd::new(fd.as_fd(), wanted)];
        if let Some(pidfd) = &self.pidfd {
            fds.push(PollFd::new(pidfd.as_fd(), wanted));
        }
        let timeout = if self.pidfd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(EXIT_POLL)
        };
        if poll(&mut fds, timeout).is_err() {
            // EINTR: the caller polls again.
            return (false, false);
        }
        let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
        let readable = ready(&fds[0]);
        let exited = match fds.get(1) {
            Some(pidfd) => ready(pidfd),
            None => !readable && !self.alive_in_proc(),
        };
        (readable, exited)
    }

    /// Blocks until the agent has exited.
    fn wait(&self) {
        loop {
            match &self.pidfd {
                Some(pidfd) => {
                    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                    if poll(&mut fds, PollTimeout::NONE).is_ok() {
                        return;
                    }
                }
                None if !self.alive_in_proc() => return,
                None => thread::sleep(std::time::Duration::from_millis(EXIT_POLL.into())),
            }
        }
    }

    /// Without a pidfd: the agent's `/proc` entry is still its own (same start time) and it is
    /// not a zombie.
    fn alive_in_proc(&self) -> bool {
        crate::proctree::stat(self.pid)
            .is_some_and(|s| Some(s.start_time) == self.start_time && !matches!(s.state, 'Z' | 'X'))
    }
}

/// Marks every descriptor above stderr close-on-exec, so a child gets only its stdio: nothing
/// the caller of agentctl left open (a pipe it waits on, a lock) reaches the agent. Meant for
/// `pre_exec`: async-signal-safe, no allocation.
/// The temporary and final paths of `spec.pid_file`, made before the fork (no allocation after).
fn pid_file_paths(spec: &ProcessSpec) -> Option<(std::ffi::CString, std::ffi::CString)> {
    use std::os::unix::ffi::OsStrExt;
    let path = spec.pid_file.as_ref()?;
    let mut tmp = path.as_os_str().as_bytes().to_vec();
    tmp.extend_from_slice(b".child");
    Some((
        std::ffi::CString::new(tmp).ok()?,
        std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?,
    ))
}

/// Between fork and exec: writes `"PID 0 PID\n"` (the process leads its own group; its start
/// time is not known here) to `tmp` and renames it over `path`. Only async-signal-safe calls and
/// no allocation; a failure is ignored, as the supervisor writes the record again after the exec.
fn record_own_pid(tmp: &std::ffi::CStr, path: &std::ffi::CStr) {
    // SAFETY: getpid, open, write, close and rename are async-signal-safe; the buffers are on
    // the stack and the paths were allocated before the fork.
    unsafe {
        let pid = libc::getpid() as u32;
        let mut line = [0u8; 32];
        let mut len = push_decimal(&mut line, 0, pid);
        line[len..len + 3].copy_from_slice(b" 0 ");
        len = push_decimal(&mut line, len + 3, pid);
        line[len] = b'\n';
        len += 1;
        let fd = libc::open(
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        );
        if fd < 0 {
            return;
        }
        let written = libc::write(fd, line.as_ptr().cast(), len);
        libc::close(fd);
        if written == len as isize {
            libc::rename(tmp.as_ptr(), path.as_ptr());
        }
    }
}

/// Writes `n` in decimal into `buf` at `at` (without allocating); returns where it ends.
fn push_decimal(buf: &mut [u8], at: usize, n: u32) -> usize {
    let mut digits = [0u8; 10];
    let (mut n, mut count) = (n, 0);
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..count].iter().rev().enumerate() {
        buf[at + i] = *d;
    }
    at + count
}

pub fn close_inherited_fds() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: plain syscalls on descriptor numbers; no memory is touched.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            // Kernels before 5.11: the common range by hand.
            for fd in 3..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// The threads that forward the agent's output to the loop.
pub struct Readers {
    /// How many streams will report their end ([`LoopEvent::Eof`]).
    pub open: usize,
    /// Makes the pipe readers stop (written once, never read); none for a terminal.
    stop: Option<OwnedFd>,
    threads: Vec<(Stream, thread::JoinHandle<Option<OwnedFd>>)>,
    /// The thread writing the prompt to the agent's stdin, while it may still be at it.
    prompt: Option<thread::JoinHandle<()>>,
}

impl Readers {
    /// Whether the readers can be stopped with their descriptors kept ([`Readers::stop`]):
    /// pipes can, a terminal cannot — and not while the prompt is still being written to the
    /// agent's stdin (that pipe would not outlive a hibernation).
    pub fn stoppable(&self) -> bool {
        self.stop.is_some() && self.prompt.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the pipe readers, handing each event they already read to `carry` (so a reader
    /// blocked on a full channel finishes), and returns each stream's descriptor, still open:
    /// output not yet read stays in the pipe. `None` for a stream that already ended.
    pub fn stop(
        mut self,
        rx: &std::sync::mpsc::Receiver<LoopEvent>,
        carry: &mut Vec<LoopEvent>,
    ) -> Vec<(Stream, Option<OwnedFd>)> {
        drop(self.stop.take());
        while self.threads.iter().any(|(_, t)| !t.is_finished()) {
            match rx.recv_timeout(std::time::Duration::from_millis(5)) {
                Ok(ev) => carry.push(ev),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.threads
            .drain(..)
            .map(|(stream, t)| (stream, t.join().ok().flatten()))
            .collect()
    }
}

/// Forwards each pipe's output until its end, or until the readers are stopped.
pub fn forward_pipes(pipes: Vec<(Stream, OwnedFd)>, tx: &SyncSender<LoopEvent>) -> io::Result<Readers> {
    let (stop_rx, stop_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let stop_rx = std::sync::Arc::new(stop_rx);
    let open = pipes.len();
    let threads = pipes
        .into_iter()
        .map(|(stream, fd)| (stream, forward(fd, stream, std::sync::Arc::clone(&stop_rx), tx.clone())))
        .collect();
    Ok(Readers {
        open,
        stop: Some(stop_tx),
        threads,
        prompt: None,
    })
}

/// Writes the prompt to the agent's stdin from a thread of its own (the agent may read it
/// late), which never takes a signal of the supervisor's (see `crate::signals`).
fn write_stdin(stdin: Option<std::process::ChildStdin>, bytes: Option<Vec<u8>>) -> Option<thread::JoinHandle<()>> {
    let (mut stdin, bytes) = (stdin?, bytes?);
    crate::signals::with_blocked(|| {
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        })
    })
    .into()
}

/// Forwards a pipe's output until its end (then `None`), or until `stop` hangs up (then the
/// pipe, unread output left in it).
fn forward(
    fd: OwnedFd,
    stream: Stream,
    stop: std::sync::Arc<OwnedFd>,
    tx: SyncSender<LoopEvent>,
) -> thread::JoinHandle<Option<OwnedFd>> {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut fds = [
                PollFd::new(fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            // Stopping comes first: what is still in the pipe is the next reader's.
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return Some(fd);
            }
            match nix::unistd::read(&fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(LoopEvent::Output(stream, buf[..n].to_vec())).is_err() {
                        return None;
                    }
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(LoopEvent::Eof(stream));
        None
    })
}

/// Whether `spec`'s program can be found: relative to its working directory when it names a
/// path, else on the `PATH` it will get.
fn program_exists(spec: &ProcessSpec) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let program = std::path::Path::new(&spec.argv[0]);
    let runnable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if spec.argv[0].contains('/') {
        return runnable(&spec.cwd.join(program));
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| if spec.env_clear { None } else { std::env::var_os("PATH") })
        .unwrap_or_default();
    std::env::split_paths(&path).any(|dir| runnable(&dir.join(program)))
}

#[cfg(test)]
mod tests {
    use super::push_decimal;

    #[test]
    fn decimals_are_written_in_place() {
        let mut buf = [b'.'; 24];
        let end = push_decimal(&mut buf, 0, 0);
        let end = push_decimal(&mut buf, end, 7);
        let end = push_decimal(&mut buf, end, u32::MAX);
        assert_eq!(&buf[..end], b"074294967295");
        assert_eq!(buf[end], b'.');
    }
}
