//! The distributed worker: receives jobs from Azure Queue Storage and runs
//! them through the engine with bounded concurrency.
//!
//! - receives in batches of up to 32, only as many as there are free slots,
//!   so a slow job never holds back the next receive;
//! - backs off exponentially while the queue is empty;
//! - renews a running job's visibility (and the run's liveness) so that a long
//!   node is not handed to a second worker;
//! - interrupts a running node whose run was cancelled: every second it reads
//!   the state of each run with a job running for a second or more (one Redis
//!   read per run, not per job); a cancelled run's node is stopped, its result
//!   dropped (no context write, no successors) and its message deleted;
//! - runs a finished job's successors itself while it has free slots: it
//!   rewrites the job's message into them (one request however many; they
//!   reappear for another worker if this one dies) and runs them with the
//!   context it just wrote, without a receive or a context read; it sends the
//!   others (see [`lease`]);
//! - deletes a message once its job is handled; leaves it to reappear after a
//!   backend outage; moves a message that cannot be decoded, names an unknown
//!   run or blueprint too often, or keeps failing past the dequeue limit, to
//!   the poison queue with the reason;
//! - runs the reconciler periodically;
//! - on SIGINT/SIGTERM stops receiving, lets running jobs finish (their
//!   messages reappear if they cannot) and exits 0.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use flowcraft_azure::backend::AzureBackend;
use flowcraft_azure::queue::ReceivedMessage;
use flowcraft_azure::wire;
use flowcraft_core::engine::Engine;
use flowcraft_core::progress::RunState;
use flowcraft_core::store::CoordinationStore;
use flowcraft_plugins::PluginHost;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{AzureArgs, ConfigFile};
use crate::distributed;

mod lease;
use lease::LeaseSettings;

/// Flags of the worker (the default command).
#[derive(Args, Clone, Default)]
pub struct WorkerArgs {
    /// Directory of node bundles (*.wasm); watched and hot-swapped.
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// Directory of blueprints (*.json) this worker runs.
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_BLUEPRINTS")]
    pub blueprints: Option<PathBuf>,
    /// Jobs run at the same time [default: 32 per core].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Seconds a received job stays invisible to other workers (renewed while it runs) [default: 30].
    #[arg(long)]
    pub visibility_timeout: Option<u64>,
    /// Deliveries after which a message goes to the poison queue [default: 5].
    #[arg(long)]
    pub max_dequeue_count: Option<u32>,
    /// Seconds between reconciler passes [default: 60].
    #[arg(long)]
    pub reconcile_interval: Option<u64>,
    /// Seconds without progress after which a running run counts as stalled [default: 300].
    #[arg(long)]
    pub stalled_after: Option<u64>,
    /// Do not run the reconciler in this worker.
    #[arg(long)]
    pub no_reconciler: bool,
    /// TypeScript workers (@flowcraft/azure-adapter) share the queue and the
    /// runs: read every job's context from Cosmos DB (no context cache) and
    /// run the jobs they schedule; every message stands for one job.
    #[arg(long, alias = "no-context-cache")]
    pub mixed_fleet: bool,
    #[command(flatten)]
    pub azure: AzureArgs,
}

/// The worker's resolved tunables.
struct Tunables {
    concurrency: usize,
    visibility: Duration,
    max_dequeue: u32,
    reconcile_every: Option<Duration>,
    stalled_after: Duration,
    /// Whether a message may stand for several jobs (not with upstream workers).
    groups: bool,
}

type Worker = Engine<AzureBackend, PluginHost>;

pub async fn serve(args: WorkerArgs) -> Result<ExitCode> {
    crate::setup::init_logging(false);
    let file = ConfigFile::load(args.azure.config.as_deref())?;
    let Some(settings) = args.azure.resolve(&file.azure)? else {
        bail!(
            "no Azure settings: set AZURE_STORAGE_CONNECTION_STRING, COSMOS_DB_CONNECTION_STRING and REDIS_URL (or --config) to run a worker; to run one workflow locally use `flowcraft-host run`"
        );
    };
    let plugins = args
        .plugins
        .clone()
        .or(file.worker.plugins.clone())
        .context("--plugins DIR is required (or worker.plugins in --config)")?;
    let blueprints = args
        .blueprints
        .clone()
        .or(file.worker.blueprints.clone())
        .context("--blueprints DIR is required (or worker.blueprints in --config)")?;
    let mixed_fleet = args.mixed_fleet || file.worker.mixed_fleet.unwrap_or(false);
    let tunables = Tunables {
        concurrency: args
            .concurrency
            .or(file.worker.concurrency)
            .unwrap_or_else(default_concurrency),
        visibility: Duration::from_secs(
            args.visibility_timeout
                .or(file.worker.visibility_timeout_seconds)
                .unwrap_or(30)
                .max(2),
        ),
        max_dequeue: args
            .max_dequeue_count
            .or(file.worker.max_dequeue_count)
            .unwrap_or(5)
            .max(1),
        reconcile_every: (!args.no_reconciler && file.worker.reconciler.unwrap_or(true)).then(
            || {
                Duration::from_secs(
                    args.reconcile_interval
                        .or(file.worker.reconcile_interval_seconds)
                        .unwrap_or(60)
                        .max(1),
                )
            },
        ),
        stalled_after: Duration::from_secs(
            args.stalled_after
                .or(file.worker.stalled_after_seconds)
                .unwrap_or(300),
        ),
        groups: !mixed_fleet,
    };
    let (engine, _watch) = distributed::worker_engine(
        &settings,
        &plugins,
        &blueprints,
        file.grants,
        tunables.concurrency,
        mixed_fleet,
    )
    .await?;
    // Handlers first: a SIGTERM from the moment "worker started" is logged
    // shuts down gracefully instead of killing the process.
    let shutdown = shutdown_signal()?;
    info!(queue = %settings.queue, concurrency = tunables.concurrency, "worker started");
    run_loop(Arc::new(engine), tunables, shutdown).await?;
    info!("worker stopped");
    Ok(ExitCode::SUCCESS)
}

async fn run_loop(
    engine: Arc<Worker>,
    tunables: Tunables,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(tunables.concurrency));
    let mut jobs: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    let reconciler = tunables.reconcile_every.map(|every| {
        tokio::spawn(reconcile_loop(
            engine.clone(),
            every,
            tunables.stalled_after,
        ))
    });
    let cancellations = Arc::new(Cancellations::default());
    let watcher = tokio::spawn(watch_cancellations(engine.clone(), cancellations.clone()));
    let lease_settings = LeaseSettings {
        visibility: tunables.visibility,
        max_dequeue: tunables.max_dequeue,
        groups: tunables.groups,
    };
    let mut idle = Duration::ZERO;
    loop {
        while jobs.try_join_next().is_some() {}
        let free = slots.available_permits().min(32);
        if free == 0 {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = jobs.join_next() => continue,
            }
        }
        let received = tokio::select! {
            _ = &mut shutdown => break,
            received = engine.backend().queue().receive(free as u32, tunables.visibility) => received,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(problem) => {
                warn!(error = %problem, "receiving jobs failed; retrying");
                idle = next_backoff(idle);
                Vec::new()
            }
        };
        if messages.is_empty() {
            idle = next_backoff(idle);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(idle) => continue,
            }
        }
        idle = Duration::ZERO;
        for message in messages {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let lease = lease::process(
                engine.clone(),
                cancellations.clone(),
                slots.clone(),
                message,
                lease_settings.clone(),
            );
            jobs.spawn(async move {
                lease.await;
                drop(permit);
            });
        }
        tokio::task::yield_now().await;
    }
    info!(
        in_flight = jobs.len(),
        "shutting down: no more receives; waiting for running jobs"
    );
    if let Some(reconciler) = reconciler {
        reconciler.abort();
    }
    let drain = async { while jobs.join_next().await.is_some() {} };
    if tokio::time::timeout(tunables.visibility, drain)
        .await
        .is_err()
    {
        warn!("jobs still running at shutdown; their messages reappear for another worker");
    }
    watcher.abort();
    Ok(())
}

/// Jobs at once unless configured: 32 per core. A job spends most of its
/// time waiting for the services (a few round trips of about a millisecond
/// each, against tens of microseconds of CPU), so it takes many in flight to
/// keep a core busy; 8 per core left the worker waiting at half the
/// throughput the local services allow.
fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(32, |cores| cores.get() * 32)
}

/// 50 ms, doubling, at most 2 s.
fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(Duration::from_millis(50), Duration::from_secs(2))
}

/// How often running jobs' runs are checked for cancellation, and how long a
/// run must have had a job running before it is checked at all.
const CANCEL_CHECK: Duration = Duration::from_secs(1);

/// The runs this worker has jobs running for, each with a flag the
/// watcher raises when the run is cancelled.
#[derive(Default)]
struct Cancellations {
    runs: Mutex<HashMap<String, WatchedRun>>,
}

struct WatchedRun {
    /// When the first of the run's current jobs started.
    since: Instant,
    jobs: usize,
    cancelled: watch::Sender<bool>,
}

/// One job's registration; unregisters when dropped.
struct CancelWatch<'a> {
    cancellations: &'a Cancellations,
    run_id: String,
    cancelled: watch::Receiver<bool>,
}

impl Cancellations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WatchedRun>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a job of `run_id` for the time it runs.
    fn watch(&self, run_id: &str) -> CancelWatch<'_> {
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

    /// Runs whose jobs have been running for at least [`CANCEL_CHECK`].
    fn due(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, run)| run.since.elapsed() >= CANCEL_CHECK && !*run.cancelled.borrow())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn cancel(&self, run_id: &str) {
        if let Some(run) = self.lock().get(run_id) {
            run.cancelled.send_replace(true);
        }
    }
}

impl CancelWatch<'_> {
    /// Resolves once the run is found cancelled (never otherwise).
    async fn wait(&mut self) {
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
/// job and raises the flag of those that were cancelled.
async fn watch_cancellations(engine: Arc<Worker>, cancellations: Arc<Cancellations>) {
    let mut ticker = tokio::time::interval(CANCEL_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for run_id in cancellations.due() {
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

/// Moves `message` to the poison queue with `reason`. A group keeps its
/// jobs but not its lease: replayed, it is a message of its own.
async fn poison(engine: &Worker, message: &ReceivedMessage, reason: &str) {
    let queue = engine.backend().queue();
    error!(message = %message.id, reason, "moving message to the poison queue");
    let text = match wire::decode_group(&message.text) {
        Ok(wire::Group {
            jobs,
            lease: Some(_),
        }) => wire::encode_group(&jobs, None),
        _ => message.text.clone(),
    };
    match queue.send_poison(&text, reason).await {
        Ok(()) => {
            if let Err(problem) = queue.delete(message).await {
                warn!(error = %problem, "poisoned message could not be deleted from the job queue");
            }
        }
        Err(problem) => {
            error!(error = %problem, "could not write to the poison queue; the message stays in the job queue")
        }
    }
}

/// Periodically re-starts runs that made no progress for `stalled_after`.
async fn reconcile_loop(engine: Arc<Worker>, every: Duration, stalled_after: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match distributed::reconcile_stalled(&engine, stalled_after).await {
            Ok(summary) if summary.stalled_runs > 0 => info!(?summary, "reconciler pass"),
            Ok(_) => {}
            Err(problem) => warn!(error = %problem, "reconciler pass failed"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (not when the future is first polled).
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
