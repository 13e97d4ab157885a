//! The engine's one error type: a stable [`ErrorCode`], a one-line message and a hint. Adapter
//! errors are mapped here, once, to the code a user sees.

use model::ErrorCode;

/// A user-facing failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub code: ErrorCode,
    pub message: String,
    pub hint: Option<String>,
}

impl EngineError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        EngineError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<store::StoreError> for EngineError {
    fn from(e: store::StoreError) -> Self {
        use store::StoreError as S;
        match e {
            S::NotFound(id) => EngineError::new(ErrorCode::RunNotFound, format!("no run matches {id:?}"))
                .hint("list runs with `agentctl ls`"),
            S::Ambiguous { .. } => {
                EngineError::new(ErrorCode::RunAmbiguous, e.to_string()).hint("give more characters of the run id")
            }
            S::Transition(t) => EngineError::new(ErrorCode::InvalidStateTransition, t.to_string()),
            S::Layout(_) => EngineError::new(ErrorCode::StateDirUnusable, e.to_string())
                .hint("check --state-dir / AGENTCTL_STATE_DIR and its permissions"),
            S::EventLog(store::EventLogError::Locked { .. }) => EngineError::new(ErrorCode::RunActive, e.to_string())
                .hint("the run's supervisor is still working; retry"),
            other => EngineError::new(ErrorCode::Io, other.to_string()),
        }
    }
}

impl From<vcs::VcsError> for EngineError {
    fn from(e: vcs::VcsError) -> Self {
        use vcs::VcsError as V;
        match &e {
            V::NotARepo { .. } => EngineError::new(ErrorCode::NotAGitRepo, e.to_string())
                .hint("run inside a git repository, pass --repo DIR, or create one with `git init`"),
            V::RevNotFound { rev, .. } => {
                EngineError::new(ErrorCode::BaseNotFound, e.to_string()).hint(if rev == "HEAD" {
                    "the repository has no commits yet: make a first commit".to_owned()
                } else {
                    "pass an existing branch, tag or commit with --base".to_owned()
                })
            }
            _ => EngineError::new(ErrorCode::GitFailed, e.to_string()),
        }
    }
}

impl From<model::provider::ProviderError> for EngineError {
    fn from(e: model::provider::ProviderError) -> Self {
        EngineError::new(ErrorCode::SpawnFailed, e.to_string())
    }
}

impl From<agents::ConfigError> for EngineError {
    fn from(e: agents::ConfigError) -> Self {
        EngineError::new(ErrorCode::InvalidConfig, e.to_string()).hint("fix the file named above")
    }
}

impl From<agents::RenderError> for EngineError {
    fn from(e: agents::RenderError) -> Self {
        let hint = match &e {
            agents::RenderError::MissingPrompt { .. } => {
                "give the task as the last argument: agentctl run --agent NAME \"TASK\""
            }
            agents::RenderError::MissingCommand => "put the program after `--`, e.g. agentctl run -- ./scripts/task.sh",
            agents::RenderError::EmptyCommand { .. } => "set `command` in the agent's definition",
        };
        EngineError::new(ErrorCode::InvalidArgument, e.to_string()).hint(hint)
    }
}
