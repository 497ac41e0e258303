//! The HTTP API of `flowcraft-host serve` (JSON, under `/api/v1`; the
//! OpenAPI document at `/api/v1/openapi.json`):
//!
//! - runs: start (idempotent by run id), list a page at a time, read one
//!   (with a long poll until it ends or awaits), resume, cancel, retry
//!   ([`runs`]);
//! - blueprints (list, read with its Mermaid graph, add a version) and
//!   bundles ([`catalog`]);
//! - dead letters (list, replay), `/healthz`, `/readyz` and `/metrics`
//!   ([`admin`]);
//! - the dashboard at `/` ([`dashboard`]), a client of the routes above.
//!
//! It runs over any deployment whose backend is a
//! [`RunDirectory`](flowcraft_core::directory::RunDirectory) (SQLite, Azure)
//! with the plugin host as its node runner. With bearer tokens configured,
//! every route but `/healthz` and the dashboard's page and assets
//! requires one ([`auth`]). Request bodies are
//! limited to [`MAX_BODY`]; a body that is not what a route takes is a 400
//! naming the field.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod dashboard;
mod error;
pub mod runs;
mod saved;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::{get, post};
use flowcraft_core::directory::RunDirectory;
use flowcraft_core::engine::Engine;
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::store::Backend;
use flowcraft_plugins::PluginHost;
use flowcraft_telemetry::Metrics;
use serde::de::DeserializeOwned;

pub use auth::Tokens;
pub use error::ApiError;
pub use saved::BlueprintFolder;

/// The largest request body: a run's context may be up to 2 MB of JSON.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What the handlers share.
pub struct Api<B> {
    pub engine: Arc<Engine<B, PluginHost>>,
    pub plugins: Arc<PluginHost>,
    /// How blueprints added through the API evaluate expressions.
    pub evaluator: EvaluatorMode,
    pub tokens: Tokens,
    /// Becomes `true` when the server shuts down: long polls answer then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Where blueprints added with `PUT` are saved to outlive the process
    /// (`None`: they are kept in memory only).
    pub saved_blueprints: Option<BlueprintFolder>,
    /// This process's metrics, answered at `/metrics` (`None`: that route
    /// is a 404).
    pub metrics: Option<Metrics>,
}

/// Every route, with authentication and the body limit.
pub fn router<B: Backend + RunDirectory>(api: Arc<Api<B>>) -> Router {
    let v1 = Router::new()
        .route("/openapi.json", get(admin::openapi))
        .route("/runs", post(runs::start::<B>).get(runs::list::<B>))
        .route("/runs/{run_id}", get(runs::read::<B>))
        .route("/runs/{run_id}/resume", post(runs::resume::<B>))
        .route("/runs/{run_id}/cancel", post(runs::cancel::<B>))
        .route("/runs/{run_id}/retry", post(runs::retry::<B>))
        .route(
            "/webhooks/{run_id}/{node_id}",
            post(runs::call_webhook::<B>),
        )
        .route("/blueprints", get(catalog::list_blueprints::<B>))
        .route(
            "/blueprints/{blueprint_id}",
            get(catalog::read_blueprint::<B>).put(catalog::add_blueprint::<B>),
        )
        .route("/bundles", get(catalog::list_bundles::<B>))
        .route("/poison", get(admin::dead_letters::<B>))
        .route("/poison/replay", post(admin::replay::<B>));
    Router::new()
        .nest("/api/v1", v1)
        .route("/readyz", get(admin::ready::<B>))
        .route("/metrics", get(admin::metrics::<B>))
        .fallback(admin::no_route)
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            auth::require_token::<B>,
        ))
        .route("/healthz", get(admin::healthy))
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Serves `router` on `listener` until `shutdown` resolves; requests under
/// way are finished.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A request body as `T`: an empty body is `{}` (for routes whose fields
/// are all optional); a malformed one is a 400 naming what is wrong.
pub(crate) fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {MAX_BODY} bytes"),
            )
        } else {
            ApiError::bad_request(format!("the request body could not be read: {rejection}"))
        }
    })?;
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(text)
        .map_err(|error| ApiError::bad_request(format!("the request body is not valid: {error}")))
}
