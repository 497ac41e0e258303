//! A [`Driver`] for runs executed by workers off a queue (worker processes
//! on Azure, an in-process worker on SQLite): it starts runs through an
//! engine of its own and follows them through the stores until they settle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_core::engine::{Engine, RunReport};
use flowcraft_core::progress::{AwaitReason, RunState};
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::store::Backend;
use serde_json::Value;

use super::{Case, Driver};

/// Runs cases on the workers of one deployment.
pub struct QueuedRuns<B, R> {
    pub engine: Arc<Engine<B, R>>,
    /// Panics if the workers are gone (called while waiting).
    pub check_workers: Box<dyn Fn() + Send + Sync>,
    /// Makes run ids unique to this test process.
    pub tag: String,
}

impl<B: Backend, R: NodeRunner> QueuedRuns<B, R> {
    /// Whether an awaiting run still moves by itself: it no longer awaits
    /// (it moved on since the caller looked), a timer is pending, or a child
    /// run still works.
    async fn busy(&self, run_id: &str) -> bool {
        let (state, awaiting) = self
            .engine
            .backend()
            .read_progress(run_id, |p| {
                (p.state, p.awaiting.values().cloned().collect::<Vec<_>>())
            })
            .await
            .expect("the coordination store answers")
            .unwrap_or((RunState::Awaiting, Vec::new()));
        if state != RunState::Awaiting {
            return true;
        }
        for reason in awaiting {
            match reason {
                AwaitReason::Timer { .. } => return true,
                AwaitReason::Subflow { child_run_id } => {
                    let child = self
                        .engine
                        .report(&child_run_id)
                        .await
                        .expect("stores answer");
                    if child.state != RunState::Awaiting || Box::pin(self.busy(&child_run_id)).await
                    {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }
}

impl<B: Backend, R: NodeRunner> Driver for QueuedRuns<B, R> {
    async fn start(&self, case: &Case) -> String {
        let run_id = format!("{}-{}", case.id, self.tag);
        self.engine
            .start_run(&case.blueprint.id, Some(run_id), case.context.clone())
            .await
            .expect("run starts")
    }

    async fn settle(&self, run_id: &str, stop_at_timers: bool) -> RunReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            (self.check_workers)();
            let report = self.engine.report(run_id).await.expect("stores answer");
            if report.state.is_terminal()
                || (report.state == RunState::Awaiting && stop_at_timers)
                || Instant::now() > deadline
            {
                return report;
            }
            // An awaiting run may be about to move on (a zero-length timer
            // fires at once): it has settled only if it still awaits, with
            // nothing pending, after the report was taken; the report taken
            // after that check is the one to look at.
            if report.state == RunState::Awaiting && !self.busy(run_id).await {
                let settled = self.engine.report(run_id).await.expect("stores answer");
                if settled.state == RunState::Awaiting {
                    return settled;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn resume(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> Result<(), String> {
        self.engine
            .resume(run_id, node, action, output)
            .await
            .map_err(|e| e.to_string())
    }
}
