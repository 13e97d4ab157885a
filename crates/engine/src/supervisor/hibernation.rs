//! When a supervisor hibernates, and how it takes up its run again (the mechanism is
//! `supervise::hibernate`).
//!
//! A quiet run's supervisor replaces itself with the small `agentctl-keeper` (same process)
//! when everything it holds can be put aside and rebuilt: a single agent on pipes, without
//! secrets to redact, an egress proxy, resource limits or a run slot, and with nothing pending
//! (changes, a failed checkpoint to retry, a stop). What it keeps in memory — the agent's
//! process group, the last good checkpoint, the paths already flagged, the sampling, where the
//! sandbox's git view is — travels in the hibernation, and the worktree's watch goes over to a
//! plain inotify descriptor (`watch::handover`); everything else is rebuilt from the run's log
//! and plan when the keeper wakes it.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use model::LaunchPlan;
use serde::{Deserialize, Serialize};
use supervise::hibernate::{Dormant, Hibernation, Sampling, WatchHandover, mono_now_ns};
use watch::handover::Handover;

use super::confine::{Confined, KeptConfinement};
use supervise::{Limits, LoopEvent};

use super::{EngineSink, RunContext};

/// How long a run must be quiet before its supervisor hibernates, unless
/// `AGENTCTL_HIBERNATE_AFTER` says otherwise (milliseconds, or `off`).
const QUIET: Duration = Duration::from_secs(5);
/// The variable that sets (or turns off) the quiet period.
pub const HIBERNATE_AFTER_ENV: &str = "AGENTCTL_HIBERNATE_AFTER";
/// The keeper's program, next to ours.
const KEEPER: &str = "agentctl-keeper";

/// Whether a supervisor may hibernate.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Allowed {
    Never,
    After(Duration),
}

impl Allowed {
    /// What a run allows, for its whole life: never for a workflow, a terminal, a run slot
    /// (its lock would not survive), a confinement that cannot be put aside (a proxy, secrets
    /// to redact, limits), a disk limit to measure, or without the keeper's program.
    pub fn for_run(plan: &LaunchPlan, confined: &Confined) -> Allowed {
        if plan.workflow.is_some()
            || plan.tty
            || plan.max_concurrent.is_some()
            || super::monitor::measures_disk(confined)
            || confined.kept().is_none()
        {
            return Allowed::Never;
        }
        match (quiet_period(), keeper_program()) {
            (Some(quiet), Some(_)) => Allowed::After(quiet),
            _ => Allowed::Never,
        }
    }

    /// The quiet period after which the loop may ask, if it may.
    pub fn after(self) -> Option<Duration> {
        match self {
            Allowed::Never => None,
            Allowed::After(d) => Some(d),
        }
    }
}

fn quiet_period() -> Option<Duration> {
    match std::env::var(HIBERNATE_AFTER_ENV) {
        Ok(v) if v == "off" => None,
        Ok(v) => match v.parse::<u64>() {
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => {
                tracing::warn!(value = %v, "{HIBERNATE_AFTER_ENV} is not milliseconds or `off`; using the default");
                Some(QUIET)
            }
        },
        Err(_) => Some(QUIET),
    }
}

/// `agentctl-keeper` next to this program, if it is there.
pub fn keeper_program() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let keeper = exe.with_file_name(KEEPER);
    keeper.is_file().then_some(keeper)
}

/// What the sink carries across a hibernation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    pgid: Option<u32>,
    last_good: Option<u32>,
    flagged: std::collections::BTreeSet<String>,
    confinement: Option<KeptConfinement>,
    /// The worktree is not watched (the watcher could not start or lost its watches): the
    /// next full scan is due at this time (monotonic nanoseconds).
    #[serde(default)]
    scan_due_ns: Option<u64>,
    /// Unwatched for good (recorded so): full scans on the timer from now on.
    #[serde(default)]
    degraded: bool,
    /// The watch was handed over with a gap (no second inotify instance could be had while
    /// the watcher ran): the next checkpoint reads the whole worktree.
    #[serde(default)]
    gap: bool,
    /// The quiet period that led to this hibernation, and when it began (monotonic
    /// nanoseconds): a run woken soon after waits longer before it hibernates again.
    #[serde(default)]
    quiet_ms: u64,
    #[serde(default)]
    asleep_at_ns: u64,
}

/// A hibernation, as the woken supervisor takes it up.
pub(crate) struct Woken {
    dormant: Dormant,
    saved: Saved,
    sampling: Option<Sampling>,
    watch: Option<WatchHandover>,
    /// The keeper could not keep (its error), if so: the run stays awake from now on.
    failed: Option<String>,
    /// What was kept of the run's confinement (taken first, to rebuild it).
    pub confinement: Option<KeptConfinement>,
}

/// The longest quiet period a run that keeps waking is given.
const QUIET_MAX: Duration = Duration::from_secs(60);

/// The quiet period before the next hibernation: twice the last (up to [`QUIET_MAX`]) when the
/// run slept less than four of them and something else than a deadline woke it — a run that
/// writes every few seconds is not exec'd back and forth every few seconds — else `base`.
fn next_quiet(base: Duration, wk: &Woken) -> Duration {
    let last = Duration::from_millis(wk.saved.quiet_ms).max(base);
    let slept = Duration::from_nanos(mono_now_ns().saturating_sub(wk.saved.asleep_at_ns));
    if !wk.dormant.quick && slept < last * 4 {
        (last * 2).min(QUIET_MAX.max(base))
    } else {
        base
    }
}

fn unix_secs(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How long the watcher is given to read what the kernel queued before its last drain.
const SETTLE: Duration = Duration::from_millis(20);

/// What the keeper says when it fails (see `agentctl-keeper`).
pub const KEEPER_FAILED: &str = "the keeper failed: ";

impl Woken {
    pub fn of(h: Hibernation) -> Woken {
        let mut saved: Saved = serde_json::from_str(&h.sink).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the hibernation's sink state is unreadable; starting afresh");
            Saved::default()
        });
        let mut dormant = h.dormant;
        // Woken only because a deadline came (a timed scan, a timeout): done in a moment.
        dormant.quick = h.woke_for.as_deref() == Some(supervise::keeper::Wake::Deadline.as_str());
        Woken {
            dormant,
            confinement: saved.confinement.take(),
            saved,
            sampling: h.sampling,
            watch: h.watch,
            failed: h
                .woke_for
                .and_then(|w| w.strip_prefix(KEEPER_FAILED).map(str::to_owned)),
        }
    }
}

impl EngineSink<'_, '_> {
    /// Whether everything the sink holds can be put aside now and rebuilt on waking.
    pub(super) fn hibernatable(&self) -> bool {
        self.quiet() && self.signals.is_some()
    }

    /// Whether nothing the sink holds is pending, nor anything live that could not be rebuilt.
    fn quiet(&self) -> bool {
        matches!(self.hibernation, Allowed::After(_))
            && self.step.is_none()
            && self.watcher.as_ref().is_none_or(|w| !w.is_scanning())
            && self.monitor.exceeded.is_none()
            && self.pending.is_empty()
            && !self.overflowed
            && self.retry_at.is_none()
            && self.stop_for.is_none()
            && self.error.is_none()
            && self.reverted.is_empty()
            && self.guard.as_ref().is_none_or(|g| g.stop.is_none())
            && self.control_idle.is_some()
    }

    /// Takes up what a hibernation carried (the watcher already runs again); returns the
    /// loop's part.
    pub(super) fn restore(&mut self, mut wk: Woken) -> Dormant {
        self.pgid = wk.saved.pgid;
        if wk.saved.last_good.is_some() {
            self.last_good = wk.saved.last_good;
        }
        self.flagged = std::mem::take(&mut wk.saved.flagged);
        if let Some(s) = &wk.sampling {
            self.monitor.resume(s);
        }
        if let Allowed::After(base) = self.hibernation {
            self.hibernation = Allowed::After(next_quiet(base, &wk));
        }
        if let Some(why) = wk.failed {
            tracing::warn!(error = %why, "the keeper failed; the supervisor stays awake");
            self.hibernation = Allowed::Never;
        }
        if let Some(due) = wk.saved.scan_due_ns {
            // Unwatched: the full scan comes when it was due.
            self.degraded |= wk.saved.degraded;
            self.overflowed = true;
            let every = Duration::from_millis(self.policy.every_ms);
            let due = supervise::hibernate::instant_of(due);
            self.pending_since = Some(due.checked_sub(every).unwrap_or(due));
        }
        if let Some(w) = wk.watch {
            // SAFETY: the handover's descriptor, kept open for us across the execs.
            let handover = unsafe { Handover::from_raw(w.fd, w.root, w.dirs) };
            self.take_up_watch(handover, wk.saved.gap);
        }
        wk.dormant
    }

    /// What the handed-over watch saw, now that a watcher runs again (started before this, so
    /// together they miss nothing).
    fn take_up_watch(&mut self, handover: Handover, gap: bool) {
        let start = |root: &std::path::Path| supervise::signals::with_blocked(|| watch::ChangeWatcher::start(root));
        let mut gap = gap;
        let mut handover = Some(handover);
        let mut drained = None;
        if self.watcher.is_none() {
            let mut started = start(&self.worktree);
            // No second inotify instance while the handover holds one (the watcher started
            // when the sink was built failed the same way): read the handover, let it go, and
            // start again; what changed in between is read whole.
            if started
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(nix::errno::Errno::EMFILE as i32))
                && let Some(h) = handover.take()
            {
                drained = Some(h.drain());
                drop(h);
                gap = true;
                started = start(&self.worktree);
            }
            match started {
                Ok(w) => {
                    self.watcher = Some(w);
                    self.unwatched = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the worktree");
                    self.unwatched = Some(format!("cannot watch the worktree: {e}"));
                }
            }
        }
        if self.checkpointer.is_some() {
            let mut batch = match (drained, handover) {
                (Some(batch), _) => batch,
                (None, Some(h)) => h.drain(),
                (None, None) => watch::ChangeBatch::default(),
            };
            if gap {
                batch.overflow = true;
                batch.overflow_reason =
                    Some("the watch was handed over with a gap (no inotify instance to spare)".to_owned());
            }
            self.record_batch(batch, None);
        }
    }

    /// Whether the worktree is not watched (checkpoints scan it whole on a timer).
    fn unwatched(&self) -> bool {
        self.degraded || self.unwatched.is_some() || self.watcher.as_ref().is_some_and(|w| w.degraded().is_some())
    }
}

/// Puts the supervisor to sleep: replaces this process with the keeper. Returns (the loop's
/// state, to supervise on) only if it did not: something came in meanwhile, or the exec
/// failed (then the supervisor stays awake for the rest of the run).
pub(super) fn hibernate(
    sink: &mut EngineSink<'_, '_>,
    ctx: &RunContext<'_>,
    mut dormant: Dormant,
    limits: &Limits,
    tx: &SyncSender<LoopEvent>,
    rx: &Receiver<LoopEvent>,
) -> Dormant {
    // No signal is taken from now on: what the forwarder read goes with us, the rest stays
    // pending for the keeper to see.
    if let Some(f) = sink.signals.take()
        && let Err(e) = f.stop()
    {
        return resume_here(sink, dormant, tx, &format!("cannot block signals: {e}"), None);
    }
    // A thread that could take a signal (one a hook left running) would lose it: not now.
    if !supervise::signals::all_threads_block() {
        restart_signals(sink, tx);
        return dormant;
    }
    while let Ok(ev) = rx.try_recv() {
        dormant.carry(ev);
    }
    // Something came as the readers stopped: handle it first (the loop asks again later).
    if dormant.has_carried() {
        restart_signals(sink, tx);
        return dormant;
    }
    if let Err(e) = sink.output.finish() {
        tracing::warn!(error = %e, "cannot sync output log");
    }
    // The worktree's watch goes over to a plain inotify the keeper can hold: armed first, then
    // the watcher drained a last time (anything in it, and the run is not quiet after all).
    let mut handover = None;
    let mut gap = false;
    let unwatched = sink.unwatched();
    if sink.watcher.is_some() && !unwatched {
        let armed = match Handover::arm(&sink.worktree) {
            Ok(h) => Some(h),
            // No second inotify instance: hand over after the watcher is gone (a gap, read
            // whole on waking).
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMFILE as i32) => None,
            Err(e) => return resume_here(sink, dormant, tx, &format!("cannot hand the watch over: {e}"), None),
        };
        // Events the kernel queued before the arming reach the watcher's thread in a moment.
        std::thread::sleep(SETTLE);
        sink.record_changes();
        // Anything in it (or a verdict on it: a stop, a revert) and the run is not quiet after all.
        if !sink.quiet() {
            drop(armed);
            restart_signals(sink, tx);
            return dormant;
        }
        sink.watcher = None;
        handover = match armed {
            Some(h) => Some(h),
            None => {
                gap = true;
                arm_when_free(&sink.worktree)
            }
        };
    }
    // Unwatched — for good, or this time: no inotify instance could be had — it wakes for the
    // next full scan (one was taken just now, or the gap is read whole on waking).
    let every = Duration::from_millis(sink.policy.every_ms.max(1000));
    let scan_due_ns = (unwatched || (gap && handover.is_none())).then(|| mono_now_ns() + every.as_nanos() as u64);
    let tree = scan_due_ns.map(|_| supervise::keeper::tree_state(&sink.worktree));
    // Changed since the last full scan began (its files may have been read before the change):
    // the next scan, awake, takes it.
    if unwatched
        && let Some((_, newest)) = tree
        && sink.scan_started.is_none_or(|t| newest >= unix_secs(t) - 1)
    {
        restart_signals(sink, tx);
        return dormant;
    }
    if unwatched {
        sink.watcher = None;
    }
    let (Some(keeper), Some(program), Some(control_stamp), Some(confinement)) = (
        keeper_program(),
        // Replaced or removed since it started (an upgrade): it could not be exec'd to wake.
        std::env::current_exe().ok().filter(|p| p.is_file()),
        sink.control_idle,
        sink.confined.kept(),
    ) else {
        return resume_here(
            sink,
            dormant,
            tx,
            "the keeper's program or ours cannot be found",
            handover,
        );
    };
    let next_seq = sink.writer.events().last().map(|e| e.seq + 1).unwrap_or(1);
    let saved = Saved {
        pgid: sink.pgid,
        last_good: sink.last_good,
        flagged: sink.flagged.clone(),
        confinement: Some(confinement),
        scan_due_ns,
        degraded: unwatched,
        gap,
        quiet_ms: sink.hibernation.after().map_or(0, |d| d.as_millis() as u64),
        asleep_at_ns: mono_now_ns(),
    };
    let due = |since: u64, limit: Option<Duration>| limit.map(|l| since + l.as_nanos() as u64);
    let wake_at_ns = [
        due(dormant.started_ns, limits.timeout),
        due(dormant.last_output_ns, limits.idle_timeout),
        // A watch handed over with a gap: the whole worktree is read at the next interval.
        scan_due_ns.filter(|_| gap),
    ]
    .into_iter()
    .flatten()
    .min();
    let id = ctx.id.to_string();
    let h = Hibernation {
        version: supervise::hibernate::HIBERNATION_VERSION,
        dormant,
        program,
        wake_args: vec![
            "__supervise".to_owned(),
            "--state-dir".to_owned(),
            ctx.layout.root().to_string_lossy().into_owned(),
            id.clone(),
            "--wake".to_owned(),
        ],
        lock_fd: ctx.lock_fd,
        control_dir: ctx.files.control_dir(),
        control_stamp,
        wake_at_ns,
        sampling: Some(sink.monitor.sampling(ctx.layout.events_path(ctx.id), id, next_seq)),
        scan: tree.map(|(fingerprint, _)| supervise::hibernate::TreeScan {
            root: sink.worktree.clone(),
            every_ms: every.as_millis() as u64,
            fingerprint,
        }),
        watch: handover.map(|h| {
            let (fd, root, dirs) = h.into_raw();
            WatchHandover { fd, root, dirs }
        }),
        sink: serde_json::to_string(&saved).unwrap_or_default(),
        woke_for: None,
    };
    tracing::info!(
        since_ms = (mono_now_ns().saturating_sub(h.dormant.last_output_ns)) / 1_000_000,
        "hibernating"
    );
    // The keeper's command line names the run as a supervisor's does (reconcile finds both).
    let mut args: Vec<std::ffi::OsString> = h.wake_args.iter().map(Into::into).collect();
    args.pop();
    args.push("--keep".into());
    // What removes its files when dropped goes now: nothing runs drops past the exec (the
    // checkpointer's private git directory is one).
    let had_checkpointer = sink.checkpointer.take().is_some();
    let err = h.exec(&keeper, &args);
    if had_checkpointer {
        sink.checkpointer = super::open_checkpointer(sink.writer, ctx.layout, ctx.id, ctx.plan);
        if let (Some(cp), Some((objects, store))) = (&mut sink.checkpointer, sink.confined.object_import()) {
            cp.import_objects_from(objects, store);
        }
    }
    let handover = h.watch.map(|w| {
        // SAFETY: the descriptor we gave up for the exec that failed.
        unsafe { Handover::from_raw(w.fd, w.root, w.dirs) }
    });
    resume_here(sink, h.dormant, tx, &err.to_string(), handover)
}

/// A handover armed once the dropped watcher's inotify instance is free (notify's thread lets
/// go of it a moment after the watcher is dropped): `None` if none is had in 100 ms.
fn arm_when_free(worktree: &std::path::Path) -> Option<Handover> {
    for _ in 0..20 {
        match Handover::arm(worktree) {
            Ok(h) => return Some(h),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMFILE as i32) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand the watch over; the worktree is read whole on waking");
                return None;
            }
        }
    }
    tracing::info!("no inotify instance to hand the watch over; the worktree is read whole on waking");
    None
}

/// Hibernating failed: supervise on, here, for the rest of the run (watching again).
fn resume_here(
    sink: &mut EngineSink<'_, '_>,
    dormant: Dormant,
    tx: &SyncSender<LoopEvent>,
    why: &str,
    handover: Option<Handover>,
) -> Dormant {
    tracing::warn!(error = why, "cannot hibernate; supervising on");
    sink.hibernation = Allowed::Never;
    if let Some(h) = handover {
        sink.take_up_watch(h, false);
    }
    restart_signals(sink, tx);
    dormant
}

fn restart_signals(sink: &mut EngineSink<'_, '_>, tx: &SyncSender<LoopEvent>) {
    match supervise::supervisor::forward_signals(tx.clone()) {
        Ok(f) => sink.signals = Some(f),
        Err(e) => tracing::error!(error = %e, "cannot read signals again"),
    }
}
