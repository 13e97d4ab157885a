//! The keeper: what a hibernating supervisor runs (see [`crate::hibernate`]). It waits, and
//! touches nothing the supervisor will want: output stays in the agent's pipes, signals stay
//! pending, requests stay in the control directory. It wakes the supervisor for any of them,
//! or when the hibernation's deadline comes; until then it takes the run's resource samples
//! through the caller's `sample`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::hibernate::{Hibernation, Sampling, mono_now_ns};
use crate::local::ControlStamp;

/// How long a child of [`in_child`] may take.
const IN_CHILD_LIMIT: Duration = Duration::from_secs(5);

/// How often the control directory is looked at when it cannot be watched.
const CONTROL_POLL: Duration = Duration::from_millis(250);

/// Why the keeper woke the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Output,
    Signal,
    Control,
    Files,
    Deadline,
}

impl Wake {
    pub fn as_str(self) -> &'static str {
        match self {
            Wake::Output => "output",
            Wake::Signal => "signal",
            Wake::Control => "control",
            Wake::Files => "files",
            Wake::Deadline => "deadline",
        }
    }
}

/// Waits until the supervisor must wake, taking samples meanwhile (`sample` is called when one
/// is due and updates the sampling state). Returns why it must wake.
pub fn keep(h: &mut Hibernation, sample: &mut dyn FnMut(&mut Sampling)) -> io::Result<Wake> {
    crate::signals::block()?;
    let signals = SignalFd::with_flags(
        &crate::signals::forwarded(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(io::Error::from)?;
    // The control directory is watched, or — past the inotify limits — looked at every
    // `CONTROL_POLL` (one `stat`, as the awake supervisor does).
    let control = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).and_then(|i| {
        i.add_watch(
            &h.control_dir,
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE_SELF,
        )?;
        Ok(i)
    });
    let control = match control {
        Ok(i) => Some(i),
        Err(e) => {
            eprintln!("agentctl-keeper: cannot watch the control directory ({e}); looking every {CONTROL_POLL:?}");
            None
        }
    };
    let changed = |h: &Hibernation| ControlStamp::of(&h.control_dir) != Some(h.control_stamp);
    // A request that came after the supervisor's last look and before the watch.
    if changed(h) {
        return Ok(Wake::Control);
    }
    // SAFETY: the pipes are open for the hibernation's whole life (see `Hibernation::exec`).
    let pipes: Vec<BorrowedFd<'_>> = h
        .dormant
        .pipes
        .iter()
        .filter_map(|(_, fd)| *fd)
        .map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
        .collect();
    let mut next_scan = mono_now_ns() + h.scan.as_ref().map_or(0, |s| s.every_ms.max(100) * 1_000_000);
    loop {
        let now = mono_now_ns();
        if h.wake_at_ns.is_some_and(|t| now >= t) {
            return Ok(Wake::Deadline);
        }
        if let Some(s) = &mut h.sampling
            && now >= s.next_at_ns
        {
            sample(s);
            s.next_at_ns = mono_now_ns() + s.every_ms.max(100) * 1_000_000;
            // A sample may run in a child of ours (see `in_child`): its SIGCHLD is not news.
            if settle_signals(&signals, h)? {
                return Ok(Wake::Signal);
            }
        }
        if control.is_none() && changed(h) {
            return Ok(Wake::Control);
        }
        if let Some(scan) = &h.scan
            && mono_now_ns() >= next_scan
        {
            if tree_fingerprint(&scan.root) != scan.fingerprint {
                return Ok(Wake::Files);
            }
            next_scan = mono_now_ns() + scan.every_ms.max(100) * 1_000_000;
        }
        let poll_at = control
            .is_none()
            .then(|| mono_now_ns() + CONTROL_POLL.as_nanos() as u64);
        let scan_at = h.scan.as_ref().map(|_| next_scan);
        let due = [
            h.wake_at_ns,
            h.sampling.as_ref().map(|s| s.next_at_ns),
            poll_at,
            scan_at,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match due {
            Some(t) => {
                let ms = Duration::from_nanos(t.saturating_sub(mono_now_ns())).as_millis() + 1;
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        // Without a control watch, the signalfd stands in its place (never ready twice).
        let control_fd = control.as_ref().map_or(signals.as_fd(), |c| c.as_fd());
        let mut fds: Vec<PollFd<'_>> = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(control_fd, PollFlags::POLLIN),
        ];
        // SAFETY: the handed-over watch is open for the hibernation's whole life.
        let watch = h.watch.as_ref().map(|w| unsafe { BorrowedFd::borrow_raw(w.fd) });
        fds.extend(watch.map(|w| PollFd::new(w, PollFlags::POLLIN)));
        fds.extend(pipes.iter().map(|p| PollFd::new(*p, PollFlags::POLLIN)));
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        if ready(0) {
            return Ok(Wake::Signal);
        }
        if ready(1) {
            return Ok(Wake::Control);
        }
        let first_pipe = 2 + usize::from(watch.is_some());
        if watch.is_some() && ready(2) {
            return Ok(Wake::Files);
        }
        if (first_pipe..fds.len()).any(ready) {
            return Ok(Wake::Output);
        }
    }
}

/// Reads the signals pending after a sample: SIGCHLD is dropped unless a child of ours is left
/// to reap; any other is carried for the supervisor (it was taken off the signalfd). Returns
/// whether the supervisor must wake.
fn settle_signals(signals: &SignalFd, h: &mut Hibernation) -> io::Result<bool> {
    let mut wake = false;
    while let Some(info) = signals.read_signal().map_err(io::Error::from)? {
        let sig = info.ssi_signo as i32;
        if sig != libc::SIGCHLD {
            h.dormant.carry(crate::supervisor::LoopEvent::Signal(sig));
            wake = true;
        }
    }
    Ok(wake || crate::hibernate::child_waiting())
}

/// Runs `f` in a forked child and returns what it returned. The pages `f` touches are the
/// child's: the keeper's own memory stays as small as its waiting needs. Only for a
/// single-threaded process (the keeper); the child ends with `_exit`, running no destructor.
pub fn in_child(f: impl FnOnce() -> Vec<u8>) -> io::Result<Vec<u8>> {
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: the keeper is single-threaded, so the child is a full copy of it; it writes its
    // answer and leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            drop(rx);
            let out = f();
            let _ = nix::unistd::write(&tx, &out);
            // SAFETY: ends the child at once, as after fork it must.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(tx);
            let mut out = Vec::new();
            let mut buf = [0u8; 256];
            let deadline = mono_now_ns() + IN_CHILD_LIMIT.as_nanos() as u64;
            loop {
                // A child stuck (a disk that does not answer) must not keep the keeper from
                // waking the supervisor: it is killed.
                let left = Duration::from_nanos(deadline.saturating_sub(mono_now_ns())).as_millis();
                let mut fds = [PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
                let ready = poll(
                    &mut fds,
                    PollTimeout::try_from(left as i32).unwrap_or(PollTimeout::ZERO),
                );
                if matches!(ready, Ok(0)) || left == 0 {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the sampling child did not answer",
                    ));
                }
                match nix::unistd::read(&rx, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
            while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
            Ok(out)
        }
    }
}

/// A fingerprint of a tree: every entry's path, type, size, modification time and inode
/// (symlinks not followed, `.git` left out, entries in name order). Any change a checkpoint
/// could see changes it (ignored files too: a wake for nothing, never a change missed).
pub fn tree_fingerprint(root: &std::path::Path) -> u64 {
    tree_state(root).0
}

/// [`tree_fingerprint`], and the newest modification or change time in the tree (seconds).
pub fn tree_state(root: &std::path::Path) -> (u64, i64) {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut newest = i64::MIN;
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            dir.hash(&mut hasher);
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().filter(|e| e.file_name() != ".git").collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(m) = e.metadata() else { continue };
            (e.path(), m.mode(), m.size(), m.mtime(), m.mtime_nsec(), m.ino()).hash(&mut hasher);
            newest = newest.max(m.mtime()).max(m.ctime());
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    (hasher.finish(), newest)
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::path::Path;
    use std::time::Instant;

    use model::provider::Stream;

    use super::*;
    use crate::hibernate::{Dormant, Hibernation};
    use crate::supervisor::AgentRef;

    /// A hibernation over `pipe` and the control directory `dir`, as the supervisor leaves it.
    fn hibernation(dir: &Path, pipe: Option<&OwnedFd>) -> Hibernation {
        Hibernation {
            version: crate::hibernate::HIBERNATION_VERSION,
            dormant: Dormant {
                agent: AgentRef {
                    pid: 1,
                    pgid: 1,
                    start_time: 0,
                },
                pipes: vec![(Stream::Stdout, pipe.map(|p| p.as_raw_fd()))],
                started_ns: mono_now_ns(),
                last_output_ns: mono_now_ns(),
                carried: Vec::new(),
                quick: false,
            },
            program: "/bin/false".into(),
            wake_args: Vec::new(),
            lock_fd: -1,
            control_dir: dir.to_owned(),
            control_stamp: ControlStamp::of(dir).unwrap(),
            wake_at_ns: None,
            sampling: None,
            watch: None,
            scan: None,
            sink: String::new(),
            woke_for: None,
        }
    }

    fn after(ms: u64, f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            f();
        });
    }

    #[test]
    fn output_waiting_in_the_agents_pipe_wakes_it_and_stays_there() {
        let dir = tempfile::tempdir().unwrap();
        let (rx, tx) = nix::unistd::pipe().unwrap();
        let mut h = hibernation(dir.path(), Some(&rx));
        after(100, move || {
            nix::unistd::write(&tx, b"hello").unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        assert_eq!(keep(&mut h, &mut |_| {}).unwrap(), Wake::Output);
        let mut buf = [0u8; 16];
        assert_eq!(
            nix::unistd::read(&rx, &mut buf).unwrap(),
            5,
            "the output is the supervisor's to read"
        );
    }

    #[test]
    fn a_request_in_the_control_directory_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = hibernation(dir.path(), None);
        let path = dir.path().join("stop.json");
        after(100, move || std::fs::write(path, "{}").unwrap());
        assert_eq!(keep(&mut h, &mut |_| {}).unwrap(), Wake::Control);
    }

    #[test]
    fn a_request_made_before_the_keeper_watched_wakes_it_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = hibernation(dir.path(), None);
        // After the supervisor's last look, with a later modification time.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.path().join("req-1.json"), "{}").unwrap();
        assert_eq!(keep(&mut h, &mut |_| {}).unwrap(), Wake::Control);
    }

    #[test]
    fn a_signal_to_the_process_wakes_it_and_stays_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = hibernation(dir.path(), None);
        crate::signals::block().unwrap();
        // Aimed at this thread (a process-wide SIGCHLD might go to another test's thread).
        // SAFETY: signals this thread, which has SIGCHLD blocked.
        assert_eq!(unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGCHLD) }, 0);
        assert_eq!(keep(&mut h, &mut |_| {}).unwrap(), Wake::Signal);
        let fd = nix::sys::signalfd::SignalFd::new(&crate::signals::forwarded()).unwrap();
        assert_eq!(
            fd.read_signal().unwrap().map(|s| s.ssi_signo),
            Some(libc::SIGCHLD as u32),
            "still pending for the supervisor"
        );
    }

    #[test]
    fn samples_are_taken_until_the_deadline_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = hibernation(dir.path(), None);
        let start = Instant::now();
        h.wake_at_ns = Some(mono_now_ns() + 450_000_000);
        h.sampling = Some(Sampling {
            events: dir.path().join("events.jsonl"),
            run_id: "r".into(),
            next_seq: 1,
            every_ms: 100,
            next_at_ns: mono_now_ns(),
            last: None,
        });
        let mut taken = 0;
        assert_eq!(keep(&mut h, &mut |_| taken += 1).unwrap(), Wake::Deadline);
        assert!(start.elapsed() >= Duration::from_millis(450));
        assert!((4..=6).contains(&taken), "{taken} samples");
    }

    #[test]
    fn a_handed_over_watch_with_something_to_read_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).unwrap();
        inotify.add_watch(work.path(), AddWatchFlags::IN_CREATE).unwrap();
        let mut h = hibernation(dir.path(), None);
        h.watch = Some(crate::hibernate::WatchHandover {
            fd: inotify.as_fd().as_raw_fd(),
            root: work.path().to_owned(),
            dirs: Vec::new(),
        });
        let file = work.path().join("new.txt");
        after(100, move || std::fs::write(file, "x").unwrap());
        assert_eq!(keep(&mut h, &mut |_| {}).unwrap(), Wake::Files);
    }

    #[test]
    fn an_unwatched_tree_wakes_it_only_once_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(work.path().join("a/b")).unwrap();
        std::fs::write(work.path().join("a/b/c.txt"), "1").unwrap();
        let mut h = hibernation(dir.path(), None);
        h.scan = Some(crate::hibernate::TreeScan {
            root: work.path().to_owned(),
            every_ms: 100,
            fingerprint: tree_fingerprint(work.path()),
        });
        // Unchanged, it sleeps to the deadline.
        h.wake_at_ns = Some(mono_now_ns() + 350_000_000);
        assert_eq!(keep(&mut h, &mut |_| {}).unwrap(), Wake::Deadline);
        h.wake_at_ns = None;
        let file = work.path().join("a/b/c.txt");
        after(150, move || std::fs::write(file, "22").unwrap());
        assert_eq!(keep(&mut h, &mut |_| {}).unwrap(), Wake::Files);
    }
}
