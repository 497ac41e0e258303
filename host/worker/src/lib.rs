//! The flowcraft-host worker: receives jobs from a leased queue and runs
//! them through the engine with bounded concurrency, and decides what
//! becomes of every message (delivery policy).
//!
//! - receives in batches of up to 32, only as many as there are free slots,
//!   so a slow job never holds back the next receive;
//! - while the queue is empty, waits for a wake-up
//!   ([`WorkerBackend::wait_for_work`]), a job's end, or
//!   [`WorkerSettings::idle_poll`], whichever comes first, before it
//!   receives again; for [`HOT_WINDOW`] after its last message's jobs ran to
//!   their end it polls every [`HOT_POLL`] instead, so that the next run of
//!   a client that starts one after another (without announcing them)
//!   starts at once (a message it only returned does not count: a worker
//!   that cannot run a job must not outpace the one that can);
//! - renews a running job's lease (and the run's liveness) so that a long
//!   node is not handed to a second worker;
//! - interrupts a running node whose run was cancelled ([`cancel`]);
//! - runs a finished job's successors itself while it has free slots, under
//!   the message it holds, and sends the others ([`lease`]);
//! - deletes a message once its jobs are handled; leaves it to reappear
//!   after a backend outage; returns it with a delay or dead-letters it as
//!   [`policy`] says;
//! - runs the reconciler periodically ([`reconcile`]);
//! - on shutdown stops receiving, lets running jobs finish for up to one
//!   visibility timeout (their messages reappear if they cannot) and returns.
//!
//! The deployment plugs in through [`WorkerBackend`]: the engine's stores
//! plus a [`LeaseQueue`]. The Azure deployment implements it in
//! `flowcraft_azure::worker`; the tests in `tests/` use the in-memory stores
//! and a queue that duplicates, delays, loses deletes and fails sends.
//!
//! ```no_run
//! # async fn example<B: flowcraft_worker::WorkerBackend, R: flowcraft_core::runner::NodeRunner>(
//! #     engine: std::sync::Arc<flowcraft_core::engine::Engine<B, R>>,
//! # ) {
//! use flowcraft_worker::{WorkerSettings, run};
//! let settings = WorkerSettings::default();
//! run(engine, settings, async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # }
//! ```

pub mod cancel;
pub mod lease;
pub mod policy;
pub mod queue;
pub mod reconcile;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flowcraft_core::engine::Engine;
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::telemetry;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

pub use queue::{Delivery, Group, LeaseQueue, WorkerBackend};
pub use reconcile::{ReconcileSummary, reconcile_stalled};

use cancel::Cancellations;
use lease::LeaseSettings;

/// The most messages received at once (Azure Queue Storage's limit).
const RECEIVE_BATCH: usize = 32;

/// How long a worker whose last job ended polls at the short interval.
pub const HOT_WINDOW: Duration = Duration::from_secs(1);

/// The poll interval within [`HOT_WINDOW`]: about 200 receives in the second
/// after a worker's last job (fewer where a receive takes longer, as on
/// Azure), none once it is idle.
pub const HOT_POLL: Duration = Duration::from_millis(5);

/// The worker's tunables.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// How long a received message stays invisible (renewed at half of it).
    pub visibility: Duration,
    /// Deliveries after which a message is dead-lettered.
    pub max_dequeue: u32,
    /// How often the reconciler runs (`None`: not in this worker).
    pub reconcile_every: Option<Duration>,
    /// How long a run may go without progress before it counts as stalled.
    pub stalled_after: Duration,
    /// Whether a message may stand for several jobs (not in a fleet shared
    /// with upstream workers, which read one job per message).
    pub groups: bool,
    /// The longest an idle worker goes without polling the queue: the
    /// latency of a message nobody announces, and the idle cost (one
    /// receive per `idle_poll`).
    pub idle_poll: Duration,
}

/// The default [`WorkerSettings::idle_poll`]: five receives a second while
/// idle, so that a run nobody announces (one started by a TypeScript client)
/// waits 100 ms for its first job on average.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_millis(200);

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            visibility: Duration::from_secs(30),
            max_dequeue: 5,
            reconcile_every: Some(Duration::from_secs(60)),
            stalled_after: Duration::from_secs(300),
            groups: true,
            idle_poll: DEFAULT_IDLE_POLL,
        }
    }
}

/// Jobs at once unless configured: 32 per core. A job spends most of its
/// time waiting for the services (a few round trips of about a millisecond
/// each, against tens of microseconds of CPU), so it takes many in flight to
/// keep a core busy (see `bench/results/`).
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(32, |cores| cores.get() * 32)
}

/// Runs the worker until `shutdown` resolves, then drains running jobs.
pub async fn run<B: WorkerBackend, R: NodeRunner>(
    engine: Arc<Engine<B, R>>,
    settings: WorkerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut jobs: JoinSet<bool> = JoinSet::new();
    let reconciler = settings.reconcile_every.map(|every| {
        tokio::spawn(reconcile::reconcile_periodically(
            engine.clone(),
            every,
            settings.stalled_after,
        ))
    });
    let cancellations = Arc::new(Cancellations::default());
    let watcher = tokio::spawn(cancel::watch_cancellations(
        engine.clone(),
        cancellations.clone(),
    ));
    let receiver = Receiver {
        engine,
        slots,
        cancellations,
        lease: LeaseSettings {
            visibility: settings.visibility,
            max_dequeue: settings.max_dequeue,
            groups: settings.groups,
        },
        idle_poll: settings.idle_poll,
    };
    receiver.receive_until(&mut jobs, shutdown).await;
    info!(
        in_flight = jobs.len(),
        "shutting down: no more receives; waiting for running jobs"
    );
    if let Some(reconciler) = reconciler {
        reconciler.abort();
    }
    let drain = async { while jobs.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.visibility, drain)
        .await
        .is_err()
    {
        warn!("jobs still running at shutdown; their messages reappear for another worker");
    }
    watcher.abort();
}

/// What the receive loop shares with the leases it starts.
struct Receiver<B, R> {
    engine: Arc<Engine<B, R>>,
    slots: Arc<Semaphore>,
    cancellations: Arc<Cancellations>,
    lease: LeaseSettings,
    idle_poll: Duration,
}

impl<B: WorkerBackend, R: NodeRunner> Receiver<B, R> {
    /// Receives messages while there are free slots and starts a lease for
    /// each, until `shutdown` resolves.
    async fn receive_until(&self, jobs: &mut JoinSet<bool>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // When a lease whose jobs ran to their end last ended.
        let mut worked_at = None;
        loop {
            while let Some(ended) = jobs.try_join_next() {
                worked(ended, &mut worked_at);
            }
            let free = self.slots.available_permits().min(RECEIVE_BATCH);
            if free == 0 {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = jobs.join_next() => continue,
                }
            }
            let queue = self.engine.backend().lease_queue();
            let receiving = Instant::now();
            let received = tokio::select! {
                _ = &mut shutdown => return,
                received = queue.receive(free as u32, self.lease.visibility) => received,
            };
            if let Ok(messages) = &received {
                telemetry::queue_received(receiving.elapsed(), messages.len());
            }
            let messages = received.unwrap_or_else(|problem| {
                warn!(error = %problem, "receiving jobs failed; retrying");
                Vec::new()
            });
            if messages.is_empty() {
                let hot = jobs.is_empty()
                    && worked_at.is_some_and(|at: Instant| at.elapsed() < HOT_WINDOW);
                let pause = if hot { HOT_POLL } else { self.idle_poll };
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = self.engine.backend().wait_for_work(pause) => continue,
                    Some(ended) = jobs.join_next(), if !jobs.is_empty() => {
                        worked(ended, &mut worked_at);
                        continue;
                    }
                }
            }
            for message in messages {
                self.start(jobs, message).await;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Starts the lease of `message` in a slot of its own.
    async fn start(&self, jobs: &mut JoinSet<bool>, message: <B::Queue as LeaseQueue>::Message) {
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let lease = lease::process(
            self.engine.clone(),
            self.cancellations.clone(),
            self.slots.clone(),
            message,
            self.lease.clone(),
        );
        let in_flight = telemetry::InFlight::start();
        jobs.spawn(async move {
            let _in_flight = in_flight;
            let worked = lease.await;
            drop(permit);
            worked
        });
    }
}

/// Notes when a lease whose jobs ran to their end (`Ok(true)`) ended.
fn worked(ended: Result<bool, tokio::task::JoinError>, worked_at: &mut Option<Instant>) {
    if matches!(ended, Ok(true)) {
        *worked_at = Some(Instant::now());
    }
}
