//! `/api/v1/blueprints` and `/api/v1/bundles`: what this server can run.
//! A blueprint version added with `PUT` is validated as `flowcraft-host
//! validate` does and refused with every problem found; once added (and
//! saved in the blueprint directory, see [`crate::BlueprintFolder`]), new
//! runs of the blueprint start with it and runs of earlier versions keep
//! theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::directory::{RunDirectory, RunQuery};
use flowcraft_core::mermaid::mermaid;
use flowcraft_core::plan::{Added, Plan};
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::store::Backend;
use flowcraft_core::validate::{Catalog, validate};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::{Api, ApiError, parse_body};

/// `GET /api/v1/blueprints`: the version new runs start with of each.
pub async fn list_blueprints<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
) -> Json<Value> {
    let registry = api.engine.plans();
    let blueprints: Vec<Value> = registry
        .latest()
        .iter()
        .map(|plan| {
            let blueprint = &plan.blueprint;
            json!({
                "id": blueprint.id,
                "version": blueprint.version_value(),
                "versions": registry.versions(&blueprint.id),
                "nodes": blueprint.nodes.len(),
            })
        })
        .collect();
    Json(json!({"blueprints": blueprints}))
}

/// `GET /api/v1/blueprints/{id}`: the definition, its loaded versions and
/// its Mermaid flowchart.
pub async fn read_blueprint<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    Path(blueprint_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let registry = api.engine.plans();
    let plan = registry
        .get(&blueprint_id)
        .ok_or_else(|| ApiError::not_found(format!("blueprint '{blueprint_id}' not found")))?;
    Ok(Json(json!({
        "blueprint": plan.blueprint,
        "versions": registry.versions(&blueprint_id),
        "mermaid": mermaid(&plan.blueprint, None),
    })))
}

/// `PUT /api/v1/blueprints/{id}`: adds a blueprint or a version of one.
/// `201` when added, `200` when that version was loaded already with the
/// same definition, `409` when it was loaded with another, `422` with the
/// problems when it is not valid.
pub async fn add_blueprint<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
    Path(blueprint_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let blueprint: Blueprint = parse_body(body)?;
    if blueprint.id != blueprint_id {
        return Err(ApiError::bad_request(format!(
            "the blueprint's id '{}' differs from '{blueprint_id}' in the path",
            blueprint.id
        )));
    }
    check(&api, &blueprint)?;
    let version = blueprint.version_value();
    let plan = Plan::new(blueprint, api.evaluator).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_blueprint",
            format!("blueprint '{blueprint_id}' is not valid: {error}"),
        )
    })?;
    register(&api, plan, version).await
}

/// Validates `blueprint` as `flowcraft-host validate` does: a `422` with
/// every problem found.
fn check<B: Backend + RunDirectory>(api: &Api<B>, blueprint: &Blueprint) -> Result<(), ApiError> {
    let registry = api.engine.plans();
    let implements = |uses: &str| api.plugins.implements(uses);
    let knows = |id: &str| id == blueprint.id || registry.get(id).is_some();
    let catalog = Catalog {
        implements: &implements,
        knows_blueprint: Some(&knows),
        evaluator: api.evaluator,
    };
    let problems: Vec<String> = validate(blueprint, &catalog)
        .iter()
        .map(ToString::to_string)
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_blueprint",
        format!(
            "blueprint '{}' is not valid: {}",
            blueprint.id,
            problems.join("; ")
        ),
    ))
}

/// Adds `plan` to the registry; a server that keeps added blueprints saves
/// it first, and adds nothing if it cannot.
async fn register<B: Backend + RunDirectory>(
    api: &Api<B>,
    plan: Plan,
    version: Value,
) -> Result<Response, ApiError> {
    let id = plan.blueprint.id.clone();
    let answer = json!({"id": id, "version": version});
    let created = || Ok((StatusCode::CREATED, Json(answer.clone())).into_response());
    let unchanged = || Ok(Json(answer.clone()).into_response());
    let conflict = || {
        Err(ApiError::conflict(format!(
            "version {version} of blueprint '{id}' is loaded with another definition; give the new one another metadata.version"
        )))
    };
    let registry = api.engine.plans();
    let Some(folder) = &api.saved_blueprints else {
        return match registry.add(plan) {
            Added::New => created(),
            Added::Unchanged => unchanged(),
            Added::Conflict => conflict(),
        };
    };
    let _turn = folder.turn().await;
    match registry.get_version(&id, &version) {
        Some(loaded) if loaded.blueprint == plan.blueprint => return unchanged(),
        Some(_) => return conflict(),
        None => {}
    }
    let saved = folder.save(&plan.blueprint).await.map_err(|problem| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_saved",
            format!("blueprint '{id}' was not added: {problem}"),
        )
    })?;
    tracing::info!(blueprint = %id, file = %saved.display(), "blueprint added through the API");
    registry.add(plan);
    created()
}

/// Live runs whose pins `GET /api/v1/bundles` looks at, at most.
const PINNED_SCAN: usize = 1_000;

/// How many progress records that listing reads at once.
const PIN_READS_IN_FLIGHT: usize = 16;

/// The live runs (running or awaiting) pinned to each bundle digest, and
/// whether there were more live runs than [`PINNED_SCAN`] to look at.
async fn pinned_runs<B: Backend + RunDirectory>(
    api: &Api<B>,
) -> Result<(BTreeMap<String, Vec<String>>, bool), ApiError> {
    let backend = api.engine.backend();
    let mut live = Vec::new();
    let mut truncated = false;
    for status in [RunState::Running, RunState::Awaiting] {
        let mut cursor = None;
        loop {
            let query = RunQuery {
                status: Some(status),
                blueprint_id: None,
                limit: PINNED_SCAN,
                cursor,
            };
            let page = backend.list_runs(&query).await?;
            live.extend(page.runs.into_iter().map(|run| run.run_id));
            cursor = page.next_cursor;
            truncated |= live.len() >= PINNED_SCAN && cursor.is_some();
            if cursor.is_none() || live.len() >= PINNED_SCAN {
                break;
            }
        }
    }
    live.truncate(PINNED_SCAN);
    let records: Vec<_> = futures_util::stream::iter(live)
        .map(|run_id| async move { backend.load_progress(&run_id).await })
        .buffered(PIN_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut pinned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for progress in records.into_iter().flatten() {
        let digests: BTreeSet<&String> = progress.pins.values().collect();
        for digest in digests {
            pinned
                .entry(digest.clone())
                .or_default()
                .push(progress.run_id.clone());
        }
    }
    Ok((pinned, truncated))
}

/// `GET /api/v1/bundles`: the loaded node bundles with their node types,
/// grants and the live runs pinned to them.
pub async fn list_bundles<B: Backend + RunDirectory>(
    State(api): State<Arc<Api<B>>>,
) -> Result<Json<Value>, ApiError> {
    let (mut pinned, truncated) = pinned_runs(&api).await?;
    let bundles: Vec<Value> = api
        .plugins
        .bundles()
        .iter()
        .map(|bundle| {
            json!({
                "name": bundle.name,
                "version": bundle.version,
                "digest": bundle.digest,
                "file": bundle.path.file_name().map(|name| name.to_string_lossy()),
                "nodeTypes": bundle.nodes.iter().map(|node| node.uses.clone()).collect::<Vec<_>>(),
                "grants": {"config": bundle.granted_config, "http": bundle.granted_http},
                "pinnedRuns": pinned.remove(&bundle.digest).unwrap_or_default(),
            })
        })
        .collect();
    let problems: Vec<Value> = api
        .plugins
        .problems()
        .iter()
        .map(|problem| {
            json!({
                "file": problem.path.file_name().map(|name| name.to_string_lossy()),
                "error": problem.error,
            })
        })
        .collect();
    Ok(Json(json!({
        "bundles": bundles,
        "problems": problems,
        "pinnedRunsComplete": !truncated,
    })))
}
