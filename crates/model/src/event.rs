//! The versioned event schema. A run's history is an append-only sequence of [`Event`]s with
//! per-run sequence numbers; everything else (state, the query projection) is derived from it.
//! The schema is documented in `docs/events.md`; change it only by adding optional fields or new
//! variants, and bump [`EVENT_SCHEMA_VERSION`] for anything else.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointTrigger, ScanKind};
use crate::ids::RunId;
use crate::isolation::{NetworkMode, ResourceLimitsSpec, SandboxMode};
use crate::outcome::StopReason;
use crate::policy::Violation;
use crate::spec::{LaunchPlan, RunSpec};
use crate::state::RunState;
use crate::workflow::WorkflowEnd;

/// Version written in every event's `v` field.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// One record of a run's event log (one JSON line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// Schema version.
    pub v: u32,
    /// Per-run sequence number, starting at 1, without gaps.
    pub seq: u64,
    /// When the writer recorded it.
    pub ts: jiff::Timestamp,
    pub run_id: RunId,
    pub data: EventData,
}

/// What happened. Serialized with a `type` tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventData {
    /// The run was recorded: the request and its resolution.
    Created { spec: Box<RunSpec>, plan: Box<LaunchPlan> },
    /// A supervisor took the run.
    Preparing {
        supervisor_pid: u32,
        /// Process start time (clock ticks since boot), so a pid can't be mistaken after reuse.
        supervisor_start_time: u64,
    },
    /// The worktree and branch exist.
    WorktreeReady {
        path: PathBuf,
        branch: String,
        base_commit: String,
        elapsed_ms: u64,
    },
    /// A lifecycle hook (`pre-run`, `post-run`) ran.
    HookFinished {
        hook: String,
        exit_code: Option<i32>,
        elapsed_ms: u64,
        /// The last few KiB of the hook's combined output.
        output_tail: String,
    },
    /// The agent process started.
    Started {
        pid: u32,
        pgid: u32,
        start_time: u64,
        argv: Vec<String>,
        tty: bool,
    },
    /// The agent's process group was stopped.
    Paused { reason: String },
    /// The agent's process group was continued.
    Resumed { reason: String },
    /// A stop began; signals follow.
    StopRequested { reason: StopReason, grace_ms: u64 },
    /// A signal was sent to processes of the run.
    SignalSent {
        signal: String,
        pids: Vec<u32>,
        pgid: Option<u32>,
    },
    /// The agent's main process ended.
    Exited {
        exit_code: Option<i32>,
        signal: Option<String>,
        elapsed_ms: u64,
    },
    /// The run reached a terminal state.
    Finished {
        state: RunState,
        reason: String,
        exit_code: Option<i32>,
        signal: Option<String>,
    },
    /// The supervisor disappeared without an outcome; recorded by whoever noticed.
    Lost { reason: String, detected_by: String },
    /// The worktree was removed (`gc`).
    WorktreeRemoved { path: PathBuf, forced: bool },
    /// The run waits for a slot: `max_concurrent_runs` (`limit`) runs are active, and `ahead`
    /// older runs wait too. Recorded once, while the run is `pending`.
    Queued { limit: u32, ahead: u32 },
    /// A checkpoint of the worktree was recorded: commit `commit` on `refs/agentctl/runs/<run>/<n>`.
    Checkpointed {
        /// Checkpoint number: 0 is the baseline, then 1, 2, … without gaps.
        n: u32,
        trigger: CheckpointTrigger,
        commit: String,
        tree: String,
        /// The previous checkpoint's commit (the run's base commit for checkpoint 0).
        parent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        scan: ScanKind,
        /// Paths read by a path scan (0 for a full scan).
        #[serde(default)]
        paths_read: u64,
        /// Why a path scan was not possible, when a full scan was taken instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        full_scan_reason: Option<String>,
        /// Whether the agent's process group was stopped during the snapshot.
        #[serde(default)]
        paused: bool,
        /// Time spent reading the worktree.
        scan_ms: u64,
        /// Total time, commit and ref included.
        elapsed_ms: u64,
    },
    /// A checkpoint could not be taken (the run goes on).
    CheckpointFailed { trigger: CheckpointTrigger, reason: String },
    /// Paths in the worktree changed (the continuous file-change log; ignored paths left out).
    FilesChanged { paths: Vec<String> },
    /// The file watcher may have missed changes; the next checkpoint reads the whole worktree.
    WatcherOverflow { reason: String },
    /// The worktree (or `paths` of it) was restored to checkpoint `to`.
    RolledBack {
        to: u32,
        commit: String,
        /// The checkpoint that holds the state before the rollback (roll back to it to undo).
        pre_rollback: u32,
        /// The paths restored; empty means the whole worktree.
        paths: Vec<String>,
        written: u64,
        removed: u64,
        /// Whether the agent's process group was stopped during the rollback.
        paused: bool,
        elapsed_ms: u64,
    },
    /// A workflow step began (its agent or gate starts next).
    StepStarted {
        step: String,
        /// Step executions so far, this one included (1-based).
        hop: u32,
        /// 1, or more when an interrupted execution is restarted.
        attempt: u32,
        cycle: u32,
        max_cycles: u32,
        /// Step executions left after this one.
        remaining_hops: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<String>,
        /// The rendered prompt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
        /// The messages delivered in the prompt (their `message_sent` sequence numbers).
        #[serde(default)]
        delivered: Vec<u64>,
        /// The checkpoint the step starts from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_checkpoint: Option<u32>,
    },
    /// A workflow step ended, with its verdict and what follows it.
    StepFinished {
        step: String,
        hop: u32,
        attempt: u32,
        exit_code: Option<i32>,
        signal: Option<String>,
        /// The verdict the step sent, or `success`/`failure` from its exit.
        verdict: String,
        /// The checkpoint taken at its end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<u32>,
        /// The step that runs next (none when the workflow ends here).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        /// The edge taken (its index in the definition).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edge: Option<u32>,
        /// How the workflow ended, when it ends here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<WorkflowEnd>,
        elapsed_ms: u64,
        /// Why the step's process could not be started (then its verdict is `failure`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A step sent a message (`agentctl msg send`), possibly with a verdict.
    MessageSent {
        /// The sending step.
        from: String,
        /// The step addressed (none: whichever step runs next).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verdict: Option<String>,
        text: String,
        /// The sender's execution.
        hop: u32,
        attempt: u32,
    },
    /// The supervisor of a workflow run disappeared mid-way; the run waits to be resumed
    /// (`agentctl resume`, or a daemon). Recorded by whoever noticed.
    Interrupted { reason: String, detected_by: String },
    /// A new supervisor took an interrupted workflow up again.
    WorkflowResumed {
        reason: String,
        /// The interrupted step, restarted from its start checkpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hop: Option<u32>,
        /// The checkpoint holding the interrupted step's partial changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        saved_checkpoint: Option<u32>,
        /// The checkpoint the worktree was restored to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restored_to: Option<u32>,
    },
    /// `--agent auto`: the router's recommendations and the agent chosen.
    Routed {
        chosen: String,
        recommendations: Vec<RouteRecommendation>,
        elapsed_ms: u64,
        /// The semantic tier's model, when the router used one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    /// How the agent is confined, recorded before it first starts (a workflow: before its
    /// first step). `sandbox = off` is the loud record of an unconfined run.
    Isolated {
        sandbox: SandboxMode,
        /// `bubblewrap`, or `none` when the sandbox is off.
        mechanism: String,
        network: NetworkMode,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allow_domains: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_internal_network: bool,
        #[serde(default, skip_serializing_if = "ResourceLimitsSpec::is_empty")]
        limits: ResourceLimitsSpec,
        /// How the limits are enforced (e.g. `cgroup v1 (memory, pids, cpu)`, or `rlimits +
        /// watcher`); absent without limits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enforcement: Option<String>,
        /// The secret variables the agent receives, by name (never their values).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        secrets: Vec<String>,
        /// Those of them it receives only as placeholders, which the egress proxy replaces with
        /// the values in traffic to their hosts (`--secret NAME@HOST`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        proxied_secrets: Vec<String>,
        /// What the agent may do with git: `commit` (its own branch) or `read_only`; absent when
        /// the sandbox is off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        git: Option<String>,
        /// Things the user should know (an unconfined run, secrets too short to redact, ...).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// The egress proxy refused a connection.
    NetworkRefused { host: String, port: u16, reason: String },
    /// The egress proxy put the values of these secrets in place of their placeholders on a
    /// connection to `host` (names only).
    SecretInjected {
        host: String,
        port: u16,
        secrets: Vec<String>,
    },
    /// Paths that break the run's path policy, and what was done about them (`flagged`,
    /// `reverted`, `stopped`).
    PolicyViolation { violations: Vec<Violation>, action: String },
    /// A sample of the agent's resource use.
    ResourceSample {
        cpu_percent: f64,
        rss_bytes: u64,
        pids: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk_bytes: Option<u64>,
    },
    /// The agent committed in its sandbox, and its branch was moved to that commit.
    BranchUpdated { branch: String, from: String, to: String },
    /// A shadow run's change is being validated for promotion onto the run's branch
    /// (`trigger`: `auto` as the run ends, `manual` for `agentctl promote`).
    PromotionStarted {
        commit: String,
        trigger: String,
        gates: u32,
    },
    /// A promotion gate ended.
    GateFinished {
        command: String,
        exit_code: Option<i32>,
        elapsed_ms: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        timed_out: bool,
        #[serde(default)]
        output_tail: String,
    },
    /// The change passed: the run's branch moved from `previous` to `commit` in one update.
    Promoted {
        branch: String,
        commit: String,
        previous: String,
        commits: u64,
        files_changed: u64,
    },
    /// The change did not pass: the run's branch was not touched.
    PromotionRefused {
        branch: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        reasons: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        violations: Vec<Violation>,
    },
}

/// One recommendation of the router, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteRecommendation {
    pub agent: String,
    pub confidence: f64,
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl EventData {
    /// Records about the worktree and its branch (checkpoints, file changes, rollbacks,
    /// promotions): allowed in every state once the run exists, finished runs included, and
    /// they never change the state.
    pub fn is_worktree_record(&self) -> bool {
        matches!(
            self,
            EventData::Checkpointed { .. }
                | EventData::CheckpointFailed { .. }
                | EventData::FilesChanged { .. }
                | EventData::WatcherOverflow { .. }
                | EventData::RolledBack { .. }
                | EventData::PromotionStarted { .. }
                | EventData::GateFinished { .. }
                | EventData::Promoted { .. }
                | EventData::PromotionRefused { .. }
        )
    }

    /// What a supervisor observes while it works (isolation, refused connections, policy
    /// violations, resource samples, branch updates): recorded in any state a supervisor owns,
    /// never changing it.
    pub fn is_observation(&self) -> bool {
        matches!(
            self,
            EventData::Isolated { .. }
                | EventData::NetworkRefused { .. }
                | EventData::SecretInjected { .. }
                | EventData::PolicyViolation { .. }
                | EventData::ResourceSample { .. }
                | EventData::BranchUpdated { .. }
        )
    }

    /// The `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            EventData::Created { .. } => "created",
            EventData::Preparing { .. } => "preparing",
            EventData::WorktreeReady { .. } => "worktree_ready",
            EventData::HookFinished { .. } => "hook_finished",
            EventData::Started { .. } => "started",
            EventData::Paused { .. } => "paused",
            EventData::Resumed { .. } => "resumed",
            EventData::StopRequested { .. } => "stop_requested",
            EventData::SignalSent { .. } => "signal_sent",
            EventData::Exited { .. } => "exited",
            EventData::Finished { .. } => "finished",
            EventData::Lost { .. } => "lost",
            EventData::WorktreeRemoved { .. } => "worktree_removed",
            EventData::Queued { .. } => "queued",
            EventData::Checkpointed { .. } => "checkpointed",
            EventData::CheckpointFailed { .. } => "checkpoint_failed",
            EventData::FilesChanged { .. } => "files_changed",
            EventData::WatcherOverflow { .. } => "watcher_overflow",
            EventData::RolledBack { .. } => "rolled_back",
            EventData::StepStarted { .. } => "step_started",
            EventData::StepFinished { .. } => "step_finished",
            EventData::MessageSent { .. } => "message_sent",
            EventData::Interrupted { .. } => "interrupted",
            EventData::WorkflowResumed { .. } => "workflow_resumed",
            EventData::Routed { .. } => "routed",
            EventData::Isolated { .. } => "isolated",
            EventData::NetworkRefused { .. } => "network_refused",
            EventData::SecretInjected { .. } => "secret_injected",
            EventData::PolicyViolation { .. } => "policy_violation",
            EventData::ResourceSample { .. } => "resource_sample",
            EventData::BranchUpdated { .. } => "branch_updated",
            EventData::PromotionStarted { .. } => "promotion_started",
            EventData::GateFinished { .. } => "gate_finished",
            EventData::Promoted { .. } => "promoted",
            EventData::PromotionRefused { .. } => "promotion_refused",
        }
    }
}
