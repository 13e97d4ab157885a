//! One run's events as SSE: each message's `id` is the event's sequence number, `event` its type
//! and `data` the event as JSON (one line). The log is read incrementally from where the last read
//! ended; the run's state is folded from the events themselves, so the stream knows when the run
//! is over without asking the store. Followed, it stays open until the run is terminal and every
//! event up to its end is sent; without `follow` it ends after what is there now.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use model::{Event, RunId, RunState};

use crate::{AppState, blocking};

struct Cursor {
    state: AppState,
    id: RunId,
    /// Sequence number of the last event sent (or skipped as already seen).
    after: u64,
    /// Byte offset in the event log where the next read starts.
    offset: u64,
    run_state: Option<RunState>,
    follow: bool,
    queue: VecDeque<Event>,
    ended: bool,
}

/// The SSE stream of run `id`'s events after sequence number `after`.
pub fn run_events(
    state: AppState,
    id: RunId,
    after: u64,
    follow: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let state_for_stop = state.clone();
    let cursor = Cursor {
        state,
        id,
        after,
        offset: 0,
        run_state: None,
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
            let notify = c.state.wakeups.of(&c.id);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Err(e) = read_more(&mut c).await {
                tracing::warn!(run.id = %c.id, error = %e.message, "event stream ends: cannot read the run");
                return None;
            }
            if c.queue.is_empty() && !c.ended {
                super::wait_for_run(&c.state, &c.id, notified).await;
            }
        }
    });
    let stop = crate::shutting_down_owned(&state_for_stop);
    Sse::new(futures_util::StreamExt::take_until(stream, stop)).keep_alive(KeepAlive::default())
}

/// Reads the events appended since the last read into the queue.
async fn read_more(c: &mut Cursor) -> Result<(), crate::ApiError> {
    let path = c.state.engine.store().layout().events_path(&c.id);
    let from = c.offset;
    let (events, next) = blocking(&c.state, move |_| {
        store::eventlog::read_events_from(&path, from)
            .map_err(|e| crate::ApiError::from(engine::EngineError::from(store::StoreError::from(e))))
    })
    .await?;
    c.offset = next;
    for e in events {
        if let Ok(s) = model::state::transition(c.run_state, &e.data) {
            c.run_state = Some(s);
        }
        if e.seq > c.after {
            c.queue.push_back(e);
        }
    }
    c.ended = !c.follow || c.run_state.is_some_and(RunState::is_terminal);
    Ok(())
}

fn sse_of(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.data.kind())
        .data(serde_json::to_string(e).expect("events serialize"))
}
