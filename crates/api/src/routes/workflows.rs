//! Workflow runs over HTTP: a run's progress and messages, a message from the step running,
//! resuming an interrupted run, and the workflows a repository defines — the engine calls
//! behind `agentctl show|msgs|msg send|resume|workflows`, with the same JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use engine::view::RunView;
use engine::workflow::messages::OutgoingMessage;
use model::ErrorCode;

use super::runs::no_nul;
use crate::params::{Body, OptionalBody, Query};
use crate::wire::{MessageList, MessageReceipt, ResumeRun, SendMessage, WorkflowList, WorkflowProgress};
use crate::{ApiError, AppState, Transport, blocking};

/// `GET /v1/runs/{id}/workflow`: the workflow's name and where the run stands (steps finished,
/// the step in progress, the next one, the end, messages), folded from its events after its
/// state is checked against its supervisor. `NOT_A_WORKFLOW_RUN` for a single-agent run.
pub async fn progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowProgress>, ApiError> {
    let (rec, progress) = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        let rec = engine.refresh(&id, "api")?;
        let progress = engine.workflow_progress(&id)?;
        Ok((rec, progress))
    })
    .await?;
    let Some(progress) = progress else {
        return Err(ApiError::new(
            ErrorCode::NotAWorkflowRun,
            format!("run {} is not a workflow run: it has no steps", rec.id),
        ));
    };
    let workflow = rec
        .agent
        .strip_prefix(engine::workflow::AGENT_PREFIX)
        .unwrap_or(&rec.agent)
        .to_owned();
    Ok(Json(WorkflowProgress {
        run: rec.id,
        workflow,
        progress,
    }))
}

/// `GET /v1/runs/{id}/messages`: the messages between the run's steps, oldest first, each with
/// where it is (`in_flight`, `pending`, `delivered`, `void`, `undeliverable`).
pub async fn messages(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<MessageList>, ApiError> {
    let messages = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.messages(&id)?)
    })
    .await?;
    Ok(Json(MessageList { messages }))
}

/// `POST /v1/runs/{id}/messages` with `{"text", "to", "verdict", "from"}`: a message from the
/// step now running, recorded by the run's supervisor against that step → 201 with the receipt.
/// Refused with `INVALID_STATE_TRANSITION` when no step runs.
pub async fn send(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<SendMessage>,
) -> Result<(StatusCode, Json<MessageReceipt>), ApiError> {
    no_nul("text", &body.text)?;
    for (what, word) in [("to", &body.to), ("verdict", &body.verdict), ("from", &body.from)] {
        if let Some(w) = word
            && !model::workflow::valid_id(w)
        {
            return Err(ApiError::invalid(format!(
                "`{what}` must be one word of 1 to 64 letters, digits, `-` or `_`, not {w:?}"
            )));
        }
    }
    let msg = OutgoingMessage {
        from: body.from,
        to: body.to,
        verdict: body.verdict,
        text: body.text,
    };
    let receipt = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.send_message(&id, msg)?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(receipt)))
}

/// `POST /v1/runs/{id}/resume` with an optional `{"launch_env": {…}}`: starts a new supervisor
/// for an interrupted workflow run, which takes it up from its last finished step → the run (as
/// `agentctl resume --json`). A run whose supervisor is alive is answered as it is; a finished
/// one is `INVALID_STATE_TRANSITION`.
pub async fn resume(
    State(state): State<AppState>,
    transport: Option<axum::Extension<Transport>>,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<ResumeRun>,
) -> Result<Json<RunView>, ApiError> {
    let launch_env = body.unwrap_or_default().launch_env;
    // As for `POST /v1/runs`: a whole environment only for the state directory's owner.
    if launch_env.is_some() && transport.map(|t| t.0) != Some(Transport::Unix) {
        return Err(ApiError::invalid(
            "launch_env is accepted only on the daemon's unix socket (<state>/daemon/api.sock)",
        ));
    }
    for (k, v) in launch_env.iter().flatten() {
        no_nul("launch_env", k)?;
        no_nul("launch_env", v)?;
    }
    let rec = blocking(&state, move |engine| {
        let id = engine.resolve(&id)?;
        Ok(engine.resume(&id, launch_env.as_ref())?)
    })
    .await?;
    Ok(Json(RunView::from(&rec)))
}

/// `GET /v1/workflows?repo=ABS_DIR`: the workflows defined in the repository's
/// `.agentctl/workflows/` and the user's workflows, valid or not (as `agentctl workflows
/// --json`; `problems` says why one cannot run).
pub async fn list(State(state): State<AppState>, q: Query) -> Result<Json<WorkflowList>, ApiError> {
    let Some(repo) = q.get("repo").map(std::path::PathBuf::from) else {
        return Err(ApiError::invalid(
            "query parameter `repo` is required: an absolute path in the repository",
        ));
    };
    no_nul("repo", &repo.to_string_lossy())?;
    let list = blocking(&state, move |engine| {
        let repo = super::system::vcs_toplevel(&repo)?;
        Ok(engine.workflows(&repo)?)
    })
    .await?;
    Ok(Json(WorkflowList { workflows: list }))
}
