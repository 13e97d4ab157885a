//! Server-sent event streams: a run's events ([`events`]), a run's output ([`logs`]) and every
//! run's events ([`global`]). Each SSE message's `id` is a resume cursor: a client that reconnects
//! with `Last-Event-ID` gets exactly what came after it — no gap, no duplicate. Followed streams
//! wake on the daemon's change notifications ([`crate::wakeup`]), not on a poll interval.

pub mod events;
pub mod global;

pub mod logs;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;

use crate::ApiError;
use crate::params::Query;

/// Waits for run `id`'s files to change (`notified`, enabled before the caller read them). When
/// nothing changes for a while, makes sure the run is not lost — its supervisor gone without a
/// word — which the store then records as an event the stream reads next.
pub(crate) async fn wait_for_run(
    state: &crate::AppState,
    id: &model::RunId,
    notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
) {
    if !crate::wakeup::Wakeups::wait(notified).await {
        let id = id.clone();
        let _ = crate::blocking(state, move |engine| Ok(engine.refresh(&id, "api")?)).await;
    }
}

/// Whether the client asked for an event stream by its `Accept` header.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Whether a request will be answered with a stream (and so must not be timed out).
pub fn is_stream_request(req: &Request) -> bool {
    wants_stream(req.headers())
        || req.uri().query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "follow" && v != "false" && v != "0")
        })
}

/// How a request for a log asks to be answered.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    /// As server-sent events (`Accept: text/event-stream`, or `follow`), not one JSON page.
    pub stream: bool,
    /// Keep the stream open for what comes next.
    pub follow: bool,
    /// Where to start (see [`resume_point`]).
    pub from: u64,
}

/// Reads `follow`, the `Accept` header and the resume point (`Last-Event-ID`, else the query
/// parameter `param`).
pub fn asked(headers: &HeaderMap, q: &Query, param: &str) -> Result<Asked, ApiError> {
    let follow = q.flag("follow")?;
    Ok(Asked {
        stream: follow || wants_stream(headers),
        follow,
        from: resume_point(headers, q, param)?,
    })
}

/// Where a stream starts: after `Last-Event-ID`, else after the query parameter `param`
/// (`after` or `offset`), else from the start. Both are checked when both are given.
pub fn resume_point(headers: &HeaderMap, q: &Query, param: &str) -> Result<u64, ApiError> {
    let from_query = q.parse::<u64>(param)?;
    if let Some(v) = headers.get("last-event-id") {
        let text = v.to_str().unwrap_or("");
        return text
            .trim()
            .parse()
            .map_err(|_| ApiError::invalid(format!("Last-Event-ID {text:?} is not a stream position")));
    }
    Ok(from_query.unwrap_or(0))
}
