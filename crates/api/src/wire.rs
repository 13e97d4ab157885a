//! The API's wire types: request bodies and the answers handlers give, each a Rust type whose
//! JSON Schema (from `schemars`, following the serde attributes) goes into the OpenAPI document
//! ([`crate::openapi`]), so what is documented is what serde reads and writes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use engine::availability::AgentRow;
use engine::view::RunView;
use engine::{CheckpointEntry, DiffSide};
use model::{ErrorCode, Event, RunId};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Request bodies

/// The body of `POST /v1/runs`: what `agentctl run` takes, as JSON. It needs `repo`, and an
/// `agent` or a `command` (which then is the agent), or a `workflow` (with neither); no string
/// may contain NUL.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    {"required": ["agent"], "properties": {"agent": {"type": "string"}}},
    {"required": ["command"], "properties": {"command": {"minItems": 1}}},
    {"required": ["workflow"], "properties": {"workflow": {"type": "string"}}}
]))]
pub struct CreateRun {
    /// A caller-chosen run id (the same id and body again returns the same run): letters,
    /// digits, `.`, `_` and `-`, starting with a letter or digit, without `..`, not ending with
    /// `.` or `.lock`. Not together with an `Idempotency-Key` header.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub id: Option<String>,
    /// The agent (a preset, a user or repository definition, or `command`). Without it,
    /// `command` is the agent.
    pub agent: Option<String>,
    /// The task given to the agent.
    pub prompt: Option<String>,
    /// The program and its arguments for `command`; extra arguments for other agents.
    #[serde(default)]
    #[schemars(inner(regex(pattern = r"^[^\u0000]*$")))]
    pub command: Vec<String>,
    /// An absolute path inside the repository to run in.
    #[schemars(regex(pattern = r"^/[^\u0000]*$"))]
    pub repo: PathBuf,
    /// The base ref (`HEAD` when not given).
    #[schemars(regex(pattern = r"^[^\u0000]*$"))]
    pub base: Option<String>,
    /// Extra environment for the agent (recorded in the run: no secrets).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Free-form labels, for filtering.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Hard wall-clock limit, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Limit on silence (no output), in milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Grace between stop signals, in milliseconds (5000 when not given).
    pub grace_ms: Option<u64>,
    /// Keep the worktree even when `gc` would remove it.
    #[serde(default)]
    pub keep: bool,
    /// Automatic checkpoints while the agent works.
    #[serde(default)]
    pub checkpoints: model::CheckpointPolicy,
    /// Run this workflow (a name from `.agentctl/workflows/` or the user's workflows, or a
    /// `.toml` path in the repository) instead of one agent; `prompt` is its task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The whole environment the run's supervisor — and so the agent — starts with, instead of
    /// the daemon's; never recorded, and not part of the request compared for idempotency.
    /// Accepted only on the daemon's unix socket (its owner's); `agentctl run` sends its own
    /// environment when it goes through a daemon.
    #[serde(default)]
    pub launch_env: Option<BTreeMap<String, String>>,
    /// Sandbox (`on` by default), network mode and allowed domains, secrets (by name), resource
    /// limits and path policy.
    #[serde(default)]
    pub isolation: model::IsolationSpec,
    /// Work on a shadow branch; the change reaches the run's branch only once the path policy
    /// and the gates pass (`promote`: `auto` as the run ends, or `manual` through
    /// `POST /v1/runs/{id}/promote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<model::ShadowSpec>,
}

/// The optional body of `POST /v1/runs/{id}/checkpoints`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckpoint {
    /// A note kept with the checkpoint.
    pub message: Option<String>,
}

/// The body of `POST /v1/runs/{id}/rollback`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The checkpoint to restore.
    #[schemars(with = "CheckpointSelector")]
    pub to: Value,
    /// Only these paths (relative to the worktree); all of it when empty.
    #[serde(default)]
    #[schemars(inner(length(min = 1), regex(pattern = r"^[^\u0000]*$")))]
    pub paths: Vec<PathBuf>,
}

/// A checkpoint: its number, or `last` (`latest`), or `base` (`baseline`, checkpoint 0).
#[derive(Debug)]
pub struct CheckpointSelector;

impl JsonSchema for CheckpointSelector {
    fn schema_name() -> Cow<'static, str> {
        "CheckpointSelector".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A checkpoint: its number, or `last` (`latest`), or `base` (`baseline`, checkpoint 0).",
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                {"type": "string", "pattern": "^(#?[0-9]{1,9}|last|latest|base|baseline)$"}
            ]
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Answers. Fields are in alphabetical order where a handler used to build the object with
// `json!` (whose keys are sorted), so those keys come in the order they always did.

/// An error answer: the CLI's stable code, a message, maybe a hint, and details.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// The stable error code (as the CLI's `--json` errors).
    pub code: ErrorCode,
    /// More about it, per code (often empty).
    pub details: Map<String, Value>,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// One line for a person.
    pub message: String,
}

/// `GET /v1/healthz`: the daemon answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    #[schemars(extend("const" = "ok"))]
    pub status: &'static str,
    /// The daemon's version.
    pub version: &'static str,
}

/// `GET /v1/readyz` when the daemon can read its state.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ready {
    #[schemars(extend("const" = "ready"))]
    pub status: &'static str,
}

/// `GET /v1/readyz` when the daemon cannot read its state.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NotReady {
    /// Why not.
    pub reason: String,
    #[schemars(extend("const" = "not_ready"))]
    pub status: &'static str,
}

/// An event of any run as the daemon's journal numbers it (`GET /v1/events`): the run's event
/// with `g`, its position across all runs (1, 2, 3, … without gaps).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GlobalEvent {
    /// The position in the daemon's journal; the SSE message id.
    pub g: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// A page of the daemon's journal (`GET /v1/events` as JSON).
#[derive(Debug, Serialize, JsonSchema)]
pub struct GlobalEvents {
    pub events: Vec<GlobalEvent>,
    /// Pass as `after` for the next page (the last `g` here, or `after` when there is none).
    pub next_after: u64,
}

/// One page of runs, newest first.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunPage {
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
    pub runs: Vec<RunView>,
}

/// A run's event log (after the `after` sequence number, when given).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunEvents {
    pub events: Vec<Event>,
    pub run: RunId,
}

/// Captured output from an offset of a run's output log.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunLogs {
    /// Output chunks, as `agentctl logs --json` prints them.
    #[schemars(with = "Vec<LogChunk>")]
    pub chunks: Vec<Value>,
    /// Where to continue from (`offset`).
    pub next_offset: u64,
    pub run: RunId,
}

/// One captured output chunk: its text in `data`, or its bytes in `b64` when they are not
/// UTF-8 (only the schema: the engine's `view::chunk_json` writes it).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LogChunk {
    Text {
        /// When it was captured.
        ts: jiff::Timestamp,
        stream: model::provider::Stream,
        /// The output, as written.
        data: String,
    },
    Bytes {
        /// When it was captured.
        ts: jiff::Timestamp,
        stream: model::provider::Stream,
        /// The output, base64 (standard alphabet, padded).
        b64: String,
    },
}

/// A run's checkpoints, oldest first.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CheckpointList {
    pub checkpoints: Vec<CheckpointEntry>,
    pub run: RunId,
}

/// A diff between two checkpoints, or a checkpoint and the live worktree (only the schema:
/// the engine's `view::diff_json` writes it).
#[derive(Debug, Serialize, JsonSchema)]
pub struct DiffBody {
    pub run: RunId,
    pub from: DiffSide,
    pub to: DiffSide,
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
    pub files: Vec<DiffFile>,
    /// git's text of the diff, when `format` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One changed file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DiffFile {
    /// Worktree-relative path.
    pub path: String,
    pub status: FileStatus,
    /// Lines added; `null` for binary content.
    pub insertions: Option<u64>,
    /// Lines removed; `null` for binary content.
    pub deletions: Option<u64>,
    /// Whether git counted no lines (binary content).
    pub binary: bool,
    pub old_mode: String,
    pub new_mode: String,
}

/// How a file changed.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    /// E.g. a file became a symlink.
    TypeChanged,
}

/// Every agent with its availability.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct AgentList {
    pub agents: Vec<AgentRow>,
}

// ---------------------------------------------------------------------------------------------
// Maintenance: gc and reconcile

/// The body of `POST /v1/gc`: what `agentctl gc` takes.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Only runs finished at least this long ago (milliseconds; 7 days when not given).
    pub older_than_ms: Option<u64>,
    /// Say what would be removed; remove nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Remove worktrees whose state cannot be saved as a checkpoint too.
    #[serde(default)]
    pub force: bool,
    /// Also delete the checkpoint refs of runs removed earlier.
    #[serde(default)]
    pub prune_refs: bool,
}

/// What `gc` did (as `agentctl gc --json`).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct GcReport {
    pub runs: Vec<GcRun>,
    pub pruned_refs: Vec<PrunedRefsView>,
}

/// One run `gc` looked at.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct GcRun {
    pub id: RunId,
    pub worktree: PathBuf,
    /// `removed`, `would_remove`, `skipped_unsaved` (its state could not be checkpointed) or
    /// `failed`.
    pub action: String,
    pub detail: Option<String>,
    /// The ref of the checkpoint holding the removed worktree's last state.
    pub checkpoint: Option<String>,
}

impl From<&engine::GcItem> for GcRun {
    fn from(i: &engine::GcItem) -> Self {
        GcRun {
            id: i.id.clone(),
            worktree: i.worktree.clone(),
            action: i.action.to_owned(),
            detail: i.detail.clone(),
            checkpoint: i.checkpoint.clone(),
        }
    }
}

/// Checkpoint refs of one removed run deleted (or, in a dry run, to be deleted).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PrunedRefsView {
    pub repo: PathBuf,
    pub run: String,
    pub refs: u64,
}

impl From<&engine::PrunedRefs> for PrunedRefsView {
    fn from(p: &engine::PrunedRefs) -> Self {
        PrunedRefsView {
            repo: p.repo.clone(),
            run: p.run.clone(),
            refs: p.refs as u64,
        }
    }
}

/// What `reconcile` found and did (as `agentctl reconcile --json`).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReconcileReport {
    pub dry_run: bool,
    pub findings: Vec<FindingView>,
}

/// One discrepancy between the store, supervisors, processes and worktrees.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct FindingView {
    /// `lost_supervisor`, `unstarted_run`, `worktree_missing`, `orphan_worktree` or
    /// `orphan_supervisor`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub detail: String,
    /// `fixed`, `would_fix` (dry run) or `reported` (not safe to fix).
    pub action: String,
}

impl From<&engine::reconcile::Finding> for FindingView {
    fn from(f: &engine::reconcile::Finding) -> Self {
        FindingView {
            kind: f.kind.to_owned(),
            run: f.run.clone(),
            path: f.path.clone(),
            pid: f.pid,
            detail: f.detail.clone(),
            action: f.action.to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workflows

/// A step id or a verdict: one word of letters, digits, `-` and `_` (as `model::workflow`
/// checks them).
const WORD: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// The body of `POST /v1/runs/{id}/messages`: a message from the workflow step now running (as
/// `agentctl msg send`). `to`, `verdict` and `from` may be left out or `null`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The message (no NUL characters: it may end up in a step's prompt).
    #[schemars(regex(pattern = r"^[^\u0000]*$"))]
    pub text: String,
    /// The step to give it to; without it, the step that follows the sender.
    #[schemars(regex(pattern = WORD))]
    pub to: Option<String>,
    /// The sender's verdict, which selects the edge taken when the step ends.
    #[schemars(regex(pattern = WORD))]
    pub verdict: Option<String>,
    /// The step the sender believes it is; refused when another step is running.
    #[schemars(regex(pattern = WORD))]
    pub from: Option<String>,
}

/// What `POST /v1/runs/{id}/messages` answers (as `agentctl msg send --json` prints it).
pub use engine::workflow::messages::MessageReceipt;

/// The optional body of `POST /v1/runs/{id}/resume`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRun {
    /// The whole environment the new supervisor — and so the steps — starts with, instead of
    /// the daemon's; never recorded. Accepted only on the daemon's unix socket (its owner's);
    /// `agentctl resume` sends its own environment when it goes through a daemon.
    #[serde(default)]
    pub launch_env: Option<BTreeMap<String, String>>,
}

/// A run's messages, oldest first (as `agentctl msgs --json`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct MessageList {
    pub messages: Vec<model::workflow::MessageRecord>,
}

/// Where a workflow run stands (`GET /v1/runs/{id}/workflow`): the workflow's name and its
/// progress folded from the run's events (as the `workflow` object of `agentctl show --json`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct WorkflowProgress {
    pub run: RunId,
    /// The workflow's name.
    pub workflow: String,
    #[serde(flatten)]
    pub progress: model::workflow::Progress,
}

/// A workflow definition (as `agentctl workflows --json` lists it).
pub use engine::workflow::WorkflowEntry;

/// The workflows a repository can run, the repository's shadowing the user's of the same name.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowEntry>,
}
