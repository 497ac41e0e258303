//! Run statuses in the status container, in upstream's document shape:
//! `{"id": runId, "runId": runId, "status": "running", "lastUpdated": <unix
//! seconds, integer>, "finalStatus": {...}?}`. Upstream writes `running`,
//! `completed` and `failed`; this host also writes `awaiting` and `cancelled`.
//!
//! A terminal status (`completed`, `failed`, `cancelled`) is never
//! overwritten: [`write_status`](StatusStore::write_status) reads the document
//! with its ETag and replaces it with `If-Match` (or creates it), retrying on
//! 412/409 — 2 requests per write. The one exception is an operator's retry:
//! [`reopen_failed`](StatusStore::reopen_failed) turns `failed` back into
//! `running` the same way (read, check, replace with `If-Match`).
//! [`publish_terminal`](StatusStore::publish_terminal) is 1 PATCH for a
//! small final status and the guarded write for a large one (a completed
//! run's final context, written as text). [`read_status`](StatusStore::read_status)
//! is 1 point read, [`touch`](StatusStore::touch) 1 PATCH, and
//! [`stalled_runs`](CosmosStatusStore::stalled_runs) runs upstream's
//! reconciler query across partitions, page by page.

use azure_core::http::Etag;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::FeedScope;
use azure_data_cosmos::models::{PatchInstructions, PatchOperation};
use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
use azure_data_cosmos::{CosmosError, Query};
use flowcraft_core::final_status::{self, FinalOutcome};
use flowcraft_core::progress::RunState;
use flowcraft_core::store::{RunStatusRecord, StatusStore, StoreError};
use futures_util::TryStreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::context::SYSTEM_PROPERTIES;
use super::{now_seconds, one_line, retry_transient, status_code};

const SERVICE: &str = "cosmos status";

/// A status document: small, and read for its fields, so kept parsed.
type StatusDocument = Map<String, Value>;

/// Upstream reconciler's query (`createAzureReconciler`), verbatim.
pub const STALLED_RUNS_QUERY: &str =
    "SELECT * FROM c WHERE c.status = @status AND c.lastUpdated < @threshold";

/// The largest final status written with one PATCH (see
/// `publish_terminal` below).
const PATCHED_FINAL_STATUS_LIMIT: usize = 16 << 10;

/// How many times a status write re-reads after losing a race.
const MAX_WRITE_ATTEMPTS: usize = 16;

/// The run-status store on a Cosmos container (partition key `/runId`).
#[derive(Clone)]
pub struct CosmosStatusStore {
    container: ContainerClient,
}

impl CosmosStatusStore {
    /// One server-side PATCH of the run's status document.
    async fn patch(
        &self,
        run_id: &str,
        instructions: impl Fn() -> PatchInstructions,
    ) -> Result<(), CosmosError> {
        super::patch_document(&self.container, run_id, instructions)
            .await
            .map(|_| ())
    }

    pub(crate) fn new(container: ContainerClient) -> Self {
        Self { container }
    }

    /// The underlying container client (for tools and tests).
    pub fn container(&self) -> &ContainerClient {
        &self.container
    }

    /// Run ids whose status is `running` or `awaiting` and whose
    /// `lastUpdated` is more than `threshold_seconds` ago — upstream's
    /// reconciler query ([`STALLED_RUNS_QUERY`], `@threshold = floor(now) -
    /// threshold`) for each of the two statuses, across all partitions, every
    /// page. Items without a `runId` are skipped. Upstream asks for `running`
    /// only; an awaiting run is stalled when a worker died between pausing a
    /// `sleep` node and sending its wake-up (the reconciler sends it).
    pub async fn stalled_runs(&self, threshold_seconds: u64) -> Result<Vec<String>, StoreError> {
        let threshold = now_seconds().saturating_sub_unsigned(threshold_seconds);
        let mut runs = Vec::new();
        for status in [RunState::Running, RunState::Awaiting] {
            let found = retry_transient("stalled-runs query", || {
                self.query_stalled(status, threshold)
            })
            .await
            .map_err(|error| {
                StoreError::new(
                    SERVICE,
                    format!("stalled-runs query failed: {}", one_line(&error)),
                )
            })?;
            runs.extend(found);
        }
        Ok(runs)
    }

    async fn query_stalled(
        &self,
        status: RunState,
        threshold: i64,
    ) -> Result<Vec<String>, CosmosError> {
        let query = Query::from(STALLED_RUNS_QUERY)
            .with_parameter("@status", status.as_str())?
            .with_parameter("@threshold", threshold)?;
        let mut items = self
            .container
            .query_items::<Value>(query, FeedScope::full_container(), None)
            .await?;
        let mut runs = Vec::new();
        while let Some(item) = items.try_next().await? {
            match item.get("runId").and_then(Value::as_str) {
                Some(run_id) if !run_id.is_empty() => runs.push(run_id.to_owned()),
                _ => {}
            }
        }
        Ok(runs)
    }

    /// The stored document and its ETag, `None` if there is none.
    async fn read_document(
        &self,
        run_id: &str,
    ) -> Result<Option<(StatusDocument, Option<Etag>)>, CosmosError> {
        let read = retry_transient("read status", || {
            self.container.read_item(run_id.to_owned(), run_id, None)
        })
        .await;
        match read {
            Ok(response) => {
                let etag = response.headers().etag().cloned();
                let document: StatusDocument = response.into_model()?;
                let etag = etag.or_else(|| {
                    document
                        .get("_etag")
                        .and_then(Value::as_str)
                        .map(|etag| Etag::from(etag.to_owned()))
                });
                Ok(Some((document, etag)))
            }
            Err(error) if status_code(&error) == 404 => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// One attempt of a write; `None` when it lost a race and must re-read.
    async fn try_write(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<&RawValue>,
    ) -> Result<Option<bool>, CosmosError> {
        // A run's first status write (it starts running) usually finds no
        // document: create first and read only if one exists (1 request
        // instead of a read that answers 404 plus a create).
        if status == RunState::Running && final_status.is_none() {
            let document = status_document(Map::new(), run_id, status, final_status);
            let created = retry_transient("create status", || {
                self.container
                    .create_item(run_id.to_owned(), run_id, &document, None)
            })
            .await;
            match created {
                Ok(_) => return Ok(Some(true)),
                Err(error) if status_code(&error) == 409 => {}
                Err(error) => return Err(error),
            }
        }
        let Some((stored, etag)) = self.read_document(run_id).await? else {
            let document = status_document(Map::new(), run_id, status, final_status);
            let created = retry_transient("create status", || {
                self.container
                    .create_item(run_id.to_owned(), run_id, &document, None)
            })
            .await;
            return match created {
                Ok(_) => Ok(Some(true)),
                Err(error) if status_code(&error) == 409 => Ok(None),
                Err(error) => Err(error),
            };
        };
        if stored_state(&stored).is_some_and(RunState::is_terminal) {
            return Ok(Some(false));
        }
        let document = status_document(stored, run_id, status, final_status);
        let mut options = ItemWriteOptions::default();
        if let Some(etag) = etag {
            options = options.with_precondition(Precondition::if_match(etag));
        }
        let replaced = retry_transient("replace status", || {
            self.container
                .replace_item(run_id.to_owned(), run_id, &document, Some(options.clone()))
        })
        .await;
        match replaced {
            Ok(_) => Ok(Some(true)),
            Err(error) if matches!(status_code(&error), 412 | 404) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

impl CosmosStatusStore {
    /// [`StatusStore::write_status`] with the final status as JSON text.
    async fn write_guarded(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<&RawValue>,
    ) -> Result<bool, StoreError> {
        check_run_id(run_id)?;
        until_no_race(run_id, "write", "write of the status", || {
            self.try_write(run_id, status, final_status)
        })
        .await
    }

    /// One attempt of [`StatusStore::reopen_failed`]; `None` when it lost a
    /// race and must re-read.
    async fn try_reopen(&self, run_id: &str) -> Result<Option<bool>, CosmosError> {
        let Some((stored, etag)) = self.read_document(run_id).await? else {
            return Ok(Some(false));
        };
        if stored_state(&stored) != Some(RunState::Failed) {
            return Ok(Some(false));
        }
        let document = status_document(stored, run_id, RunState::Running, None);
        let mut options = ItemWriteOptions::default();
        if let Some(etag) = etag {
            options = options.with_precondition(Precondition::if_match(etag));
        }
        let replaced = retry_transient("replace status", || {
            self.container
                .replace_item(run_id.to_owned(), run_id, &document, Some(options.clone()))
        })
        .await;
        match replaced {
            Ok(_) => Ok(Some(true)),
            Err(error) if matches!(status_code(&error), 412 | 404) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

impl StatusStore for CosmosStatusStore {
    async fn write_status(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<Value>,
    ) -> Result<bool, StoreError> {
        let final_status = final_status
            .map(|value| serde_json::value::to_raw_value(&value))
            .transpose()
            .map_err(|error| {
                StoreError::refused(SERVICE, format!("final status of run '{run_id}': {error}"))
            })?;
        self.write_guarded(run_id, status, final_status.as_deref())
            .await
    }

    async fn read_status(&self, run_id: &str) -> Result<Option<RunStatusRecord>, StoreError> {
        check_run_id(run_id)?;
        let Some((document, _)) = self
            .read_document(run_id)
            .await
            .map_err(|error| failure("read", run_id, &error))?
        else {
            return Ok(None);
        };
        let status = stored_state(&document).ok_or_else(|| {
            StoreError::new(
                SERVICE,
                format!(
                    "the status document of run '{run_id}' has status {}, expected one of running, awaiting, completed, failed, cancelled",
                    document.get("status").map_or("(none)".to_owned(), Value::to_string)
                ),
            )
        })?;
        Ok(Some(RunStatusRecord {
            status,
            last_updated: document.get("lastUpdated").map_or(0, unix_seconds),
            final_status: document
                .get("finalStatus")
                .filter(|v| !v.is_null())
                .cloned(),
        }))
    }

    /// One PATCH when the final status is small. A larger one (a completed
    /// run's final context) is written by the guarded read and replace
    /// instead, one request more: the SDK takes a PATCH value only as a
    /// parsed tree and parses the request body back into another to check
    /// it, while a replace sends the text as it is. (Unlike the PATCH, the
    /// guarded write leaves a status that is terminal already as it is.)
    async fn publish_terminal(
        &self,
        run_id: &str,
        outcome: &FinalOutcome<'_>,
    ) -> Result<(), StoreError> {
        check_run_id(run_id)?;
        let status = outcome.state();
        let final_status = final_status::document(outcome);
        let final_status = final_status.as_ref();
        if final_status.get().len() > PATCHED_FINAL_STATUS_LIMIT {
            return self
                .write_guarded(run_id, status, Some(final_status))
                .await
                .map(|_| ());
        }
        let parsed: Value = serde_json::from_str(final_status.get()).map_err(|error| {
            StoreError::refused(SERVICE, format!("final status of run '{run_id}': {error}"))
        })?;
        // The caller owns the run's only terminal transition, so no read is
        // needed to guard it. No document yet (a run started without one):
        // fall back to the guarded write, which creates it.
        let instructions = || {
            PatchInstructions::from(vec![
                PatchOperation::set("/status", Value::from(status.as_str())),
                PatchOperation::set("/lastUpdated", Value::from(now_seconds())),
                PatchOperation::set("/finalStatus", parsed.clone()),
            ])
        };
        match self.patch(run_id, instructions).await {
            Ok(()) => Ok(()),
            Err(error) if status_code(&error) == 404 => self
                .write_guarded(run_id, status, Some(final_status))
                .await
                .map(|_| ()),
            Err(error) => Err(failure("publish", run_id, &error)),
        }
    }

    /// Liveness: sets the run's `lastUpdated` to now with one PATCH, so the
    /// reconciler does not take a run with work in progress for stalled. A
    /// run without a status document is left alone. The SDK cannot send a
    /// conditional PATCH, so this does not look at `status` (neither does the
    /// in-memory store); callers touch running runs.
    async fn touch(&self, run_id: &str) -> Result<(), StoreError> {
        check_run_id(run_id)?;
        let instructions = || {
            PatchInstructions::from(vec![PatchOperation::set(
                "/lastUpdated",
                Value::from(now_seconds()),
            )])
        };
        match self.patch(run_id, instructions).await {
            Ok(()) => Ok(()),
            Err(error) if status_code(&error) == 404 => Ok(()),
            Err(error) => Err(failure("touch", run_id, &error)),
        }
    }

    /// Read with ETag; if `failed`, replace with `running` (no
    /// `finalStatus`) under `If-Match`, re-reading after a lost race.
    async fn reopen_failed(&self, run_id: &str) -> Result<bool, StoreError> {
        check_run_id(run_id)?;
        until_no_race(run_id, "reopen", "reopening the status", || {
            self.try_reopen(run_id)
        })
        .await
    }
}

/// Repeats `attempt`, which answers `None` when it lost a race with another
/// writer and must read again, up to [`MAX_WRITE_ATTEMPTS`] times;
/// `operation` and `what` name it in errors.
async fn until_no_race<T, F, Fut>(
    run_id: &str,
    operation: &str,
    what: &str,
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, CosmosError>>,
{
    for _ in 0..MAX_WRITE_ATTEMPTS {
        match attempt()
            .await
            .map_err(|error| failure(operation, run_id, &error))?
        {
            Some(done) => return Ok(done),
            None => tokio::task::yield_now().await,
        }
    }
    Err(StoreError::new(
        SERVICE,
        format!(
            "{what} of run '{run_id}' lost {MAX_WRITE_ATTEMPTS} races with other writers; retry later"
        ),
    ))
}

/// A status document as written: its fields, then `finalStatus` as JSON
/// text, so that a large final context goes in without a parsed copy.
#[derive(Serialize)]
struct StatusWrite<'a> {
    #[serde(flatten)]
    fields: StatusDocument,
    #[serde(rename = "finalStatus", skip_serializing_if = "Option::is_none")]
    final_status: Option<&'a RawValue>,
}

/// `stored` (other fields kept, system properties dropped) with the given
/// status, `lastUpdated` = now and `finalStatus`, in upstream's field order
/// for new documents.
fn status_document<'a>(
    stored: StatusDocument,
    run_id: &str,
    status: RunState,
    final_status: Option<&'a RawValue>,
) -> StatusWrite<'a> {
    let mut fields = Map::new();
    fields.insert("id".into(), Value::from(run_id));
    fields.insert("runId".into(), Value::from(run_id));
    fields.insert("status".into(), Value::from(status.as_str()));
    fields.insert("lastUpdated".into(), Value::from(now_seconds()));
    for (key, value) in stored {
        if !SYSTEM_PROPERTIES.contains(&key.as_str())
            && !matches!(
                key.as_str(),
                "id" | "runId" | "status" | "lastUpdated" | "finalStatus"
            )
        {
            fields.insert(key, value);
        }
    }
    StatusWrite {
        fields,
        final_status,
    }
}

fn stored_state(document: &StatusDocument) -> Option<RunState> {
    document
        .get("status")
        .and_then(|status| serde_json::from_value(status.clone()).ok())
}

/// `lastUpdated` as Unix seconds: upstream writes an integer; tolerate a
/// float and the ISO-8601 string of the adapter guide's sample client.
fn unix_seconds(value: &Value) -> i64 {
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().map(|seconds| seconds.floor() as i64))
            .unwrap_or(0),
        Value::String(text) => {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_or(0, time::OffsetDateTime::unix_timestamp)
        }
        _ => 0,
    }
}

fn check_run_id(run_id: &str) -> Result<(), StoreError> {
    super::check_run_id(SERVICE, run_id)
}

fn failure(operation: &str, run_id: &str, error: &CosmosError) -> StoreError {
    super::failure(SERVICE, "status", operation, run_id, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The document as the service receives it.
    fn written(document: &StatusWrite<'_>) -> Map<String, Value> {
        serde_json::from_slice(&serde_json::to_vec(document).unwrap()).unwrap()
    }

    #[test]
    fn new_documents_have_upstream_fields_only() {
        let document = written(&status_document(Map::new(), "r1", RunState::Running, None));
        let keys: Vec<&str> = document.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "runId", "status", "lastUpdated"]);
        assert_eq!(document["status"], json!("running"));
        assert!(document["lastUpdated"].is_i64());
    }

    #[test]
    fn rewrites_keep_foreign_fields_and_drop_system_ones() {
        let Value::Object(stored) = json!({
            "id": "r1", "runId": "r1", "status": "running", "lastUpdated": 1,
            "finalStatus": {"old": true}, "owner": "ts-worker", "_etag": "e", "_ts": 5
        }) else {
            unreachable!()
        };
        let final_status = RawValue::from_string(r#"{"status":"completed"}"#.into()).unwrap();
        let document = written(&status_document(
            stored,
            "r1",
            RunState::Completed,
            Some(&final_status),
        ));
        assert_eq!(document["status"], json!("completed"));
        assert_eq!(document["finalStatus"], json!({"status": "completed"}));
        assert_eq!(document["owner"], json!("ts-worker"));
        assert!(!document.contains_key("_etag") && !document.contains_key("_ts"));
    }

    #[test]
    fn last_updated_is_read_leniently() {
        assert_eq!(unix_seconds(&json!(1700000000)), 1700000000);
        assert_eq!(unix_seconds(&json!(1700000000.9)), 1700000000);
        assert_eq!(unix_seconds(&json!("2023-11-14T22:13:20Z")), 1700000000);
        assert_eq!(unix_seconds(&json!(null)), 0);
    }
}
