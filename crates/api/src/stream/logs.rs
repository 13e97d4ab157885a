//! One run's output as SSE: each chunk the agent wrote is an `output` message whose `data` is the
//! chunk as `agentctl logs --json` prints it and whose `id` is the byte offset in the output log
//! just after it — so `Last-Event-ID` (or `?offset=`) resumes exactly after the last chunk seen.
//! When the run is over and all its output sent, a last `end` message carries the run (as `GET
//! /v1/runs/{id}`) and the stream closes; without `follow` it closes after what is there now.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use engine::view::RunView;
use futures_util::Stream;
use model::RunId;
use model::provider::OutputChunk;

use crate::{AppState, blocking};

struct Cursor {
    state: AppState,
    id: RunId,
    offset: u64,
    follow: bool,
    queue: VecDeque<OutputChunk>,
    /// The run as it ended, once it did and its last output is queued.
    ended: Option<RunView>,
    /// Nothing more to read (not followed, or ended).
    done: bool,
}

/// The SSE stream of run `id`'s output from byte `offset` of its output log.
pub fn run_output(
    state: AppState,
    id: RunId,
    offset: u64,
    follow: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let state_for_stop = state.clone();
    let cursor = Cursor {
        state,
        id,
        offset,
        follow,
        queue: VecDeque::new(),
        ended: None,
        done: false,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(chunk) = c.queue.pop_front() {
                let msg = SseEvent::default()
                    .id(chunk.end.to_string())
                    .event("output")
                    .data(engine::view::chunk_json(&chunk).to_string());
                return Some((Ok(msg), c));
            }
            if c.done {
                let view = c.ended.take()?;
                let msg = SseEvent::default()
                    .id(c.offset.to_string())
                    .event("end")
                    .data(serde_json::to_string(&view).expect("runs serialize"));
                return Some((Ok(msg), c));
            }
            let notify = c.state.wakeups.of(&c.id);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (id, offset) = (c.id.clone(), c.offset);
            // The run's state is read before its output, so output written before the end is
            // never missed: once the run is seen terminal, this read gets everything.
            let read = blocking(&c.state, move |engine| {
                let rec = engine
                    .store()
                    .sync_run(&id)
                    .map_err(engine::EngineError::from)?
                    .ok_or_else(|| engine::EngineError::from(store::StoreError::NotFound(id.to_string())))?;
                let batch = engine.logs(&id, offset)?;
                Ok((rec, batch))
            })
            .await;
            let (rec, batch) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(run.id = %c.id, error = %e.message, "output stream ends: cannot read the run");
                    return None;
                }
            };
            c.offset = batch.next_offset;
            c.queue.extend(batch.chunks);
            if rec.state.is_terminal() {
                c.ended = Some(RunView::from(&rec));
                c.done = true;
            } else if !c.follow {
                c.done = true;
            }
            if c.queue.is_empty() && !c.done {
                super::wait_for_run(&c.state, &c.id, notified).await;
            }
        }
    });
    let stop = crate::shutting_down_owned(&state_for_stop);
    Sse::new(futures_util::StreamExt::take_until(stream, stop)).keep_alive(KeepAlive::default())
}
