//! A run's checkpoints over HTTP: list, take one, diff, roll back — the engine calls behind
//! `agentctl checkpoints|checkpoint|diff|rollback`, with the same JSON.

use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use checkpoint::diff::DiffFormat;
use engine::{CheckpointInfo, DiffTo, RollbackInfo};
use model::CheckpointRef;
use serde_json::Value;

use crate::params::{Body, OptionalBody, Query};
use crate::wire::{CheckpointList, CreateCheckpoint, Rollback};
use crate::{ApiError, AppState, blocking};

/// `GET /v1/runs/{id}/checkpoints`: id, time, trigger, files changed, +/- of each.
pub async fn list(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<CheckpointList>, ApiError> {
    let (id, list) = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        let list = engine.checkpoints(&id)?;
        Ok((id, list))
    })
    .await?;
    Ok(Json(CheckpointList {
        checkpoints: list,
        run: id,
    }))
}

/// `POST /v1/runs/{id}/checkpoints` with `{"message": …}` (optional body): 201 with the new
/// checkpoint, or 200 with the last one when nothing changed since it (`"created": false`).
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<CreateCheckpoint>,
) -> Result<(StatusCode, Json<CheckpointInfo>), ApiError> {
    // The body is optional: none means no message.
    let message = body.and_then(|b| b.message);
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
    let paths = q.all("path");
    for p in &paths {
        super::runs::no_nul("path", p)?;
    }
    let paths: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
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
    let color = q.flag("color")?;
    let (id, result) = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        let result = engine.diff(&id, from, to, &paths, format.map(|f| (f, color)))?;
        Ok((id, result))
    })
    .await?;
    let mut body = engine::view::diff_json(&id, &result);
    if let Some(text) = &result.text {
        body["text"] = String::from_utf8_lossy(text).into_owned().into();
    }
    Ok(Json(body))
}

/// `POST /v1/runs/{id}/rollback` with `{"to": N|"last", "paths": [...]}`: as `agentctl
/// rollback` (a pre-rollback checkpoint first; a running agent is paused meanwhile).
pub async fn rollback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<Rollback>,
) -> Result<Json<RollbackInfo>, ApiError> {
    let to_text = match &body.to {
        // JSON does not tell 3 from 3.0.
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.as_u64().is_none() && f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
                (f as u32).to_string()
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => {
            return Err(ApiError::invalid(format!(
                "`to` must be a checkpoint number or \"last\", not {other}"
            )));
        }
    };
    let to: CheckpointRef = to_text.parse().map_err(|e| ApiError::invalid(format!("`to`: {e}")))?;
    for p in &body.paths {
        super::runs::no_nul("paths", &p.to_string_lossy())?;
    }
    let info = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.rollback(&id, to, &body.paths)?)
    })
    .await?;
    Ok(Json(info))
}
