//! Signals to the supervisor (SIGCHLD, SIGTERM, SIGINT, SIGHUP), as loop events.
//!
//! A handler writes each signal into a pipe of its own, which one thread reads into the loop's
//! channel. Before a supervisor hibernates (see [`crate::hibernate`]) the forwarder is stopped
//! so that no signal is lost on the way: the calling thread and the forwarder block the signals
//! first, then the forwarder hands over what its handler had already written. From then on a
//! signal stays pending: blocked in every thread, it is preserved across the exec, found by the
//! keeper (which inherits the mask and only polls a signalfd), and delivered again once the
//! woken supervisor has its handlers and unblocks them ([`Forwarder::start`]).
//!
//! The signals are never blocked while the supervisor starts processes, which would inherit the
//! mask.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::supervisor::LoopEvent;

const FORWARDED: [Signal; 4] = [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// The signals the supervisor forwards to its loop.
pub fn forwarded() -> SigSet {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set
}

/// Blocks the forwarded signals in the calling thread.
pub fn block() -> io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded()), None).map_err(io::Error::from)
}

/// Runs `f` with the forwarded signals blocked in the calling thread: every thread it starts is
/// born with them blocked, so only the forwarder ever takes one.
pub fn with_blocked<T>(f: impl FnOnce() -> T) -> T {
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded()), Some(&mut old)).is_ok();
    let out = f();
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    out
}

/// Whether every thread of this process has the forwarded signals blocked (read from
/// `/proc/self/task/*/status`): only then is none of them lost to a thread that takes it.
pub fn all_threads_block() -> bool {
    let wanted: u64 = FORWARDED.iter().map(|s| 1u64 << (*s as i32 - 1)).fold(0, |a, b| a | b);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("status")).is_ok_and(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                .is_some_and(|m| m & wanted == wanted)
        })
    })
}

fn unblock() -> io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded()), None).map_err(io::Error::from)
}

/// The handlers and the thread that forward the signals to the loop.
pub struct Forwarder {
    ids: Vec<signal_hook::SigId>,
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Installs the handlers, starts forwarding to `tx`, then unblocks the signals in the
    /// calling thread (a woken supervisor inherits them blocked: any that came meanwhile are
    /// delivered now).
    pub fn start(tx: SyncSender<LoopEvent>) -> io::Result<Forwarder> {
        let mut ids = Vec::new();
        let mut pipes = Vec::new();
        for sig in FORWARDED {
            let (rx, wx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(io::Error::from)?;
            ids.push(signal_hook::low_level::pipe::register(sig as i32, wx)?);
            pipes.push((sig as i32, rx));
        }
        let (stop_rx, stop_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || forward(pipes, stop_rx, tx))?;
        unblock()?;
        Ok(Forwarder {
            ids,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops forwarding, with the signals blocked in the calling thread: every signal taken so
    /// far is in the channel when this returns, and the rest stay pending. Call only when no
    /// other thread of the process is left to take one (the loop's readers are stopped).
    pub fn stop(mut self) -> io::Result<()> {
        block()?;
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        Ok(())
    }
}

/// The forwarder's thread: each pipe's bytes are signals; when `stop` hangs up, it blocks the
/// signals in itself, hands over what is left in the pipes and ends.
fn forward(pipes: Vec<(i32, OwnedFd)>, stop: OwnedFd, tx: SyncSender<LoopEvent>) {
    let drain = |pipes: &[(i32, OwnedFd)]| -> bool {
        let mut buf = [0u8; 64];
        for (sig, fd) in pipes {
            let mut got = false;
            while let Ok(n) = nix::unistd::read(fd, &mut buf) {
                if n == 0 {
                    break;
                }
                got = true;
            }
            // Signals of one kind coalesce: one event says it came.
            if got && tx.send(LoopEvent::Signal(*sig)).is_err() {
                return false;
            }
        }
        true
    };
    loop {
        let mut fds: Vec<PollFd<'_>> = pipes
            .iter()
            .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let stopping = fds.last().and_then(PollFd::revents).is_some_and(|r| !r.is_empty());
        if stopping {
            // No handler can run in this thread from now on; the caller blocked them too.
            let _ = block();
            drain(&pipes);
            return;
        }
        if !drain(&pipes) {
            return;
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Dropped with the supervisor ending: its thread sees the hang-up and ends.
        self.stop.take();
        self.thread.take();
    }
}
