//! Server-sent event streams. A run's events go out as SSE messages whose `id` is the event's
//! sequence number, `event` its type and `data` the event as JSON (one line). A client that
//! reconnects with `Last-Event-ID: N` (or `?after=N`) gets exactly the events after `N`: no gap,
//! no duplicate. With `follow=true` the stream stays open, polling the run's log, until the run
//! is terminal and every event up to its end is sent; without, it ends after what is there now.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use model::{Event, RunId};

use crate::params::Query;
use crate::{ApiError, AppState, blocking};

/// How often a followed stream looks for new events.
const POLL: Duration = Duration::from_millis(100);

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

/// Where a stream starts: after `Last-Event-ID`, else after `?after=`, else from the start.
pub fn resume_point(headers: &HeaderMap, q: &Query) -> Result<u64, ApiError> {
    if let Some(v) = headers.get("last-event-id") {
        let text = v.to_str().unwrap_or("");
        return text
            .trim()
            .parse()
            .map_err(|_| ApiError::invalid(format!("Last-Event-ID {text:?} is not an event sequence number")));
    }
    Ok(q.parse::<u64>("after")?.unwrap_or(0))
}

struct Cursor {
    state: AppState,
    id: RunId,
    after: u64,
    follow: bool,
    queue: VecDeque<Event>,
    /// The run was terminal when its log was last read: what is queued is the end.
    ended: bool,
}

/// The SSE stream of run `id`'s events after `after`.
pub fn run_events(
    state: AppState,
    id: RunId,
    after: u64,
    follow: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let cursor = Cursor {
        state,
        id,
        after,
        follow,
        queue: VecDeque::new(),
        ended: false,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.queue.pop_front() {
                c.after = e.seq;
                return Some((Ok(sse_of(&e)), c));
            }
            if c.ended {
                return None;
            }
            let (id, after) = (c.id.clone(), c.after);
            // Terminal is judged before reading, so nothing appended before the end is missed.
            let read = blocking(&c.state, move |engine| {
                let terminal = engine.refresh(&id, "api")?.state.is_terminal();
                let events = engine.store().events(&id).map_err(engine::EngineError::from)?;
                Ok((
                    terminal,
                    events.into_iter().filter(|e| e.seq > after).collect::<Vec<_>>(),
                ))
            })
            .await;
            match read {
                Ok((terminal, events)) => {
                    c.queue.extend(events);
                    c.ended = terminal || !c.follow;
                }
                Err(e) => {
                    tracing::warn!(run.id = %c.id, error = %e.message, "event stream ends: cannot read the run");
                    return None;
                }
            }
            if c.queue.is_empty() && !c.ended {
                tokio::time::sleep(POLL).await;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn sse_of(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.data.kind())
        .data(serde_json::to_string(e).expect("events serialize"))
}
