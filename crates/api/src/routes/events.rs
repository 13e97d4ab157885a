//! `GET /v1/events`: every run's events, from the daemon's journal.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::params::Query;
use crate::wire::GlobalEvents;
use crate::{ApiError, AppState};

/// Most events in one JSON page.
pub const MAX_LIMIT: u64 = 10_000;

/// `GET /v1/events[?after=G][&limit=N][&follow=true]`: the journal after `G`, as a JSON page of
/// at most `limit` events (1000 by default), or as server-sent events when the client accepts
/// `text/event-stream` or asks to `follow` (see [`crate::stream::global`]).
pub async fn list(State(state): State<AppState>, headers: HeaderMap, q: Query) -> Result<Response, ApiError> {
    let ask = crate::stream::asked(&headers, &q, "after")?;
    let after = ask.from;
    let limit = q.parse::<u64>("limit")?.unwrap_or(1000);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be 1 to {MAX_LIMIT}, not {limit}"
        )));
    }
    if ask.stream {
        return Ok(crate::stream::global::all_events(state, after, ask.follow).into_response());
    }
    let journal = state.journal.clone();
    let events = tokio::task::spawn_blocking(move || journal.read_after(after, limit as usize))
        .await
        .map_err(|e| ApiError::new(model::ErrorCode::Internal, format!("request handler failed: {e}")))??;
    let next_after = events.last().map_or(after, |e| e.g);
    Ok(Json(GlobalEvents { events, next_after }).into_response())
}
