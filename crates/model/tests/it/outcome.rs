//! Example-based tests of `model::outcome::decide`: every stop reason against every way a
//! process can end, with the exact one-line reasons.

use model::outcome::decide;
use model::{ExitInfo, RunState, StopReason};

fn exit(code: Option<i32>, signal: Option<&str>) -> ExitInfo {
    ExitInfo {
        exit_code: code,
        signal: signal.map(str::to_owned),
    }
}

#[test]
fn unstopped_runs_succeed_only_on_exit_zero() {
    assert_eq!(
        decide(None, &exit(Some(0), None)),
        (RunState::Succeeded, "agent exited with code 0".to_owned())
    );
    assert_eq!(
        decide(None, &exit(Some(2), None)),
        (RunState::Failed, "agent exited with code 2".to_owned())
    );
    assert_eq!(
        decide(None, &exit(Some(-1), None)),
        (RunState::Failed, "agent exited with code -1".to_owned())
    );
    assert_eq!(
        decide(None, &exit(None, Some("SIGKILL"))),
        (RunState::Failed, "agent killed by SIGKILL".to_owned())
    );
    assert_eq!(
        decide(None, &exit(None, None)),
        (RunState::Failed, "agent ended".to_owned())
    );
    // An exit code wins over a signal name when both are present.
    assert_eq!(decide(None, &exit(Some(0), Some("SIGTERM"))).0, RunState::Succeeded);
}

#[test]
fn stopped_runs_follow_the_stop_reason_whatever_the_exit() {
    let exits = [
        exit(Some(0), None),
        exit(Some(1), None),
        exit(None, Some("SIGTERM")),
        exit(None, None),
    ];
    for e in &exits {
        assert_eq!(decide(Some(StopReason::User), e).0, RunState::Cancelled);
        assert_eq!(decide(Some(StopReason::SupervisorSignal), e).0, RunState::Cancelled);
        assert_eq!(decide(Some(StopReason::Timeout), e).0, RunState::TimedOut);
        assert_eq!(decide(Some(StopReason::IdleTimeout), e).0, RunState::TimedOut);
    }
    let term = exit(None, Some("SIGTERM"));
    assert_eq!(
        decide(Some(StopReason::User), &term).1,
        "stopped by user; agent killed by SIGTERM"
    );
    assert_eq!(
        decide(Some(StopReason::SupervisorSignal), &exit(Some(143), None)).1,
        "the supervisor was signalled to stop (e.g. the run that started this one ended); agent exited with code 143"
    );
    assert_eq!(
        decide(Some(StopReason::Timeout), &exit(None, None)).1,
        "hard timeout; agent ended"
    );
    assert_eq!(
        decide(Some(StopReason::IdleTimeout), &term).1,
        "idle timeout (no output); agent killed by SIGTERM"
    );
}

#[test]
fn decided_states_are_legal_finish_targets() {
    let running = Some(RunState::Running);
    for stop in [
        None,
        Some(StopReason::User),
        Some(StopReason::Timeout),
        Some(StopReason::IdleTimeout),
        Some(StopReason::SupervisorSignal),
    ] {
        for e in [exit(Some(0), None), exit(Some(9), None), exit(None, Some("SIGKILL"))] {
            let (state, reason) = decide(stop, &e);
            let finished = model::EventData::Finished {
                state,
                reason,
                exit_code: e.exit_code,
                signal: e.signal.clone(),
            };
            assert_eq!(model::state::transition(running, &finished), Ok(state));
            let stopping = Some(RunState::Stopping);
            assert_eq!(model::state::transition(stopping, &finished), Ok(state));
        }
    }
}
