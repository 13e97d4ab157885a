//! The `/v1` HTTP API over one state directory, and the daemon that serves it (`agentctl
//! serve`). Handlers are thin: each parses its request, runs the same engine call the CLI makes
//! (on a blocking thread — the engine works with files, git and SQLite), and answers with the
//! same JSON the CLI prints with `--json`, errors included (`{"error": {"code", "message",
//! "hint", "details"}}` with the CLI's stable codes). The daemon is optional: runs belong to
//! their supervisors, so it can stop, crash or restart without touching them.

pub mod error;
pub mod journal;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod routes;
pub mod server;
pub mod stream;
pub mod tail;
pub mod tokens;
pub mod wakeup;
pub mod webhooks;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use engine::Engine;

pub use error::ApiError;
pub use server::{ServeOptions, serve};
pub use tokens::{TokenEntry, TokenStore};

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The unix socket in the state directory (0600: its owner only).
    Unix,
    /// The TCP address (loopback unless `--allow-remote`).
    Tcp,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub tokens: Arc<TokenStore>,
    pub metrics: Arc<metrics::Metrics>,
    /// Tells live streams when a run's logs grow.
    pub wakeups: wakeup::Wakeups,
    /// Every run's events in the order the daemon saw them (`GET /v1/events`).
    pub journal: Arc<journal::Journal>,
    /// Becomes true when the daemon shuts down: open streams then end, so the shutdown is not
    /// held up by a client following a run (it resumes with `Last-Event-ID`).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Longest a request may take before it is answered `REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("engine", &self.engine).finish()
    }
}

/// Completes when the daemon starts shutting down (never, if nobody can ask it to).
pub(crate) fn shutting_down_owned(state: &AppState) -> impl std::future::Future<Output = ()> + Send + use<> {
    let mut rx = state.shutdown.clone();
    async move {
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
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

/// Answers with `quick` right here when it can (it returns `Some`), else runs `f` as
/// [`blocking`] does; both get `input`. Handing a request to a blocking thread and back costs
/// two thread wakeups, more than a read of the projection itself, so reads that can tell at once
/// (no waiting for a lock, no write, a `stat` or two and at most one indexed query) answer on
/// the async thread: `quick` must never wait — see [`Engine::refresh_if_current`].
pub(crate) async fn quick_or_blocking<I, T, Q, F>(state: &AppState, input: I, quick: Q, f: F) -> Result<T, ApiError>
where
    I: Send + 'static,
    T: Send + 'static,
    Q: FnOnce(&Engine, &I) -> Option<T>,
    F: FnOnce(&Engine, I) -> Result<T, ApiError> + Send + 'static,
{
    if let Some(v) = quick(&state.engine, &input) {
        return Ok(v);
    }
    blocking(state, move |engine| f(engine, input)).await
}
