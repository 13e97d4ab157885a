//! Starting the agent: in its own session and process group, with piped stdout/stderr or a
//! pseudo-terminal, and the prompt on stdin when the agent definition says so.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::SyncSender;
use std::thread;

use model::provider::Stream;

use crate::supervisor::LoopEvent;

/// What to start.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Variables set on top of the supervisor's own environment.
    pub env: Vec<(OsString, OsString)>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<OsString>,
    /// Bytes written to stdin, which is then closed; `None` gives an empty stdin.
    pub stdin: Option<Vec<u8>>,
    /// Run on a pseudo-terminal (stdout and stderr merge into one stream).
    pub tty: bool,
}

/// A started agent.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub pgid: u32,
}

/// Starts the agent and threads that forward its output (and an end-of-stream marker per
/// stream) to `tx`. Returns how many streams will report.
pub fn spawn(spec: &ProcessSpec, tx: &SyncSender<LoopEvent>) -> io::Result<(Spawned, usize)> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(&spec.cwd);
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

fn spawn_pipes(mut cmd: Command, spec: &ProcessSpec, tx: &SyncSender<LoopEvent>) -> io::Result<(Spawned, usize)> {
    cmd.stdin(if spec.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            close_inherited_fds();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), spec.stdin.clone()) {
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    forward(out, Stream::Stdout, tx.clone());
    forward(err, Stream::Stderr, tx.clone());
    // The child is reaped by the supervisor's waitpid loop, not through `child`.
    std::mem::forget(child);
    Ok((Spawned { pid, pgid: pid }, 2))
}

fn spawn_pty(mut cmd: Command, spec: &ProcessSpec, tx: &SyncSender<LoopEvent>) -> io::Result<(Spawned, usize)> {
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
    if !term_given && std::env::var_os("TERM").is_none_or(|t| t.is_empty()) {
        cmd.env("TERM", "xterm-256color");
    }
    // SAFETY: setsid, ioctl and the fd calls are async-signal-safe; fd 1 is the pty slave here.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            if libc::ioctl(1, libc::TIOCSCTTY as _, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            close_inherited_fds();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(slave);
    let pid = child.id();
    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), spec.stdin.clone()) {
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    std::mem::forget(child);
    forward(File::from(master), Stream::Pty, tx.clone());
    Ok((Spawned { pid, pgid: pid }, 1))
}

/// Marks every descriptor above stderr close-on-exec, so a child gets only its stdio: nothing
/// the caller of agentctl left open (a pipe it waits on, a lock) reaches the agent. Meant for
/// `pre_exec`: async-signal-safe, no allocation.
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

fn forward(mut reader: impl Read + Send + 'static, stream: Stream, tx: SyncSender<LoopEvent>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(LoopEvent::Output(stream, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EIO: the pty slave was closed by the last process holding it.
                Err(_) => break,
            }
        }
        let _ = tx.send(LoopEvent::Eof(stream));
    });
}
