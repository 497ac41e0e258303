//! Health, readiness, dead letters, the OpenAPI document and the answer for
//! routes that do not exist.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use flowcraft_core::directory::RunDirectory;
use flowcraft_core::store::Backend;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Api, ApiError, parse_body};

/// The OpenAPI 3.1 description of every route.
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /healthz`: the process is up (no token needed).
pub async fn healthy() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: every backend service answers; `503` naming the one
/// that does not.
pub async fn ready<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
) -> Result<Json<Value>, ApiError> {
    api.engine.backend().check().await.map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("not ready: {error}"),
        )
    })?;
    Ok(Json(json!({"status": "ready"})))
}

/// `GET /metrics`: this process's metrics in the Prometheus text format.
pub async fn metrics<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
) -> Result<Response, ApiError> {
    let metrics = api.metrics.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server keeps no metrics",
        )
    })?;
    Ok(metrics.scrape().into_response())
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /api/v1/poison`: the messages the workers gave up on, with why.
pub async fn dead_letters<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
) -> Result<Json<Value>, ApiError> {
    let letters = api.engine.backend().dead_letters().await?;
    Ok(Json(json!({"messages": letters})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    ids: Option<Vec<String>>,
}

/// `POST /api/v1/poison/replay` `{"ids"?}`: moves dead letters (those
/// named, or all) back to the job queue.
pub async fn replay<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: ReplayRequest = parse_body(body)?;
    let replayed = api
        .engine
        .backend()
        .replay_dead_letters(request.ids)
        .await?;
    Ok(Json(json!({"replayed": replayed})))
}

/// Any other path.
pub async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}; the routes are listed in /api/v1/openapi.json",
        uri.path()
    ))
}
