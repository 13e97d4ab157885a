//! The supervision loop: one owner of the agent's lifecycle. Everything that can happen — output,
//! a child exiting, a signal to the supervisor, a control request, a deadline — arrives as a
//! [`LoopEvent`] or is checked on the loop's tick, and is handled in one place. It enforces the
//! hard and idle timeouts by itself, escalates stops SIGINT → SIGTERM → SIGKILL to the whole
//! process tree, and returns only when no process of the run is left.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use model::EventData;
use model::outcome::{ExitInfo, StopReason};
use model::provider::{ControlRequest, Stream};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::hibernate::Dormant;
use crate::proctree;
use crate::spawn::{self, ProcessSpec};

/// Something the loop reacts to.
#[derive(Debug)]
pub enum LoopEvent {
    Output(Stream, Vec<u8>),
    Eof(Stream),
    /// A signal delivered to the supervisor process.
    Signal(i32),
}

/// Where the loop reports; implemented by the caller (the engine writes events and output).
pub trait Sink {
    /// Captured output, in arrival order.
    fn output(&mut self, stream: Stream, data: &[u8]);
    /// A lifecycle event; an error here is logged and the loop goes on (the agent is still ours).
    fn event(&mut self, data: EventData);
    /// A pending control request, if any (polled every tick).
    fn poll_control(&mut self) -> Option<ControlRequest>;
    /// Called on every turn of the loop (at least every 100 ms), e.g. to sync output.
    fn tick(&mut self) {}
    /// Whether the agent must be stopped for a reason of the sink's (a resource limit passed, a
    /// path policy broken); polled after every tick.
    fn should_stop(&mut self) -> Option<StopReason> {
        None
    }
    /// Whether everything the sink holds can be put aside for the supervisor to hibernate now
    /// (see [`crate::hibernate`]); asked only once the run has been quiet for a while.
    fn may_hibernate(&mut self) -> bool {
        false
    }
}

/// Limits enforced by the supervisor.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// Default grace between stop signals.
    pub grace: Duration,
}

/// How the agent ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEnd {
    pub exit: ExitInfo,
    pub stop: Option<StopReason>,
    pub elapsed: Duration,
}

/// The channel the loop listens on. Create it before anything else so signals to the
/// supervisor are never lost; pass the sender to a signal forwarder.
///
/// The channel is bounded: when the loop falls behind (slow disk), reader threads block, the
/// agent's pipe fills and the agent waits — memory stays flat however much the agent writes.
pub fn channel() -> (SyncSender<LoopEvent>, Receiver<LoopEvent>) {
    mpsc::sync_channel(64)
}

/// Forwards SIGCHLD, SIGTERM, SIGINT and SIGHUP to the loop (see [`crate::signals`]). Call
/// once, early in the supervisor process, before any other thread starts; keep the forwarder
/// for as long as the loop runs.
pub fn forward_signals(tx: SyncSender<LoopEvent>) -> std::io::Result<crate::signals::Forwarder> {
    crate::signals::Forwarder::start(tx)
}

/// Whether a signal delivered to the supervisor asks it to stop the run.
pub fn is_stop_signal(sig: i32) -> bool {
    sig == signal_hook::consts::SIGTERM || sig == signal_hook::consts::SIGINT
}

/// Keeps a long-lived, mostly idle supervisor small: every thread allocates from one malloc
/// arena (glibc otherwise gives each thread that allocates an arena of its own, which keeps its
/// free memory). Call once, first thing, before any thread starts.
pub fn limit_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no thread is allocating yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the memory freed since the last call (start-up's, a checkpoint's) back to the system,
/// so an idle supervisor holds only what it uses.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes this process a child subreaper so orphaned descendants stay in its tree.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

struct Escalation {
    /// Signals still to send, in order.
    remaining: VecDeque<Signal>,
    next_at: Instant,
    grace: Duration,
    /// When the last signal of the ladder went out.
    all_sent_at: Option<Instant>,
}

const TICK: Duration = Duration::from_millis(100);
const STOP_TICK: Duration = Duration::from_millis(25);
/// How long output may still arrive once nothing of the run is left.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How often to check that the agent still exists when no exit status came (it is reaped as
/// soon as SIGCHLD says it ended: this is only a safety net).
const VANISHED_CHECK: Duration = Duration::from_secs(1);
/// How long to keep killing processes that survive SIGKILL (stuck in the kernel) before giving
/// up on them and recording the outcome anyway.
const UNKILLABLE_LIMIT: Duration = Duration::from_secs(10);

/// Starts the agent and supervises it to the end. Emits `started`, `stop_requested`,
/// `signal_sent` and `exited` through `sink`.
pub fn supervise(
    spec: &ProcessSpec,
    limits: Limits,
    tx: SyncSender<LoopEvent>,
    rx: &Receiver<LoopEvent>,
    sink: &mut dyn Sink,
) -> std::io::Result<AgentEnd> {
    match start(spec, limits, None, tx, rx, sink)? {
        Supervised::Ended(end) => Ok(end),
        Supervised::Dormant(_) => unreachable!("hibernation was not allowed"),
    }
}

/// How a stretch of supervision ended.
#[derive(Debug)]
pub enum Supervised {
    /// The agent ended and nothing of the run is left.
    Ended(AgentEnd),
    /// The run was quiet and the sink agreed: the loop stopped its readers and hands over what
    /// the process needs to hibernate (the agent runs on).
    Dormant(Dormant),
}

/// Starts the agent and supervises it until it ends or — with `hibernate_after` — until it has
/// been quiet that long and the sink may hibernate.
pub fn start(
    spec: &ProcessSpec,
    limits: Limits,
    hibernate_after: Option<Duration>,
    tx: SyncSender<LoopEvent>,
    rx: &Receiver<LoopEvent>,
    sink: &mut dyn Sink,
) -> std::io::Result<Supervised> {
    let (agent, readers) = spawn::spawn(spec, &tx)?;
    drop(tx);
    let started = Instant::now();
    let start_time = proctree::stat(agent.pid).map(|s| s.start_time).unwrap_or(0);
    sink.event(EventData::Started {
        pid: agent.pid,
        pgid: agent.pgid,
        start_time,
        argv: spec.argv.clone(),
        tty: spec.tty,
    });
    tracing::info!(agent.pid = agent.pid, "agent started");
    let state = LoopState {
        agent: AgentRef {
            pid: agent.pid,
            pgid: agent.pgid,
            start_time,
        },
        started,
        last_output: started,
        resumed: None,
    };
    run_loop(state, readers, Vec::new(), limits, hibernate_after, rx, sink)
}

/// Supervises an agent a hibernated supervisor left running, from where it left off: its
/// pipes are read again, and what it carried is handled first.
pub fn resume(
    dormant: Dormant,
    limits: Limits,
    hibernate_after: Option<Duration>,
    tx: SyncSender<LoopEvent>,
    rx: &Receiver<LoopEvent>,
    sink: &mut dyn Sink,
) -> std::io::Result<Supervised> {
    let quick = dormant.quick;
    let crate::hibernate::TakenUp {
        state,
        pipes,
        ended,
        carried,
    } = dormant.into_parts()?;
    let mut readers = spawn::forward_pipes(pipes, &tx)?;
    // A stream that ended as the readers stopped has its end among the carried events.
    readers.open += ended;
    drop(tx);
    tracing::info!(agent.pid = state.agent.pid, "supervision resumed");
    let state = LoopState {
        // Woken for something: awake for one quiet period at least — unless only a deadline
        // woke it (a timed scan is done in a moment).
        resumed: (!quick).then(Instant::now),
        ..state
    };
    run_loop(state, readers, carried, limits, hibernate_after, rx, sink)
}

/// The agent as the loop knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentRef {
    pub pid: u32,
    pub pgid: u32,
    pub start_time: u64,
}

/// What the loop keeps between turns that outlives a hibernation.
pub(crate) struct LoopState {
    pub agent: AgentRef,
    pub started: Instant,
    pub last_output: Instant,
    /// When the loop was taken up again after a hibernation.
    pub resumed: Option<Instant>,
}

/// The loop proper.
#[allow(clippy::too_many_arguments)]
fn run_loop(
    state: LoopState,
    readers: spawn::Readers,
    carried: Vec<LoopEvent>,
    limits: Limits,
    hibernate_after: Option<Duration>,
    rx: &Receiver<LoopEvent>,
    sink: &mut dyn Sink,
) -> std::io::Result<Supervised> {
    let me = std::process::id();
    let agent = state.agent;
    let started = state.started;
    let mut open_streams = readers.open;
    let mut readers = Some(readers);
    let mut replay: VecDeque<LoopEvent> = carried.into();
    let mut last_output = state.last_output;
    let mut exit: Option<ExitInfo> = None;
    let mut stop: Option<StopReason> = None;
    let mut escalation: Option<Escalation> = None;
    let mut exited_at: Option<Instant> = None;
    let mut exit_elapsed = Duration::ZERO;
    let mut vanished_checked = Instant::now();
    // When the loop was taken up again after a hibernation.
    let resumed = state.resumed;

    loop {
        let tick = if escalation.is_some() || exit.is_some() {
            STOP_TICK
        } else {
            TICK
        };
        let next = match replay.pop_front() {
            Some(ev) => Ok(ev),
            None => rx.recv_timeout(tick),
        };
        match next {
            Ok(LoopEvent::Output(stream, data)) => {
                last_output = Instant::now();
                sink.output(stream, &data);
            }
            Ok(LoopEvent::Eof(_)) => open_streams = open_streams.saturating_sub(1),
            Ok(LoopEvent::Signal(sig)) if sig == signal_hook::consts::SIGCHLD => {}
            Ok(LoopEvent::Signal(sig)) if sig == signal_hook::consts::SIGHUP => {}
            // A stop once the agent has exited would relabel an outcome that is already decided.
            Ok(LoopEvent::Signal(_)) if exit.is_some() => {}
            Ok(LoopEvent::Signal(_)) => {
                request_stop(
                    &mut stop,
                    &mut escalation,
                    StopReason::SupervisorSignal,
                    limits.grace,
                    sink,
                );
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open_streams = 0,
        }
        // Reap once per turn and keep what it finds: a status reaped and dropped is gone forever.
        if let Some(info) = reap(agent.pid)
            && exit.is_none()
        {
            tracing::info!(exit.code = ?info.exit_code, exit.signal = ?info.signal, "agent exited");
            exit = Some(info);
            exited_at = Some(Instant::now());
            exit_elapsed = started.elapsed();
        }
        let check_alive = exit.is_none() && vanished_checked.elapsed() >= VANISHED_CHECK;
        if check_alive {
            vanished_checked = Instant::now();
        }
        if check_alive && proctree::stat(agent.pid).is_none() {
            // Neither alive nor a zombie of ours: its status went elsewhere. Never wait forever.
            tracing::warn!(agent.pid = agent.pid, "agent vanished without an exit status");
            exit = Some(ExitInfo {
                exit_code: None,
                signal: None,
            });
            exited_at = Some(Instant::now());
            exit_elapsed = started.elapsed();
        }
        sink.tick();
        if exit.is_none()
            && let Some(reason) = sink.should_stop()
        {
            request_stop(&mut stop, &mut escalation, reason, limits.grace, sink);
        }
        if let Some(ControlRequest::Stop { grace_ms }) = sink.poll_control()
            && exit.is_none()
        {
            request_stop(
                &mut stop,
                &mut escalation,
                StopReason::User,
                Duration::from_millis(grace_ms),
                sink,
            );
        }
        if exit.is_none() && stop.is_none() {
            if limits.timeout.is_some_and(|t| started.elapsed() >= t) {
                request_stop(&mut stop, &mut escalation, StopReason::Timeout, limits.grace, sink);
            } else if limits.idle_timeout.is_some_and(|t| last_output.elapsed() >= t) {
                request_stop(&mut stop, &mut escalation, StopReason::IdleTimeout, limits.grace, sink);
            }
        }
        let survivors = if exit.is_some() || escalation.is_some() {
            proctree::live_descendants(me)
        } else {
            Vec::new()
        };
        if exit.is_some() && survivors.is_empty() {
            // Nothing of the run is left; wait briefly for the last output to drain.
            let drained = open_streams == 0;
            // Only a descriptor passed out of the tree keeps a stream open this long; a busy
            // machine can take seconds to hand over the last output, which must not be lost.
            let waited = exited_at.is_some_and(|t| t.elapsed() > DRAIN_LIMIT);
            if drained || waited {
                break;
            }
            continue;
        }
        if exit.is_some() && escalation.is_none() && !survivors.is_empty() {
            // The agent is gone but left processes behind: they do not outlive the run.
            tracing::info!(
                survivors = survivors.len(),
                "agent exited leaving processes; cleaning up"
            );
            escalation = Some(Escalation {
                remaining: VecDeque::from([Signal::SIGTERM, Signal::SIGKILL]),
                next_at: Instant::now(),
                grace: limits.grace,
                all_sent_at: None,
            });
        }
        if let Some(after) = hibernate_after
            && exit.is_none()
            && escalation.is_none()
            && stop.is_none()
            && replay.is_empty()
            && open_streams == 2
            && readers.as_ref().is_some_and(spawn::Readers::stoppable)
            && last_output.elapsed() >= after
            && resumed.is_none_or(|t| t.elapsed() >= after)
            && deadlines_clear(&limits, started, last_output)
            && sink.may_hibernate()
        {
            let mut carry = Vec::new();
            let pipes = readers.take().expect("readers").stop(rx, &mut carry);
            return Ok(Supervised::Dormant(Dormant::new(
                LoopState {
                    agent,
                    started,
                    last_output,
                    resumed: None,
                },
                pipes,
                carry,
            )));
        }
        if let Some(esc) = &mut escalation
            && Instant::now() >= esc.next_at
        {
            let pids: Vec<u32> = survivors.iter().map(|p| p.pid).collect();
            let pgid = exit.is_none().then_some(agent.pgid);
            if let Some(sig) = esc.remaining.pop_front() {
                let hit = proctree::signal_all(pgid, &pids, sig);
                sink.event(EventData::SignalSent {
                    signal: sig.as_str().to_owned(),
                    pids: hit,
                    pgid,
                });
                esc.next_at = Instant::now() + esc.grace;
            } else {
                // SIGKILL was sent; repeat it quietly until the tree is empty. A process stuck in
                // the kernel (uninterruptible sleep) can ignore even that: give up after a while
                // rather than supervise forever.
                let killed_at = *esc.all_sent_at.get_or_insert_with(Instant::now);
                if killed_at.elapsed() > UNKILLABLE_LIMIT {
                    tracing::error!(survivors = ?pids, "processes survive SIGKILL; giving up on them");
                    break;
                }
                proctree::signal_all(pgid, &pids, Signal::SIGKILL);
                esc.next_at = Instant::now() + Duration::from_millis(200);
            }
        }
    }
    // Drain whatever output is still queued.
    while let Ok(ev) = rx.try_recv() {
        if let LoopEvent::Output(stream, data) = ev {
            sink.output(stream, &data);
        }
    }
    let exit = exit.unwrap_or(ExitInfo {
        exit_code: None,
        signal: None,
    });
    let elapsed = if exit_elapsed.is_zero() {
        started.elapsed()
    } else {
        exit_elapsed
    };
    sink.event(EventData::Exited {
        exit_code: exit.exit_code,
        signal: exit.signal.clone(),
        elapsed_ms: elapsed.as_millis() as u64,
    });
    drop(readers);
    Ok(Supervised::Ended(AgentEnd { exit, stop, elapsed }))
}

/// Whether no timeout falls due soon: hibernating just before one would only wake again.
fn deadlines_clear(limits: &Limits, started: Instant, last_output: Instant) -> bool {
    let soon = Duration::from_secs(2);
    let clear = |since: Instant, limit: Option<Duration>| limit.is_none_or(|l| since.elapsed() + soon < l);
    clear(started, limits.timeout) && clear(last_output, limits.idle_timeout)
}

fn request_stop(
    stop: &mut Option<StopReason>,
    escalation: &mut Option<Escalation>,
    reason: StopReason,
    grace: Duration,
    sink: &mut dyn Sink,
) {
    if stop.is_some() {
        return;
    }
    tracing::info!(
        stop.reason = reason.as_str(),
        grace_ms = grace.as_millis() as u64,
        "stopping agent"
    );
    *stop = Some(reason);
    sink.event(EventData::StopRequested {
        reason,
        grace_ms: grace.as_millis() as u64,
    });
    *escalation = Some(Escalation {
        remaining: VecDeque::from([Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL]),
        next_at: Instant::now(),
        grace,
        all_sent_at: None,
    });
}

/// Reaps every exited child (orphans reparented to us included); returns the agent's exit if
/// it was among them.
fn reap(agent_pid: u32) -> Option<ExitInfo> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if pid.as_raw() as u32 == agent_pid {
                    found = Some(ExitInfo {
                        exit_code: Some(code),
                        signal: None,
                    });
                }
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                if pid.as_raw() as u32 == agent_pid {
                    found = Some(ExitInfo {
                        exit_code: None,
                        signal: Some(sig.as_str().to_owned()),
                    });
                }
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    found
}
