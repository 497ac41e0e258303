//! Interrupting the nodes of cancelled runs. Every [`CANCEL_CHECK`] the
//! watcher reads the state of each run with a job running for that long
//! (one read per run, not per job) and raises the flag of a cancelled run;
//! the run's leases then drop their running jobs before they write anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flowcraft_core::engine::Engine;
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::store::Backend;
use tokio::sync::watch;
use tracing::warn;

/// How often running jobs' runs are checked for cancellation, and how long a
/// run must have had a job running before it is checked at all.
pub const CANCEL_CHECK: Duration = Duration::from_secs(1);

/// The runs this worker has jobs running for, each with a flag the
/// watcher raises when the run is cancelled.
#[derive(Default)]
pub struct Cancellations {
    runs: Mutex<HashMap<String, WatchedRun>>,
}

struct WatchedRun {
    /// When the first of the run's current jobs started.
    since: Instant,
    jobs: usize,
    cancelled: watch::Sender<bool>,
}

/// One job's registration; unregisters when dropped.
pub struct CancelWatch<'a> {
    cancellations: &'a Cancellations,
    run_id: String,
    cancelled: watch::Receiver<bool>,
}

impl Cancellations {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, WatchedRun>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a job of `run_id` for the time it runs.
    pub fn watch(&self, run_id: &str) -> CancelWatch<'_> {
        let mut runs = self.lock();
        let run = runs.entry(run_id.to_owned()).or_insert_with(|| WatchedRun {
            since: Instant::now(),
            jobs: 0,
            cancelled: watch::channel(false).0,
        });
        run.jobs += 1;
        CancelWatch {
            cancellations: self,
            run_id: run_id.to_owned(),
            cancelled: run.cancelled.subscribe(),
        }
    }

    /// Runs whose jobs have been running for at least `after`.
    fn due(&self, after: Duration) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, run)| run.since.elapsed() >= after && !*run.cancelled.borrow())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Raises the flag of `run_id`: its registered jobs stop.
    pub fn cancel(&self, run_id: &str) {
        if let Some(run) = self.lock().get(run_id) {
            run.cancelled.send_replace(true);
        }
    }
}

impl CancelWatch<'_> {
    /// Resolves once the run is found cancelled (never otherwise).
    pub async fn wait(&mut self) {
        if self
            .cancelled
            .wait_for(|cancelled| *cancelled)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for CancelWatch<'_> {
    fn drop(&mut self) {
        let mut runs = self.cancellations.lock();
        if let Some(run) = runs.get_mut(&self.run_id) {
            run.jobs -= 1;
            if run.jobs == 0 {
                runs.remove(&self.run_id);
            }
        }
    }
}

/// Every [`CANCEL_CHECK`], reads the state of each run with a long-running
/// job and raises the flag of those that were cancelled. Runs until dropped.
pub async fn watch_cancellations<B: Backend, R: NodeRunner>(
    engine: Arc<Engine<B, R>>,
    cancellations: Arc<Cancellations>,
) {
    let mut ticker = tokio::time::interval(CANCEL_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for run_id in cancellations.due(CANCEL_CHECK) {
            match engine.backend().read_progress(&run_id, |p| p.state).await {
                Ok(Some(RunState::Cancelled)) => cancellations.cancel(&run_id),
                Ok(_) => {}
                Err(problem) => {
                    warn!(run = %run_id, error = %problem, "could not check whether the run was cancelled");
                }
            }
        }
    }
}
