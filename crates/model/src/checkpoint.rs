//! Checkpoint vocabulary shared by the engine, the store and the CLI: why a checkpoint was
//! taken ([`CheckpointTrigger`]), how the worktree was read ([`ScanKind`]), and the per-run
//! policy for automatic checkpoints ([`CheckpointPolicy`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a checkpoint was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointTrigger {
    /// Just before the agent starts (checkpoint 0).
    Baseline,
    /// The file watcher saw enough changes, or changes went unrecorded long enough.
    Watch,
    /// `agentctl checkpoint`.
    Manual,
    /// Before a rollback, so the rollback can be undone.
    PreRollback,
    /// After the agent and the post-run hook ended.
    Final,
    /// At the end of a workflow step.
    Step,
    /// Before `agentctl rm` removed the worktree.
    Rm,
    /// Before `agentctl gc` removed the worktree.
    Gc,
}

impl CheckpointTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointTrigger::Baseline => "baseline",
            CheckpointTrigger::Watch => "watch",
            CheckpointTrigger::Manual => "manual",
            CheckpointTrigger::PreRollback => "pre_rollback",
            CheckpointTrigger::Final => "final",
            CheckpointTrigger::Step => "step",
            CheckpointTrigger::Rm => "rm",
            CheckpointTrigger::Gc => "gc",
        }
    }
}

impl fmt::Display for CheckpointTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the worktree was read for a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    /// Every file was checked (git, on a private index that reuses stat data).
    Full,
    /// Only the paths the file watcher reported were read.
    Paths,
}

/// When a running agent's worktree is checkpointed automatically. Recorded in the run's spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct CheckpointPolicy {
    /// Watch the worktree and checkpoint while the agent works (baseline and final are always taken).
    pub watch: bool,
    /// Checkpoint once this many distinct paths changed since the last checkpoint.
    pub every_changes: u32,
    /// Checkpoint when changes have gone unrecorded this long (milliseconds).
    pub every_ms: u64,
    /// Stop the agent's process group (SIGSTOP/SIGCONT) around each snapshot for a consistent cut.
    pub consistent: bool,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            watch: true,
            every_changes: 200,
            every_ms: 10_000,
            consistent: false,
        }
    }
}

impl CheckpointPolicy {
    pub fn is_default(&self) -> bool {
        *self == CheckpointPolicy::default()
    }
}

/// A checkpoint named on the command line: a number, `base` (checkpoint 0) or `last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointRef {
    Number(u32),
    Last,
}

impl FromStr for CheckpointRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "last" | "latest" => Ok(CheckpointRef::Last),
            "base" | "baseline" => Ok(CheckpointRef::Number(0)),
            _ => s
                .trim_start_matches('#')
                .parse()
                .map(CheckpointRef::Number)
                .map_err(|_| format!("{s:?} is not a checkpoint: use a number, `base` or `last`")),
        }
    }
}

impl fmt::Display for CheckpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointRef::Number(n) => write!(f, "{n}"),
            CheckpointRef::Last => f.write_str("last"),
        }
    }
}
