//! The `/v1` router: which path goes to which handler, and what wraps them — bearer-token auth
//! on everything but the health checks, a body-size limit, a per-request timeout (not for
//! streams and promotions), and JSON
//! error bodies for unknown routes and methods.

mod checkpoints;
mod events;
mod maintenance;
mod runs;
mod system;
mod workflows;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use model::ErrorCode;

use crate::{ApiError, AppState};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The whole API.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/runs", get(runs::list).post(runs::create))
        .route("/v1/runs/{id}", get(runs::get).delete(runs::delete))
        .route("/v1/runs/{id}/stop", post(runs::stop))
        .route("/v1/runs/{id}/promote", post(runs::promote))
        .route("/v1/runs/{id}/events", get(runs::events))
        .route("/v1/runs/{id}/logs", get(runs::logs))
        .route(
            "/v1/runs/{id}/checkpoints",
            get(checkpoints::list).post(checkpoints::create),
        )
        .route("/v1/runs/{id}/diff", get(checkpoints::diff))
        .route("/v1/runs/{id}/rollback", post(checkpoints::rollback))
        .route("/v1/runs/{id}/workflow", get(workflows::progress))
        .route("/v1/runs/{id}/messages", get(workflows::messages).post(workflows::send))
        .route("/v1/runs/{id}/resume", post(workflows::resume))
        .route("/v1/workflows", get(workflows::list))
        .route("/v1/events", get(events::list))
        .route("/v1/gc", post(maintenance::gc))
        .route("/v1/reconcile", post(maintenance::reconcile))
        .route("/v1/agents", get(system::agents))
        .route("/metrics", get(system::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/healthz", get(system::healthz))
        .route("/v1/readyz", get(system::readyz))
        .route("/v1/openapi.json", get(crate::openapi::serve))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(t) if state.tokens.verify(t) => next.run(req).await,
        Some(_) => ApiError::new(ErrorCode::Unauthorized, "the bearer token is not valid")
            .hint("create one with `agentctl token create`")
            .into_response(),
        None => ApiError::new(
            ErrorCode::Unauthorized,
            "this route needs `Authorization: Bearer TOKEN`",
        )
        .hint("local clients find the daemon's default token in <state>/daemon/token")
        .into_response(),
    }
}

async fn time_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Streams last as long as the client wants them; a promotion as long as its gates (each
    // has its own time limit).
    if crate::stream::is_stream_request(&req) || runs::is_promotion(&req) {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request took longer than {:?}", state.request_timeout),
        )
        .into_response(),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    let mut resp = ApiError::new(
        ErrorCode::InvalidArgument,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response();
    *resp.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    resp
}
