//! `/v1/runs`: create (idempotent), list (filters, cursor pages), get, stop, delete, and a
//! run's events and captured output.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use engine::RunRequest;
use engine::view::RunView;
use model::{RunId, RunState};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::params::{Body, Query};
use crate::wire::{CreateRun, RunEvents, RunLogs, RunPage};
use crate::{ApiError, AppState, blocking, quick_or_blocking};

/// Runs per page when `limit` is not given, and the most one page holds.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// `POST /v1/runs`: 201 with the new run, or 200 with the existing one when the id (or the
/// `Idempotency-Key`) was used before with the same body; 409 `RUN_ID_CONFLICT` with another.
pub async fn create(
    State(state): State<AppState>,
    transport: Option<axum::Extension<crate::Transport>>,
    headers: HeaderMap,
    Body(body): Body<CreateRun>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    // A whole environment (LD_PRELOAD, PATH…) for the supervisor, never recorded: only for the
    // state directory's owner, on the socket only they can open.
    if body.launch_env.is_some() && transport.map(|t| t.0) != Some(crate::Transport::Unix) {
        return Err(ApiError::invalid(
            "launch_env is accepted only on the daemon's unix socket (<state>/daemon/api.sock)",
        ));
    }
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))
        })
        .transpose()?;
    let id = match (&body.id, key) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give either an `id` or an Idempotency-Key header, not both",
            ));
        }
        (Some(id), None) => Some(RunId::parse(id).map_err(|e| ApiError::invalid(e.to_string()))?),
        (None, Some(key)) if key.is_empty() || key.len() > 255 => {
            return Err(ApiError::invalid("Idempotency-Key must be 1 to 255 characters"));
        }
        (None, Some(key)) => Some(id_for_key(key)),
        (None, None) => None,
    };
    if !body.repo.is_absolute() {
        return Err(ApiError::invalid(format!(
            "repo must be an absolute path, not {}",
            body.repo.display()
        )));
    }
    // Strings that become paths, arguments or environment cannot hold NUL.
    no_nul("repo", &body.repo.to_string_lossy())?;
    for (what, text) in [
        ("agent", &body.agent),
        ("prompt", &body.prompt),
        ("base", &body.base),
        ("workflow", &body.workflow),
    ] {
        no_nul(what, text.as_deref().unwrap_or(""))?;
    }
    for arg in &body.command {
        no_nul("command", arg)?;
    }
    for gate in body.shadow.iter().flat_map(|s| &s.gates) {
        no_nul("shadow.gates", gate)?;
    }
    for (k, v) in body
        .env
        .iter()
        .chain(&body.labels)
        .chain(body.launch_env.iter().flatten())
    {
        no_nul("env and labels", k)?;
        no_nul("env and labels", v)?;
    }
    let req = RunRequest {
        id,
        agent: body.agent,
        prompt: body.prompt,
        args: body.command,
        repo_dir: body.repo,
        base: Some(body.base.unwrap_or_else(|| "HEAD".to_owned())),
        env: body.env,
        labels: body.labels,
        timeout: body.timeout_ms.map(Duration::from_millis),
        idle_timeout: body.idle_timeout_ms.map(Duration::from_millis),
        grace: Some(body.grace_ms.map_or(engine::DEFAULT_GRACE, Duration::from_millis)),
        keep: body.keep,
        checkpoints: body.checkpoints,
        launch_env: body.launch_env,
        workflow: body.workflow,
        isolation: body.isolation,
        shadow: body.shadow,
    };
    let created = blocking(&state, move |engine| Ok(engine.create_run(req)?)).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(RunView::from(&created.run))))
}

/// `INVALID_ARGUMENT` when `text` (part of `what`) holds a NUL character: no path, argument
/// or environment variable can.
pub(crate) fn no_nul(what: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::invalid(format!("{what} must not contain NUL characters")));
    }
    Ok(())
}

/// The run id an `Idempotency-Key` stands for: the same key is the same run.
fn id_for_key(key: &str) -> RunId {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    RunId::parse(&format!("key-{hex}")).expect("hex ids are valid")
}

/// `GET /v1/runs?state=S[,S…]&agent=A&label=K=V&limit=N&cursor=C`: newest first. `state` and
/// `label` may repeat (states are ORed, labels ANDed). `next_cursor` continues the listing.
pub async fn list(State(state): State<AppState>, q: Query) -> Result<Json<RunPage>, ApiError> {
    let mut states = Vec::new();
    for s in q.all("state").into_iter().flat_map(|v| v.split(',')) {
        states.push(s.parse::<RunState>().map_err(|e| {
            ApiError::invalid(e.to_string()).hint(format!("states: {}", RunState::ALL.map(|s| s.as_str()).join(", ")))
        })?);
    }
    let mut labels = Vec::new();
    for l in q.all("label") {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| ApiError::invalid(format!("label {l:?} is not KEY=VALUE")))?;
        labels.push((k.to_owned(), v.to_owned()));
    }
    let limit = q.parse::<usize>("limit")?.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let after = q.get("cursor").map(Cursor::parse).transpose()?;
    let filter = store::RunFilter {
        states,
        agent: q.get("agent").map(str::to_owned),
        labels,
        limit: None,
    };
    let mut runs = blocking(&state, move |engine| Ok(engine.list(&filter)?)).await?;
    runs.sort_by(|a, b| Cursor::of(b).cmp(&Cursor::of(a)));
    let page: Vec<_> = runs
        .iter()
        .filter(|r| after.as_ref().is_none_or(|c| Cursor::of(r) < *c))
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| Cursor::of(page[limit - 1]).to_string());
    let views: Vec<RunView> = page.iter().take(limit).map(|r| RunView::from(*r)).collect();
    Ok(Json(RunPage {
        next_cursor: next,
        runs: views,
    }))
}

/// A position in the newest-first listing: creation time, then id.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor {
    created_ns: i128,
    id: String,
}

impl Cursor {
    fn of(r: &store::RunRecord) -> Cursor {
        Cursor {
            created_ns: r.created_at.as_nanosecond(),
            id: r.id.as_str().to_owned(),
        }
    }

    fn parse(text: &str) -> Result<Cursor, ApiError> {
        let bad = || ApiError::invalid(format!("cursor {text:?} is not one this API gave"));
        let (ns, id) = text.split_once('~').ok_or_else(bad)?;
        Ok(Cursor {
            created_ns: ns.parse().map_err(|_| bad())?,
            id: id.to_owned(),
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}~{}", self.created_ns, self.id)
    }
}

/// `GET /v1/runs/{id}` (an id or a unique prefix): the run, its state checked against its
/// supervisor first, as `agentctl show --json`. Most calls only read (the projection is current
/// and the run finished or its supervisor alive) and are answered at once; the rest — a
/// prefix, a log to catch up on, a lost supervisor to record — go to a blocking thread.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunView>, ApiError> {
    let rec = quick_or_blocking(
        &state,
        id,
        |engine, id| engine.refresh_if_current(id),
        |engine, id| {
            let id = engine.resolve(&id)?;
            Ok(engine.refresh(&id, "api")?)
        },
    )
    .await?;
    Ok(Json(RunView::from(rec)))
}

/// `POST /v1/runs/{id}/stop[?grace_ms=N]`: starts the stop (202) and answers at once; the run
/// reaches a terminal state within about three graces.
pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Query,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let grace = q
        .parse::<u64>("grace_ms")?
        .map_or(engine::DEFAULT_GRACE, Duration::from_millis);
    let rec = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.stop(&id, grace)?)
    })
    .await?;
    let status = if rec.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(RunView::from(&rec))))
}

/// `POST /v1/runs/{id}/promote`: as `agentctl promote` — validates a finished shadow run's
/// change (path policy, then gates) and moves the run's branch to it in one update. A refusal
/// is a 200 with `promoted: false` and the reasons; the request lasts as long as the gates
/// (it is exempt from the request time limit).
pub async fn promote(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<model::Promotion>, ApiError> {
    let promotion = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.promote(&id)?)
    })
    .await?;
    Ok(Json(promotion))
}

/// Whether a request is a promotion, which runs gates for as long as they take.
pub(crate) fn is_promotion(req: &axum::extract::Request) -> bool {
    req.method() == axum::http::Method::POST && req.uri().path().ends_with("/promote")
}

/// `DELETE /v1/runs/{id}[?force=true]`: as `agentctl rm` (the worktree is saved as a checkpoint
/// first); an active run is refused with `RUN_ACTIVE` unless `force`.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Query,
) -> Result<Json<engine::RmReport>, ApiError> {
    let force = q.flag("force")?;
    let report = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.rm(&id, force)?)
    })
    .await?;
    Ok(Json(report))
}

/// `GET /v1/runs/{id}/events[?after=SEQ][&follow=true]`: the run's event log after `SEQ`. As
/// JSON (`{"run", "events"}`), or as server-sent events when the client accepts
/// `text/event-stream` or asks to `follow` (see [`crate::stream`]).
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Query,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let ask = crate::stream::asked(&headers, &q, "after")?;
    let after = ask.from;
    let id = blocking(&state, move |engine| Ok(engine.resolve(&id)?)).await?;
    if ask.stream {
        return Ok(crate::stream::events::run_events(state, id, after, ask.follow).into_response());
    }
    let rid = id.clone();
    let events = blocking(&state, move |engine| {
        Ok(engine.store().events(&rid).map_err(engine::EngineError::from)?)
    })
    .await?;
    let events: Vec<_> = events.into_iter().filter(|e| e.seq > after).collect();
    Ok(Json(RunEvents { events, run: id }).into_response())
}

/// `GET /v1/runs/{id}/logs[?offset=N][&follow=true]`: captured output from byte offset `N` of
/// the output log, as `agentctl logs --json` chunks, and the offset to continue from. As
/// server-sent events when the client accepts `text/event-stream` or asks to `follow` (see
/// [`crate::stream::logs`]); `Last-Event-ID` then resumes after the last chunk seen.
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Query,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let ask = crate::stream::asked(&headers, &q, "offset")?;
    let offset = ask.from;
    if ask.stream {
        let id = blocking(&state, move |engine| Ok(engine.resolve(&id)?)).await?;
        return Ok(crate::stream::logs::run_output(state, id, offset, ask.follow).into_response());
    }
    let (id, batch) = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        let batch = engine.logs(&id, offset)?;
        Ok((id, batch))
    })
    .await?;
    let chunks: Vec<Value> = batch.chunks.iter().map(engine::view::chunk_json).collect();
    Ok(Json(RunLogs {
        chunks,
        next_offset: batch.next_offset,
        run: id,
    })
    .into_response())
}
