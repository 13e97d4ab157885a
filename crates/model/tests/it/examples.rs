//! Example-based tests of the main run paths through the state machine.

use RunState::*;
use model::state::{replay, transition};
use model::{EventData, RunState, StopReason};

use crate::examples_data::*;

fn run(events: &[EventData]) -> Option<RunState> {
    replay(events).unwrap_or_else(|e| panic!("path rejected: {e}"))
}

#[test]
fn happy_path_succeeds() {
    let path = [
        created(),
        preparing(),
        worktree_ready(),
        hook("pre-run"),
        started(),
        exited(Some(0)),
        hook("post-run"),
        finished(Succeeded),
        worktree_removed(),
    ];
    let states: Vec<_> = (1..=path.len()).map(|n| run(&path[..n]).unwrap()).collect();
    assert_eq!(
        states,
        [
            Pending, Preparing, Preparing, Preparing, Running, Running, Running, Succeeded, Succeeded
        ]
    );
}

#[test]
fn user_stop_is_cancelled() {
    let mut path = vec![created(), preparing(), started()];
    path.extend([
        stop(StopReason::User),
        signal("SIGTERM"),
        signal("SIGKILL"),
        exited(None),
        finished(Cancelled),
    ]);
    assert_eq!(run(&path[..4]), Some(Stopping));
    assert_eq!(run(&path[..7]), Some(Stopping));
    assert_eq!(run(&path), Some(Cancelled));
}

#[test]
fn pause_and_resume() {
    let path = [created(), preparing(), started(), paused(), resumed(), paused()];
    assert_eq!(run(&path[..4]), Some(Paused));
    assert_eq!(run(&path[..5]), Some(Running));
    assert_eq!(run(&path), Some(Paused));
    // A paused run can be stopped and timed out.
    let mut stopped = path.to_vec();
    stopped.extend([stop(StopReason::Timeout), exited(None), finished(TimedOut)]);
    assert_eq!(run(&stopped), Some(TimedOut));
    // Resuming a running run, or pausing a paused one, is illegal.
    assert!(transition(Some(Running), &resumed()).is_err());
    assert!(transition(Some(Paused), &paused()).is_err());
}

#[test]
fn pending_runs_can_be_cancelled_or_failed_but_not_stopped() {
    assert_eq!(run(&[created(), finished(Cancelled)]), Some(Cancelled));
    assert_eq!(run(&[created(), finished(Failed)]), Some(Failed));
    for to in [Succeeded, TimedOut, Lost, Running, Pending] {
        assert!(transition(Some(Pending), &finished(to)).is_err(), "pending -> {to}");
    }
    assert!(transition(Some(Pending), &stop(StopReason::User)).is_err());
    assert!(transition(Some(Pending), &hook("pre-run")).is_err());
    assert!(transition(Some(Pending), &started()).is_err());
}

#[test]
fn preparing_can_stop_fail_or_be_lost() {
    let base = [created(), preparing()];
    assert_eq!(run(&[&base[..], &[stop(StopReason::User)]].concat()), Some(Stopping));
    assert_eq!(
        run(&[&base[..], &[hook("pre-run"), finished(Failed)]].concat()),
        Some(Failed)
    );
    assert_eq!(run(&[&base[..], &[lost()]].concat()), Some(Lost));
    // Exits need a running agent.
    // Signals while preparing end what a pre-run hook left behind; the state stays.
    assert_eq!(transition(Some(Preparing), &signal("SIGTERM")), Ok(Preparing));
    assert!(transition(Some(Preparing), &exited(Some(0))).is_err());
    assert!(transition(Some(Running), &worktree_ready()).is_err());
}

#[test]
fn lost_is_recorded_from_any_live_state_only() {
    for st in [Pending, Preparing, Running, Paused, NeedsInput, Stopping] {
        assert_eq!(transition(Some(st), &lost()), Ok(Lost), "from {st}");
    }
    for st in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
        assert!(transition(Some(st), &lost()).is_err(), "from {st}");
        assert_eq!(transition(Some(st), &worktree_removed()), Ok(st));
    }
    assert!(transition(None, &lost()).is_err());
}

#[test]
fn rejections_are_reported_precisely() {
    let path = [created(), preparing(), started(), finished(Succeeded), started()];
    let err = replay(&path).unwrap_err();
    assert_eq!(err.from, Some(Succeeded));
    assert_eq!(err.event, "started");
    assert_eq!(err.to_string(), "event `started` is not allowed in state succeeded");
    let err = transition(None, &preparing()).unwrap_err();
    assert_eq!(err.to_string(), "event `preparing` is not allowed in state (none)");
    assert_eq!(replay(&[]), Ok(None));
}

fn step_started(hop: u32) -> EventData {
    EventData::StepStarted {
        step: "code".into(),
        hop,
        attempt: 1,
        cycle: 1,
        max_cycles: 1,
        remaining_hops: 3,
        agent: Some("coder".into()),
        gate: None,
        prompt: Some("task".into()),
        delivered: vec![],
        from_checkpoint: Some(0),
    }
}

fn step_finished(hop: u32) -> EventData {
    EventData::StepFinished {
        step: "code".into(),
        hop,
        attempt: 1,
        exit_code: Some(0),
        signal: None,
        verdict: "success".into(),
        checkpoint: Some(hop),
        next: Some("code".into()),
        edge: Some(0),
        end: None,
        elapsed_ms: 1,
        error: None,
    }
}

fn interrupted() -> EventData {
    EventData::Interrupted {
        reason: "supervisor gone".into(),
        detected_by: "test".into(),
    }
}

#[test]
fn a_workflow_runs_steps_and_is_resumed_after_an_interruption() {
    let resumed = EventData::WorkflowResumed {
        reason: "r".into(),
        step: Some("code".into()),
        hop: Some(2),
        saved_checkpoint: Some(2),
        restored_to: Some(1),
    };
    let path = [
        created(),
        preparing(),
        worktree_ready(),
        step_started(1),
        started(),
        exited(Some(0)),
        step_finished(1),
        step_started(2),
        started(),
        interrupted(),
        preparing(),
        resumed,
        step_started(2),
        started(),
        exited(Some(0)),
        step_finished(2),
        finished(Succeeded),
    ];
    let states: Vec<_> = (1..=path.len()).map(|n| run(&path[..n]).unwrap()).collect();
    assert_eq!(
        states,
        [
            Pending,
            Preparing,
            Preparing,
            Preparing,
            Running,
            Running,
            Running,
            Running,
            Running,
            Interrupted,
            Preparing,
            Preparing,
            Preparing,
            Running,
            Running,
            Running,
            Succeeded
        ]
    );
}

#[test]
fn an_interrupted_run_takes_only_a_new_supervisor_a_stop_or_lost() {
    assert_eq!(transition(Some(Interrupted), &preparing()), Ok(Preparing));
    assert_eq!(transition(Some(Interrupted), &finished(Cancelled)), Ok(Cancelled));
    assert_eq!(transition(Some(Interrupted), &lost()), Ok(Lost));
    for ev in [
        started(),
        step_started(1),
        hook("pre-run"),
        stop(StopReason::User),
        interrupted(),
    ] {
        assert!(transition(Some(Interrupted), &ev).is_err(), "{}", ev.kind());
    }
    // Only a run a supervisor owns can be interrupted, and workflow records need one too.
    for st in [Pending, Succeeded, Lost] {
        assert!(transition(Some(st), &interrupted()).is_err(), "from {st}");
    }
    assert!(transition(Some(Pending), &step_started(1)).is_err());
    assert!(!Interrupted.is_terminal() && !Interrupted.needs_supervisor());
    // Nothing moves an interrupted run but a resume or a stop: waiting stops there.
    assert!(Interrupted.is_at_rest() && Succeeded.is_at_rest() && !Running.is_at_rest() && !Pending.is_at_rest());
}
