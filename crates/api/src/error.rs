//! Errors as the API answers them: the CLI's stable error codes, each with an HTTP status, in
//! the body `{"error": {"code", "message", "hint", "details"}}`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::EngineError;
use model::ErrorCode;

use crate::wire::{ErrorBody, ErrorDetail};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub hint: Option<String>,
    /// More about it, per code (empty for every code so far).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            hint: None,
            details: Default::default(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }
}

/// The HTTP status of each error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument
        | ErrorCode::RunAmbiguous
        | ErrorCode::NotAWorkflowRun
        | ErrorCode::NotAShadowRun => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::RunNotFound
        | ErrorCode::AgentNotFound
        | ErrorCode::BaseNotFound
        | ErrorCode::CheckpointNotFound
        | ErrorCode::NotFound
        | ErrorCode::WorkflowNotFound
        | ErrorCode::TokenNotFound => StatusCode::NOT_FOUND,
        ErrorCode::RunIdConflict
        | ErrorCode::RunActive
        | ErrorCode::WorktreeDirty
        | ErrorCode::InvalidStateTransition
        | ErrorCode::DaemonRunning
        | ErrorCode::PromotionRefused => StatusCode::CONFLICT,
        ErrorCode::WorktreeGone | ErrorCode::CheckpointPruned => StatusCode::GONE,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::InvalidConfig
        | ErrorCode::NotAGitRepo
        | ErrorCode::AgentUnavailable
        | ErrorCode::SecretNotFound
        | ErrorCode::WorkflowInvalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::SandboxUnavailable | ErrorCode::RouterModelUnusable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::RequestTimeout => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StateDirUnusable
        | ErrorCode::GitFailed
        | ErrorCode::SpawnFailed
        | ErrorCode::CheckpointFailed
        | ErrorCode::Io
        | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError {
            code: e.code,
            message: e.message,
            hint: e.hint,
            details: Default::default(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                details: self.details,
                hint: self.hint,
                message: self.message,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
