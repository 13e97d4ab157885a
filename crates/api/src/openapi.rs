//! The API's OpenAPI 3.1 document, generated from the code, and the wire types it describes.
//!
//! Request and response bodies are Rust types: the engine's and the model's (`RunView`,
//! `Event`, `CheckpointInfo`, …) and the wrappers below, which the handlers answer with. Their
//! JSON Schemas come from `schemars` (which follows the serde attributes, so the schema is what
//! serde writes and reads) and go into `components/schemas`. The operations come from
//! [`ROUTES`], one entry per method and path the router serves: tests check that the router
//! (`routes/mod.rs`) and this table list the same routes, that the answers match their schemas,
//! and that `docs/openapi.json` is this document (`UPDATE_OPENAPI=1 cargo test -p agentctl-api
//! openapi` rewrites it). `GET /v1/openapi.json` serves it, without a token.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use engine::availability::AgentRow;
use engine::view::RunView;
use engine::{CheckpointEntry, CheckpointInfo, DiffSide, RmReport, RollbackInfo};
use model::{ErrorCode, Event, RunId, RunState};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::status_of;

// ---------------------------------------------------------------------------------------------
// Request bodies

/// The body of `POST /v1/runs`: what `agentctl run` takes, as JSON. It needs `repo`, and an
/// `agent` or a `command` (which then is the agent); no string may contain NUL.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    {"required": ["agent"], "properties": {"agent": {"type": "string"}}},
    {"required": ["command"], "properties": {"command": {"minItems": 1}}}
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

/// One page of runs, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunPage {
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
    pub runs: Vec<RunView>,
}

/// A run's event log (after the `after` sequence number, when given).
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunEvents {
    pub events: Vec<Event>,
    pub run: RunId,
}

/// Captured output from an offset of a run's output log.
#[derive(Debug, Serialize, JsonSchema)]
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
#[derive(Debug, Serialize, JsonSchema)]
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
#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentList {
    pub agents: Vec<AgentRow>,
}

// ---------------------------------------------------------------------------------------------
// The route table

/// An HTTP method the API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// Where a parameter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
}

/// The schema of a type, as a `$ref` to `components/schemas` (or inline, for simple types).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// A path, query or header parameter.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub location: In,
    pub required: bool,
    pub description: &'static str,
    pub schema: fn() -> Value,
}

/// What a successful answer holds.
#[derive(Debug)]
pub enum Content {
    Json(SchemaFn),
    /// JSON, or a server-sent event stream.
    JsonOrEvents(SchemaFn),
    /// `text/plain` (Prometheus' text format).
    Metrics,
    /// This document.
    OpenApi,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    pub content: Content,
}

/// A request body.
#[derive(Debug)]
pub struct RequestBody {
    pub required: bool,
    pub schema: SchemaFn,
}

/// One operation: a method on a path.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    /// Served without a bearer token.
    pub public: bool,
    /// Does its work with the engine on a blocking thread (so it can fail with the state
    /// directory's and the runtime's errors, and take longer than `--request-timeout`).
    pub engine: bool,
    pub params: &'static [Param],
    pub body: Option<RequestBody>,
    pub answers: &'static [Answer],
    /// The error codes this operation can answer besides the ones every operation of its kind
    /// can (see [`Route::error_codes`]).
    pub errors: &'static [ErrorCode],
}

impl Route {
    /// Every error code this operation can answer, in [`ErrorCode::ALL`]'s order.
    pub fn error_codes(&self) -> Vec<ErrorCode> {
        let mut codes: Vec<ErrorCode> = self.errors.to_vec();
        if !self.public {
            codes.push(ErrorCode::Unauthorized);
        }
        if self.path.contains("{id}") {
            codes.extend([ErrorCode::RunNotFound, ErrorCode::RunAmbiguous]);
        }
        if self.engine {
            codes.extend([
                ErrorCode::StateDirUnusable,
                ErrorCode::Io,
                ErrorCode::Internal,
                ErrorCode::RequestTimeout,
            ]);
        }
        if self.body.is_some() {
            codes.extend([ErrorCode::InvalidArgument, ErrorCode::PayloadTooLarge]);
        }
        if self.params.iter().any(|p| p.location != In::Path) {
            codes.push(ErrorCode::InvalidArgument);
        }
        ErrorCode::ALL.into_iter().filter(|c| codes.contains(c)).collect()
    }
}

/// The largest output-log `offset` accepted (1 TiB, far beyond any run's output): the
/// provider seeks to the offset, and file systems refuse to seek past their largest file size
/// (16 TiB on ext4) with an error that would otherwise be a 500.
pub const MAX_LOG_OFFSET: u64 = 1 << 40;

const RUN_ID: Param = Param {
    name: "id",
    location: In::Path,
    required: true,
    description: "A run id, or a unique prefix of one.",
    schema: || json!({"type": "string", "minLength": 1}),
};

fn u64_schema() -> Value {
    json!({"type": "integer", "format": "uint64", "minimum": 0, "maximum": u64::MAX})
}

fn flag_schema() -> Value {
    json!({"type": "boolean", "default": false})
}

fn checkpoint_ref(live: bool) -> Value {
    let pattern = if live {
        "^(#?[0-9]{1,9}|last|latest|base|baseline|live)$"
    } else {
        "^(#?[0-9]{1,9}|last|latest|base|baseline)$"
    };
    json!({"type": "string", "pattern": pattern})
}

use ErrorCode as E;

/// Every operation of the API. The router in `routes/mod.rs` serves exactly these (a test
/// checks it).
pub static ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/v1/healthz",
        operation_id: "healthz",
        tag: "health",
        summary: "The daemon answers",
        description: "Always 200 while the daemon runs. No token needed.",
        public: true,
        engine: false,
        params: &[],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The daemon is up.",
            content: Content::Json(schema::<Health>),
        }],
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/readyz",
        operation_id: "readyz",
        tag: "health",
        summary: "The daemon can read its state",
        description: "200 when the state directory's database answers, else 503. No token needed.",
        public: true,
        // Its failures are the 503 answer.
        engine: false,
        params: &[],
        body: None,
        answers: &[
            Answer {
                status: 200,
                description: "Ready.",
                content: Content::Json(schema::<Ready>),
            },
            Answer {
                status: 503,
                description: "Not ready: the state cannot be read.",
                content: Content::Json(schema::<NotReady>),
            },
        ],
        errors: &[E::RequestTimeout],
    },
    Route {
        method: Method::Get,
        path: "/v1/openapi.json",
        operation_id: "getOpenApi",
        tag: "meta",
        summary: "This document",
        description: "The OpenAPI 3.1 document of the API, generated from the code. No token needed.",
        public: true,
        engine: false,
        params: &[],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The OpenAPI document.",
            content: Content::OpenApi,
        }],
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs",
        operation_id: "listRuns",
        tag: "runs",
        summary: "List runs",
        description: "Runs, newest first, one page at a time. `state` and `label` may repeat: states are \
                      ORed, labels ANDed.",
        public: false,
        engine: true,
        params: &[
            Param {
                name: "state",
                location: In::Query,
                required: false,
                description: "Only runs in these states (a value may also hold several, comma-separated).",
                schema: || json!({"type": "array", "items": {"$ref": "#/components/schemas/RunState"}}),
            },
            Param {
                name: "agent",
                location: In::Query,
                required: false,
                description: "Only runs of this agent.",
                schema: || json!({"type": "string"}),
            },
            Param {
                name: "label",
                location: In::Query,
                required: false,
                description: "Only runs with these labels, each `KEY=VALUE`.",
                schema: || json!({"type": "array", "items": {"type": "string", "pattern": "="}}),
            },
            Param {
                name: "limit",
                location: In::Query,
                required: false,
                description: "Runs per page.",
                schema: || json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
            },
            Param {
                name: "cursor",
                location: In::Query,
                required: false,
                description: "The previous page's `next_cursor`.",
                schema: || json!({"type": "string", "pattern": "^-?[0-9]+~."}),
            },
        ],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "A page of runs.",
            content: Content::Json(schema::<RunPage>),
        }],
        errors: &[],
    },
    Route {
        method: Method::Post,
        path: "/v1/runs",
        operation_id: "createRun",
        tag: "runs",
        summary: "Create a run",
        description: "Records the run and starts its supervisor, which starts the agent; answers at once. \
                      Idempotent: the same `id` (or `Idempotency-Key`) with the same body answers 200 with \
                      the existing run, with another body 409 `RUN_ID_CONFLICT`.",
        public: false,
        engine: true,
        params: &[Param {
            name: "Idempotency-Key",
            location: In::Header,
            required: false,
            description: "Stands for the run id `key-<first 20 hex of its SHA-256>`. Not together with `id`.",
            schema: || json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}),
        }],
        body: Some(RequestBody {
            required: true,
            schema: schema::<CreateRun>,
        }),
        answers: &[
            Answer {
                status: 201,
                description: "The new run.",
                content: Content::Json(schema::<RunView>),
            },
            Answer {
                status: 200,
                description: "The run this id or key already made, with the same body.",
                content: Content::Json(schema::<RunView>),
            },
        ],
        errors: &[
            E::RunIdConflict,
            E::AgentNotFound,
            E::AgentUnavailable,
            E::BaseNotFound,
            E::NotAGitRepo,
            E::InvalidConfig,
            E::GitFailed,
            E::SpawnFailed,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{id}",
        operation_id: "getRun",
        tag: "runs",
        summary: "Show a run",
        description: "The run, its state checked against its supervisor first (as `agentctl show --json`).",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The run.",
            content: Content::Json(schema::<RunView>),
        }],
        errors: &[E::InvalidStateTransition, E::SpawnFailed],
    },
    Route {
        method: Method::Delete,
        path: "/v1/runs/{id}",
        operation_id: "deleteRun",
        tag: "runs",
        summary: "Remove a run",
        description: "As `agentctl rm`: the worktree is saved as a checkpoint, then removed, and the branch \
                      deleted when it has no commits of its own. An active run is refused unless `force`.",
        public: false,
        engine: true,
        params: &[
            RUN_ID,
            Param {
                name: "force",
                location: In::Query,
                required: false,
                description: "Stop and remove an active run, and remove a worktree whose state cannot be saved.",
                schema: flag_schema,
            },
        ],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "What was removed.",
            content: Content::Json(schema::<RmReport>),
        }],
        errors: &[
            E::RunActive,
            E::WorktreeDirty,
            E::InvalidStateTransition,
            E::CheckpointFailed,
            E::GitFailed,
            E::SpawnFailed,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/runs/{id}/stop",
        operation_id: "stopRun",
        tag: "runs",
        summary: "Stop a run",
        description: "Starts the stop (SIGINT, SIGTERM, SIGKILL, `grace_ms` apart) and answers at once.",
        public: false,
        engine: true,
        params: &[
            RUN_ID,
            Param {
                name: "grace_ms",
                location: In::Query,
                required: false,
                description: "Milliseconds between the signals (5000 when not given).",
                schema: u64_schema,
            },
        ],
        body: None,
        answers: &[
            Answer {
                status: 202,
                description: "The stop has started.",
                content: Content::Json(schema::<RunView>),
            },
            Answer {
                status: 200,
                description: "The run had already ended.",
                content: Content::Json(schema::<RunView>),
            },
        ],
        errors: &[E::RunActive, E::InvalidStateTransition, E::SpawnFailed],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{id}/events",
        operation_id: "getRunEvents",
        tag: "runs",
        summary: "A run's events",
        description: "The run's event log, as JSON, or as a server-sent event stream (one message per event: \
                      `id` its sequence number, `event` its type, `data` the event as JSON) when the request \
                      accepts `text/event-stream` or asks to `follow`.",
        public: false,
        engine: true,
        params: &[
            RUN_ID,
            Param {
                name: "after",
                location: In::Query,
                required: false,
                description: "Only events after this sequence number.",
                schema: u64_schema,
            },
            Param {
                name: "follow",
                location: In::Query,
                required: false,
                description: "Stream, and keep the stream open until the run has ended and its last event is sent.",
                schema: flag_schema,
            },
            Param {
                name: "Last-Event-ID",
                location: In::Header,
                required: false,
                description: "A reconnecting stream's last sequence number (as `after`).",
                schema: || json!({"type": "string", "pattern": "^[0-9]{1,19}$"}),
            },
        ],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The events.",
            content: Content::JsonOrEvents(schema::<RunEvents>),
        }],
        errors: &[E::InvalidStateTransition, E::SpawnFailed],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{id}/logs",
        operation_id: "getRunLogs",
        tag: "runs",
        summary: "A run's output",
        description: "Captured output from byte `offset` of the run's output log; poll with `next_offset` to \
                      follow.",
        public: false,
        engine: true,
        params: &[
            RUN_ID,
            Param {
                name: "offset",
                location: In::Query,
                required: false,
                description: "Byte offset in the output log.",
                schema: || json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_LOG_OFFSET}),
            },
        ],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "Output chunks.",
            content: Content::Json(schema::<RunLogs>),
        }],
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{id}/checkpoints",
        operation_id: "listCheckpoints",
        tag: "checkpoints",
        summary: "A run's checkpoints",
        description: "Every checkpoint with its changes against the one before (as `agentctl checkpoints --json`).",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The checkpoints.",
            content: Content::Json(schema::<CheckpointList>),
        }],
        errors: &[E::InvalidStateTransition, E::NotAGitRepo, E::GitFailed, E::SpawnFailed],
    },
    Route {
        method: Method::Post,
        path: "/v1/runs/{id}/checkpoints",
        operation_id: "createCheckpoint",
        tag: "checkpoints",
        summary: "Take a checkpoint",
        description: "Checkpoints the worktree now. The body is optional.",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: Some(RequestBody {
            required: false,
            schema: schema::<CreateCheckpoint>,
        }),
        answers: &[
            Answer {
                status: 201,
                description: "The new checkpoint.",
                content: Content::Json(schema::<CheckpointInfo>),
            },
            Answer {
                status: 200,
                description: "Nothing changed since the last checkpoint: that one (`created` is false).",
                content: Content::Json(schema::<CheckpointInfo>),
            },
        ],
        errors: &[
            E::WorktreeGone,
            E::RunActive,
            E::InvalidStateTransition,
            E::CheckpointFailed,
            E::GitFailed,
            E::SpawnFailed,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{id}/diff",
        operation_id: "getDiff",
        tag: "checkpoints",
        summary: "Diff checkpoints",
        description: "Per-file changes between two checkpoints, or a checkpoint and the live worktree (as \
                      `agentctl diff --json`), with git's text when `format` is given.",
        public: false,
        engine: true,
        params: &[
            RUN_ID,
            Param {
                name: "from",
                location: In::Query,
                required: false,
                description: "A checkpoint number, `base` or `last` (the baseline when not given).",
                schema: || checkpoint_ref(false),
            },
            Param {
                name: "to",
                location: In::Query,
                required: false,
                description: "A checkpoint, or `live` (the live worktree when there is one, else the last checkpoint).",
                schema: || checkpoint_ref(true),
            },
            Param {
                name: "path",
                location: In::Query,
                required: false,
                description: "Only these paths (relative to the worktree).",
                schema: || json!({"type": "array", "items": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"}}),
            },
            Param {
                name: "format",
                location: In::Query,
                required: false,
                description: "Add git's text of the diff as `text`.",
                schema: || json!({"type": "string", "enum": ["patch", "stat", "name-only"]}),
            },
        ],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The diff.",
            content: Content::Json(schema::<DiffBody>),
        }],
        errors: &[
            E::CheckpointNotFound,
            E::WorktreeGone,
            E::InvalidStateTransition,
            E::NotAGitRepo,
            E::CheckpointFailed,
            E::GitFailed,
            E::SpawnFailed,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/runs/{id}/rollback",
        operation_id: "rollbackRun",
        tag: "checkpoints",
        summary: "Roll back to a checkpoint",
        description: "Restores the worktree (or `paths` of it) to a checkpoint, as `agentctl rollback`: a \
                      pre-rollback checkpoint first; a running agent is paused meanwhile.",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: Some(RequestBody {
            required: true,
            schema: schema::<Rollback>,
        }),
        answers: &[Answer {
            status: 200,
            description: "What was restored.",
            content: Content::Json(schema::<RollbackInfo>),
        }],
        errors: &[
            E::CheckpointNotFound,
            E::WorktreeGone,
            E::RunActive,
            E::InvalidStateTransition,
            E::CheckpointFailed,
            E::GitFailed,
            E::SpawnFailed,
        ],
    },
    Route {
        method: Method::Get,
        path: "/v1/agents",
        operation_id: "listAgents",
        tag: "agents",
        summary: "List agents",
        description: "Presets and the user's definitions, plus the repository's when `repo` is given, each \
                      with its availability (as `agentctl agents --json`).",
        public: false,
        engine: true,
        params: &[
            Param {
                name: "repo",
                location: In::Query,
                required: false,
                description: "An absolute path in a repository whose `.agentctl/agents.toml` to include.",
                schema: || json!({"type": "string", "pattern": "^/[^\\u0000]*$"}),
            },
            Param {
                name: "versions",
                location: In::Query,
                required: false,
                description: "Run each available agent's version command (not the repository's definitions').",
                schema: flag_schema,
            },
        ],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The agents.",
            content: Content::Json(schema::<AgentList>),
        }],
        errors: &[E::NotAGitRepo, E::InvalidConfig, E::GitFailed],
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        operation_id: "getMetrics",
        tag: "metrics",
        summary: "Prometheus metrics",
        description: "Run counts by state, run starts, events seen and durations, in Prometheus' text format.",
        public: false,
        engine: true,
        params: &[],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The metrics.",
            content: Content::Metrics,
        }],
        errors: &[],
    },
];

// ---------------------------------------------------------------------------------------------
// The document

fn generator(serialize: bool) -> SchemaGenerator {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    if serialize {
        settings.for_serialize().into_generator()
    } else {
        settings.for_deserialize().into_generator()
    }
}

/// Renames `$ref`s to `components/schemas` by `renames`.
fn rename_refs(v: &mut Value, renames: &BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
                && let Some(new) = renames.get(name)
            {
                *r = format!("#/components/schemas/{new}");
            }
            map.values_mut().for_each(|v| rename_refs(v, renames));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renames)),
        _ => {}
    }
}

/// The OpenAPI document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    // Answers are what serde writes (every field that is always there is required); request
    // bodies what it reads (fields with defaults are optional). A type both ways whose two
    // schemas differ gets an `…Input` schema for requests.
    let mut out = generator(true);
    let mut input = generator(false);
    // Referenced by name below.
    let _ = out.subschema_for::<ErrorBody>();
    let _ = out.subschema_for::<RunState>();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let mut bodies: Vec<(&str, &str)> = Vec::new();
    for r in ROUTES {
        let mut op = Map::new();
        op.insert("operationId".into(), r.operation_id.into());
        op.insert("summary".into(), r.summary.into());
        op.insert("description".into(), r.description.into());
        op.insert("tags".into(), json!([r.tag]));
        op.insert(
            "security".into(),
            if r.public { json!([]) } else { json!([{"bearer": []}]) },
        );
        if !r.params.is_empty() {
            let params: Vec<Value> = r
                .params
                .iter()
                .map(|p| {
                    let mut v = json!({
                        "name": p.name,
                        "in": match p.location { In::Path => "path", In::Query => "query", In::Header => "header" },
                        "required": p.required,
                        "description": p.description,
                        "schema": (p.schema)(),
                    });
                    if p.location == In::Query && (p.schema)()["type"] == "array" {
                        v["style"] = "form".into();
                        v["explode"] = true.into();
                    }
                    v
                })
                .collect();
            op.insert("parameters".into(), params.into());
        }
        if let Some(b) = &r.body {
            let s = (b.schema)(&mut input).to_value();
            bodies.push((r.path, r.method.as_str()));
            op.insert(
                "requestBody".into(),
                json!({"required": b.required, "content": {"application/json": {"schema": s}}}),
            );
        }
        let mut responses: BTreeMap<String, (Vec<String>, Vec<Value>)> = BTreeMap::new();
        for a in r.answers {
            let (descs, schemas) = responses.entry(a.status.to_string()).or_default();
            descs.push(a.description.to_owned());
            schemas.push(match &a.content {
                Content::Json(f) => json!({"application/json": {"schema": f(&mut out).to_value()}}),
                Content::JsonOrEvents(f) => json!({
                    "application/json": {"schema": f(&mut out).to_value()},
                    "text/event-stream": {"schema": {
                        "description": "Each server-sent event: `id` the event's sequence number, `event` its type, `data` the event (an `Event`) as one line of JSON.",
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "pattern": "^[0-9]+$"},
                            "event": {"type": "string"},
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {"$ref": "#/components/schemas/Event"}
                            }
                        },
                        "required": ["id", "event", "data"]
                    }},
                }),
                Content::Metrics => json!({"text/plain": {"schema": {"type": "string"}}}),
                Content::OpenApi => json!({"application/json": {"schema": {"type": "object"}}}),
            });
        }
        let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for code in r.error_codes() {
            by_status
                .entry(status_of(code).as_u16())
                .or_default()
                .push(code.as_str());
        }
        for (status, codes) in by_status {
            let (descs, schemas) = responses.entry(status.to_string()).or_default();
            let list = codes.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
            descs.push(format!("Error: {list}."));
            schemas.push(json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}));
        }
        let mut resp = Map::new();
        for (status, (descs, contents)) in responses {
            let mut answer = json!({"description": descs.join(" Or: ")});
            answer["content"] = if contents.len() == 1 {
                contents.into_iter().next().expect("one")
            } else {
                // Several answers share a status: each media type's schema is any of theirs.
                let mut merged: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                for c in contents {
                    for (media, v) in c.as_object().expect("content").clone() {
                        merged.entry(media).or_default().push(v["schema"].clone());
                    }
                }
                merged
                    .into_iter()
                    .map(|(media, mut s)| {
                        s.dedup();
                        let schema = if s.len() == 1 {
                            s.remove(0)
                        } else {
                            json!({ "anyOf": s })
                        };
                        (media, json!({ "schema": schema }))
                    })
                    .collect::<Map<String, Value>>()
                    .into()
            };
            if status == "401" {
                answer["headers"] = json!({"WWW-Authenticate": {
                    "description": "`Bearer`.",
                    "schema": {"type": "string"}
                }});
            }
            resp.insert(status, answer);
        }
        op.insert("responses".into(), resp.into());
        let method = r.method.as_str().to_ascii_lowercase();
        let prev = paths.entry(r.path).or_default().insert(method, op.into());
        assert!(prev.is_none(), "{} {} is in ROUTES twice", r.method.as_str(), r.path);
    }

    // Merge the request schemas into the answers'.
    let mut schemas = out.take_definitions(true);
    let input_defs = input.take_definitions(true);
    let mut renames = BTreeMap::new();
    for (name, s) in &input_defs {
        if schemas.get(name).is_some_and(|o| o != s) {
            renames.insert(name.clone(), format!("{name}Input"));
        }
    }
    for (name, mut s) in input_defs {
        rename_refs(&mut s, &renames);
        let name = renames.get(&name).cloned().unwrap_or(name);
        schemas.insert(name, s);
    }
    let mut paths: Map<String, Value> = paths.into_iter().map(|(p, ops)| (p.to_owned(), ops.into())).collect();
    for (path, method) in &bodies {
        let op = &mut paths[*path][method.to_ascii_lowercase()];
        rename_refs(&mut op["requestBody"], &renames);
    }

    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "agentctl API",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "Runs AI coding agents as supervised runs: the /v1 API of `agentctl serve`.",
            "description": "Generated from the code (crates/api/src/openapi.rs); see docs/api.md. Errors have the \
                            CLI's body and stable codes; every route but the health checks and this document \
                            needs `Authorization: Bearer TOKEN`.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "health", "description": "Liveness and readiness."},
            {"name": "runs", "description": "Create, list, show, stop and remove runs; their events and output."},
            {"name": "checkpoints", "description": "A run's checkpoints: take, list, diff, roll back."},
            {"name": "agents", "description": "The agent registry."},
            {"name": "metrics", "description": "Prometheus metrics."},
            {"name": "meta", "description": "This document."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `agentctl token create`, or the daemon's default token in `<state>/daemon/token`."
                }
            }
        }
    })
}

/// The document as `docs/openapi.json` holds it: pretty-printed, with a final newline.
pub fn pretty() -> String {
    let mut text = serde_json::to_string_pretty(document()).expect("the document serializes");
    text.push('\n');
    text
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> Response {
    static BODY: OnceLock<String> = OnceLock::new();
    let body = BODY.get_or_init(|| serde_json::to_string(document()).expect("the document serializes"));
    ([(CONTENT_TYPE, "application/json")], body.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::{Read, Write};
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    /// `docs/openapi.json`, from this crate.
    fn checked_in() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
    }

    #[test]
    fn docs_openapi_json_is_the_generated_document() {
        let path = checked_in();
        let want = pretty();
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/openapi.json is not the document the code generates (or is missing): regenerate it \
             with `UPDATE_OPENAPI=1 cargo test -p agentctl-api openapi` and commit it"
        );
    }

    /// Where `name(` is called in `text` (not as the end of a longer name).
    fn calls(text: &str, name: &str) -> Vec<usize> {
        let needle = format!("{name}(");
        text.match_indices(&needle)
            .map(|(k, _)| k)
            .filter(|&k| {
                let before = text[..k].chars().next_back().unwrap_or(' ');
                !(before.is_alphanumeric() || before == '_')
            })
            .collect()
    }

    /// The (method, path) pairs `routes/mod.rs` registers, read from its source.
    fn router_routes() -> BTreeSet<(String, String)> {
        routes_in(include_str!("routes/mod.rs"))
    }

    /// The (method, path) pairs of every `.route("PATH", get(…).post(…))` in `src`.
    fn routes_in(src: &str) -> BTreeSet<(String, String)> {
        for unsupported in [
            "nest",
            "nest_service",
            "route_service",
            "any",
            "on",
            "any_service",
            "on_service",
        ] {
            assert!(
                calls(src, unsupported).is_empty(),
                "routes/mod.rs calls `{unsupported}`: teach this test (and ROUTES) about it"
            );
        }
        let mut out = BTreeSet::new();
        for start in calls(src, "route") {
            let rest = &src[start + "route(".len()..];
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(j, _)| j)
                .expect("a closed .route(");
            let args = &rest[..end];
            let open = args.find('"').expect("a path literal");
            let close = open + 1 + args[open + 1..].find('"').expect("a path literal");
            let path = &args[open + 1..close];
            let handlers = &args[close + 1..];
            let mut found = false;
            for m in [
                "get", "post", "put", "patch", "delete", "head", "options", "trace", "connect",
            ] {
                if !calls(handlers, m).is_empty() {
                    out.insert((m.to_ascii_uppercase(), path.to_owned()));
                    found = true;
                }
            }
            assert!(found, "no method in .route(\"{path}\" …)");
        }
        out
    }

    #[test]
    fn the_route_reader_sees_every_route() {
        let src = r#"
            let r = Router::new()
                .route("/a", get(x::list).post(x::create))
                .route(
                    "/a/{id}",
                    axum::routing::delete(x::delete).get(x::get),
                )
                .route_layer(middleware::from_fn(auth));
            fn router() {}
        "#;
        let want: BTreeSet<(String, String)> =
            [("GET", "/a"), ("POST", "/a"), ("DELETE", "/a/{id}"), ("GET", "/a/{id}")]
                .into_iter()
                .map(|(m, p)| (m.to_owned(), p.to_owned()))
                .collect();
        assert_eq!(routes_in(src), want);
        let result = std::panic::catch_unwind(|| routes_in(".nest(\"/b\", other)"));
        assert!(result.is_err(), "a nested router must not go unnoticed");
    }

    fn documented_routes() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, ops) in document()["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_routes_the_router_serves() {
        let router = router_routes();
        let doc = documented_routes();
        let table: BTreeSet<_> = ROUTES
            .iter()
            .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(table.len(), ROUTES.len(), "a route is twice in ROUTES");
        assert_eq!(doc, table);
        let missing: Vec<_> = router.difference(&doc).collect();
        let extra: Vec<_> = doc.difference(&router).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "routes/mod.rs and openapi::ROUTES disagree: served but not documented {missing:?}, \
             documented but not served {extra:?}. Add the route to ROUTES (crates/api/src/openapi.rs), \
             then regenerate docs/openapi.json with `UPDATE_OPENAPI=1 cargo test -p agentctl-api openapi`"
        );
        assert!(router.len() >= 16, "the router's routes were not all found: {router:?}");
    }

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_well_formed() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a component schema"));
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        let mut ids = BTreeSet::new();
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.as_str().to_ascii_lowercase()];
            assert!(ids.insert(r.operation_id), "operationId {} twice", r.operation_id);
            // Path parameters are exactly the template's.
            let template: BTreeSet<&str> = r
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let declared: BTreeSet<&str> = r
                .params
                .iter()
                .filter(|p| p.location == In::Path)
                .map(|p| p.name)
                .collect();
            assert_eq!(template, declared, "{} {}", r.method.as_str(), r.path);
            // Every error status the route can answer is there, with the error body.
            for code in r.error_codes() {
                let status = status_of(code).as_u16().to_string();
                let answer = &op["responses"][&status];
                assert!(
                    answer["description"].as_str().unwrap().contains(code.as_str()),
                    "{} {}: {status} does not name {code}",
                    r.method.as_str(),
                    r.path
                );
                let mut rs = Vec::new();
                refs(&answer["content"]["application/json"], &mut rs);
                assert!(
                    rs.contains(&"#/components/schemas/ErrorBody"),
                    "{} {} {status}",
                    r.method.as_str(),
                    r.path
                );
            }
            assert_eq!(op["security"] == json!([]), r.public);
        }
    }

    // A small JSON Schema checker for what the generated schemas use: enough to tell whether
    // the JSON the handlers write is what the document says.
    fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        let fail = |why: String| Err(format!("{at}: {why} (value {v}, schema {schema})"));
        let s = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return fail("nothing is allowed".into()),
            Value::Object(s) => s,
            _ => return fail("not a schema".into()),
        };
        if let Some(Value::String(r)) = s.get("$ref") {
            let name = r.strip_prefix("#/components/schemas/").expect("a component ref");
            conforms(doc, &doc["components"]["schemas"][name], v, at)?;
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                _ => unreachable!(),
            };
            let ok = types.iter().any(|t| match *t {
                "null" => v.is_null(),
                "boolean" => v.is_boolean(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                other => panic!("type {other}"),
            });
            if !ok {
                return fail(format!("not of type {t}"));
            }
        }
        if let Some(c) = s.get("const")
            && c != v
        {
            return fail(format!("not {c}"));
        }
        if let Some(Value::Array(e)) = s.get("enum")
            && !e.contains(v)
        {
            return fail("not in the enum".into());
        }
        if let (Some(n), Some(min)) = (v.as_f64(), s.get("minimum").and_then(Value::as_f64))
            && n < min
        {
            return fail("below the minimum".into());
        }
        if let Value::Object(obj) = v {
            let props = s.get("properties").and_then(Value::as_object);
            for req in s.get("required").and_then(Value::as_array).into_iter().flatten() {
                if !obj.contains_key(req.as_str().unwrap()) {
                    return fail(format!("{req} is missing"));
                }
            }
            for (k, item) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(p) => conforms(doc, p, item, &format!("{at}.{k}"))?,
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => return fail(format!("{k} is not allowed")),
                        Some(extra) => conforms(doc, extra, item, &format!("{at}.{k}"))?,
                        None => {}
                    },
                }
            }
        }
        if let (Value::Array(items), Some(min)) = (v, s.get("minItems").and_then(Value::as_u64))
            && (items.len() as u64) < min
        {
            return fail("too few items".into());
        }
        if let (Value::Array(items), Some(item_schema)) = (v, s.get("items")) {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, item_schema, item, &format!("{at}[{i}]"))?;
            }
        }
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                conforms(doc, sub, v, at)?;
            }
        }
        if let Some(Value::Array(any)) = s.get("anyOf")
            && !any.iter().any(|sub| conforms(doc, sub, v, at).is_ok())
        {
            return fail("matches none of anyOf".into());
        }
        if let Some(Value::Array(one)) = s.get("oneOf") {
            let n = one.iter().filter(|sub| conforms(doc, sub, v, at).is_ok()).count();
            if n != 1 {
                let why: Vec<_> = one.iter().filter_map(|sub| conforms(doc, sub, v, at).err()).collect();
                return fail(format!("matches {n} of oneOf: {why:?}"));
            }
        }
        Ok(())
    }

    fn assert_conforms(name: &str, v: &Value) {
        let doc = document();
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        if let Err(e) = conforms(doc, &schema, v, name) {
            panic!("{e}");
        }
    }

    fn ts() -> jiff::Timestamp {
        "2025-01-02T03:04:05.123456789Z".parse().unwrap()
    }

    fn run_id() -> RunId {
        RunId::parse("fix-1").unwrap()
    }

    fn checkpoint_info() -> CheckpointInfo {
        CheckpointInfo {
            n: 1,
            trigger: model::CheckpointTrigger::Manual,
            commit: "c".repeat(40),
            tree: "t".repeat(40),
            parent: "p".repeat(40),
            git_ref: "refs/agentctl/runs/fix-1/1".into(),
            message: None,
            ts: ts(),
            scan: model::ScanKind::Paths,
            elapsed_ms: 3,
            created: true,
        }
    }

    #[test]
    fn answers_match_their_schemas() {
        // Error bodies, as `ApiError` writes them, with and without a hint.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for e in [
            crate::ApiError::new(ErrorCode::RunNotFound, "no run").hint("list runs"),
            crate::ApiError::new(ErrorCode::Io, "disk"),
        ] {
            let resp = e.into_response();
            let bytes = rt.block_on(axum::body::to_bytes(resp.into_body(), usize::MAX)).unwrap();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_conforms("ErrorBody", &v);
            let parsed: ErrorBody = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&parsed).unwrap(), v);
        }

        // Output chunks, as the engine writes them.
        for data in [b"hello\n".to_vec(), vec![0xff, 0xfe]] {
            let chunk = model::provider::OutputChunk {
                ts: ts(),
                stream: model::provider::Stream::Stderr,
                data,
            };
            let v = engine::view::chunk_json(&chunk);
            serde_json::from_value::<LogChunk>(v.clone()).unwrap();
            let logs = RunLogs {
                chunks: vec![v],
                next_offset: 10,
                run: run_id(),
            };
            assert_conforms("RunLogs", &serde_json::to_value(&logs).unwrap());
        }

        // A diff, as the engine writes it (plus `text`, as the handler adds it).
        let side = |name: &str| DiffSide {
            name: name.into(),
            commit: (name != "live").then(|| "c".repeat(40)),
            tree: "t".repeat(40),
        };
        let result = engine::DiffResult {
            from: side("base"),
            to: side("live"),
            stats: checkpoint::diff::TreeDiff {
                files: vec![
                    checkpoint::diff::FileStat {
                        path: "a.txt".into(),
                        status: checkpoint::diff::Status::Modified,
                        insertions: Some(2),
                        deletions: Some(1),
                        old_mode: "100644".into(),
                        new_mode: "100644".into(),
                    },
                    checkpoint::diff::FileStat {
                        path: "b.bin".into(),
                        status: checkpoint::diff::Status::TypeChanged,
                        insertions: None,
                        deletions: None,
                        old_mode: "100644".into(),
                        new_mode: "120000".into(),
                    },
                ],
                insertions: 2,
                deletions: 1,
            },
            text: None,
        };
        let mut v = engine::view::diff_json(&run_id(), &result);
        assert_conforms("DiffBody", &v);
        v["text"] = "diff --git …".into();
        assert_conforms("DiffBody", &v);

        // Checkpoints (flattened into their list entries), rollbacks, rm reports.
        let entry = CheckpointEntry {
            info: checkpoint_info(),
            files_changed: 1,
            insertions: 2,
            deletions: 0,
        };
        let list = CheckpointList {
            checkpoints: vec![entry],
            run: run_id(),
        };
        assert_conforms("CheckpointList", &serde_json::to_value(&list).unwrap());
        let rm = RmReport {
            id: run_id(),
            worktree_removed: true,
            branch: "agentctl/fix-1".into(),
            branch_deleted: false,
            branch_commits: 2,
            checkpoint: Some(checkpoint_info()),
        };
        assert_conforms("RmReport", &serde_json::to_value(&rm).unwrap());

        // Events, with optional fields left out and present.
        let events = vec![
            Event {
                v: 1,
                seq: 7,
                ts: ts(),
                run_id: run_id(),
                data: model::EventData::Checkpointed {
                    n: 1,
                    trigger: model::CheckpointTrigger::Watch,
                    commit: "c".into(),
                    tree: "t".into(),
                    parent: "p".into(),
                    message: None,
                    scan: model::ScanKind::Full,
                    paths_read: 0,
                    full_scan_reason: Some("overflow".into()),
                    paused: false,
                    scan_ms: 1,
                    elapsed_ms: 2,
                },
            },
            Event {
                v: 1,
                seq: 8,
                ts: ts(),
                run_id: run_id(),
                data: model::EventData::Finished {
                    state: RunState::Succeeded,
                    reason: "agent exited with code 0".into(),
                    exit_code: Some(0),
                    signal: None,
                },
            },
        ];
        let body = RunEvents { events, run: run_id() };
        assert_conforms("RunEvents", &serde_json::to_value(&body).unwrap());

        // A wrong answer is caught.
        let mut bad = serde_json::to_value(&list).unwrap();
        bad["checkpoints"][0]["trigger"] = "sometimes".into();
        assert!(
            conforms(
                document(),
                &json!({"$ref": "#/components/schemas/CheckpointList"}),
                &bad,
                "x"
            )
            .is_err()
        );
    }

    #[test]
    fn request_schemas_accept_what_handlers_accept() {
        let doc = document();
        let body_schema = |path: &str, method: &str| {
            doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"].clone()
        };
        let create = body_schema("/v1/runs", "post");
        for ok in [
            json!({"repo": "/r", "agent": "claude-code"}),
            json!({"repo": "/r", "id": "fix-1", "command": ["sh", "-c", "true"], "checkpoints": {"watch": false}}),
        ] {
            serde_json::from_value::<CreateRun>(ok.clone()).unwrap();
            conforms(doc, &create, &ok, "createRun").unwrap();
        }
        for bad in [
            json!({}),
            json!({"repo": "/r", "nope": 1}),
            json!({"repo": 3, "agent": "a"}),
        ] {
            assert!(serde_json::from_value::<CreateRun>(bad.clone()).is_err());
            assert!(conforms(doc, &create, &bad, "createRun").is_err(), "{bad}");
        }
        // Well-typed, but neither an agent nor a command: the handler refuses it too.
        assert!(conforms(doc, &create, &json!({"repo": "/r", "command": []}), "createRun").is_err());
        let rollback = body_schema("/v1/runs/{id}/rollback", "post");
        for ok in [json!({"to": 2}), json!({"to": "last", "paths": ["a"]})] {
            conforms(doc, &rollback, &ok, "rollback").unwrap();
        }
        assert!(conforms(doc, &rollback, &json!({"to": true}), "rollback").is_err());
        let checkpoint = body_schema("/v1/runs/{id}/checkpoints", "post");
        conforms(doc, &checkpoint, &json!({"message": "m"}), "checkpoint").unwrap();
    }

    /// A provider with no runs.
    struct NoRuns;

    impl model::provider::Provider for NoRuns {
        fn name(&self) -> &'static str {
            "none"
        }
        fn create(&self, _: &RunId) -> Result<(), model::provider::ProviderError> {
            Ok(())
        }
        fn start(&self, _: &RunId) -> Result<(), model::provider::ProviderError> {
            Ok(())
        }
        fn signal(&self, _: &RunId, _: &model::provider::ControlRequest) -> Result<(), model::provider::ProviderError> {
            Ok(())
        }
        fn request(
            &self,
            _: &RunId,
            _: &model::provider::ControlRequest,
            _: std::time::Duration,
        ) -> Result<model::provider::RequestOutcome, model::provider::ProviderError> {
            Ok(model::provider::RequestOutcome::NotTaken)
        }
        fn status(&self, _: &RunId) -> Result<model::provider::SupervisorStatus, model::provider::ProviderError> {
            Ok(model::provider::SupervisorStatus::NotStarted)
        }
        fn list(&self) -> Result<Vec<RunId>, model::provider::ProviderError> {
            Ok(Vec::new())
        }
        fn logs(&self, _: &RunId, _: u64) -> Result<model::provider::LogBatch, model::provider::ProviderError> {
            Ok(Default::default())
        }
        fn destroy(&self, _: &RunId) -> Result<(), model::provider::ProviderError> {
            Ok(())
        }
    }

    fn exchange(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp);
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(rest).unwrap_or(Value::Null))
    }

    #[test]
    fn the_router_serves_every_documented_operation_and_no_other_method() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::Store::open(store::StateLayout::new(dir.path().join("state"))).unwrap();
        let engine = engine::Engine::new(store, Arc::new(NoRuns), Default::default());
        let daemon_dir = dir.path().join("daemon");
        std::fs::create_dir_all(&daemon_dir).unwrap();
        let tokens = Arc::new(crate::TokenStore::new(&daemon_dir));
        let token = tokens.ensure_default().unwrap();
        let state = crate::AppState {
            engine: Arc::new(engine),
            tokens,
            metrics: Arc::default(),
            request_timeout: std::time::Duration::from_secs(30),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, crate::routes::router(state)).await });

        let mut paths: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in ROUTES {
            paths.entry(r.path).or_default().push(r.method.as_str());
            let path = r.path.replace("{id}", "no-such-run");
            let body = if r.body.is_some() { "{}" } else { "" };
            let (status, answer) = exchange(addr, r.method.as_str(), &path, Some(&token), body);
            let what = format!("{} {path} answered {status} {answer}", r.method.as_str());
            assert_ne!(status, 405, "{what}");
            assert_ne!(answer["error"]["code"], "NOT_FOUND", "{what}");
            assert!(status < 500, "{what}");
            let documented = document()["paths"][r.path][r.method.as_str().to_ascii_lowercase()]["responses"]
                .get(status.to_string())
                .is_some();
            assert!(documented, "{what}: the status is not documented");
            // Without a token: refused exactly when the document says a token is needed.
            let (status, _) = exchange(addr, r.method.as_str(), &path, None, body);
            assert_eq!(
                status == 401,
                !r.public,
                "{} {path} without a token: {status}",
                r.method.as_str()
            );
        }
        for (path, methods) in paths {
            let path = path.replace("{id}", "no-such-run");
            for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                if !methods.contains(&m) {
                    let (status, answer) = exchange(addr, m, &path, Some(&token), "");
                    assert_eq!(
                        status, 405,
                        "{m} {path} is not documented, but answered {status} {answer}"
                    );
                }
            }
        }
        let (status, served) = exchange(addr, "GET", "/v1/openapi.json", None, "");
        assert_eq!(status, 200);
        assert_eq!(&served, document());
        rt.shutdown_background();
    }

    #[test]
    fn openapi_spec_validator_accepts_the_document() {
        // A real validator, when Python has it (`scripts/fuzz-api` installs it).
        let probe = std::process::Command::new("python3")
            .args(["-c", "import openapi_spec_validator"])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: python3 -m pip install openapi-spec-validator to run this check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, pretty()).unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import json, sys\nfrom openapi_spec_validator import OpenAPIV31SpecValidator, validate\nvalidate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openapi-spec-validator rejects the document:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
