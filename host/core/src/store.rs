//! The storage contracts the engine runs on.
//!
//! Four roles, each a trait: the job queue, the run-context store, the
//! run-status store and the coordination store (which holds each run's
//! [`RunProgress`] record). The embedded mode implements them in memory
//! ([`crate::memory`]); the Azure mode with Queue Storage, Cosmos DB and Redis.
//! Every operation may fail with a [`StoreError`]. Most failures are
//! transient (an outage, throttling): the engine then leaves the job
//! unacknowledged so that it is delivered again. A *permanent* one (the
//! service refused the request itself, e.g. a document over Cosmos DB's 2 MB
//! item limit) would fail the same way on every delivery: where it is a
//! node's context write, the engine fails that node with the store's reason.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::context::{ContextChange, ContextMap};
use crate::final_status::{self, FinalOutcome};
use crate::progress::{RunProgress, RunState};
use crate::telemetry::TraceParent;

/// A backend outage or refusal. A transient one is retried later (the job
/// is delivered again); a [permanent](Self::is_permanent) one is not.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{service}: {message}")]
pub struct StoreError {
    /// Which service failed (e.g. "queue", "cosmos context", "redis").
    pub service: String,
    pub message: String,
    /// The service refused this request as such (too large, malformed):
    /// sending it again cannot succeed.
    pub permanent: bool,
}

impl StoreError {
    /// A failure that may pass (an outage, throttling, a conflict).
    pub fn new(service: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            message: message.into(),
            permanent: false,
        }
    }

    /// A refusal that repeats on every attempt (e.g. HTTP 413 or 400 from
    /// Cosmos DB); `message` should say what to change.
    pub fn refused(service: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            ..Self::new(service, message)
        }
    }

    /// Whether retrying the same request is pointless.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

/// Why this job exists besides "run the node".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobSignal {
    /// A sleeping node's timer fired: resume it.
    Wake,
    /// A subflow node's child run settled: collect its result.
    Child,
}

/// One unit of queued work: run (or re-check) one node of one run. Serialized
/// as upstream's job payload `{"runId","blueprintId","nodeId"}` plus optional
/// fields that upstream workers ignore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub run_id: String,
    pub blueprint_id: String,
    pub node_id: String,
    /// The attempt this job is for (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<JobSignal>,
    /// The span that scheduled the job (a node attempt of its run), whose
    /// child the job's own span becomes; without one, the run's root span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

impl Job {
    pub fn new(run_id: &str, blueprint_id: &str, node_id: &str) -> Self {
        Self {
            run_id: run_id.to_owned(),
            blueprint_id: blueprint_id.to_owned(),
            node_id: node_id.to_owned(),
            attempt: None,
            signal: None,
            traceparent: None,
        }
    }

    /// A job for `node_id` that carries `signal` (a timer fired, a child
    /// run settled) instead of asking to run the node.
    pub fn signalled(run_id: &str, blueprint_id: &str, node_id: &str, signal: JobSignal) -> Self {
        Self {
            signal: Some(signal),
            ..Self::new(run_id, blueprint_id, node_id)
        }
    }

    /// The 1-based attempt number.
    pub fn attempt(&self) -> u32 {
        self.attempt.unwrap_or(1).max(1)
    }
}

/// The longest a queued job may stay invisible (Azure Queue Storage's limit).
/// Longer delays (a `sleep` of weeks) are reached in steps: the engine
/// re-enqueues a wake-up job that arrives before its time.
pub const MAX_JOB_DELAY: Duration = Duration::from_secs(7 * 24 * 3_600);

/// Where jobs go.
pub trait JobQueue: Send + Sync + 'static {
    /// Enqueues `job`, invisible for `delay`.
    fn enqueue(
        &self,
        job: Job,
        delay: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One run's context as read from the store.
#[derive(Debug, Clone)]
pub struct StoredContext {
    pub values: Arc<ContextMap>,
}

/// Where run contexts live (one document per run, flat keys).
pub trait ContextStore: Send + Sync + 'static {
    /// Creates the run's context; fails if it exists.
    fn create_context(
        &self,
        run_id: &str,
        initial: ContextMap,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Reads the run's context (`None` if there is none).
    fn load_context(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<Option<StoredContext>, StoreError>> + Send;
    /// Applies `changes` in order. Keys are written individually (no
    /// whole-document replace), so concurrent jobs of one run do not lose
    /// each other's writes.
    fn apply_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Context keys this store keeps for itself (system properties), which
    /// a node may not write, besides the engine's own.
    fn reserved_keys(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The externally visible status of a run (upstream's status document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatusRecord {
    pub status: RunState,
    /// Unix seconds of the last change.
    pub last_updated: i64,
    /// Upstream's `finalStatus` object, once the run is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_status: Option<Value>,
}

/// Where run statuses live.
pub trait StatusStore: Send + Sync + 'static {
    /// Writes the run's status. A terminal status is never overwritten: the
    /// store ignores writes after one (returns `false`).
    fn write_status(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<Value>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn read_status(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<Option<RunStatusRecord>, StoreError>> + Send;
    /// Writes a run's terminal status for a caller that holds the run's only
    /// transition into it (the engine's progress record guarantees one), so
    /// the store may skip the read that guards [`Self::write_status`]. The
    /// store writes `outcome` in its own document shape; the default is
    /// upstream's `finalStatus` ([`final_status::document`]) through
    /// `write_status`. A permanent refusal of a completed run's status (too
    /// large) is answered as such: the caller publishes
    /// [`FinalOutcome::CompletedWithoutContext`] instead.
    fn publish_terminal(
        &self,
        run_id: &str,
        outcome: &FinalOutcome<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let document = final_status::document(outcome);
        let state = outcome.state();
        async move {
            let final_status = serde_json::from_str(document.get()).map_err(|error| {
                StoreError::refused(
                    "status",
                    format!("the final status of run '{run_id}' is not JSON ({error})"),
                )
            })?;
            self.write_status(run_id, state, Some(final_status)).await?;
            Ok(())
        }
    }
    /// Marks a running run as alive (`lastUpdated` = now) so that the
    /// reconciler does not take it for stalled.
    fn touch(&self, run_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The one way out of a terminal status, for an operator's retry: if
    /// the stored status is `failed`, it becomes `running` (now, without
    /// `finalStatus`), atomically with respect to other writers. Any other
    /// status, or none, is left alone. Returns whether it was `failed`.
    fn reopen_failed(&self, run_id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Where run progress records live; every change is atomic.
pub trait CoordinationStore: Send + Sync + 'static {
    /// Stores a new run's record; `false` if one exists already.
    fn create_progress(
        &self,
        progress: &RunProgress,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn load_progress(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<Option<RunProgress>, StoreError>> + Send;
    /// Reads what `read` extracts from the run's record (without copying
    /// the whole record where the store can avoid it).
    fn read_progress<T, F>(
        &self,
        run_id: &str,
        read: F,
    ) -> impl Future<Output = Result<Option<T>, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send;
    /// Like [`Self::read_progress`], but answered without a round trip
    /// from the record as this store last wrote or read it, when it
    /// remembers the run. Such an answer may be out of date (another writer
    /// may have changed the record since); the next
    /// [`Self::update_progress`] of the run is applied to the record as it
    /// stands. The default reads.
    fn read_progress_remembered<T, F>(
        &self,
        run_id: &str,
        read: F,
    ) -> impl Future<Output = Result<Option<T>, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        self.read_progress(run_id, read)
    }
    /// Applies `change` to the run's record atomically (compare-and-set,
    /// retried on conflict, so `change` may run more than once and must
    /// depend only on the record). `None` if the run has no record.
    fn update_progress<T, F>(
        &self,
        run_id: &str,
        change: F,
    ) -> impl Future<Output = Result<Option<T>, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send;
}

/// Why a settlement ([`Backend::settle`]) was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettleError {
    /// The context write failed; the progress record was not changed.
    #[error(transparent)]
    Context(StoreError),
    /// The progress change failed (the context write may have landed where
    /// the two are not one transaction).
    #[error(transparent)]
    Progress(StoreError),
}

/// Everything the engine needs from a deployment.
pub trait Backend: JobQueue + ContextStore + StatusStore + CoordinationStore {
    /// Writes a job's context `changes`, then applies `change` to the run's
    /// progress record as [`CoordinationStore::update_progress`] does (`None`
    /// if the run has no record). A store with transactions does both in
    /// one, so that a job's effects and the nodes it schedules are committed
    /// together. The default makes the two writes one after the other: a
    /// crash between them leaves the node's result in the context and its
    /// settlement undone, and the job's redelivery finds the result and
    /// settles it without running the node again.
    fn settle<T, F>(
        &self,
        run_id: &str,
        changes: &[ContextChange],
        change: F,
    ) -> impl Future<Output = Result<Option<T>, SettleError>> + Send
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        async move {
            if !changes.is_empty() {
                self.apply_changes(run_id, changes)
                    .await
                    .map_err(SettleError::Context)?;
            }
            self.update_progress(run_id, change)
                .await
                .map_err(SettleError::Progress)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_serialize_as_upstream_payloads() {
        let job = Job::new("run-azure-456", "bp-azure", "node-azure-start");
        assert_eq!(
            serde_json::to_string(&job).unwrap(),
            r#"{"runId":"run-azure-456","blueprintId":"bp-azure","nodeId":"node-azure-start"}"#
        );
        let parsed: Job = serde_json::from_str(
            r#"{"runId":"r","blueprintId":"b","nodeId":"n","isLastAttempt":true,"attempt":3}"#,
        )
        .unwrap();
        assert_eq!(parsed.attempt(), 3);
    }
}
