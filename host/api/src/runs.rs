//! `/api/v1/runs`: start a run (idempotent by run id), list runs, read one
//! (optionally waiting until it ends or awaits input), resume, cancel and
//! retry, with the semantics of the CLI commands of the same names.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowcraft_core::context::{ContextMap, context_from_value, context_to_object};
use flowcraft_core::directory::{RunDirectory, RunQuery, StatusWatch};
use flowcraft_core::engine::EngineError;
use flowcraft_core::plan::Plan;
use flowcraft_core::progress::{NodeStatus, RunProgress, RunState};
use flowcraft_core::store::Backend;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{Api, ApiError, parse_body};

/// Runs in a page unless `limit` says otherwise, and the most it may say.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// The longest `?wait=` a read may ask for, in seconds.
const MAX_WAIT_SECONDS: u64 = 60;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    blueprint_id: String,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    run_id: Option<String>,
}

/// `POST /api/v1/runs`: `201 {"runId","status"}`, or `200` with the same
/// when a run with that id was started before (a retried start).
pub async fn start<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: StartRequest = parse_body(body)?;
    let initial = context_object(request.context, "context")?;
    if let Some(run_id) = &request.run_id {
        check_run_id(run_id)?;
    }
    let started = api
        .engine
        .start_run(&request.blueprint_id, request.run_id, initial)
        .await;
    match started {
        Ok(run_id) => {
            let status = current_status(&api, &run_id).await?;
            let location = format!("/api/v1/runs/{run_id}");
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(json!({"runId": run_id, "status": status})),
            )
                .into_response())
        }
        Err(EngineError::RunExists(run_id)) => {
            let existing = load_progress(&api, &run_id).await?;
            if existing.blueprint_id != request.blueprint_id {
                return Err(ApiError::conflict(format!(
                    "run '{run_id}' exists as a run of blueprint '{}'; choose another run id",
                    existing.blueprint_id
                )));
            }
            let status = current_status(&api, &run_id).await?;
            Ok(Json(json!({"runId": run_id, "status": status})).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

/// A run id both backends can store: 1–255 characters, none of them a
/// control character or one of `/ \ ? #` (Cosmos DB refuses those in ids).
fn check_run_id(run_id: &str) -> Result<(), ApiError> {
    let length = run_id.chars().count();
    let bad = run_id
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '\\' | '?' | '#'));
    if (1..=255).contains(&length) && bad.is_none() {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "`runId` must be 1-255 characters without control characters or / \\ ? #",
    ))
}

/// A JSON object field as a context (absent: empty).
fn context_object(value: Option<Value>, field: &str) -> Result<ContextMap, ApiError> {
    match value {
        None => Ok(ContextMap::new()),
        Some(value) => context_from_value(value)
            .ok_or_else(|| ApiError::bad_request(format!("`{field}` must be a JSON object"))),
    }
}

async fn load_progress<B: Backend>(api: &Api<B>, run_id: &str) -> Result<RunProgress, ApiError> {
    api.engine
        .backend()
        .load_progress(run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run '{run_id}' not found")))
}

/// The run's state as its progress record has it: that changes with the
/// step that changes it (a resumed run is running at once), while the status
/// document is published after.
async fn current_status<B: Backend>(api: &Api<B>, run_id: &str) -> Result<RunState, ApiError> {
    Ok(load_progress(api, run_id).await?.state)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    blueprint_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/runs?status=&blueprintId=&limit=&cursor=`: a page of runs,
/// newest first, with the cursor of the next page.
pub async fn list<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let status = params
        .status
        .map(|name| {
            serde_json::from_value::<RunState>(Value::String(name.clone())).map_err(|_| {
                ApiError::bad_request(format!(
                    "`status` '{name}' is not one of running, awaiting, completed, failed, cancelled"
                ))
            })
        })
        .transpose()?;
    let limit = match params.limit {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`limit` must be a whole number from 1 to {MAX_PAGE}"
                ))
            })?,
    };
    let query = RunQuery {
        status,
        blueprint_id: params.blueprint_id,
        limit,
        cursor: params.cursor,
    };
    Ok(Json(api.engine.backend().list_runs(&query).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    wait: Option<String>,
}

/// `GET /api/v1/runs/{runId}?wait=SECONDS`: the run's status, context,
/// errors and nodes; with `wait`, answered once the run is over or awaits
/// input, or when the seconds are up.
pub async fn read<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    Path(run_id): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let wait = match params.wait {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|seconds| *seconds <= MAX_WAIT_SECONDS)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`wait` must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}"
                ))
            })?,
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut watch = match wait {
        0 => None,
        _ => Some(api.engine.backend().watch_status(&run_id).await),
    };
    let mut shutdown = api.shutdown.clone();
    loop {
        let (view, settled) = run_view(&api, &run_id).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let stopping = *shutdown.borrow();
        match &mut watch {
            Some(watch) if !settled && !left.is_zero() && !stopping => {
                tokio::select! {
                    () = watch.changed(left) => {}
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            return Ok(Json(view).into_response());
                        }
                    }
                }
            }
            _ => return Ok(Json(view).into_response()),
        }
    }
}

/// A run as the API shows it, and whether it is over or awaits input.
async fn run_view<B: Backend>(api: &Api<B>, run_id: &str) -> Result<(Value, bool), ApiError> {
    let backend = api.engine.backend();
    let progress = load_progress(api, run_id).await?;
    let status = backend.read_status(run_id).await?;
    let context = backend
        .load_context(run_id)
        .await?
        .map(|stored| context_to_object(&stored.values))
        .unwrap_or_default();
    let state = progress.state;
    let settled = state.is_terminal() || state == RunState::Awaiting;
    let plan = api
        .engine
        .plans()
        .get_version(&progress.blueprint_id, &progress.blueprint_version);
    let view = json!({
        "runId": run_id,
        "blueprintId": progress.blueprint_id,
        "blueprintVersion": progress.blueprint_version,
        "status": state,
        "lastUpdated": status.as_ref().map(|s| s.last_updated),
        "finalStatus": status.and_then(|s| s.final_status),
        "context": context,
        "errors": progress.errors,
        "warnings": progress.warnings,
        "awaiting": progress.awaiting,
        "nodes": node_views(plan.as_deref(), &progress),
        "edges": edge_views(plan.as_deref(), &progress),
    });
    Ok((view, settled))
}

/// Every node of the run's blueprint (and those it added at run time) with
/// its state, the attempts it took, when it was last scheduled
/// (`startedAt`) and stopped being so (`finishedAt`), in Unix ms, and the
/// last error recorded against it.
fn node_views(plan: Option<&Plan>, progress: &RunProgress) -> Vec<Value> {
    let defined = plan.iter().flat_map(|plan| plan.blueprint.nodes.iter());
    defined
        .chain(progress.dynamic.nodes.iter())
        .map(|node| {
            let status = progress.status(&node.id);
            let attempts = match status {
                NodeStatus::Waiting | NodeStatus::Skipped => 0,
                _ => progress.nodes.get(&node.id).map_or(1, |n| n.attempt.max(1)),
            };
            let times = progress.nodes.get(&node.id);
            let error = progress
                .errors
                .iter()
                .rev()
                .find(|error| error.node_id == node.id)
                .map(|error| &error.message);
            json!({
                "id": node.id,
                "uses": node.uses,
                "state": node_state(status),
                "attempts": attempts,
                "startedAt": times.and_then(|n| n.started_at),
                "finishedAt": times.and_then(|n| n.finished_at),
                "error": error,
            })
        })
        .collect()
}

/// The run's edges: its blueprint version's (`source`, `target` and the
/// `action` that takes it, if any) and those its nodes added at run time.
fn edge_views(plan: Option<&Plan>, progress: &RunProgress) -> Vec<Value> {
    let defined = plan.iter().flat_map(|plan| plan.blueprint.edges.iter());
    let defined = defined
        .map(|edge| json!({"source": edge.source, "target": edge.target, "action": edge.action}));
    let added = progress
        .dynamic
        .edges
        .iter()
        .map(|(source, target)| json!({"source": source, "target": target, "action": null}));
    defined.chain(added).collect()
}

fn node_state(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Waiting => "pending",
        NodeStatus::Scheduled => "running",
        NodeStatus::Awaiting => "awaiting",
        NodeStatus::Done => "completed",
        NodeStatus::Skipped => "skipped",
        NodeStatus::Failed => "failed",
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResumeRequest {
    node_id: Option<String>,
    action: Option<String>,
    output: Option<Value>,
}

/// `POST /api/v1/runs/{runId}/resume`: resumes an awaiting node (the first
/// one without `nodeId`) with `output` and `action`.
pub async fn resume<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    Path(run_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ResumeRequest = parse_body(body)?;
    api.engine
        .resume(
            &run_id,
            request.node_id.as_deref(),
            request.action,
            request.output,
        )
        .await?;
    status_answer(&api, &run_id, json!({})).await
}

/// `POST /api/v1/runs/{runId}/cancel`.
pub async fn cancel<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    api.engine.cancel(&run_id).await?;
    status_answer(&api, &run_id, json!({})).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    context: Option<Value>,
}

/// `POST /api/v1/runs/{runId}/retry`: re-runs a failed run from its failed
/// nodes, after merging `context` into its context.
pub async fn retry<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    Path(run_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: RetryRequest = parse_body(body)?;
    let patch = context_object(request.context, "context")?;
    let rescheduled = api.engine.retry(&run_id, patch).await?;
    status_answer(&api, &run_id, json!({"rescheduled": rescheduled})).await
}

/// `POST /api/v1/webhooks/{runId}/{nodeId}`: the body (any JSON; `{}` when
/// empty) becomes the webhook node's output and the run goes on; a second
/// call is a `409`.
pub async fn call_webhook<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    Path((run_id, node_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let payload: Value = parse_body(body)?;
    api.engine.call_webhook(&run_id, &node_id, payload).await?;
    status_answer(&api, &run_id, json!({})).await
}

/// `{"runId","status", …extra}` for an operation on a run.
async fn status_answer<B: Backend>(
    api: &Api<B>,
    run_id: &str,
    extra: Value,
) -> Result<Response, ApiError> {
    let status = current_status(api, run_id).await?;
    let mut answer = json!({"runId": run_id, "status": status});
    if let (Some(answer), Value::Object(extra)) = (answer.as_object_mut(), extra) {
        answer.extend(extra);
    }
    Ok(Json(answer).into_response())
}
