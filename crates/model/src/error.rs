//! Stable error codes shared by the CLI and (later) the API, each with a documented process exit
//! code. Codes are part of the public contract: never rename one.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidArgument,
    InvalidConfig,
    RunNotFound,
    RunAmbiguous,
    RunIdConflict,
    RunActive,
    AgentNotFound,
    AgentUnavailable,
    NotAGitRepo,
    BaseNotFound,
    WorktreeDirty,
    InvalidStateTransition,
    StateDirUnusable,
    GitFailed,
    SpawnFailed,
    CheckpointNotFound,
    WorktreeGone,
    CheckpointFailed,
    #[serde(rename = "IO_ERROR")]
    Io,
    Internal,
    Unauthorized,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    DaemonRunning,
    TokenNotFound,
    WorkflowNotFound,
    WorkflowInvalid,
    NotAWorkflowRun,
    SandboxUnavailable,
    SecretNotFound,
    NotAShadowRun,
    PromotionRefused,
    RouterModelUnusable,
    CheckpointPruned,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 35] = [
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidConfig,
        ErrorCode::RunNotFound,
        ErrorCode::RunAmbiguous,
        ErrorCode::RunIdConflict,
        ErrorCode::RunActive,
        ErrorCode::AgentNotFound,
        ErrorCode::AgentUnavailable,
        ErrorCode::NotAGitRepo,
        ErrorCode::BaseNotFound,
        ErrorCode::WorktreeDirty,
        ErrorCode::InvalidStateTransition,
        ErrorCode::StateDirUnusable,
        ErrorCode::GitFailed,
        ErrorCode::SpawnFailed,
        ErrorCode::CheckpointNotFound,
        ErrorCode::WorktreeGone,
        ErrorCode::CheckpointFailed,
        ErrorCode::Io,
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::DaemonRunning,
        ErrorCode::TokenNotFound,
        ErrorCode::WorkflowNotFound,
        ErrorCode::WorkflowInvalid,
        ErrorCode::NotAWorkflowRun,
        ErrorCode::SandboxUnavailable,
        ErrorCode::SecretNotFound,
        ErrorCode::NotAShadowRun,
        ErrorCode::PromotionRefused,
        ErrorCode::RouterModelUnusable,
        ErrorCode::CheckpointPruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::RunNotFound => "RUN_NOT_FOUND",
            ErrorCode::RunAmbiguous => "RUN_AMBIGUOUS",
            ErrorCode::RunIdConflict => "RUN_ID_CONFLICT",
            ErrorCode::RunActive => "RUN_ACTIVE",
            ErrorCode::AgentNotFound => "AGENT_NOT_FOUND",
            ErrorCode::AgentUnavailable => "AGENT_UNAVAILABLE",
            ErrorCode::NotAGitRepo => "NOT_A_GIT_REPO",
            ErrorCode::BaseNotFound => "BASE_NOT_FOUND",
            ErrorCode::WorktreeDirty => "WORKTREE_DIRTY",
            ErrorCode::InvalidStateTransition => "INVALID_STATE_TRANSITION",
            ErrorCode::StateDirUnusable => "STATE_DIR_UNUSABLE",
            ErrorCode::GitFailed => "GIT_FAILED",
            ErrorCode::SpawnFailed => "SPAWN_FAILED",
            ErrorCode::CheckpointNotFound => "CHECKPOINT_NOT_FOUND",
            ErrorCode::WorktreeGone => "WORKTREE_GONE",
            ErrorCode::CheckpointFailed => "CHECKPOINT_FAILED",
            ErrorCode::Io => "IO_ERROR",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::DaemonRunning => "DAEMON_RUNNING",
            ErrorCode::TokenNotFound => "TOKEN_NOT_FOUND",
            ErrorCode::WorkflowNotFound => "WORKFLOW_NOT_FOUND",
            ErrorCode::WorkflowInvalid => "WORKFLOW_INVALID",
            ErrorCode::NotAWorkflowRun => "NOT_A_WORKFLOW_RUN",
            ErrorCode::SandboxUnavailable => "SANDBOX_UNAVAILABLE",
            ErrorCode::SecretNotFound => "SECRET_NOT_FOUND",
            ErrorCode::NotAShadowRun => "NOT_A_SHADOW_RUN",
            ErrorCode::PromotionRefused => "PROMOTION_REFUSED",
            ErrorCode::RouterModelUnusable => "ROUTER_MODEL_UNUSABLE",
            ErrorCode::CheckpointPruned => "CHECKPOINT_PRUNED",
        }
    }

    /// The process exit code for this error (sysexits-style, so it does not collide with the
    /// small codes agents use and `run` passes through).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::PayloadTooLarge => 64,
            ErrorCode::NotFound | ErrorCode::TokenNotFound => 66,
            ErrorCode::Unauthorized => 77,
            ErrorCode::RequestTimeout => 75,
            ErrorCode::DaemonRunning => 75,
            ErrorCode::RunNotFound
            | ErrorCode::AgentNotFound
            | ErrorCode::BaseNotFound
            | ErrorCode::RunAmbiguous
            | ErrorCode::CheckpointNotFound
            | ErrorCode::WorkflowNotFound
            | ErrorCode::WorktreeGone
            | ErrorCode::CheckpointPruned => 66,
            ErrorCode::AgentUnavailable | ErrorCode::NotAGitRepo => 69,
            ErrorCode::Internal | ErrorCode::SpawnFailed | ErrorCode::GitFailed | ErrorCode::CheckpointFailed => 70,
            ErrorCode::Io | ErrorCode::StateDirUnusable => 74,
            ErrorCode::RunIdConflict
            | ErrorCode::RunActive
            | ErrorCode::WorktreeDirty
            | ErrorCode::InvalidStateTransition => 75,
            ErrorCode::InvalidConfig | ErrorCode::WorkflowInvalid => 78,
            ErrorCode::NotAWorkflowRun => 64,
            ErrorCode::SandboxUnavailable => 69,
            ErrorCode::SecretNotFound => 66,
            ErrorCode::NotAShadowRun => 64,
            // EX_DATAERR: the change itself did not pass.
            ErrorCode::PromotionRefused => 65,
            // EX_CONFIG: the configured model cannot be used by this build or is broken.
            ErrorCode::RouterModelUnusable => 78,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_stable_codes() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
