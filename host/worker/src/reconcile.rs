//! The reconciler: finds runs that made no progress for a while (a worker
//! died between settling a node and sending its successors, say) and gets
//! them moving again through [`Engine::reconcile`].

use std::sync::Arc;
use std::time::Duration;

use flowcraft_core::engine::Engine;
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::store::StoreError;
use flowcraft_core::telemetry;
use serde::Serialize;
use tracing::{info, warn};

use crate::queue::WorkerBackend;

/// What a reconciler pass did (upstream's shape).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileSummary {
    pub stalled_runs: usize,
    pub reconciled_runs: usize,
    pub failed_runs: usize,
}

/// Reconciles every run whose status has not changed for `stalled_after`.
/// A run that cannot be reconciled is counted and logged; the pass goes on.
pub async fn reconcile_stalled<B: WorkerBackend, R: NodeRunner>(
    engine: &Engine<B, R>,
    stalled_after: Duration,
) -> Result<ReconcileSummary, StoreError> {
    let mut summary = ReconcileSummary::default();
    for run_id in engine.backend().stalled_runs(stalled_after).await? {
        summary.stalled_runs += 1;
        match engine.reconcile(&run_id).await {
            Ok(enqueued) if !enqueued.is_empty() => summary.reconciled_runs += 1,
            Ok(_) => {}
            Err(problem) => {
                warn!(run = %run_id, error = %problem, "reconciling failed");
                summary.failed_runs += 1;
            }
        }
    }
    Ok(summary)
}

/// A reconciler pass every `every`; runs until dropped.
pub async fn reconcile_periodically<B: WorkerBackend, R: NodeRunner>(
    engine: Arc<Engine<B, R>>,
    every: Duration,
    stalled_after: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let pass = reconcile_stalled(&engine, stalled_after).await;
        telemetry::reconciler_pass(pass.as_ref().ok().map(|summary| summary.reconciled_runs));
        match pass {
            Ok(summary) if summary.stalled_runs > 0 => info!(?summary, "reconciler pass"),
            Ok(_) => {}
            Err(problem) => warn!(error = %problem, "reconciler pass failed"),
        }
    }
}
