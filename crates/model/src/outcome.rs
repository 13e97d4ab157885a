//! How a run's final state is decided from why it was stopped (if it was) and how its process
//! ended. Pure, so the supervisor, tests and documentation agree.

use serde::{Deserialize, Serialize};

use crate::state::RunState;

/// Why a stop was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `agentctl stop` (or Ctrl-C in a following `agentctl run`).
    User,
    /// The hard `--timeout` elapsed.
    Timeout,
    /// No output for `--idle-timeout`.
    IdleTimeout,
    /// The supervisor itself received SIGTERM/SIGINT.
    SupervisorSignal,
    /// A resource limit (memory, pids, cpu, disk) was exceeded.
    Limit,
    /// The path policy says `on_violation = "stop"` and the agent broke it.
    Policy,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::User => "user",
            StopReason::Timeout => "timeout",
            StopReason::IdleTimeout => "idle_timeout",
            StopReason::SupervisorSignal => "supervisor_signal",
            StopReason::Limit => "limit",
            StopReason::Policy => "policy",
        }
    }
}

/// How the agent's main process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal name (e.g. `SIGKILL`), when a signal ended it.
    pub signal: Option<String>,
}

/// Decides the terminal state and a one-line reason.
pub fn decide(stop: Option<StopReason>, exit: &ExitInfo) -> (RunState, String) {
    let how = match (&exit.exit_code, &exit.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by {sig}"),
        (None, None) => "ended".to_owned(),
    };
    match stop {
        Some(StopReason::User) => (RunState::Cancelled, format!("stopped by user; agent {how}")),
        Some(StopReason::SupervisorSignal) => (
            RunState::Cancelled,
            format!("the supervisor was signalled to stop (e.g. the run that started this one ended); agent {how}"),
        ),
        Some(StopReason::Timeout) => (RunState::TimedOut, format!("hard timeout; agent {how}")),
        Some(StopReason::IdleTimeout) => (RunState::TimedOut, format!("idle timeout (no output); agent {how}")),
        Some(StopReason::Limit) => (RunState::Failed, format!("a resource limit was exceeded; agent {how}")),
        Some(StopReason::Policy) => (
            RunState::Failed,
            format!("stopped for breaking the path policy; agent {how}"),
        ),
        None if exit.exit_code == Some(0) => (RunState::Succeeded, format!("agent {how}")),
        None => (RunState::Failed, format!("agent {how}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: i32) -> ExitInfo {
        ExitInfo {
            exit_code: Some(c),
            signal: None,
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(decide(None, &code(0)).0, RunState::Succeeded);
        assert_eq!(decide(None, &code(3)).0, RunState::Failed);
        let sig = ExitInfo {
            exit_code: None,
            signal: Some("SIGSEGV".into()),
        };
        assert_eq!(decide(None, &sig).1, "agent killed by SIGSEGV");
        assert_eq!(decide(Some(StopReason::User), &code(0)).0, RunState::Cancelled);
        assert_eq!(decide(Some(StopReason::Timeout), &code(0)).0, RunState::TimedOut);
        assert_eq!(decide(Some(StopReason::IdleTimeout), &code(1)).0, RunState::TimedOut);
    }
}
