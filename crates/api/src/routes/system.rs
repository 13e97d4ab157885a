//! Health, readiness and the agent registry.

use crate::params::Query;
use crate::wire::{AgentList, Health, NotReady, Ready};
use crate::{ApiError, AppState, blocking};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `GET /v1/healthz`: the daemon answers. No token needed.
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /v1/readyz`: the daemon can read its state (the database answers). No token needed.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let probe = blocking(&state, |engine| {
        engine
            .list(&store::RunFilter {
                limit: Some(1),
                ..Default::default()
            })
            .map(drop)
            .map_err(ApiError::from)
    })
    .await;
    match probe {
        Ok(()) => Json(Ready { status: "ready" }).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(NotReady {
                reason: e.message,
                status: "not_ready",
            }),
        )
            .into_response(),
    }
}

/// `GET /v1/agents[?repo=DIR][&versions=true]`: every agent with its availability, as
/// `agentctl agents --json` lists them (from `repo`'s definitions too, when given).
pub async fn agents(State(state): State<AppState>, q: Query) -> Result<Json<AgentList>, ApiError> {
    let repo = q.get("repo").map(std::path::PathBuf::from);
    if let Some(r) = &repo {
        super::runs::no_nul("repo", &r.to_string_lossy())?;
    }
    let versions = q.flag("versions")?;
    let rows = blocking(&state, move |engine| {
        let repo = match repo {
            Some(dir) => Some(vcs_toplevel(&dir)?),
            None => None,
        };
        let mut rows =
            engine::availability::agent_rows(engine.config().user_agents_file.as_deref(), repo.as_deref(), versions)?;
        engine.fill_stats(&mut rows)?;
        Ok(rows)
    })
    .await?;
    Ok(Json(AgentList { agents: rows }))
}

pub(super) fn vcs_toplevel(dir: &std::path::Path) -> Result<std::path::PathBuf, ApiError> {
    if !dir.is_absolute() {
        return Err(ApiError::invalid(format!(
            "repo must be an absolute path, not {}",
            dir.display()
        )));
    }
    engine::repo_toplevel(dir).map_err(ApiError::from)
}

/// `GET /metrics`: Prometheus text (see [`crate::metrics`]). Needs a token, like `/v1`.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let runs = blocking(&state, |engine| Ok(engine.list(&store::RunFilter::default())?)).await?;
    let mut by_state = std::collections::HashMap::new();
    for r in &runs {
        *by_state.entry(r.state).or_insert(0u64) += 1;
    }
    let body = state.metrics.render(&by_state);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
