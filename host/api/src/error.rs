//! The API's errors: `{"error": {"code", "message"}}` with the status code
//! that says who has to act (4xx the caller, 503 try again, 500 a bug).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowcraft_core::directory::ListError;
use flowcraft_core::engine::EngineError;
use flowcraft_core::store::StoreError;
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable word (`not_found`, `conflict`, …).
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_permanent() {
            Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused",
                error.to_string(),
            )
        } else {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{error}; try again"),
            )
        }
    }
}

impl From<ListError> for ApiError {
    fn from(error: ListError) -> Self {
        match error {
            ListError::BadCursor(_) => Self::bad_request(error.to_string()),
            ListError::Store(store) => store.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        match error {
            EngineError::Store(store) => store.into(),
            EngineError::UnknownRun(_)
            | EngineError::UnknownBlueprint(_)
            | EngineError::UnknownNode { .. }
            | EngineError::NoWebhook { .. } => Self::not_found(message),
            EngineError::RunExists(_)
            | EngineError::NotAwaiting { .. }
            | EngineError::NodeNotAwaiting { .. }
            | EngineError::NotRetryable { .. }
            | EngineError::UnknownBlueprintVersion { .. } => Self::conflict(message),
            EngineError::ReservedKey { .. } => Self::bad_request(message),
            EngineError::Pin { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unimplemented_node",
                message,
            ),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}
