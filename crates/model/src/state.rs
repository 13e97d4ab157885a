//! The run state machine: a pure function from (state, event) to the next state. Illegal
//! transitions are errors and are never applied; terminal states are absorbing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::EventData;

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created and recorded; no supervisor has taken it yet.
    Pending,
    /// A supervisor owns it and is preparing the worktree and running pre-run hooks.
    Preparing,
    /// The agent process is running.
    Running,
    /// The agent's process group is stopped (SIGSTOP).
    Paused,
    /// Reserved: the agent waits for a human answer.
    NeedsInput,
    /// A stop is in progress (signal escalation).
    Stopping,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// The supervisor vanished without recording an outcome.
    Lost,
    /// A workflow run whose supervisor vanished mid-way: it waits to be resumed from its last
    /// completed step (`agentctl resume`, or a daemon does it).
    Interrupted,
}

impl RunState {
    pub const ALL: [RunState; 12] = [
        RunState::Pending,
        RunState::Preparing,
        RunState::Running,
        RunState::Paused,
        RunState::NeedsInput,
        RunState::Stopping,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::TimedOut,
        RunState::Lost,
        RunState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Preparing => "preparing",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::NeedsInput => "needs_input",
            RunState::Stopping => "stopping",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed_out",
            RunState::Lost => "lost",
            RunState::Interrupted => "interrupted",
        }
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled | RunState::TimedOut | RunState::Lost
        )
    }

    /// States nothing changes on its own: terminal ones, and `interrupted` (a workflow waits
    /// for someone to resume it). Waiting and following stop at them; there is no supervisor to
    /// look for.
    pub fn is_at_rest(self) -> bool {
        self.is_terminal() || self == RunState::Interrupted
    }

    /// States in which a live supervisor must own the run.
    pub fn needs_supervisor(self) -> bool {
        matches!(
            self,
            RunState::Preparing | RunState::Running | RunState::Paused | RunState::NeedsInput | RunState::Stopping
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown state name.
#[derive(Debug, thiserror::Error)]
#[error("unknown run state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for RunState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// An event that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event `{event}` is not allowed in state {}", from.map(|s| s.as_str()).unwrap_or("(none)"))]
pub struct TransitionError {
    pub from: Option<RunState>,
    pub event: &'static str,
}

/// Applies `event` to a run in state `from` (`None` before the first event).
///
/// Returns the next state, or an error that leaves the run unchanged.
pub fn transition(from: Option<RunState>, event: &EventData) -> Result<RunState, TransitionError> {
    use RunState::*;
    let err = || TransitionError {
        from,
        event: event.kind(),
    };
    let Some(state) = from else {
        return match event {
            EventData::Created { .. } => Ok(Pending),
            _ => Err(err()),
        };
    };
    if event.is_worktree_record() {
        return Ok(state);
    }
    if let EventData::Routed { .. } = event {
        return if state.is_terminal() { Err(err()) } else { Ok(state) };
    }
    if state.is_terminal() {
        // Terminal states are absorbing; only bookkeeping about leftovers is recorded.
        return match event {
            EventData::WorktreeRemoved { .. } => Ok(state),
            _ => Err(err()),
        };
    }
    let active = matches!(state, Running | Paused | NeedsInput | Stopping);
    if event.is_observation() {
        return if active || state == Preparing {
            Ok(state)
        } else {
            Err(err())
        };
    }
    let next = match event {
        EventData::Created { .. } => return Err(err()),
        EventData::Queued { .. } if matches!(state, Pending | Interrupted) => state,
        EventData::Preparing { .. } if matches!(state, Pending | Interrupted) => Preparing,
        EventData::WorkflowResumed { .. } if state == Preparing => Preparing,
        // A step stopped by its own time limit ended; the workflow goes on with the next one.
        EventData::StepFinished { end: None, .. } if state == Stopping => Running,
        // Workflow bookkeeping, while a supervisor works through the steps.
        EventData::StepStarted { .. } | EventData::StepFinished { .. } | EventData::MessageSent { .. }
            if active || state == Preparing =>
        {
            state
        }
        EventData::Interrupted { .. } if state.needs_supervisor() => Interrupted,
        EventData::WorktreeReady { .. } if state == Preparing => Preparing,
        EventData::HookFinished { .. } if !matches!(state, Pending | Interrupted) => state,
        EventData::Started { .. } if state == Preparing => Running,
        // The next step of a workflow.
        EventData::Started { .. } if state == Running => Running,
        EventData::Paused { .. } if state == Running => Paused,
        EventData::Resumed { .. } if state == Paused => Running,
        EventData::StopRequested { .. } if !matches!(state, Pending | Interrupted) => Stopping,
        // Also while preparing: ending what a pre-run hook left behind.
        EventData::SignalSent { .. } if active || state == Preparing => state,
        EventData::Exited { .. } if active => state,
        EventData::Finished { state: to, .. } => {
            let allowed = match state {
                Pending => matches!(to, Cancelled | Failed),
                _ => to.is_terminal() && *to != Lost,
            };
            if !allowed {
                return Err(err());
            }
            *to
        }
        EventData::Lost { .. } => Lost,
        _ => return Err(err()),
    };
    Ok(next)
}

/// Folds a sequence of events from the beginning; stops at the first illegal one.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a EventData>) -> Result<Option<RunState>, TransitionError> {
    let mut state = None;
    for ev in events {
        state = Some(transition(state, ev)?);
    }
    Ok(state)
}
