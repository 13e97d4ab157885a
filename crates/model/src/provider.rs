//! The provider seam: where a run's process lives. The engine only talks to `dyn Provider`; the
//! local-process provider is the first implementation (in `supervise`), and container, remote
//! worker or cloud-VM providers implement the same trait without changes to the engine.

use serde::{Deserialize, Serialize};

use crate::ids::RunId;

/// A request delivered to a run's supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Stop the run: SIGINT, then SIGTERM, then SIGKILL, `grace_ms` apart.
    Stop { grace_ms: u64 },
    /// Take a checkpoint now; answered with the checkpoint.
    Checkpoint {
        request_id: String,
        message: Option<String>,
    },
    /// Restore the worktree (or `paths`) to checkpoint `to`; answered with the rollback.
    Rollback {
        request_id: String,
        to: u32,
        paths: Vec<String>,
    },
    /// Record a message from the workflow step in progress; answered with its sequence number.
    Message {
        request_id: String,
        /// The step the sender claims to be (checked against the step in progress).
        from: Option<String>,
        to: Option<String>,
        verdict: Option<String>,
        text: String,
    },
}

impl ControlRequest {
    /// The id of a request that expects an answer.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ControlRequest::Stop { .. } => None,
            ControlRequest::Checkpoint { request_id, .. }
            | ControlRequest::Rollback { request_id, .. }
            | ControlRequest::Message { request_id, .. } => Some(request_id),
        }
    }
}

/// What became of a request that expects an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The supervisor answered (JSON text, defined by the engine).
    Answered(String),
    /// No supervisor took it and it was withdrawn: the caller may do the work itself.
    NotTaken,
}

/// Whether a run's supervisor is alive, as far as the provider can prove.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SupervisorStatus {
    /// Never started by this provider.
    NotStarted,
    /// Alive, with its process id.
    Alive { pid: u32 },
    /// Started once and no longer alive.
    Gone,
}

/// Which stream a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// A pseudo-terminal merges both.
    Pty,
}

/// One captured chunk of agent output, exactly as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    pub ts: jiff::Timestamp,
    pub stream: Stream,
    pub data: Vec<u8>,
    /// The byte offset in the output log just after this chunk: reading from here continues
    /// with the next chunk (a resume cursor, e.g. an SSE event id).
    pub end: u64,
}

/// Output records read from a cursor, and the cursor to continue from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogBatch {
    pub chunks: Vec<OutputChunk>,
    pub next_offset: u64,
}

/// A provider failure.
#[derive(Debug, thiserror::Error)]
#[error("{provider} provider: {message}")]
pub struct ProviderError {
    pub provider: &'static str,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Where runs' processes live.
pub trait Provider: Send + Sync {
    /// A short stable name recorded in each run's launch plan (`local`).
    fn name(&self) -> &'static str;
    /// Allocates what the run needs before it starts. Idempotent.
    fn create(&self, run: &RunId) -> Result<(), ProviderError>;
    /// Launches the run's supervisor and returns without waiting for the agent.
    fn start(&self, run: &RunId) -> Result<(), ProviderError>;
    /// As [`Provider::start`], the supervisor (and so the agent) starting with exactly `env`
    /// instead of the caller's environment — for a daemon starting a run on a client's behalf.
    /// A provider that cannot place an environment refuses rather than drop it.
    fn start_with_env(
        &self,
        run: &RunId,
        env: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(), ProviderError> {
        match env {
            None => self.start(run),
            Some(_) => Err(ProviderError {
                provider: self.name(),
                message: "this provider cannot start a run with a given environment".to_owned(),
                source: None,
            }),
        }
    }
    /// Delivers a control request to the run's supervisor.
    fn signal(&self, run: &RunId, request: &ControlRequest) -> Result<(), ProviderError>;
    /// Delivers a request that expects an answer and waits up to `timeout` for it. When the
    /// supervisor is gone (or never took it), the request is withdrawn and `NotTaken` returned,
    /// so exactly one party does the work.
    fn request(
        &self,
        run: &RunId,
        request: &ControlRequest,
        timeout: std::time::Duration,
    ) -> Result<RequestOutcome, ProviderError>;
    /// Whether the run's supervisor is alive.
    fn status(&self, run: &RunId) -> Result<SupervisorStatus, ProviderError>;
    /// Every run whose supervisor is alive (for reconcile).
    fn list(&self) -> Result<Vec<RunId>, ProviderError>;
    /// Reads captured output from `offset` on.
    fn logs(&self, run: &RunId, offset: u64) -> Result<LogBatch, ProviderError>;
    /// Kills whatever of the run is left and releases its placement.
    fn destroy(&self, run: &RunId) -> Result<(), ProviderError>;
    /// The last error the run's supervisor reported before it went away, if the provider kept
    /// one (to explain a `lost` run).
    fn last_error(&self, _run: &RunId) -> Option<String> {
        None
    }
}
