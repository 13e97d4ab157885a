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

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use engine::view::RunView;
use engine::{CheckpointInfo, RmReport, RollbackInfo};
use model::{ErrorCode, RunState};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::error::status_of;
use crate::wire::{
    AgentList, CheckpointList, CreateCheckpoint, CreateRun, DiffBody, ErrorBody, GcReport, GcRequest, GlobalEvents,
    Health, MessageList, MessageReceipt, NotReady, Ready, ReconcileReport, ResumeRun, Rollback, RunEvents, RunLogs,
    RunPage, SendMessage, WorkflowList, WorkflowProgress,
};

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
        description: "Records the run and starts its supervisor, which starts the agent (or, with `workflow`, \
                      the workflow's first step); answers at once. Idempotent: the same `id` (or `Idempotency-Key`) with the same body answers 200 with \
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
            E::WorkflowNotFound,
            E::WorkflowInvalid,
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
        method: Method::Post,
        path: "/v1/runs/{id}/promote",
        operation_id: "promoteRun",
        tag: "runs",
        summary: "Promote a shadow run's change",
        description: "As `agentctl promote`: validates a finished shadow run's change — the path policy over every \
                      path it touches, then each gate command on a clean, sandboxed checkout of it — and, only if \
                      all pass, moves the run's branch to it in one compare-and-swap update. A refusal is a 200 \
                      with `promoted: false` and the reasons; the branch is then untouched. Lasts as long as the \
                      gates (not subject to the request time limit). `NOT_A_SHADOW_RUN` for a run without a \
                      shadow workspace, `RUN_ACTIVE` while the run is active.",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The outcome: promoted (or already promoted), or refused with the reasons.",
            content: Content::Json(schema::<model::Promotion>),
        }],
        errors: &[
            E::NotAShadowRun,
            E::RunActive,
            E::CheckpointPruned,
            E::GitFailed,
            E::SandboxUnavailable,
        ],
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
        description: "Captured output from byte `offset` of the run's output log, as JSON (continue from \
                      `next_offset`), or as a server-sent event stream when the request accepts \
                      `text/event-stream` or asks to `follow`: one `output` message per chunk (`data` the chunk, \
                      `id` the byte offset just after it), and, once the run has ended and all its output is \
                      sent, an `end` message whose `data` is the run.",
        public: false,
        engine: true,
        params: &[
            RUN_ID,
            Param {
                name: "offset",
                location: In::Query,
                required: false,
                description: "Byte offset in the output log.",
                schema: || json!({"type": "integer", "format": "int64", "minimum": 0}),
            },
            Param {
                name: "follow",
                location: In::Query,
                required: false,
                description: "Stream, and keep the stream open until the run has ended and its last output is sent.",
                schema: flag_schema,
            },
            Param {
                name: "Last-Event-ID",
                location: In::Header,
                required: false,
                description: "A reconnecting stream's last message id (as `offset`).",
                schema: || json!({"type": "string", "pattern": "^[0-9]{1,19}$"}),
            },
        ],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "Output chunks.",
            content: Content::JsonOrEvents(schema::<RunLogs>),
        }],
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{id}/checkpoints",
        operation_id: "listCheckpoints",
        tag: "checkpoints",
        summary: "A run's checkpoints",
        description: "Every checkpoint with its changes against the one before (as `agentctl checkpoints --json`); \
                      one `gc` pruned is listed with `pruned: true` and null counts.",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The checkpoints.",
            content: Content::Json(schema::<CheckpointList>),
        }],
        errors: &[
            E::InvalidStateTransition,
            E::NotAGitRepo,
            E::CheckpointFailed,
            E::GitFailed,
            E::SpawnFailed,
        ],
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
            Param {
                name: "color",
                location: In::Query,
                required: false,
                description: "Colour the `text` with ANSI escapes, as git does on a terminal.",
                schema: flag_schema,
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
            E::CheckpointPruned,
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
            E::CheckpointPruned,
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
        path: "/v1/runs/{id}/workflow",
        operation_id: "getRunWorkflow",
        tag: "workflows",
        summary: "A workflow run's progress",
        description: "The workflow's name and where the run stands, folded from its events (as the `workflow` \
                      object of `agentctl show --json`): each finished step execution with its verdict, the one \
                      in progress, the step decided next, how the workflow ended, and its messages. The run's \
                      state is checked against its supervisor first. `NOT_A_WORKFLOW_RUN` for a single-agent run.",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The workflow's progress.",
            content: Content::Json(schema::<WorkflowProgress>),
        }],
        errors: &[E::NotAWorkflowRun, E::InvalidStateTransition, E::SpawnFailed],
    },
    Route {
        method: Method::Get,
        path: "/v1/runs/{id}/messages",
        operation_id: "listRunMessages",
        tag: "workflows",
        summary: "A workflow run's messages",
        description: "The messages the run's steps sent, oldest first, each with where it is (`in_flight`, \
                      `pending`, `delivered`, `void`, `undeliverable`), as `agentctl msgs --json`.",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The messages.",
            content: Content::Json(schema::<MessageList>),
        }],
        errors: &[E::NotAWorkflowRun, E::InvalidStateTransition, E::SpawnFailed],
    },
    Route {
        method: Method::Post,
        path: "/v1/runs/{id}/messages",
        operation_id: "sendRunMessage",
        tag: "workflows",
        summary: "Send a message from the step running",
        description: "As `agentctl msg send`: a message from the workflow step now running, recorded by the run's \
                      supervisor against that step. It goes to `to`, or to the step that follows; a `verdict` \
                      selects the edge taken when the step ends. Refused with `INVALID_STATE_TRANSITION` when no \
                      step runs, and with `INVALID_ARGUMENT` when `to` is not a step or `from` is not the step \
                      running.",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: Some(RequestBody {
            required: true,
            schema: schema::<SendMessage>,
        }),
        answers: &[Answer {
            status: 201,
            description: "The message as recorded.",
            content: Content::Json(schema::<MessageReceipt>),
        }],
        errors: &[E::NotAWorkflowRun, E::InvalidStateTransition, E::SpawnFailed],
    },
    Route {
        method: Method::Post,
        path: "/v1/runs/{id}/resume",
        operation_id: "resumeRun",
        tag: "workflows",
        summary: "Resume an interrupted workflow run",
        description: "As `agentctl resume`: starts a new supervisor for a workflow run whose supervisor vanished \
                      (`interrupted`, or noticed gone now); it takes the run up again from its last finished step. \
                      Answers once the supervisor took the run (at most about 5 s). A run whose supervisor is \
                      alive is answered as it is; a finished run is `INVALID_STATE_TRANSITION`. The body is \
                      optional; `launch_env` is accepted only on the unix socket.",
        public: false,
        engine: true,
        params: &[RUN_ID],
        body: Some(RequestBody {
            required: false,
            schema: schema::<ResumeRun>,
        }),
        answers: &[Answer {
            status: 200,
            description: "The run.",
            content: Content::Json(schema::<RunView>),
        }],
        errors: &[E::NotAWorkflowRun, E::InvalidStateTransition, E::SpawnFailed],
    },
    Route {
        method: Method::Get,
        path: "/v1/events",
        operation_id: "listEvents",
        tag: "runs",
        summary: "Every run's events",
        description: "Every run's events in the order the daemon saw them, each numbered `g` (1, 2, 3, … without \
                      gaps, kept across daemon restarts; the journal starts when a daemon first serves the state \
                      directory). As a JSON page, or as a server-sent event stream (`id` the event's `g`, `event` \
                      its type, `data` the event with `g`) when the request accepts `text/event-stream` or asks \
                      to `follow`; a followed stream stays open.",
        public: false,
        engine: true,
        params: &[
            Param {
                name: "after",
                location: In::Query,
                required: false,
                description: "Only events after this `g`.",
                schema: u64_schema,
            },
            Param {
                name: "limit",
                location: In::Query,
                required: false,
                description: "Most events in a JSON page (1 to 10000; 1000 when not given).",
                schema: || json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": 10000}),
            },
            Param {
                name: "follow",
                location: In::Query,
                required: false,
                description: "Stream, and keep the stream open for new events.",
                schema: flag_schema,
            },
            Param {
                name: "Last-Event-ID",
                location: In::Header,
                required: false,
                description: "A reconnecting stream's last `g` (as `after`).",
                schema: || json!({"type": "string", "pattern": "^[0-9]{1,19}$"}),
            },
        ],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The events.",
            content: Content::JsonOrEvents(schema::<GlobalEvents>),
        }],
        errors: &[],
    },
    Route {
        method: Method::Post,
        path: "/v1/gc",
        operation_id: "collectGarbage",
        tag: "maintenance",
        summary: "Remove worktrees past their retention",
        description: "As `agentctl gc`: removes the worktrees of finished runs older than `older_than_ms` (each \
                      saved as a checkpoint first; unsaveable ones only with `force`), and with `prune_refs` the \
                      checkpoint refs of runs removed earlier. `dry_run` says what would happen. Send `{}` for the \
                      defaults.",
        public: false,
        engine: true,
        params: &[],
        body: Some(RequestBody {
            required: true,
            schema: schema::<GcRequest>,
        }),
        answers: &[Answer {
            status: 200,
            description: "Each run looked at, and the refs pruned.",
            content: Content::Json(schema::<GcReport>),
        }],
        errors: &[
            E::GitFailed,
            E::CheckpointFailed,
            E::InvalidStateTransition,
            E::SpawnFailed,
        ],
    },
    Route {
        method: Method::Post,
        path: "/v1/reconcile",
        operation_id: "reconcile",
        tag: "maintenance",
        summary: "Reconcile runs with supervisors, processes and worktrees",
        description: "As `agentctl reconcile`: every discrepancy between the store, supervisors, processes, \
                      worktrees and refs, each fixed when that is safe (never with `dry_run`) or reported.",
        public: false,
        engine: true,
        params: &[Param {
            name: "dry_run",
            location: In::Query,
            required: false,
            description: "Report only; fix nothing.",
            schema: flag_schema,
        }],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "What was found and done.",
            content: Content::Json(schema::<ReconcileReport>),
        }],
        errors: &[E::GitFailed, E::SpawnFailed],
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
        path: "/v1/workflows",
        operation_id: "listWorkflows",
        tag: "workflows",
        summary: "List workflows",
        description: "The workflows in the repository's `.agentctl/workflows/` and the user's workflows (the \
                      repository's shadowing the user's of the same name), valid or not, as `agentctl workflows \
                      --json`: an invalid one says why in `problems`.",
        public: false,
        engine: true,
        params: &[Param {
            name: "repo",
            location: In::Query,
            required: true,
            description: "An absolute path in the repository.",
            schema: || json!({"type": "string", "pattern": "^/[^\\u0000]*$"}),
        }],
        body: None,
        answers: &[Answer {
            status: 200,
            description: "The workflows.",
            content: Content::Json(schema::<WorkflowList>),
        }],
        errors: &[E::NotAGitRepo, E::GitFailed],
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
            {"name": "maintenance", "description": "Upkeep of the state directory: gc and reconcile."},
            {"name": "checkpoints", "description": "A run's checkpoints: take, list, diff, roll back."},
            {"name": "workflows", "description": "Workflow runs' progress and messages, resuming them, and the workflows defined."},
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
mod tests;
