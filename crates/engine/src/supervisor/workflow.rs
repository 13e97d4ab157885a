//! A workflow run inside its supervisor: one supervised process per step, in the run's one
//! worktree, a checkpoint at the end of every step, and the decision of what follows recorded
//! with the step's end. Where the workflow stands is always folded from the run's events
//! (`model::workflow::Progress`), so a supervisor that takes over an interrupted run continues
//! exactly where the log says: completed steps are never run again, and a step that was cut
//! short is restarted from the checkpoint it started from, after its partial changes were saved
//! as a checkpoint of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use model::outcome::{self, ExitInfo, StopReason};
use model::provider::{ControlRequest, Stream};
use model::workflow::{self, Decision, Progress, WorkflowEnd, prompt};
use model::{CheckpointTrigger, ErrorCode, EventData, PromptVia, RunState, StepAgent, WorkflowPlan};
use serde::Serialize;
use supervise::supervisor::{self as sup, LoopEvent};
use supervise::{Limits, ProcessSpec, Sink};

use super::{Ended, EngineSink, RunContext, RunEnd, early_stop, process_env, start_error};
use crate::EngineError;

/// The step execution in progress, as the supervisor's message handler needs it.
pub(crate) struct StepContext {
    step: String,
    hop: u32,
    attempt: u32,
    steps: BTreeSet<String>,
}

/// What `agentctl msg send` and `POST /v1/runs/{id}/messages` answer: the message as recorded.
#[derive(Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct MessageReceipt {
    /// The `message_sent` event's sequence number: the message's id within the run.
    pub seq: u64,
    /// The step that sent it (the one running).
    pub from: String,
    /// The step it is addressed to, if any.
    pub to: Option<String>,
    pub verdict: Option<String>,
    /// The sender's step execution.
    pub hop: u32,
}

/// Runs the workflow's steps until it ends (or is stopped).
pub(super) fn run_steps(
    sink: &mut EngineSink<'_, '_>,
    ctx: &RunContext<'_>,
    wf: &WorkflowPlan,
    resuming: bool,
    tx: SyncSender<LoopEvent>,
    rx: &Receiver<LoopEvent>,
) -> Result<Ended, store::StoreError> {
    let def = &wf.def;
    let known: BTreeSet<String> = def.steps.iter().map(|s| s.id.clone()).collect();
    if resuming {
        drop_stale_messages(ctx.files);
        resume(sink)?;
    }
    let mut last_exit = ExitInfo {
        exit_code: None,
        signal: None,
    };
    loop {
        let progress = Progress::from_events(sink.writer.events());
        if let Some(end) = &progress.end {
            return Ok(Ended::Done(RunEnd {
                state: end.state,
                reason: end.reason.clone(),
                exit: last_exit,
            }));
        }
        let (step_id, hop, attempt) = match (&progress.restart, &progress.next) {
            // A step that keeps taking its supervisor down is not started forever.
            (Some(r), _) if r.attempt >= MAX_ATTEMPTS => {
                return Ok(Ended::Done(RunEnd {
                    state: RunState::Failed,
                    reason: format!(
                        "step `{}` (hop {}) was cut short {MAX_ATTEMPTS} times; not starting it again",
                        r.step, r.hop
                    ),
                    exit: last_exit,
                }));
            }
            (Some(r), _) => (r.step.clone(), r.hop, r.attempt + 1),
            (None, Some(next)) => (next.clone(), progress.hops_done + 1, 1),
            (None, None) if !progress.started() => (def.start().to_owned(), 1, 1),
            (None, None) => {
                return Ok(Ended::Done(RunEnd {
                    state: RunState::Failed,
                    reason: "the workflow's log names no next step".to_owned(),
                    exit: last_exit,
                }));
            }
        };
        match early_stop(ctx.files, rx) {
            Some(StopReason::SupervisorSignal) => {
                return interrupted_by_signal(sink, &format!("before step `{step_id}` started"));
            }
            Some(_) => {
                return Ok(Ended::Done(RunEnd {
                    state: RunState::Cancelled,
                    reason: format!("stopped before step `{step_id}` started"),
                    exit: last_exit,
                }));
            }
            None => {}
        }
        let Some(step) = def.step(&step_id) else {
            return Ok(Ended::NotStarted(format!("the workflow has no step `{step_id}`")));
        };
        let counts = def.loop_counts(&progress.edges_taken);
        let (cycle, max_cycles) = def.cycle_of(&step_id, &counts);
        let remaining_hops = def.max_hops().saturating_sub(hop);
        let delivered: Vec<&model::workflow::MessageRecord> = progress.pending_for(&step_id).collect();
        let messages = delivered
            .iter()
            .map(|m| {
                let verdict = m
                    .verdict
                    .as_deref()
                    .map(|v| format!(", verdict {v}"))
                    .unwrap_or_default();
                format!("- from {} (hop {}{verdict}): {}", m.from, m.hop, m.text)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let vars: BTreeMap<&str, String> = BTreeMap::from([
            ("task", ctx.spec.prompt.clone().unwrap_or_default()),
            ("messages", messages),
            ("cycle", cycle.to_string()),
            ("max_cycles", max_cycles.to_string()),
            ("remaining_hops", remaining_hops.to_string()),
            ("step", step_id.clone()),
            ("hop", hop.to_string()),
            ("run_id", ctx.id.to_string()),
        ]);
        let prompt_text = step
            .agent
            .as_ref()
            .map(|_| prompt::render(step.prompt.as_deref(), &vars));
        // The step starts from the previous step's checkpoint (the baseline for the first):
        // what a restart restores. None when that checkpoint failed: nothing is rolled back then.
        let from_checkpoint = match progress.steps.last() {
            Some(prev) => prev.checkpoint,
            None => sink.checkpointer.as_ref().and(baseline(sink.writer.events())),
        };
        sink.writer.append(EventData::StepStarted {
            step: step_id.clone(),
            hop,
            attempt,
            cycle,
            max_cycles,
            remaining_hops,
            agent: step.agent.clone(),
            gate: step.gate.clone(),
            prompt: prompt_text.clone(),
            delivered: delivered.iter().map(|m| m.seq).collect(),
            from_checkpoint,
        })?;
        crash_point("step_started");
        let step_vars = [
            ("AGENTCTL_STEP_ID", step_id.clone()),
            ("AGENTCTL_HOP", hop.to_string()),
            ("AGENTCTL_CYCLE", cycle.to_string()),
            ("AGENTCTL_MAX_CYCLES", max_cycles.to_string()),
            ("AGENTCTL_REMAINING_HOPS", remaining_hops.to_string()),
            ("AGENTCTL_WORKFLOW", def.name.clone()),
        ];
        let step_env: BTreeMap<String, String> = step_vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let started = Instant::now();
        let process = step_process(ctx, wf, step, prompt_text.as_deref(), &step_env);
        // Limits: the step's own, and what is left of the run's.
        let step_limit = wf.step_timeouts_ms.get(&step_id).map(|ms| Duration::from_millis(*ms));
        // The run's limit counts the time its steps took, not time spent down between a crash
        // and the resume.
        let run_left = ctx.spec.timeout_ms.map(|ms| {
            let spent: u64 = progress.steps.iter().map(|s| s.elapsed_ms).sum();
            Duration::from_millis(ms.saturating_sub(spent))
        });
        let step_limit_first = match (step_limit, run_left) {
            (Some(s), Some(r)) => s < r,
            (Some(_), None) => true,
            _ => false,
        };
        let limits = Limits {
            timeout: match (step_limit, run_left) {
                (Some(s), Some(r)) => Some(s.min(r)),
                (a, b) => a.or(b),
            },
            idle_timeout: ctx.spec.idle_timeout_ms.map(Duration::from_millis),
            grace: Duration::from_millis(ctx.plan.grace_ms),
        };
        sink.step = Some(StepContext {
            step: step_id.clone(),
            hop,
            attempt,
            steps: known.clone(),
        });
        let end = match &process {
            Ok(process) => {
                let _span = tracing::info_span!("workflow.step", step.id = %step_id, step.hop = hop).entered();
                sup::supervise(process, limits, tx.clone(), rx, sink).map_err(|e| start_error(&process.argv, &e))
            }
            Err(why) => Err(why.clone()),
        };
        sink.step = None;
        sink.after_process(&ctx.spec.repo);
        let not_started = end.as_ref().err().cloned();
        let (exit, stop) = match end {
            // A limit or a `stop` violation found only once the step's process ended still
            // ends the workflow.
            Ok(end) => (end.exit, end.stop.or_else(|| sink.late_stop())),
            Err(why) => {
                // The step failed before it ran; say why where its output would be.
                sink.output(
                    Stream::Stderr,
                    format!("agentctl: step `{step_id}`: {why}\n").as_bytes(),
                );
                (
                    ExitInfo {
                        exit_code: None,
                        signal: None,
                    },
                    None,
                )
            }
        };
        last_exit = exit.clone();
        if stop == Some(StopReason::SupervisorSignal) {
            // Not the user, not a limit: the machine is going down, or someone signalled the
            // supervisor. The step did not complete; a resume restarts it.
            sink.record_changes();
            return interrupted_by_signal(sink, &format!("during step `{step_id}` (hop {hop})"));
        }
        // The step's checkpoint: what it changed, read by path when the watcher saw it all.
        sink.record_changes();
        let checkpoint = step_checkpoint(sink, &step_id, hop)?;
        crash_point("step_checkpointed");
        let progress = Progress::from_events(sink.writer.events());
        let exit_ok = exit.exit_code == Some(0) && stop.is_none();
        let timed_out = stop == Some(StopReason::Timeout) && step_limit_first;
        // A step stopped by its own limit failed, whatever it said before.
        let own = progress.current_verdict().filter(|_| !timed_out).map(str::to_owned);
        let verdict = own.unwrap_or_else(|| {
            if exit_ok {
                workflow::SUCCESS.to_owned()
            } else {
                workflow::FAILURE.to_owned()
            }
        });
        let counts = def.loop_counts(&progress.edges_taken);
        let decision = match stop {
            // The step's own limit: the step failed; its edges decide.
            Some(StopReason::Timeout) if step_limit_first => def.decide(&step_id, &verdict, false, &counts, hop),
            Some(stop) => {
                let (state, mut reason) = outcome::decide(Some(stop), &exit);
                if let Some(detail) = sink.stop_detail() {
                    reason = format!("{detail}; {reason}");
                }
                Decision::End(WorkflowEnd {
                    state,
                    reason: format!("step `{step_id}`: {reason}"),
                    exhausted: false,
                })
            }
            None => def.decide(&step_id, &verdict, exit_ok, &counts, hop),
        };
        let (next, edge, end) = match decision {
            Decision::Next { step, edge } => (Some(step), Some(edge), None),
            Decision::End(end) => (None, None, Some(end)),
        };
        tracing::info!(step = %step_id, hop, verdict = %verdict, next = ?next, "step finished");
        sink.writer.append(EventData::StepFinished {
            step: step_id.clone(),
            hop,
            attempt,
            exit_code: exit.exit_code,
            signal: exit.signal.clone(),
            verdict,
            checkpoint,
            next,
            edge,
            end,
            elapsed_ms: started.elapsed().as_millis() as u64,
            error: not_started,
        })?;
        crash_point("step_finished");
    }
}

/// Restarts of one step execution after it was cut short (by crashes) before the workflow
/// gives up on it.
const MAX_ATTEMPTS: u32 = 3;

/// The baseline checkpoint's number, if one was recorded.
fn baseline(events: &[model::Event]) -> Option<u32> {
    events.iter().find_map(|e| match &e.data {
        EventData::Checkpointed {
            n,
            trigger: CheckpointTrigger::Baseline,
            ..
        } => Some(*n),
        _ => None,
    })
}

/// The supervisor was signalled (SIGTERM/SIGINT to it, e.g. at shutdown) while the workflow
/// was under way: it records the run `interrupted`, as a crash would leave it, so a resume
/// continues from the last completed step instead of the workflow being cancelled.
fn interrupted_by_signal(sink: &mut EngineSink<'_, '_>, when: &str) -> Result<Ended, store::StoreError> {
    sink.writer.append(EventData::Interrupted {
        reason: format!(
            "the supervisor was signalled {when}; `agentctl resume` continues from the last completed step"
        ),
        detected_by: "supervisor".to_owned(),
    })?;
    Ok(Ended::Interrupted)
}

/// Message requests left unclaimed by a step execution that was cut short: their sender is
/// gone, and what it sent does not count. Answered (so nothing waits on them) and dropped.
fn drop_stale_messages(files: &supervise::RunFiles) {
    files.reject_unclaimed(
        |r| matches!(r, ControlRequest::Message { .. }),
        r#"{"error":{"code":"INVALID_STATE_TRANSITION","message":"the step that sent this was cut short"}}"#,
    );
}

/// Fault injection for crash tests: with `AGENTCTL_CRASH_AT=POINT:N` in its environment, the
/// supervisor kills itself (SIGKILL: as abrupt as a crash gets) the Nth time it passes `POINT`.
/// Points: `step_started`, `step_checkpointed` (the step's checkpoint is recorded, its end not
/// yet), `step_finished`, `resumed`.
fn crash_point(point: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PASSED: AtomicU32 = AtomicU32::new(0);
    let Ok(spec) = std::env::var("AGENTCTL_CRASH_AT") else {
        return;
    };
    let Some((at, n)) = spec.split_once(':') else { return };
    if at != point {
        return;
    }
    let passed = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if n.parse::<u32>().is_ok_and(|n| n == passed) {
        tracing::warn!(point, passed, "AGENTCTL_CRASH_AT: crashing on purpose");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Records that this supervisor takes an interrupted workflow up again. A step cut short is
/// undone: its partial changes are saved as a checkpoint, and the worktree goes back to the
/// checkpoint the step started from.
fn resume(sink: &mut EngineSink<'_, '_>) -> Result<(), store::StoreError> {
    let progress = Progress::from_events(sink.writer.events());
    let cut = progress.current.clone().or(progress.restart.clone());
    let (mut saved, mut restored) = (None, None);
    let mut reason = match (&cut, &progress.next) {
        (Some(c), _) => format!(
            "a new supervisor took the workflow up again; step `{}` (hop {}) was cut short and starts over",
            c.step, c.hop
        ),
        (None, Some(next)) => format!("a new supervisor took the workflow up again; step `{next}` is next"),
        (None, None) => "a new supervisor took the workflow up again".to_owned(),
    };
    // Only an execution that ran since the last resume left changes to undo: one a resume
    // already restored (and that never started again) is as it was restored.
    let ran = progress.current.is_some();
    if let (true, Some(c), Some(to)) = (ran, &cut, cut.as_ref().and_then(|c| c.from_checkpoint)) {
        match &mut sink.checkpointer {
            Some(cp) => match cp.rollback(sink.writer, to, &[], false) {
                Ok(info) => {
                    saved = Some(info.pre_rollback);
                    restored = Some(to);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot restore the interrupted step's start");
                    reason.push_str(&format!(
                        "; its start (checkpoint {to}) could not be restored ({}), so its partial changes stay",
                        e.message
                    ));
                }
            },
            None => reason.push_str(&format!(
                "; checkpoints are off, so the partial changes of step `{}` stay",
                c.step
            )),
        }
    }
    sink.writer.append(EventData::WorkflowResumed {
        reason,
        step: cut.as_ref().map(|c| c.step.clone()),
        hop: cut.as_ref().map(|c| c.hop),
        saved_checkpoint: saved,
        restored_to: restored,
    })?;
    crash_point("resumed");
    Ok(())
}

/// The checkpoint at the end of a step; `None` when checkpoints are off or it failed (the
/// failure is recorded).
fn step_checkpoint(sink: &mut EngineSink<'_, '_>, step: &str, hop: u32) -> Result<Option<u32>, store::StoreError> {
    let Some(cp) = &mut sink.checkpointer else {
        return Ok(None);
    };
    let changed: Vec<std::path::PathBuf> = std::mem::take(&mut sink.pending).into_iter().collect();
    let full = std::mem::take(&mut sink.overflowed) || sink.watcher.is_none();
    sink.pending_since = None;
    let paths = (!full).then_some(changed.as_slice());
    let message = Some(format!("step {step} (hop {hop})"));
    match cp.take(sink.writer, CheckpointTrigger::Step, message, paths, false) {
        Ok(info) => Ok(Some(info.n)),
        Err(e) => {
            tracing::warn!(error = %e, "step checkpoint failed");
            sink.writer.append(EventData::CheckpointFailed {
                trigger: CheckpointTrigger::Step,
                reason: e.message,
            })?;
            sink.overflowed = true;
            Ok(None)
        }
    }
}

/// The process of a step: its agent rendered with the step's prompt, or its gate command.
fn step_process(
    ctx: &RunContext<'_>,
    wf: &WorkflowPlan,
    step: &workflow::StepDef,
    prompt: Option<&str>,
    step_env: &BTreeMap<String, String>,
) -> Result<ProcessSpec, String> {
    let worktree = &ctx.plan.worktree;
    if let Some(gate) = &step.gate {
        return Ok(ProcessSpec {
            argv: vec!["/bin/sh".to_owned(), "-c".to_owned(), gate.clone()],
            wrapper: ctx.confined.wrapper.clone(),
            cwd: worktree.clone(),
            env_clear: ctx.confined.env_clear,
            env: process_env(ctx, &[&ctx.plan.env, step_env], None),
            env_remove: Vec::new(),
            stdin: None,
            tty: false,
            limits: ctx.confined.child_setup(),
            shield_signals: !ctx.confined.wrapper.is_empty(),
            pid_file: Some(ctx.files.agent_pid_path()),
        });
    }
    let name = step.agent.as_deref().unwrap_or_default();
    let agent: &StepAgent = wf
        .agents
        .get(name)
        .ok_or_else(|| format!("agent `{name}` is not in the run's plan"))?;
    let def = agents::AgentDef {
        command: agent.command.clone(),
        prompt_via: agent.prompt_via,
        env: agent.env.clone(),
        secret_env: agent.secret_env.clone(),
        tty: agent.tty,
        ..agents::AgentDef::default()
    };
    let prompt_file = ctx
        .plan
        .prompt_file
        .clone()
        .unwrap_or_else(|| worktree.with_extension("prompt"));
    let inv = agents::render(name, &def, prompt, &[], &prompt_file, worktree).map_err(|e| e.to_string())?;
    let text = prompt.unwrap_or_default();
    if let Some(path) = &inv.prompt_file {
        std::fs::write(path, text).map_err(|e| format!("cannot write prompt file {}: {e}", path.display()))?;
    }
    Ok(ProcessSpec {
        argv: inv.argv,
        wrapper: ctx.confined.wrapper.clone(),
        cwd: worktree.clone(),
        env_clear: ctx.confined.env_clear,
        env: process_env(ctx, &[&agent.env, &ctx.plan.env, step_env], prompt),
        env_remove: Vec::new(),
        stdin: (inv.prompt_via == PromptVia::Stdin).then(|| text.as_bytes().to_vec()),
        tty: agent.tty,
        limits: ctx.confined.child_setup(),
        shield_signals: !ctx.confined.wrapper.is_empty(),
        pid_file: Some(ctx.files.agent_pid_path()),
    })
}

impl EngineSink<'_, '_> {
    /// Records a message from the step in progress (a `Message` control request); returns the
    /// answer for the sender.
    pub(super) fn record_message(&mut self, req: &ControlRequest) -> String {
        let ControlRequest::Message {
            from,
            to,
            verdict,
            text,
            ..
        } = req
        else {
            return String::new();
        };
        let r = (|| {
            let Some(cur) = &self.step else {
                return Err(EngineError::new(
                    ErrorCode::InvalidStateTransition,
                    "no workflow step is running: messages are sent from inside a step",
                ));
            };
            if let Some(f) = from
                && *f != cur.step
            {
                return Err(EngineError::new(
                    ErrorCode::InvalidArgument,
                    format!("the step running is `{}`, not `{f}`", cur.step),
                ));
            }
            if let Some(t) = to
                && !cur.steps.contains(t)
            {
                return Err(EngineError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "no step `{t}` in this workflow (steps: {})",
                        cur.steps.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if let Some(v) = verdict
                && !workflow::valid_id(v)
            {
                return Err(EngineError::new(
                    ErrorCode::InvalidArgument,
                    format!("verdict {v:?} must be one word (letters, digits, `-`, `_`)"),
                ));
            }
            let ev = self
                .writer
                .append(EventData::MessageSent {
                    from: cur.step.clone(),
                    to: to.clone(),
                    verdict: verdict.clone(),
                    // A message is stored: secret values never are.
                    text: self.confined.redactor.redact_str(text),
                    hop: cur.hop,
                    attempt: cur.attempt,
                })
                .map_err(EngineError::from)?;
            Ok(MessageReceipt {
                seq: ev.seq,
                from: cur.step.clone(),
                to: to.clone(),
                verdict: verdict.clone(),
                hop: cur.hop,
            })
        })();
        crate::checkpoints::Answer::of(r)
    }
}
