//! `POST /v1/gc` and `POST /v1/reconcile`: the state directory's upkeep, as `agentctl gc` and
//! `agentctl reconcile` do it.

use std::time::Duration;

use axum::Json;
use axum::extract::State;

use crate::params::{Body, Query};
use crate::wire::{FindingView, GcReport, GcRequest, GcRun, PrunedRefsView, ReconcileReport};
use crate::{ApiError, AppState, blocking};

/// How long after finishing a run's worktree is kept when the request does not say.
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `POST /v1/gc` with `{"older_than_ms", "dry_run", "force", "prune_refs"}` (all optional).
pub async fn gc(State(state): State<AppState>, Body(req): Body<GcRequest>) -> Result<Json<GcReport>, ApiError> {
    let opts = engine::GcOptions {
        older_than: req.older_than_ms.map_or(DEFAULT_RETENTION, Duration::from_millis),
        dry_run: req.dry_run,
        force: req.force,
    };
    let (items, pruned) = blocking(&state, move |engine| Ok(engine.collect(&opts, req.prune_refs)?)).await?;
    Ok(Json(GcReport {
        runs: items.iter().map(GcRun::from).collect(),
        pruned_refs: pruned.iter().map(PrunedRefsView::from).collect(),
    }))
}

/// `POST /v1/reconcile[?dry_run=true]`: compares runs with supervisors, processes, worktrees and
/// refs; fixes what is safe (nothing with `dry_run`) and reports the rest.
pub async fn reconcile(State(state): State<AppState>, q: Query) -> Result<Json<ReconcileReport>, ApiError> {
    let dry_run = q.flag("dry_run")?;
    let findings = blocking(&state, move |engine| Ok(engine.reconcile(dry_run)?)).await?;
    Ok(Json(ReconcileReport {
        dry_run,
        findings: findings.iter().map(FindingView::from).collect(),
    }))
}
