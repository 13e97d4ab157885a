//! A run's checkpoints over HTTP: list, take one, diff, roll back — the engine calls behind
//! `agentctl checkpoints|checkpoint|diff|rollback`, with the same JSON.

use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use checkpoint::diff::DiffFormat;
use engine::{CheckpointInfo, DiffTo, RollbackInfo};
use model::CheckpointRef;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::params::{Body, Query};
use crate::{ApiError, AppState, blocking};

/// `GET /v1/runs/{id}/checkpoints`: id, time, trigger, files changed, +/- of each.
pub async fn list(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (id, list) = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        let list = engine.checkpoints(&id)?;
        Ok((id, list))
    })
    .await?;
    Ok(Json(json!({ "run": id, "checkpoints": list })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCheckpoint {
    message: Option<String>,
}

/// `POST /v1/runs/{id}/checkpoints` with `{"message": …}` (optional body): 201 with the new
/// checkpoint, or 200 with the last one when nothing changed since it (`"created": false`).
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CheckpointInfo>), ApiError> {
    // The body is optional: none means no message.
    let message = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<CreateCheckpoint>(&body)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?
            .message
    };
    let info = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.checkpoint(&id, message)?)
    })
    .await?;
    let status = if info.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

/// `GET /v1/runs/{id}/diff?from=CP&to=CP|live&path=P…&format=patch|stat|name-only`: per-file
/// stats as `agentctl diff --json`, plus git's text in `"text"` when `format` is given.
pub async fn diff(State(state): State<AppState>, Path(id): Path<String>, q: Query) -> Result<Json<Value>, ApiError> {
    let from = q.parse::<CheckpointRef>("from")?;
    let to = match q.get("to") {
        None => DiffTo::Default,
        Some("live") => DiffTo::Live,
        Some(_) => DiffTo::Checkpoint(q.parse::<CheckpointRef>("to")?.expect("present")),
    };
    let paths: Vec<PathBuf> = q.all("path").into_iter().map(PathBuf::from).collect();
    let format = match q.get("format") {
        None => None,
        Some("patch") => Some(DiffFormat::Patch),
        Some("stat") => Some(DiffFormat::Stat),
        Some("name-only") => Some(DiffFormat::NameOnly),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format {other:?}: expected patch, stat or name-only"
            )));
        }
    };
    let (id, result) = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        let result = engine.diff(&id, from, to, &paths, format.map(|f| (f, false)))?;
        Ok((id, result))
    })
    .await?;
    let mut body = engine::view::diff_json(&id, &result);
    if let Some(text) = &result.text {
        body["text"] = String::from_utf8_lossy(text).into_owned().into();
    }
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// A checkpoint number, or `"last"`.
    pub to: Value,
    /// Only these paths (relative to the worktree); all of it when empty.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

/// `POST /v1/runs/{id}/rollback` with `{"to": N|"last", "paths": [...]}`: as `agentctl
/// rollback` (a pre-rollback checkpoint first; a running agent is paused meanwhile).
pub async fn rollback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<Rollback>,
) -> Result<Json<RollbackInfo>, ApiError> {
    let to_text = match &body.to {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => {
            return Err(ApiError::invalid(format!(
                "`to` must be a checkpoint number or \"last\", not {other}"
            )));
        }
    };
    let to: CheckpointRef = to_text.parse().map_err(|e| ApiError::invalid(format!("`to`: {e}")))?;
    let info = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.rollback(&id, to, &body.paths)?)
    })
    .await?;
    Ok(Json(info))
}
