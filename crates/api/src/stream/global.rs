//! Every run's events as SSE, from the daemon's journal ([`crate::journal`]): each message's `id`
//! is the event's `g`, `event` its type and `data` the [`GlobalEvent`] as JSON. Followed, the
//! stream waits for the journal to grow and never ends on its own.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;

use crate::AppState;
use crate::wire::GlobalEvent;

/// Events read from the journal at a time.
const BATCH: usize = 512;

struct Cursor {
    state: AppState,
    after: u64,
    follow: bool,
    queue: VecDeque<GlobalEvent>,
    last: tokio::sync::watch::Receiver<u64>,
    done: bool,
}

/// The SSE stream of the journal after `after`.
pub fn all_events(state: AppState, after: u64, follow: bool) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let last = state.journal.subscribe();
    let state_for_stop = state.clone();
    let cursor = Cursor {
        state,
        after,
        follow,
        queue: VecDeque::new(),
        last,
        done: false,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.queue.pop_front() {
                c.after = e.g;
                let msg = SseEvent::default()
                    .id(e.g.to_string())
                    .event(e.event.data.kind())
                    .data(serde_json::to_string(&e).expect("events serialize"));
                return Some((Ok(msg), c));
            }
            if c.done {
                return None;
            }
            // Marked seen before reading: a `g` journaled during the read wakes the wait below.
            let last = *c.last.borrow_and_update();
            if last > c.after {
                let after = c.after;
                let journal = c.state.journal.clone();
                match tokio::task::spawn_blocking(move || journal.read_after(after, BATCH)).await {
                    Ok(Ok(events)) if !events.is_empty() => {
                        c.queue.extend(events);
                        continue;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e.message, "event stream ends: cannot read the journal");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
            if !c.follow {
                c.done = true;
                continue;
            }
            if c.last.changed().await.is_err() {
                return None;
            }
        }
    });
    let stop = crate::shutting_down_owned(&state_for_stop);
    Sse::new(futures_util::StreamExt::take_until(stream, stop)).keep_alive(KeepAlive::default())
}
