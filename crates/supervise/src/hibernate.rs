//! Hibernation: how a quiet supervisor gets small without letting go of its run.
//!
//! A supervisor is a big program (the whole engine), and most of what it touched getting a run
//! started — git, the sandbox, the first checkpoint — stays resident while the agent works for
//! hours. Once the run has been quiet for a while (no output, nothing pending in the sink, no
//! stop under way) the loop stops its output readers and hands back a [`Dormant`]; the
//! supervisor puts it, with its sink's own state, in a [`Hibernation`] and replaces itself —
//! same process, same pid, still the agent's parent and subreaper, still holding the run's lock
//! — with the small keeper program (`agentctl-keeper`). The keeper only waits: for output on the
//! agent's pipes (left unread), a signal (left pending), a change in the control directory, a
//! deadline — and meanwhile appends the run's resource samples. Then it execs the supervisor
//! again ([`Hibernation::wake_command`]), which reads the hibernation back, takes up the loop
//! where it stopped ([`crate::supervisor::resume`]) and handles what woke it.
//!
//! The hibernation travels in a memfd (never on disk). Every descriptor it names stays open
//! across both execs; nothing else does.

use std::ffi::OsString;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use model::provider::Stream;
use serde::{Deserialize, Serialize};

use crate::local::ControlStamp;
use crate::supervisor::{AgentRef, LoopEvent, LoopState};

/// What the loop hands over when it lets the supervisor hibernate.
#[derive(Debug, Serialize, Deserialize)]
pub struct Dormant {
    pub agent: AgentRef,
    /// The read ends of the agent's stdout and stderr pipes (`None`: that stream had ended).
    pub pipes: Vec<(Stream, Option<RawFd>)>,
    /// When the agent started and last wrote, on the monotonic clock (nanoseconds).
    pub started_ns: u64,
    pub last_output_ns: u64,
    /// What the readers and the signal forwarder had taken but the loop had not yet handled.
    pub carried: Vec<Carried>,
    /// The loop may hibernate again at once when it is taken up (only a deadline woke it),
    /// rather than after a quiet period.
    #[serde(default)]
    pub quick: bool,
}

/// A loop event, as carried across a hibernation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Carried {
    Output { stream: Stream, b64: String },
    Eof { stream: Stream },
    Signal { signal: i32 },
}

impl Carried {
    fn of(ev: LoopEvent) -> Carried {
        match ev {
            LoopEvent::Output(stream, data) => Carried::Output {
                stream,
                b64: base64::engine::general_purpose::STANDARD.encode(data),
            },
            LoopEvent::Eof(stream) => Carried::Eof { stream },
            LoopEvent::Signal(signal) => Carried::Signal { signal },
        }
    }

    fn into_event(self) -> io::Result<LoopEvent> {
        Ok(match self {
            Carried::Output { stream, b64 } => LoopEvent::Output(
                stream,
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            ),
            Carried::Eof { stream } => LoopEvent::Eof(stream),
            Carried::Signal { signal } => LoopEvent::Signal(signal),
        })
    }
}

impl Dormant {
    pub(crate) fn new(state: LoopState, pipes: Vec<(Stream, Option<OwnedFd>)>, carried: Vec<LoopEvent>) -> Dormant {
        Dormant {
            agent: state.agent,
            pipes: pipes
                .into_iter()
                .map(|(stream, fd)| (stream, fd.map(IntoRawFd::into_raw_fd)))
                .collect(),
            started_ns: ns_of(state.started),
            last_output_ns: ns_of(state.last_output),
            carried: carried.into_iter().map(Carried::of).collect(),
            quick: false,
        }
    }

    /// Events taken while hibernating began (a signal the forwarder read as it stopped).
    pub fn carry(&mut self, ev: LoopEvent) {
        self.carried.push(Carried::of(ev));
    }

    /// What the loop takes up: its state, the open pipes (close-on-exec again), how many
    /// streams had ended before their reader stopped, and the carried events in order.
    pub(crate) fn into_parts(self) -> io::Result<TakenUp> {
        let mut pipes = Vec::new();
        let mut ended = 0;
        for (stream, fd) in self.pipes {
            match fd {
                Some(fd) => {
                    // SAFETY: the descriptor was kept open for us across the exec and nothing
                    // else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    set_cloexec(fd.as_raw_fd(), true)?;
                    pipes.push((stream, fd));
                }
                None => ended += 1,
            }
        }
        let carried = self
            .carried
            .into_iter()
            .map(Carried::into_event)
            .collect::<io::Result<Vec<_>>>()?;
        let state = LoopState {
            agent: self.agent,
            started: instant_of(self.started_ns),
            last_output: instant_of(self.last_output_ns),
            resumed: None,
        };
        Ok(TakenUp {
            state,
            pipes,
            ended,
            carried,
        })
    }

    /// Whether events were taken that the loop has yet to handle: then it must go on at once.
    /// A SIGCHLD alone does not count while no child of ours is waiting to be reaped (it was a
    /// process the loop already reaped, such as git's): it is dropped.
    pub fn has_carried(&mut self) -> bool {
        let only_sigchld = self
            .carried
            .iter()
            .all(|c| matches!(c, Carried::Signal { signal } if *signal == libc::SIGCHLD));
        if only_sigchld && !child_waiting() {
            self.carried.clear();
        }
        !self.carried.is_empty()
    }

    fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.pipes.iter().filter_map(|(_, fd)| *fd)
    }
}

/// A [`Dormant`] as the loop takes it up again.
pub(crate) struct TakenUp {
    pub state: LoopState,
    pub pipes: Vec<(Stream, OwnedFd)>,
    pub ended: usize,
    pub carried: Vec<LoopEvent>,
}

/// Resource samples the keeper takes while the supervisor hibernates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sampling {
    /// The run's event log and id, and the sequence number of the next event.
    pub events: PathBuf,
    pub run_id: String,
    pub next_seq: u64,
    pub every_ms: u64,
    /// When the next sample is due (monotonic nanoseconds).
    pub next_at_ns: u64,
    /// The last sample taken, for the CPU share of the next.
    pub last: Option<SampleRecord>,
}

/// One resource sample, as kept between two.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SampleRecord {
    pub at_ns: u64,
    pub memory_bytes: u64,
    pub cpu_time_ns: u64,
    pub pids: u32,
}

/// An unwatched tree, as the keeper checks it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TreeScan {
    pub root: PathBuf,
    pub every_ms: u64,
    /// The tree's [`crate::keeper::tree_fingerprint`] when the supervisor went to sleep.
    pub fingerprint: u64,
}

/// A watch handed over across the execs.
#[derive(Debug, Serialize, Deserialize)]
pub struct WatchHandover {
    pub fd: RawFd,
    pub root: PathBuf,
    pub dirs: Vec<(i32, PathBuf)>,
}

/// The format of [`Hibernation`] this program writes and reads: a supervisor woken by a keeper
/// of another version (agentctl replaced while the run slept) refuses a format it does not know.
pub const HIBERNATION_VERSION: u32 = 1;

/// Everything a hibernating supervisor carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hibernation {
    /// [`HIBERNATION_VERSION`] when written.
    pub version: u32,
    pub dormant: Dormant,
    /// The supervisor's program, and its arguments to wake (the hibernation's descriptor is
    /// added last).
    pub program: PathBuf,
    pub wake_args: Vec<String>,
    /// The run's supervisor lock, held across every exec.
    pub lock_fd: RawFd,
    /// The control directory, and how it was when the supervisor last found nothing in it.
    pub control_dir: PathBuf,
    pub control_stamp: ControlStamp,
    /// Wake by this time at the latest (monotonic nanoseconds): a timeout, a due checkpoint.
    pub wake_at_ns: Option<u64>,
    pub sampling: Option<Sampling>,
    /// The worktree's watch, handed over (see `watch::handover`): its inotify descriptor and
    /// each watch's directory. The keeper wakes the supervisor when it has anything to read.
    #[serde(default)]
    pub watch: Option<WatchHandover>,
    /// An unwatched worktree (past the inotify limits): the keeper looks at it every so often
    /// and wakes the supervisor (for a full scan) only when it changed.
    #[serde(default)]
    pub scan: Option<TreeScan>,
    /// The supervisor's own state (its sink's), as JSON text, carried as it is (the keeper
    /// never parses it).
    pub sink: String,
    /// What woke the keeper (for the log).
    #[serde(default)]
    pub woke_for: Option<String>,
}

impl Hibernation {
    /// Replaces this process with `program ARGS… FD`, the hibernation in the memfd FD. Returns
    /// only on failure; every descriptor it names is then close-on-exec again.
    pub fn exec(&self, program: &std::path::Path, args: &[OsString]) -> io::Error {
        let fd = match self.to_memfd() {
            Ok(fd) => fd,
            Err(e) => return e,
        };
        let keep: Vec<RawFd> = self.fds().chain([fd.as_raw_fd()]).collect();
        for (i, &k) in keep.iter().enumerate() {
            if let Err(e) = set_cloexec(k, false) {
                for &done in &keep[..i] {
                    let _ = set_cloexec(done, true);
                }
                return e;
            }
        }
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).arg(fd.as_raw_fd().to_string());
        // The signals we read must stay blocked (and pending) for the next program: blocked
        // again just before the exec itself, whatever the exec path does with the mask.
        let mask = crate::signals::forwarded();
        // SAFETY: pthread_sigmask is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(move || mask.thread_block().map_err(io::Error::from));
        }
        let err = cmd.exec();
        for &k in &keep {
            let _ = set_cloexec(k, true);
        }
        err
    }

    /// Wakes the supervisor: execs its program with its wake arguments.
    pub fn wake(&self) -> io::Error {
        let args: Vec<OsString> = self.wake_args.iter().map(OsString::from).collect();
        self.exec(&self.program, &args)
    }

    /// Reads the hibernation from the memfd `fd` (closing it). Every descriptor it names is
    /// made close-on-exec at once: nothing this program starts inherits one.
    pub fn read_from(fd: RawFd) -> io::Result<Hibernation> {
        // SAFETY: the descriptor was handed to us on the command line by the process we
        // replaced; nothing else owns it.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.rewind()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let h: Hibernation = serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if h.version != HIBERNATION_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a hibernation of format {} (this program reads {HIBERNATION_VERSION})",
                    h.version
                ),
            ));
        }
        for k in h.fds() {
            set_cloexec(k, true)?;
        }
        Ok(h)
    }

    /// Every descriptor the hibernation names.
    fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.dormant
            .fds()
            .chain(self.watch.as_ref().map(|w| w.fd))
            .chain([self.lock_fd])
            .filter(|fd| *fd >= 0)
    }

    fn to_memfd(&self) -> io::Result<std::fs::File> {
        let text = serde_json::to_vec(self).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new
        // descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"agentctl-hibernation".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor memfd_create just returned, owned by nothing else.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.write_all(&text)?;
        file.rewind()?;
        Ok(file)
    }
}

/// Whether a child of this process has ended and waits to be reaped (looked at, not reaped).
pub(crate) fn child_waiting() -> bool {
    // SAFETY: waitid writes into the siginfo we own; WNOWAIT leaves the child waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT);
        r == 0 && info.si_pid() != 0
    }
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; no memory is touched.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The monotonic clock, in nanoseconds (the clock `Instant` reads, which survives an exec).
pub fn mono_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An `Instant` (past or future) as monotonic nanoseconds.
pub fn ns_of(t: Instant) -> u64 {
    let (now_ns, now) = (mono_now_ns(), Instant::now());
    match t.checked_duration_since(now) {
        Some(ahead) => now_ns + ahead.as_nanos() as u64,
        None => now_ns.saturating_sub(now.duration_since(t).as_nanos() as u64),
    }
}

/// Monotonic nanoseconds (past or future) as an `Instant`.
pub fn instant_of(ns: u64) -> Instant {
    let (now_ns, now) = (mono_now_ns(), Instant::now());
    if ns >= now_ns {
        return now + Duration::from_nanos(ns - now_ns);
    }
    now.checked_sub(Duration::from_nanos(now_ns - ns)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn instants_survive_as_monotonic_nanoseconds_past_and_future() {
        let now = Instant::now();
        for t in [now - Duration::from_secs(5), now, now + Duration::from_secs(7)] {
            let back = instant_of(ns_of(t));
            let off = if back > t { back - t } else { t - back };
            assert!(off < Duration::from_millis(5), "{off:?}");
        }
    }

    #[test]
    fn a_dormant_loop_keeps_its_pipes_and_carried_events_through_a_memfd() {
        let (rx, tx) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&tx, b"left in the pipe").unwrap();
        let state = LoopState {
            agent: AgentRef {
                pid: 42,
                pgid: 42,
                start_time: 7,
            },
            started: Instant::now() - Duration::from_secs(60),
            last_output: Instant::now() - Duration::from_secs(6),
            resumed: None,
        };
        let mut dormant = Dormant::new(
            state,
            vec![(Stream::Stdout, Some(rx)), (Stream::Stderr, None)],
            vec![
                LoopEvent::Output(Stream::Stdout, b"\xffbytes".to_vec()),
                LoopEvent::Eof(Stream::Stderr),
            ],
        );
        dormant.carry(LoopEvent::Signal(libc::SIGTERM));
        let h = Hibernation {
            version: HIBERNATION_VERSION,
            dormant,
            program: "/bin/false".into(),
            wake_args: vec!["__supervise".into()],
            lock_fd: -1,
            control_dir: "/nonexistent".into(),
            control_stamp: ControlStamp::of(Path::new("/")).unwrap(),
            wake_at_ns: Some(1),
            sampling: None,
            watch: None,
            scan: None,
            sink: r#"{"pgid":42}"#.to_owned(),
            woke_for: Some("output".into()),
        };
        let memfd = h.to_memfd().unwrap();
        let back = Hibernation::read_from(memfd.into_raw_fd()).unwrap();
        assert_eq!(back.sink, r#"{"pgid":42}"#);
        let taken = back.dormant.into_parts().unwrap();
        assert_eq!(taken.state.agent.pid, 42);
        assert!(taken.state.started.elapsed() >= Duration::from_secs(60));
        assert_eq!(taken.ended, 1);
        assert!(matches!(&taken.carried[..], [
            LoopEvent::Output(Stream::Stdout, data),
            LoopEvent::Eof(Stream::Stderr),
            LoopEvent::Signal(libc::SIGTERM),
        ] if data == b"\xffbytes"));
        let (_, pipe) = &taken.pipes[0];
        let mut buf = [0u8; 32];
        assert_eq!(nix::unistd::read(pipe, &mut buf).unwrap(), 16);
    }
}
