//! The work of a run's supervisor process (`agentctl __supervise RUN`): take the run, prepare
//! its worktree, run the pre-run hook, supervise the agent to the end, run the post-run hook and
//! record the outcome. Every step is an event appended before the next begins, so a crash at any
//! point leaves a log that explains exactly how far the run got.

use std::ffi::OsString;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use model::outcome::{self, StopReason};
use model::provider::{ControlRequest, Stream};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use model::{CheckpointPolicy, CheckpointTrigger, EventData, LaunchPlan, PromptVia, RunId, RunSpec, RunState};
use store::{LockMode, RunWriter, StateLayout, Store};
use supervise::output::OutputWriter;
use supervise::supervisor::{self as sup, LoopEvent};
use supervise::{Limits, ProcessSpec, RunFiles, Sink};
use vcs::Git;

use crate::checkpointer::Checkpointer;
use crate::hooks;
use supervise::hibernate::Hibernation;

pub(crate) mod confine;
pub(crate) mod guard;
mod hibernation;
mod monitor;
mod quarantine;
mod workflow;

pub use hibernation::{HIBERNATE_AFTER_ENV, KEEPER_FAILED};
pub use monitor::keeper_sample;
pub use workflow::MessageReceipt;

/// Hooks get at most this long when the run has no timeout.
const HOOK_LIMIT: Duration = Duration::from_secs(600);
/// After start-up, output, a checkpoint or a request, memory freed is given back once this long
/// passed without more of the same (so a busy run does not trim all the time).
const TRIM_AFTER: Duration = Duration::from_secs(2);

/// Runs the supervisor for `id`. Returns the process exit code.
pub fn run_supervisor(layout: StateLayout, id: &RunId) -> i32 {
    supervisor_process(layout, id, None)
}

/// Wakes a hibernated supervisor for `id`: the keeper exec'd us with the hibernation in the
/// memfd `fd` (see [`supervise::hibernate`]). Returns the process exit code.
pub fn wake_supervisor(layout: StateLayout, id: &RunId, fd: std::os::fd::RawFd) -> i32 {
    match supervise::hibernate::Hibernation::read_from(fd) {
        Ok(h) => supervisor_process(layout, id, Some(h)),
        Err(e) => {
            // The agent outlives us (re-parented); the run shows as lost once our lock is gone.
            tracing::error!(error = %e, "cannot read the hibernation; the run is abandoned");
            70
        }
    }
}

fn supervisor_process(layout: StateLayout, id: &RunId, woke: Option<Hibernation>) -> i32 {
    // Before any thread starts: a supervisor lives long and mostly idle, so it stays small.
    sup::limit_allocator();
    let span = tracing::info_span!("run.supervise", run.id = %id);
    let _enter = span.enter();
    if let Some(h) = &woke {
        tracing::info!(woke_for = h.woke_for.as_deref().unwrap_or("?"), "supervisor woke");
    }
    // Signals first, so a stop aimed at us is never lost; then become the subreaper.
    let (tx, rx) = sup::channel();
    let signals = match sup::forward_signals(tx.clone()) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return 70;
        }
    };
    if let Err(e) = sup::become_subreaper() {
        tracing::warn!(error = %e, "cannot become child subreaper; detached grandchildren may escape");
    }
    // The database is opened when first needed: nothing before the agent starts needs it.
    let store = match Store::open_deferred(layout.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open state dir");
            return 74;
        }
    };
    let files = RunFiles::new(layout.run_dir(id));
    let lock = match &woke {
        Some(h) => supervise::SupervisorLock::adopt(h.lock_fd),
        None => files.acquire_supervisor_lock(),
    };
    let lock = match lock {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "another supervisor owns this run");
            return 75;
        }
    };
    let mut writer = match store.writer(id, LockMode::Wait) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the run's event log");
            return 74;
        }
    };
    let is_workflow = matches!(writer.events().first().map(|e| &e.data),
        Some(EventData::Created { plan, .. }) if plan.workflow.is_some());
    match (writer.state(), &woke) {
        (Some(RunState::Running), Some(_)) => {}
        (Some(RunState::Pending), None) => {}
        (Some(RunState::Interrupted), None) if is_workflow => {}
        (state, _) => {
            tracing::info!(?state, "run is not pending; nothing to do");
            return 0;
        }
    }
    // Events before the agent starts are durable in the log; projecting them waits until the
    // agent runs (launch latency is a benchmarked figure). Readers catch up from the log anyway.
    writer.set_deferred(woke.is_none());
    let Some(EventData::Created { spec, plan }) = writer.events().first().map(|e| e.data.clone()) else {
        tracing::error!("run has no created event");
        return 70;
    };
    let held = Held {
        lock: &lock,
        signals: Some(signals),
        tx,
        woke,
    };
    match supervise_run(&mut writer, &files, &layout, &spec, &plan, held, &rx) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "recording failed");
            74
        }
    }
}

/// What the supervisor process holds for its whole life, beyond the run's writer.
pub(crate) struct Held<'a> {
    lock: &'a supervise::SupervisorLock,
    signals: Option<supervise::signals::Forwarder>,
    tx: std::sync::mpsc::SyncSender<LoopEvent>,
    /// The hibernation this process woke from, if it did.
    woke: Option<Hibernation>,
}

/// Records an outcome reached before the agent ran (or without it), after ending whatever a
/// hook left running: nothing of a run outlives it.
fn finish(w: &mut RunWriter<'_>, state: RunState, reason: String) -> Result<(), store::StoreError> {
    end_leftovers(w, Duration::from_secs(1))?;
    tracing::info!(run.state = state.as_str(), reason = %reason, "run finished");
    w.append(EventData::Finished {
        state,
        reason,
        exit_code: None,
        signal: None,
    })?;
    w.set_deferred(false);
    Ok(())
}

/// Ends every process still in the supervisor's tree, recording the signals sent.
fn end_leftovers(w: &mut RunWriter<'_>, grace: Duration) -> Result<(), store::StoreError> {
    for (sig, pids) in supervise::proctree::end_descendants(std::process::id(), grace) {
        w.append(EventData::SignalSent {
            signal: sig.as_str().to_owned(),
            pids,
            pgid: None,
        })?;
    }
    Ok(())
}

/// A stop asked for before the agent started (a control request or a signal to us).
fn early_stop(files: &RunFiles, rx: &Receiver<LoopEvent>) -> Option<StopReason> {
    if let Some(ControlRequest::Stop { .. }) = files.take_stop() {
        return Some(StopReason::User);
    }
    while let Ok(ev) = rx.try_recv() {
        if let LoopEvent::Signal(sig) = ev
            && sup::is_stop_signal(sig)
        {
            return Some(StopReason::SupervisorSignal);
        }
    }
    None
}

/// The reason recorded for a run stopped before its agent ran.
fn stopped_before_start(reason: StopReason, when: &str) -> String {
    match reason {
        StopReason::SupervisorSignal => {
            format!("the supervisor was signalled {when} (e.g. the run that started this one ended)")
        }
        _ => format!("stopped {when}"),
    }
}

fn base_env(id: &RunId, layout: &StateLayout, plan: &LaunchPlan) -> Vec<(String, String)> {
    vec![
        (model::RUN_ID_ENV.to_owned(), id.to_string()),
        (
            "AGENTCTL_WORKTREE".to_owned(),
            plan.worktree.to_string_lossy().into_owned(),
        ),
        ("AGENTCTL_BRANCH".to_owned(), plan.work_branch().to_owned()),
        ("AGENTCTL_BASE_COMMIT".to_owned(), plan.base_commit.clone()),
        (
            "AGENTCTL_STATE_DIR".to_owned(),
            layout.root().to_string_lossy().into_owned(),
        ),
    ]
}

fn run_hook(
    w: &mut RunWriter<'_>,
    name: &str,
    spec: &RunSpec,
    plan: &LaunchPlan,
    env: &[(String, String)],
    should_stop: &mut dyn FnMut() -> bool,
) -> Result<Option<hooks::HookResult>, store::StoreError> {
    let Some(path) = hooks::hook_path(&spec.repo, name) else {
        return Ok(None);
    };
    let limit = spec.timeout_ms.map(Duration::from_millis).unwrap_or(HOOK_LIMIT);
    let mut env = env.to_vec();
    env.push(("AGENTCTL_HOOK".to_owned(), name.to_owned()));
    let _span = tracing::info_span!("run.hook", hook.name = name).entered();
    let result = hooks::run_hook(&path, &plan.worktree, &env, limit, should_stop);
    w.append(EventData::HookFinished {
        hook: name.to_owned(),
        exit_code: result.exit_code,
        elapsed_ms: result.elapsed.as_millis() as u64,
        output_tail: result.output_tail.clone(),
    })?;
    Ok(Some(result))
}

fn supervise_run(
    w: &mut RunWriter<'_>,
    files: &RunFiles,
    layout: &StateLayout,
    spec: &RunSpec,
    plan: &LaunchPlan,
    mut held: Held<'_>,
    rx: &Receiver<LoopEvent>,
) -> Result<(), store::StoreError> {
    let id = w.id().clone();
    // A workflow whose supervisor vanished is taken up again from its last completed step.
    let resuming = w.state() == Some(RunState::Interrupted);
    let woke = held.woke.take();
    let mut _slot = None;
    let env = base_env(&id, layout, plan);
    if woke.is_none() {
        // A slot first, when active runs are capped: the run waits `pending` until one is free.
        _slot = match plan.max_concurrent {
            Some(limit) => {
                let created = w.events().first().map(|e| e.ts).unwrap_or_else(jiff::Timestamp::now);
                let mut stop = None;
                let got = crate::queue::acquire(layout, w, created, limit, &mut || {
                    stop = early_stop(files, rx);
                    stop.is_some()
                });
                match got {
                    Ok(slot) => Some(slot),
                    Err(crate::queue::Waited::Stopped) => {
                        let reason = stop.unwrap_or(StopReason::User);
                        return finish(w, RunState::Cancelled, stopped_before_start(reason, "while queued"));
                    }
                    Err(crate::queue::Waited::Store(e)) => return Err(e),
                    Err(crate::queue::Waited::Io(e)) => {
                        return finish(w, RunState::Failed, format!("cannot wait for a run slot: {e}"));
                    }
                }
            }
            None => None,
        };
        let me = std::process::id();
        let start_time = supervise::proctree::stat(me).map(|s| s.start_time).unwrap_or(0);
        w.append(EventData::Preparing {
            supervisor_pid: me,
            supervisor_start_time: start_time,
        })?;

        // The worktree (made once: a resumed workflow finds it where the first supervisor left it).
        let ready = w
            .events()
            .iter()
            .any(|e| matches!(e.data, EventData::WorktreeReady { .. }));
        if ready {
            if !plan.worktree.is_dir() {
                return finish(
                    w,
                    RunState::Failed,
                    format!("cannot resume: the worktree {} is gone", plan.worktree.display()),
                );
            }
        } else {
            let _span = tracing::info_span!("run.prepare").entered();
            let t = Instant::now();
            let added = crate::repo_lock::lock_repo(layout, &spec.repo).and_then(|_lock| {
                let git = Git::new(&spec.repo);
                if resuming {
                    // A supervisor that died while making the worktree may have left it half made;
                    // nothing has worked in it yet.
                    git.worktree_remove(&plan.worktree)?;
                    if git.branch_exists(plan.work_branch())? {
                        git.delete_branch(plan.work_branch())?;
                    }
                }
                // A shadow run's own branch waits at the base for a promotion (made first: a
                // worktree is never left without it).
                if plan.shadow.is_some() && !git.branch_exists(&plan.branch)? {
                    git.create_branch(&plan.branch, &plan.base_commit)?;
                }
                git.worktree_add(&plan.worktree, plan.work_branch(), &plan.base_commit)?;
                Ok::<(), crate::EngineError>(())
            });
            if let Err(e) = added {
                // A stop signal reaches the supervisor's git as well (the whole tree is signalled):
                // git then dies without a word, and the stop is what happened.
                if let Some(reason) = early_stop(files, rx) {
                    return finish(
                        w,
                        RunState::Cancelled,
                        stopped_before_start(reason, "while its worktree was being made"),
                    );
                }
                return finish(w, RunState::Failed, format!("cannot create worktree: {e}"));
            }
            w.append(EventData::WorktreeReady {
                path: plan.worktree.clone(),
                branch: plan.work_branch().to_owned(),
                base_commit: plan.base_commit.clone(),
                elapsed_ms: t.elapsed().as_millis() as u64,
            })?;
        }
        if let Some(reason) = early_stop(files, rx) {
            return finish(
                w,
                RunState::Cancelled,
                stopped_before_start(reason, "before the agent started"),
            );
        }
        let pre_run_done = resuming
            && w.events().iter().any(
                |e| matches!(&e.data, EventData::HookFinished { hook, exit_code: Some(0), .. } if hook == "pre-run"),
            );
        let mut stop_reason = None;
        let pre = if pre_run_done {
            None
        } else {
            run_hook(w, "pre-run", spec, plan, &env, &mut || {
                stop_reason = early_stop(files, rx);
                stop_reason.is_some()
            })?
        };
        if let Some(r) = pre {
            if let (true, Some(reason)) = (r.stopped, stop_reason) {
                return finish(
                    w,
                    RunState::Cancelled,
                    stopped_before_start(reason, "during the pre-run hook"),
                );
            }
            if !r.ok() {
                let how = r
                    .exit_code
                    .map(|c| format!("exit code {c}"))
                    .unwrap_or_else(|| "no exit code".to_owned());
                return finish(w, RunState::Failed, format!("pre-run hook failed ({how})"));
            }
        }
        if let Some(reason) = early_stop(files, rx) {
            return finish(
                w,
                RunState::Cancelled,
                stopped_before_start(reason, "before the agent started"),
            );
        }
    }
    // Read for the agent's environment; woken, the agent runs already.
    let dotenv: Vec<(OsString, OsString)> = match woke.is_some() {
        true => Vec::new(),
        false => match agents::config::read_dotenv(&spec.repo) {
            Ok(vars) => vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            Err(e) => return finish(w, RunState::Failed, format!("cannot read .env: {e}")),
        },
    };
    // Woken, the run's isolation is recorded already, and rebuilt from what was kept of it.
    let mut woke = woke.map(hibernation::Woken::of);
    let confined = match woke.as_mut().map(|wk| wk.confinement.take()) {
        Some(Some(kept)) => match confine::Confined::from_kept(kept, &id, plan, &spec.repo) {
            Ok(confined) => confined,
            Err(e) => return finish(w, RunState::Failed, e.reason()),
        },
        _ => match confine::Confined::prepare(
            &id,
            plan,
            &layout.run_dir(&id),
            &files.control_dir(),
            &spec.repo,
            &dotenv,
        ) {
            Ok((confined, event)) => {
                if woke.is_none() {
                    w.append(event)?;
                }
                confined
            }
            Err(e) => return finish(w, RunState::Failed, e.reason()),
        },
    };
    let output = match OutputWriter::open(&files.output_path()) {
        Ok(o) => o,
        Err(e) => return finish(w, RunState::Failed, format!("cannot open output log: {e}")),
    };
    // Checkpoints: the watcher first, so no change after the baseline goes unseen.
    let policy = spec.checkpoints;
    let mut unwatched = None;
    let watcher = if policy.watch {
        // Its threads never take a signal of ours (see `supervise::signals`).
        match supervise::signals::with_blocked(|| watch::ChangeWatcher::start(&plan.worktree)) {
            Ok(w) => Some(w),
            Err(e) => {
                // Recorded (as a watcher overflow) by the first tick; timed full scans stand in.
                tracing::warn!(error = %e, "cannot watch the worktree");
                unwatched = Some(format!("cannot watch the worktree: {e}"));
                None
            }
        }
    } else {
        None
    };
    let mut checkpointer = open_checkpointer(w, layout, &id, plan);
    if let (Some(cp), Some((objects, store))) = (&mut checkpointer, confined.object_import()) {
        cp.import_objects_from(objects, store);
    }
    if let Some(cp) = &mut checkpointer
        && cp.last_number().is_none()
    {
        record_checkpoint(cp, w, CheckpointTrigger::Baseline, None, false)?;
    }
    let first_good = checkpointer.as_ref().and_then(Checkpointer::last_number);
    let mut sink = EngineSink {
        writer: w,
        files,
        output,
        error: None,
        checkpointer,
        watcher,
        // A sandboxed agent is paused for every snapshot: it must not swap a symlink in while
        // the supervisor, which sees the whole machine, reads the worktree.
        policy: CheckpointPolicy {
            consistent: policy.consistent || !confined.wrapper.is_empty(),
            ..policy
        },
        pending: BTreeSet::new(),
        pending_since: None,
        overflowed: false,
        retry_at: None,
        degraded: false,
        unwatched,
        pgid: None,
        control_idle: None,
        trim_at: None,
        step: None,
        confined: &confined,
        redact: (!confined.redactor.is_empty()).then(|| [confined.redactor.stream(), confined.redactor.stream()]),
        monitor: monitor::Monitor::new(&confined),
        worktree: plan.worktree.clone(),
        stop_for: None,
        guard: guard::PathGuard::new(&confined.plan.policy, &spec.repo, &plan.base_commit),
        // The baseline (or, resumed, the last checkpoint) until a batch of changes holds.
        last_good: first_good,
        reverted: BTreeSet::new(),
        flagged: BTreeSet::new(),
        signals: held.signals.take(),
        hibernation: hibernation::Allowed::for_run(plan, &confined),
        scan_started: None,
    };
    let ctx = RunContext {
        id: &id,
        spec,
        plan,
        env: &env,
        dotenv: &dotenv,
        files,
        confined: &confined,
        layout,
        lock_fd: held.lock.raw_fd(),
    };
    let dormant = woke.map(|wk| sink.restore(wk));
    let ended = match &plan.workflow {
        None => run_agent(&mut sink, &ctx, held.tx, rx, dormant),
        Some(wf) => workflow::run_steps(&mut sink, &ctx, wf, resuming, held.tx, rx),
    };
    // The change log gets what the watcher saw last; the final checkpoint reads everything.
    sink.record_changes();
    let EngineSink {
        mut output,
        error,
        checkpointer,
        watcher,
        guard,
        flagged,
        // Signals are forwarded to the end: a stop still ends the post-run hook.
        signals: _signals,
        ..
    } = sink;
    drop(watcher);
    if let Err(e) = output.finish() {
        tracing::warn!(error = %e, "cannot sync output log");
    }
    if let Some(e) = error {
        return Err(e);
    }
    let end = match ended? {
        Ended::Done(end) => end,
        Ended::NotStarted(reason) => return finish(w, RunState::Failed, reason),
        Ended::Interrupted => {
            end_leftovers(w, Duration::from_millis(plan.grace_ms))?;
            tracing::info!("workflow interrupted; it waits to be resumed");
            return Ok(());
        }
    };

    let mut post_env = env.clone();
    post_env.push(("AGENTCTL_RUN_STATE".to_owned(), end.state.as_str().to_owned()));
    if let Some(code) = end.exit.exit_code {
        post_env.push(("AGENTCTL_EXIT_CODE".to_owned(), code.to_string()));
    }
    // A stop now ends the hook, not the outcome: the agent is done.
    run_hook(w, "post-run", spec, plan, &post_env, &mut || {
        early_stop(files, rx).is_some()
    })?;
    // Nothing of the run outlives it, including what the post-run hook left running.
    end_leftovers(w, Duration::from_millis(plan.grace_ms))?;
    // The final state of the worktree, whatever the watcher saw or missed.
    let mut final_tree = None;
    if let Some(mut cp) = checkpointer {
        if record_checkpoint(&mut cp, w, CheckpointTrigger::Final, None, false)? {
            final_tree = cp.last_tree().map(|t| t.to_string());
        }
        // The policy over everything the run changed, for what the watcher did not report
        // (it lost events, or was off).
        if let Some(mut guard) = guard
            && let Some(verdict) = final_policy_check(&cp, &mut guard, plan, &flagged)
        {
            w.append(guard::event(&verdict, "flagged"))?;
        }
    }
    let mut end = end;
    if let Some(shadow) = &plan.shadow
        && shadow.promote == model::PromoteMode::Auto
        && end.state == RunState::Succeeded
    {
        promote_at_end(
            w, &id, spec, plan, shadow, layout, final_tree, &confined, files, rx, &mut end,
        );
    }
    tracing::info!(run.state = end.state.as_str(), reason = %end.reason, "run finished");
    w.append(EventData::Finished {
        state: end.state,
        reason: end.reason,
        exit_code: end.exit.exit_code,
        signal: end.exit.signal,
    })?;
    Ok(())
}

/// A shadow run that succeeded promotes its change as it ends; a refusal fails the run (the
/// branch did not get the change), a stop meanwhile cancels it.
#[allow(clippy::too_many_arguments)]
fn promote_at_end(
    w: &mut RunWriter<'_>,
    id: &RunId,
    spec: &RunSpec,
    plan: &LaunchPlan,
    shadow: &model::ShadowPlan,
    layout: &StateLayout,
    final_tree: Option<String>,
    confined: &confine::Confined,
    files: &RunFiles,
    rx: &Receiver<LoopEvent>,
    end: &mut RunEnd,
) {
    let redact = |text: &str| confined.redactor.redact_str(text);
    // Only the final checkpoint holds the worktree as the agent left it.
    let final_tree = final_tree.ok_or_else(|| "the run's final checkpoint failed".to_owned());
    let attempt = crate::shadow::Attempt {
        id,
        repo: &spec.repo,
        plan,
        shadow,
        run_dir: &layout.run_dir(id),
        state_root: layout.root(),
        trigger: model::PromoteMode::Auto,
        final_tree,
        redact: Some(&redact),
        limits: confined.child_setup(),
    };
    let attempted = crate::shadow::lock(&layout.run_dir(id), id)
        .and_then(|_lock| crate::shadow::attempt(&attempt, w, &mut || early_stop(files, rx).is_some()));
    match attempted {
        Ok(done) if done.stopped => {
            end.state = RunState::Cancelled;
            end.reason = "stopped while its change was validated for promotion; the branch is unchanged".to_owned();
        }
        Ok(done) if !done.promotion.promoted => {
            end.state = RunState::Failed;
            end.reason = format!(
                "{}: {}",
                model::shadow::PROMOTION_REFUSED_REASON,
                done.promotion.reasons.join("; ")
            );
        }
        Ok(_) => {}
        Err(e) => {
            end.state = RunState::Failed;
            end.reason = format!("cannot promote the change ({}): {}", e.code, e.message);
        }
    }
}

/// What the supervisor needs to start the run's processes.
pub(crate) struct RunContext<'a> {
    id: &'a RunId,
    spec: &'a RunSpec,
    plan: &'a LaunchPlan,
    /// `AGENTCTL_*` variables every process of the run gets.
    env: &'a [(String, String)],
    /// The repository's `.env`.
    dotenv: &'a [(OsString, OsString)],
    files: &'a RunFiles,
    /// The sandbox, secrets and proxy every process of the run starts with.
    confined: &'a confine::Confined,
    layout: &'a StateLayout,
    /// The supervisor lock's descriptor (kept across a hibernation).
    lock_fd: std::os::fd::RawFd,
}

/// How the run's work ended.
pub(crate) struct RunEnd {
    state: RunState,
    reason: String,
    /// The last process's exit.
    exit: outcome::ExitInfo,
}

pub(crate) enum Ended {
    /// The agent (or the workflow) ran; the post-run hook and final checkpoint follow.
    Done(RunEnd),
    /// The agent could not be started: the run fails at once.
    NotStarted(String),
    /// A workflow was interrupted (the supervisor was signalled) and recorded so: it ends
    /// here without an outcome, to be resumed.
    Interrupted,
}

/// The environment of a process of the run: the repository's `.env`, then `extra`, then the
/// run's own variables.
fn process_env(
    ctx: &RunContext<'_>,
    extra: &[&BTreeMap<String, String>],
    prompt: Option<&str>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = ctx.confined.env.clone();
    env.extend(ctx.dotenv.iter().cloned());
    for vars in extra {
        env.extend(vars.iter().map(|(k, v)| (k.into(), v.into())));
    }
    env.extend(ctx.env.iter().map(|(k, v)| (k.into(), v.into())));
    if let Some(p) = prompt
        && p.len() <= 64 * 1024
    {
        env.push(("AGENTCTL_PROMPT".into(), p.into()));
    }
    env
}

/// A single agent: run it to the end.
fn run_agent(
    sink: &mut EngineSink<'_, '_>,
    ctx: &RunContext<'_>,
    tx: std::sync::mpsc::SyncSender<LoopEvent>,
    rx: &Receiver<LoopEvent>,
    dormant: Option<supervise::hibernate::Dormant>,
) -> Result<Ended, store::StoreError> {
    let (spec, plan) = (ctx.spec, ctx.plan);
    let prompt = spec.prompt.clone().unwrap_or_default();
    if dormant.is_none()
        && let Some(path) = &plan.prompt_file
        && let Err(e) = std::fs::write(path, &prompt)
    {
        return Ok(Ended::NotStarted(format!(
            "cannot write prompt file {}: {e}",
            path.display()
        )));
    }
    let process = ProcessSpec {
        argv: plan.argv.clone(),
        wrapper: ctx.confined.wrapper.clone(),
        cwd: plan.worktree.clone(),
        env_clear: ctx.confined.env_clear,
        env: process_env(ctx, &[&plan.env], spec.prompt.as_deref()),
        env_remove: Vec::new(),
        stdin: (plan.prompt_via == PromptVia::Stdin).then(|| prompt.clone().into_bytes()),
        tty: plan.tty,
        limits: ctx.confined.child_setup(),
        shield_signals: !ctx.confined.wrapper.is_empty(),
        pid_file: Some(ctx.files.agent_pid_path()),
    };
    let limits = Limits {
        timeout: spec.timeout_ms.map(Duration::from_millis),
        idle_timeout: spec.idle_timeout_ms.map(Duration::from_millis),
        grace: Duration::from_millis(plan.grace_ms),
    };
    let end = {
        let _span = tracing::info_span!("run.agent", agent.name = %spec.agent).entered();
        let after = sink.hibernation.after();
        let mut run = match dormant {
            None => sup::start(&process, limits, after, tx.clone(), rx, sink),
            Some(d) => sup::resume(d, limits, after, tx.clone(), rx, sink),
        };
        loop {
            match run {
                Ok(sup::Supervised::Ended(end)) => break Ok(end),
                Ok(sup::Supervised::Dormant(d)) => {
                    // Returns only when the exec failed: supervise on, without hibernating.
                    let d = hibernation::hibernate(sink, ctx, d, &limits, &tx, rx);
                    run = sup::resume(d, limits, sink.hibernation.after(), tx.clone(), rx, sink);
                }
                Err(e) => break Err(e),
            }
        }
    };
    sink.after_process(&spec.repo);
    Ok(match end {
        Ok(mut end) => {
            if end.stop.is_none() {
                end.stop = sink.late_stop();
            }
            let (state, mut reason) = outcome::decide(end.stop, &end.exit);
            if let Some(detail) = sink.stop_detail() {
                reason = format!("{detail}; {reason}");
            }
            Ended::Done(RunEnd {
                state,
                reason,
                exit: end.exit,
            })
        }
        Err(e) => Ended::NotStarted(start_error(&plan.argv, &e)),
    })
}

/// Why a process could not be started, with a hint for a missing program.
fn start_error(argv: &[String], e: &std::io::Error) -> String {
    let hint = if e.kind() == std::io::ErrorKind::NotFound {
        " (is the program on PATH or in the repo?)"
    } else {
        ""
    };
    format!("cannot start `{}`: {e}{hint}", argv.join(" "))
}

/// Opens the run's checkpoint session; a failure is recorded and the run goes on without
/// checkpoints.
fn open_checkpointer(
    w: &mut RunWriter<'_>,
    layout: &StateLayout,
    id: &RunId,
    plan: &LaunchPlan,
) -> Option<Checkpointer> {
    match Checkpointer::open(layout, id, &plan.worktree, &plan.base_commit, w.events()) {
        Ok(cp) => Some(cp),
        Err(e) => {
            tracing::warn!(error = %e, "checkpoints are off for this run");
            let _ = w.append(EventData::CheckpointFailed {
                trigger: CheckpointTrigger::Baseline,
                reason: e.message,
            });
            None
        }
    }
}

/// Takes a checkpoint; a failure to snapshot is recorded as an event and the run goes on. Only
/// a failure to record events is returned.
fn record_checkpoint(
    cp: &mut Checkpointer,
    w: &mut RunWriter<'_>,
    trigger: CheckpointTrigger,
    changed: Option<&[PathBuf]>,
    paused: bool,
) -> Result<bool, store::StoreError> {
    if let Err(e) = cp.take(w, trigger, None, changed, paused) {
        tracing::warn!(error = %e, trigger = trigger.as_str(), "checkpoint failed");
        w.append(EventData::CheckpointFailed {
            trigger,
            reason: e.message,
        })?;
        return Ok(false);
    }
    Ok(true)
}

/// Stops the agent's processes (SIGSTOP to its group and every descendant of the supervisor)
/// while held; continues them when dropped.
pub(crate) struct PauseGuard {
    pgid: u32,
    pids: Vec<u32>,
}

impl PauseGuard {
    /// Stops the group and every descendant, again and again until a pass finds none running
    /// that it did not stop (a process forked meanwhile is caught by the next pass), then waits
    /// briefly for them to be stopped: nothing of the agent moves while a snapshot reads its
    /// worktree (a sandboxed agent must not swap a symlink in under the scan).
    fn pause(pgid: u32) -> PauseGuard {
        let me = std::process::id();
        let mut pids: Vec<u32> = Vec::new();
        supervise::proctree::signal_all(Some(pgid), &[], nix::sys::signal::Signal::SIGSTOP);
        for _ in 0..50 {
            let fresh: Vec<u32> = supervise::proctree::live_descendants(me)
                .iter()
                .map(|p| p.pid)
                .filter(|p| !pids.contains(p))
                .collect();
            if fresh.is_empty() {
                break;
            }
            supervise::proctree::signal_all(None, &fresh, nix::sys::signal::Signal::SIGSTOP);
            pids.extend(fresh);
        }
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline && pids.iter().any(|p| is_running(*p)) {
            std::thread::sleep(Duration::from_millis(1));
        }
        PauseGuard { pgid, pids }
    }
}

/// Whether a process is still running (not stopped, not gone).
fn is_running(pid: u32) -> bool {
    supervise::proctree::stat(pid).is_some_and(|s| !matches!(s.state, 'T' | 't' | 'Z' | 'X'))
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        supervise::proctree::signal_all(Some(self.pgid), &self.pids, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Most paths recorded in one `files_changed` event.
const PATHS_PER_EVENT: usize = 1000;

/// Writes what the supervision loop reports into the run's logs, and takes the run's
/// checkpoints while the agent works.
struct EngineSink<'w, 's> {
    writer: &'w mut RunWriter<'s>,
    files: &'w RunFiles,
    output: OutputWriter,
    /// The first failure to record an event (the loop goes on; the caller reports it).
    error: Option<store::StoreError>,
    checkpointer: Option<Checkpointer>,
    watcher: Option<watch::ChangeWatcher>,
    policy: CheckpointPolicy,
    /// Paths changed since the last checkpoint.
    pending: BTreeSet<PathBuf>,
    pending_since: Option<Instant>,
    /// The watcher lost events since the last checkpoint: the next one reads everything.
    overflowed: bool,
    /// The watcher can no longer see every change (e.g. the inotify watch limit).
    degraded: bool,
    /// Why the watcher could not start, when watching was asked for.
    unwatched: Option<String>,
    /// After a failed checkpoint: no automatic one before this.
    retry_at: Option<Instant>,
    pgid: Option<u32>,
    /// The control directory as last found empty (polled by one `stat` while it stays so).
    control_idle: Option<supervise::local::ControlStamp>,
    /// The workflow step in progress (messages are accepted only then).
    step: Option<workflow::StepContext>,
    /// When to give freed memory back to the system (after start-up and bursts of work).
    trim_at: Option<Instant>,
    /// The run's isolation: what the proxy refused is recorded from here.
    confined: &'w confine::Confined,
    /// Secret values taken out of each stream before it is stored (none without secrets).
    redact: Option<[supervise::redact::StreamRedactor; 2]>,
    /// Resource samples, and the limit the run passed.
    monitor: monitor::Monitor,
    worktree: PathBuf,
    /// Why the agent must stop, once it must (recorded once, returned to the loop once).
    stop_for: Option<StopReason>,
    /// The path policy, checked on every batch of changes.
    guard: Option<guard::PathGuard>,
    /// The last checkpoint taken while the policy held: what `revert` restores from.
    last_good: Option<u32>,
    /// Paths just reverted: their restoring is not checked again.
    reverted: BTreeSet<PathBuf>,
    /// Paths already reported as violations (the final check reports only others).
    flagged: BTreeSet<String>,
    /// The thread reading the supervisor's signals (stopped to hibernate).
    signals: Option<supervise::signals::Forwarder>,
    /// Whether (and after how quiet a while) this supervisor may hibernate.
    hibernation: hibernation::Allowed,
    /// When the last automatic checkpoint began reading the worktree.
    scan_started: Option<std::time::SystemTime>,
}

/// Which redaction stream a stream's output goes through.
fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        _ => 1,
    }
}

impl EngineSink<'_, '_> {
    /// A reason of the sink's to fail the run that came too late to stop the agent (it had
    /// exited): a limit found after the fact, or a `stop` violation made just before the end.
    fn late_stop(&mut self) -> Option<StopReason> {
        if self.stop_for.is_some() {
            return None;
        }
        let late = if self.guard.as_ref().is_some_and(|g| g.stop.is_some()) {
            Some(StopReason::Policy)
        } else if self.monitor.exceeded.is_some() {
            Some(StopReason::Limit)
        } else {
            None
        };
        self.stop_for = late;
        late
    }

    /// Why the sink stopped the agent, in words (the limit passed), for the run's reason.
    fn stop_detail(&self) -> Option<String> {
        match self.stop_for? {
            StopReason::Limit => self.monitor.exceeded.as_ref().map(ToString::to_string),
            StopReason::Policy => self.guard.as_ref().and_then(|g| g.stop.clone()),
            _ => None,
        }
    }

    /// Applies the path policy to a batch of changed paths (relative to the worktree).
    fn guard_paths(&mut self, paths: &[PathBuf]) {
        let fresh: Vec<PathBuf> = paths.iter().filter(|p| !self.reverted.remove(*p)).cloned().collect();
        let Some(guard) = &mut self.guard else {
            return;
        };
        let Some(verdict) = guard.check(&self.worktree, &fresh) else {
            // Changes that all hold: the latest checkpoint is good (an empty batch — a revert's
            // own restoring — says nothing).
            if !fresh.is_empty() {
                self.last_good = self.checkpointer.as_ref().and_then(Checkpointer::last_number);
            }
            return;
        };
        use model::policy::OnViolation;
        self.flagged.extend(verdict.violations.iter().map(|v| v.path.clone()));
        match verdict.action {
            OnViolation::Flag => self.note(guard::event(&verdict, "flagged")),
            OnViolation::Stop => self.note(guard::event(&verdict, "stopped")),
            OnViolation::Revert => {
                let to = self
                    .last_good
                    .or_else(|| self.checkpointer.as_ref().and_then(Checkpointer::last_number));
                let targets: Vec<PathBuf> = verdict
                    .violations
                    .iter()
                    .filter(|v| v.path != model::policy::WORKTREE_PATH)
                    .map(|v| PathBuf::from(&v.path))
                    .collect();
                // Paused, as for a snapshot: nothing of the agent moves while files are restored.
                let pause = match (self.policy.consistent, self.pgid) {
                    (true, Some(pgid)) => Some(PauseGuard::pause(pgid)),
                    _ => None,
                };
                let paused = pause.is_some();
                let done = match (&mut self.checkpointer, to) {
                    (Some(cp), Some(to)) if !targets.is_empty() => {
                        cp.rollback(self.writer, to, &targets, paused).is_ok()
                    }
                    _ => false,
                };
                if done {
                    self.reverted.extend(targets);
                }
                self.note(guard::event(&verdict, if done { "reverted" } else { "flagged" }));
            }
        }
    }

    /// After each agent (or gate) process: the output held back for redaction, the refused
    /// connections not yet recorded, and the branch moved to what the agent committed.
    fn after_process(&mut self, repo: &std::path::Path) {
        // What the watcher saw up to the end goes through the policy now, so a violation the
        // agent made just before exiting still decides the outcome.
        self.record_changes();
        // A limit the kernel enforced between two samples (an OOM kill) is found here.
        if self.monitor.exceeded.is_none()
            && let Some(e) = &self.confined.enforcer
            && let Ok(sample) = e.sample(std::process::id())
        {
            self.monitor.exceeded = e.exceeded(&sample);
        }
        if let Some(r) = &mut self.redact {
            for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                let rest = r[i].finish();
                if !rest.is_empty()
                    && let Err(e) = self.output.write(jiff::Timestamp::now(), stream, &rest)
                {
                    tracing::warn!(error = %e, "cannot write output log");
                }
            }
        }
        for ev in self.confined.drain_events() {
            self.note(ev);
        }
        if let Some(ev) = self.confined.sync_branch(repo) {
            self.note(ev);
        }
        // A sandboxed agent's planted repositories leave the worktree before anyone runs git
        // there.
        if !self.confined.wrapper.is_empty() {
            let swept = quarantine::sweep(&self.worktree, self.files.dir());
            for (violations, action) in [(swept.moved, "quarantined"), (swept.stuck, "flagged")] {
                if !violations.is_empty() {
                    self.flagged.extend(violations.iter().map(|v| v.path.clone()));
                    self.note(EventData::PolicyViolation {
                        violations,
                        action: action.to_owned(),
                    });
                }
            }
        }
    }

    fn note(&mut self, data: EventData) {
        if let Err(e) = self.writer.append(data) {
            tracing::error!(error = %e, "cannot record event");
            self.error.get_or_insert(e);
        }
    }

    /// Records what the watcher saw, and checkpoints when enough changed or long enough passed.
    fn watch_tick(&mut self) {
        if !self.record_changes() {
            return;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let due = (self.overflowed && !self.degraded)
            || self.pending.len() >= self.policy.every_changes.max(1) as usize
            || self
                .pending_since
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.policy.every_ms));
        if due && (self.overflowed || !self.pending.is_empty()) {
            self.checkpoint_now(CheckpointTrigger::Watch);
        }
    }

    /// Drains the watcher into the change log and the pending set. False when not watching.
    fn record_changes(&mut self) -> bool {
        if self.checkpointer.is_none() {
            return false;
        }
        let (batch, degraded) = match (&self.watcher, &self.unwatched) {
            (Some(watcher), _) => (watcher.drain(), watcher.degraded()),
            // No watcher at all: as degraded as can be.
            (None, Some(why)) => (
                watch::ChangeBatch {
                    overflow: true,
                    overflow_reason: Some(why.clone()),
                    ..Default::default()
                },
                Some(why.clone()),
            ),
            (None, None) => return false,
        };
        self.record_batch(batch, degraded);
        true
    }

    /// Records one batch of changes: the change log, the path policy, the pending set.
    fn record_batch(&mut self, batch: watch::ChangeBatch, degraded: Option<String>) {
        if batch.overflow {
            let reason = batch
                .overflow_reason
                .clone()
                .unwrap_or_else(|| "the file watcher lost events".to_owned());
            match degraded {
                // For good: full scans on the timer from now on, recorded once.
                Some(why) if !self.degraded => {
                    self.degraded = true;
                    self.note(EventData::WatcherOverflow {
                        reason: format!(
                            "{why}; from now on checkpoints read the whole worktree every {} ms",
                            self.policy.every_ms
                        ),
                    });
                }
                Some(_) => {}
                None if !self.overflowed => self.note(EventData::WatcherOverflow { reason }),
                None => {}
            }
            self.overflowed = true;
            self.pending_since.get_or_insert_with(Instant::now);
        }
        if !batch.paths.is_empty() {
            let paths: Vec<PathBuf> = batch
                .paths
                .into_iter()
                .filter(|p| !checkpoint::restore::is_restore_temp(p))
                .collect();
            self.guard_paths(&paths);
            let relevant = match &self.checkpointer {
                Some(cp) => cp.relevant(&paths),
                None => paths,
            };
            for chunk in relevant.chunks(PATHS_PER_EVENT) {
                self.note(EventData::FilesChanged {
                    paths: chunk.iter().map(|p| p.to_string_lossy().into_owned()).collect(),
                });
            }
            if !relevant.is_empty() {
                self.pending_since.get_or_insert_with(Instant::now);
            }
            self.pending.extend(relevant);
        }
    }

    fn checkpoint_now(&mut self, trigger: CheckpointTrigger) {
        let Some(cp) = &mut self.checkpointer else { return };
        self.scan_started = Some(std::time::SystemTime::now());
        let changed: Vec<PathBuf> = std::mem::take(&mut self.pending).into_iter().collect();
        let full = std::mem::take(&mut self.overflowed);
        self.pending_since = None;
        let guard = match (self.policy.consistent, self.pgid) {
            (true, Some(pgid)) => Some(PauseGuard::pause(pgid)),
            _ => None,
        };
        let paths = (!full).then_some(changed.as_slice());
        self.trim_at = Some(Instant::now() + TRIM_AFTER);
        match record_checkpoint(cp, self.writer, trigger, paths, guard.is_some()) {
            Ok(true) => self.retry_at = None,
            Ok(false) => self.checkpoint_failed(),
            Err(e) => {
                self.checkpoint_failed();
                self.error.get_or_insert(e);
            }
        }
    }

    /// After a failed checkpoint the paths it would have read are not tracked any more: the
    /// next one reads the whole worktree, no sooner than one interval from now.
    fn checkpoint_failed(&mut self) {
        self.overflowed = true;
        self.pending_since.get_or_insert_with(Instant::now);
        self.retry_at = Some(Instant::now() + Duration::from_millis(self.policy.every_ms.max(1000)));
    }
}

impl Sink for EngineSink<'_, '_> {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        self.trim_at = Some(Instant::now() + TRIM_AFTER);
        let clean;
        let data = match &mut self.redact {
            Some(r) => {
                clean = r[stream_index(stream)].push(data);
                if clean.is_empty() {
                    return;
                }
                &clean[..]
            }
            None => data,
        };
        if let Err(e) = self.output.write(jiff::Timestamp::now(), stream, data) {
            tracing::warn!(error = %e, "cannot write output log");
        }
    }

    fn event(&mut self, data: EventData) {
        if let EventData::Started {
            pid, pgid, start_time, ..
        } = &data
            && let Err(e) = self.files.write_agent_pid(*pid, *start_time, *pgid)
        {
            tracing::warn!(error = %e, "cannot write agent.pid");
        }
        let started = matches!(data, EventData::Started { .. });
        if let EventData::Started { pgid, .. } = &data {
            self.pgid = Some(*pgid);
        }
        if let Err(e) = self.writer.append(data) {
            tracing::error!(error = %e, "cannot record event");
            self.error.get_or_insert(e);
        }
        if started {
            // The agent runs: now the projection may catch up.
            self.writer.set_deferred(false);
            self.trim_at = Some(Instant::now() + TRIM_AFTER);
        }
    }

    fn may_hibernate(&mut self) -> bool {
        self.hibernatable()
    }

    fn should_stop(&mut self) -> Option<StopReason> {
        if self.stop_for.is_some() {
            return None;
        }
        if let Some(reason) = self.guard.as_ref().and_then(guard::PathGuard::stop_reason) {
            self.stop_for = Some(reason);
            return self.stop_for;
        }
        let exceeded = self.monitor.exceeded.as_ref()?;
        tracing::warn!(reason = %exceeded, "resource limit exceeded; stopping the agent");
        self.stop_for = Some(StopReason::Limit);
        self.stop_for
    }

    fn poll_control(&mut self) -> Option<ControlRequest> {
        let req = self.files.poll_control(&mut self.control_idle)?;
        let Some(request_id) = req.request_id().map(str::to_owned) else {
            return Some(req);
        };
        self.trim_at = Some(Instant::now() + TRIM_AFTER);
        if let ControlRequest::Message { .. } = &req {
            let answer = self.record_message(&req);
            if let Err(e) = self.files.answer(&request_id, &answer) {
                tracing::warn!(error = %e, "cannot answer control request");
            }
            return None;
        }
        let answer = match &mut self.checkpointer {
            Some(cp) => {
                let pgid = self.pgid;
                let pause = move || pgid.map(PauseGuard::pause);
                let (answer, done) =
                    crate::checkpoints::answer_request(cp, self.writer, &req, self.policy.consistent, &pause);
                if done {
                    // What changed so far is in the (full) snapshot the request took.
                    self.pending.clear();
                    self.pending_since = None;
                    self.overflowed = false;
                    self.retry_at = None;
                } else {
                    self.checkpoint_failed();
                }
                answer
            }
            None => crate::checkpoints::Answer::<()>::of(Err(crate::EngineError::new(
                model::ErrorCode::CheckpointFailed,
                "checkpoints are off for this run (see its checkpoint_failed event)",
            ))),
        };
        if let Err(e) = self.files.answer(&request_id, &answer) {
            tracing::warn!(error = %e, "cannot answer control request");
        }
        None
    }

    fn tick(&mut self) {
        if let Err(e) = self.output.sync_if_due() {
            tracing::warn!(error = %e, "cannot sync output log");
        }
        for ev in self.confined.drain_events() {
            self.note(ev);
        }
        // Sampled once the agent runs (before, there is nothing of it to measure).
        if self.pgid.is_some()
            && let Some(ev) = self.monitor.tick(self.confined, &self.worktree)
        {
            self.note(ev);
        }
        self.watch_tick();
        if self.trim_at.is_some_and(|t| Instant::now() >= t) {
            self.trim_at = None;
            sup::release_free_memory();
        }
    }
}

/// The path policy over every path the run changed (base commit → final checkpoint), leaving
/// out paths already reported.
fn final_policy_check(
    cp: &Checkpointer,
    guard: &mut guard::PathGuard,
    plan: &LaunchPlan,
    flagged: &BTreeSet<String>,
) -> Option<guard::Verdict> {
    let last = cp.last_tree()?;
    let base = checkpoint::parse_id(&plan.base_commit).ok()?;
    let diff = checkpoint::diff::stats(cp.snapshotter().git(), base, last, &[]).ok()?;
    let paths: Vec<PathBuf> = diff
        .files
        .iter()
        .filter(|f| !flagged.contains(&f.path))
        .map(|f| PathBuf::from(&f.path))
        .collect();
    let mut verdict = guard.check(&plan.worktree, &paths)?;
    verdict.violations.retain(|v| !flagged.contains(&v.path));
    (!verdict.violations.is_empty()).then_some(verdict)
}
