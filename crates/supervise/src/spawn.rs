//! Starting the agent: in its own session and process group, with piped stdout/stderr or a
//! pseudo-terminal, and the prompt on stdin when the agent definition says so.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
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
pub fn spawn(spec: &ProcessSpec, tx: &Sender<LoopEvent>) -> io::Result<(Spawned, usize)> {
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

fn spawn_pipes(mut cmd: Command, spec: &ProcessSpec, tx: &Sender<LoopEvent>) -> io::Result<(Spawned, usize)> {
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

fn spawn_pty(mut cmd: Command, spec: &ProcessSpec, tx: &Sender<LoopEvent>) -> io::Result<(Spawned, usize)> {
    let size = nix::pty::Winsize {
        ws_row: 50,
        ws_col: 200,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).map_err(io::Error::from)?;
    let slave: OwnedFd = pty.slave;
    let master: OwnedFd = pty.master;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    let term_given = spec.env.iter().any(|(k, v)| k == "TERM" && !v.is_empty());
    if !term_given && std::env::var_os("TERM").is_none_or(|t| t.is_empty()) {
        cmd.env("TERM", "xterm-256color");
    }
    // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the pty slave at this point.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(slave);
    let pid = child.id();
    std::mem::forget(child);
    let reader = File::from(master.try_clone()?);
    if let Some(bytes) = spec.stdin.clone() {
        let mut writer = File::from(master);
        thread::spawn(move || {
            let _ = writer.write_all(&bytes);
            // End of input for a line-disciplined reader.
            let _ = writer.write_all(b"\n\x04");
        });
    } else {
        // Keep the master open through the reader only.
        drop(master);
    }
    forward(reader, Stream::Pty, tx.clone());
    Ok((Spawned { pid, pgid: pid }, 1))
}

fn forward(mut reader: impl Read + Send + 'static, stream: Stream, tx: Sender<LoopEvent>) {
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
