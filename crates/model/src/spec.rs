//! What a caller asked for ([`RunSpec`], compared for idempotent creation) and how it was
//! resolved before anything started ([`LaunchPlan`]). Both are recorded in the run's first event.
//! Neither ever holds a secret value: secrets are passed by name only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointPolicy;
use crate::isolation::{IsolationPlan, IsolationSpec};
use crate::workflow::WorkflowDef;

/// The request that created a run. Two creates with the same id and an equal spec are the same run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunSpec {
    /// Agent name (a preset, a user/repo definition, or `command`).
    pub agent: String,
    /// The task given to the agent, if any.
    pub prompt: Option<String>,
    /// For the `command` agent: the program and its arguments.
    pub command: Vec<String>,
    /// Top-level directory of the user's repository.
    pub repo: PathBuf,
    /// The base ref as the caller wrote it (`HEAD` by default).
    pub base: String,
    /// Extra environment given with `--env` (recorded; use secrets for sensitive values).
    pub env: BTreeMap<String, String>,
    /// Free-form labels for filtering.
    pub labels: BTreeMap<String, String>,
    /// Hard wall-clock limit in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Limit on silence (no output) in milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Keep the worktree even when `gc` would remove it.
    pub keep: bool,
    /// Automatic checkpoints while the agent works (absent in runs recorded before checkpoints).
    #[serde(default, skip_serializing_if = "CheckpointPolicy::is_default")]
    pub checkpoints: CheckpointPolicy,
    /// The workflow to run (its name); `prompt` is then the task. Absent for a single agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Sandbox, network, secrets, limits and path policy asked for. Absent only in runs recorded
    /// before isolation existed (they ran unconfined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationSpec>,
    /// Work on a shadow branch, promoted onto the run's branch only once validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::ShadowSpec>,
}

/// How the prompt reaches the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptVia {
    /// Substituted into the argv (`{prompt}`), or appended as the last argument.
    #[default]
    Arg,
    /// Written to the agent's standard input, which is then closed.
    Stdin,
    /// Written to a file outside the worktree whose path is substituted for `{prompt_file}`.
    File,
}

impl PromptVia {
    pub fn as_str(self) -> &'static str {
        match self {
            PromptVia::Arg => "arg",
            PromptVia::Stdin => "stdin",
            PromptVia::File => "file",
        }
    }
}

/// The resolved invocation, fixed at creation so the supervisor only executes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LaunchPlan {
    /// The program and arguments, templates already rendered.
    pub argv: Vec<String>,
    pub prompt_via: PromptVia,
    /// Where the prompt file is written when `prompt_via = file`.
    pub prompt_file: Option<PathBuf>,
    /// Non-secret environment for the agent: the agent definition's `env`, then `--env`.
    pub env: BTreeMap<String, String>,
    /// Names of secret variables passed through from the caller's environment (values never recorded).
    pub secret_env: Vec<String>,
    /// Run the agent on a pseudo-terminal.
    pub tty: bool,
    /// The commit the worktree starts from.
    pub base_commit: String,
    /// The run's worktree.
    pub worktree: PathBuf,
    /// The run's branch.
    pub branch: String,
    /// Which provider places the run (`local`).
    pub provider: String,
    /// Grace between stop signals, in milliseconds.
    pub grace_ms: u64,
    /// At most this many runs of the state directory may be active at once (the creator's
    /// `max_concurrent_runs`); this one waits `pending` for a slot. `None`: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// The workflow, resolved at creation: its definition and each step's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Box<WorkflowPlan>>,
    /// The isolation the run gets (absent: recorded before isolation existed; unconfined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationPlan>,
    /// The shadow workspace, when the run has one: the agent's worktree is on its branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::ShadowPlan>,
}

impl LaunchPlan {
    /// The branch checked out in the worktree, which the agent commits to: the shadow branch of
    /// a shadow run, else the run's branch.
    pub fn work_branch(&self) -> &str {
        self.shadow.as_ref().map_or(&self.branch, |s| &s.branch)
    }
}

/// A workflow as resolved when its run was created, so a resumed supervisor runs exactly what
/// was asked even if the files changed since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkflowPlan {
    pub def: WorkflowDef,
    /// Where the definition was read from.
    pub source: PathBuf,
    /// The agent of every agent step, by agent name.
    pub agents: BTreeMap<String, StepAgent>,
    /// Each step's time limit in milliseconds, by step id.
    #[serde(default)]
    pub step_timeouts_ms: BTreeMap<String, u64>,
}

/// How to invoke one agent of a workflow (its definition, without what only `agents` knows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepAgent {
    /// The argv template (`{prompt}`, `{prompt_file}`, `{workdir}`).
    pub command: Vec<String>,
    pub prompt_via: PromptVia,
    /// Non-secret environment (recorded).
    pub env: BTreeMap<String, String>,
    /// Secret variables passed through by name.
    pub secret_env: Vec<String>,
    pub tty: bool,
    /// The agent's own network mode (absent: `proxy` with `domains`, else `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::isolation::NetworkMode>,
    /// Domains the agent needs through the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// The agent's path policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyDef>,
}
