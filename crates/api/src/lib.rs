//! The `/v1` HTTP API over one state directory, and the daemon that serves it (`agentctl
//! serve`). Handlers are thin: each parses its request, runs the same engine call the CLI makes
//! (on a blocking thread — the engine works with files, git and SQLite), and answers with the
//! same JSON the CLI prints with `--json`, errors included (`{"error": {"code", "message",
//! "hint", "details"}}` with the CLI's stable codes). The daemon is optional: runs belong to
//! their supervisors, so it can stop, crash or restart without touching them.

pub mod error;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod routes;
pub mod server;
pub mod stream;
pub mod tail;
pub mod tokens;
pub mod webhooks;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use engine::Engine;

pub use error::ApiError;
pub use server::{ServeOptions, serve};
pub use tokens::{TokenEntry, TokenStore};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub tokens: Arc<TokenStore>,
    pub metrics: Arc<metrics::Metrics>,
    /// Longest a request may take before it is answered `REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("engine", &self.engine).finish()
    }
}

/// Runs `f` with the engine on a blocking thread.
pub(crate) async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
{
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(|e| ApiError::new(model::ErrorCode::Internal, format!("request handler failed: {e}")))?
}
