//! Sequential backend round trips per step, from a trace of one run's
//! requests, on the local stand-ins (`scripts/azure-local.sh start; eval
//! "$(scripts/azure-local.sh env)"`) with the example bundles
//! (`scripts/build-plugins.sh`).
//!
//! Runs an in-process worker (`flowcraft_worker::run`) on the Azure backend
//! wrapped in a recorder that notes every store and queue request with its
//! start and end. A client starts one 10-node chain at a time; the trace of
//! the worker's requests from the receive that took the start job to the
//! completed status is printed with time offsets, with its *sequential
//! round trips*: the longest chain of requests each of which started after
//! the one before it ended (a request under way beside others is off that
//! chain). A read the store answers from memory (under 50 µs, no request) is
//! shown but not counted. Prints the trace of the last of a few runs (the
//! first ones warm the worker up). Run with
//! `cargo bench -p flowcraft-host --bench round_trips`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowcraft_azure::backend::AzureBackend;
use flowcraft_azure::queue::{AzureQueue, ReceivedMessage};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::{ContextChange, ContextMap};
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::final_status::FinalOutcome;
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::{RunProgress, RunState};
use flowcraft_core::store::{
    Backend, ContextStore, CoordinationStore, Job, JobQueue, RunStatusRecord, StatusStore,
    StoreError, StoredContext,
};
use flowcraft_plugins::{PluginConfig, PluginHost};
use flowcraft_worker::{Group, LeaseQueue, WorkerBackend, WorkerSettings};
use serde_json::{Value, json};

/// Runs measured; the trace shown is the last one's.
const RUNS: usize = 5;
/// Steps of the chain.
const STEPS: usize = 10;
/// A read answered faster than this made no request.
const IN_MEMORY: Duration = Duration::from_micros(50);

/// One request of the trace.
#[derive(Clone)]
struct Request {
    what: String,
    began: Instant,
    ended: Instant,
}

/// Every request made through a [`Traced`] backend.
#[derive(Default)]
struct Trace(Mutex<Vec<Request>>);

impl Trace {
    async fn record<T>(&self, what: impl Into<String>, request: impl Future<Output = T>) -> T {
        let began = Instant::now();
        let answer = request.await;
        let ended = Instant::now();
        self.0.lock().unwrap().push(Request {
            what: what.into(),
            began,
            ended,
        });
        answer
    }

    fn take(&self) -> Vec<Request> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// The Azure backend, every request recorded.
struct Traced {
    inner: AzureBackend,
    queue: TracedQueue,
    trace: Arc<Trace>,
}

/// The job queue, every request recorded.
struct TracedQueue {
    inner: AzureQueue,
    trace: Arc<Trace>,
}

impl JobQueue for Traced {
    async fn enqueue(&self, job: Job, delay: Duration) -> Result<(), StoreError> {
        let what = format!("queue send {}", job.node_id);
        self.trace
            .record(what, self.inner.enqueue(job, delay))
            .await
    }
}

impl ContextStore for Traced {
    async fn create_context(&self, run_id: &str, initial: ContextMap) -> Result<(), StoreError> {
        let request = self.inner.create_context(run_id, initial);
        self.trace.record("cosmos create context", request).await
    }

    async fn load_context(&self, run_id: &str) -> Result<Option<StoredContext>, StoreError> {
        let request = self.inner.load_context(run_id);
        self.trace.record("cosmos read context", request).await
    }

    async fn apply_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), StoreError> {
        let request = self.inner.apply_changes(run_id, changes);
        self.trace.record("cosmos patch context", request).await
    }

    fn reserved_keys(&self) -> &'static [&'static str] {
        self.inner.reserved_keys()
    }
}

impl StatusStore for Traced {
    async fn write_status(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<Value>,
    ) -> Result<bool, StoreError> {
        let what = format!("cosmos write status {}", status.as_str());
        let request = self.inner.write_status(run_id, status, final_status);
        self.trace.record(what, request).await
    }

    async fn read_status(&self, run_id: &str) -> Result<Option<RunStatusRecord>, StoreError> {
        let request = self.inner.read_status(run_id);
        self.trace.record("cosmos read status", request).await
    }

    async fn publish_terminal(
        &self,
        run_id: &str,
        outcome: &FinalOutcome<'_>,
    ) -> Result<(), StoreError> {
        let what = format!("cosmos publish {}", outcome.state().as_str());
        let request = self.inner.publish_terminal(run_id, outcome);
        self.trace.record(what, request).await
    }

    async fn touch(&self, run_id: &str) -> Result<(), StoreError> {
        self.trace
            .record("cosmos touch", self.inner.touch(run_id))
            .await
    }

    async fn reopen_failed(&self, run_id: &str) -> Result<bool, StoreError> {
        let request = self.inner.reopen_failed(run_id);
        self.trace.record("cosmos reopen", request).await
    }
}

impl Backend for Traced {}

impl CoordinationStore for Traced {
    async fn create_progress(&self, progress: &RunProgress) -> Result<bool, StoreError> {
        let request = self.inner.create_progress(progress);
        self.trace.record("redis create progress", request).await
    }

    async fn load_progress(&self, run_id: &str) -> Result<Option<RunProgress>, StoreError> {
        let request = self.inner.load_progress(run_id);
        self.trace.record("redis read progress", request).await
    }

    async fn read_progress<T, F>(&self, run_id: &str, read: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        let request = self.inner.read_progress(run_id, read);
        self.trace.record("redis read progress", request).await
    }

    async fn read_progress_remembered<T, F>(
        &self,
        run_id: &str,
        read: F,
    ) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        let request = self.inner.read_progress_remembered(run_id, read);
        self.trace
            .record("redis read progress (remembered)", request)
            .await
    }

    async fn update_progress<T, F>(&self, run_id: &str, change: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        let request = self.inner.update_progress(run_id, change);
        self.trace.record("redis compare-and-set", request).await
    }
}

impl LeaseQueue for TracedQueue {
    type Message = ReceivedMessage;

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, StoreError> {
        let began = Instant::now();
        let received = LeaseQueue::receive(&self.inner, max, visibility).await;
        // Idle polls are left out: the trace starts with the job's receive.
        if received.as_ref().is_ok_and(|messages| !messages.is_empty()) {
            self.trace.0.lock().unwrap().push(Request {
                what: "queue receive".into(),
                began,
                ended: Instant::now(),
            });
        }
        received
    }

    fn group(&self, message: &ReceivedMessage) -> Result<Group, String> {
        self.inner.group(message)
    }

    async fn delete(&self, message: &ReceivedMessage) -> Result<(), StoreError> {
        let request = LeaseQueue::delete(&self.inner, message);
        self.trace.record("queue delete", request).await
    }

    async fn hide(
        &self,
        message: &mut ReceivedMessage,
        duration: Duration,
    ) -> Result<(), StoreError> {
        let request = self.inner.hide(message, duration);
        self.trace.record("queue renew", request).await
    }

    async fn rewrite(
        &self,
        message: &mut ReceivedMessage,
        group: &Group,
        visibility: Duration,
    ) -> Result<(), StoreError> {
        let what = format!("queue rewrite into {}", group.jobs[0].node_id);
        let request = self.inner.rewrite(message, group, visibility);
        self.trace.record(what, request).await
    }

    async fn dead_letter(&self, message: &ReceivedMessage, reason: &str) -> Result<(), StoreError> {
        self.inner.dead_letter(message, reason).await
    }

    async fn dead_letter_job(&self, job: &Job, reason: &str) -> Result<(), StoreError> {
        self.inner.dead_letter_job(job, reason).await
    }
}

impl WorkerBackend for Traced {
    type Queue = TracedQueue;

    fn lease_queue(&self) -> &TracedQueue {
        &self.queue
    }

    async fn stalled_runs(&self, threshold: Duration) -> Result<Vec<String>, StoreError> {
        self.inner.stalled_runs(threshold).await
    }

    async fn wait_for_work(&self, poll: Duration) {
        self.inner.wait_for_work(poll).await
    }
}

/// n0 → n1 → … → n9, each doubling its input.
fn chain() -> Blueprint {
    let mut nodes = vec![json!({"id": "n0", "uses": "double", "inputs": "value"})];
    nodes.extend((1..STEPS).map(|i| json!({"id": format!("n{i}"), "uses": "double"})));
    let edges: Vec<Value> = (1..STEPS)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    serde_json::from_value(json!({"id": "trace-chain", "nodes": nodes, "edges": edges})).unwrap()
}

/// The longest chain of requests in `requests` each of which started after
/// the one before it ended: the round trips the run waited for one after
/// another (a request under way beside others, like a message rewrite
/// during the next step, is off that chain).
fn round_trips(requests: &[Request]) -> usize {
    let real: Vec<&Request> = requests
        .iter()
        .filter(|request| request.ended - request.began >= IN_MEMORY)
        .collect();
    let mut longest = vec![1; real.len()];
    for (i, request) in real.iter().enumerate() {
        for (j, before) in real[..i].iter().enumerate() {
            if before.ended <= request.began {
                longest[i] = longest[i].max(longest[j] + 1);
            }
        }
    }
    longest.into_iter().max().unwrap_or(0)
}

/// The worker's requests for `run_id`'s run: from the receive of its start
/// job to its completed status.
fn run_window(mut requests: Vec<Request>) -> Vec<Request> {
    requests.sort_by_key(|request| request.began);
    let first = requests.iter().position(|r| r.what == "queue receive");
    let last = requests
        .iter()
        .rposition(|r| r.what == "cosmos publish completed");
    match (first, last) {
        (Some(first), Some(last)) if first <= last => requests[first..=last].to_vec(),
        _ => Vec::new(),
    }
}

fn print_trace(requests: &[Request]) {
    let Some(start) = requests.first().map(|request| request.began) else {
        return;
    };
    for request in requests {
        let took = request.ended - request.began;
        let note = if took < IN_MEMORY {
            "  (no request)"
        } else {
            ""
        };
        println!(
            "  +{:7.2} ms  {:6.2} ms  {}{note}",
            (request.began - start).as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3,
            request.what
        );
    }
}

#[tokio::main]
async fn main() {
    let config = support::local_config("bench-trips");
    let blueprint = chain();
    let registry = || {
        Arc::new(PlanRegistry::new([Plan::new(
            blueprint.clone(),
            Default::default(),
        )
        .unwrap()]))
    };
    let backend = AzureBackend::connect(&config)
        .await
        .expect("local services reachable");
    let mut plugin_config = PluginConfig::new(support::dist());
    plugin_config.cache_dir = Some(std::env::temp_dir().join("flowcraft-bench-cache"));
    let host = Arc::new(PluginHost::load(plugin_config).await.expect("bundles load"));
    let trace = Arc::new(Trace::default());
    let traced = Traced {
        queue: TracedQueue {
            inner: backend.queue().clone(),
            trace: trace.clone(),
        },
        inner: backend.clone(),
        trace: trace.clone(),
    };
    let settings = EngineSettings {
        context_cache: 64,
        ..EngineSettings::default()
    };
    let worker = Arc::new(Engine::new(
        Arc::new(traced),
        host.clone(),
        registry(),
        settings,
    ));
    let client = Engine::new(
        Arc::new(backend),
        host,
        registry(),
        EngineSettings::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(flowcraft_worker::run(
        worker,
        WorkerSettings {
            concurrency: 8,
            reconcile_every: None,
            ..WorkerSettings::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let mut last = Vec::new();
    for i in 0..RUNS {
        trace.take();
        let initial: ContextMap = [("value".to_owned(), json!(1).into())]
            .into_iter()
            .collect();
        let run = client
            .start_run(
                &blueprint.id,
                Some(format!("trips-{i}-{}", std::process::id())),
                initial,
            )
            .await
            .expect("run starts");
        let began = Instant::now();
        loop {
            let state = client.backend().read_status(&run).await.unwrap();
            if state.is_some_and(|status| status.status.is_terminal()) {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "run {run} did not end"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        last = run_window(trace.take());
    }
    let _ = stop.send(());
    let _ = running.await;
    println!("round trips: one {STEPS}-step chain on one worker, the last of {RUNS} runs");
    print_trace(&last);
    let trips = round_trips(&last);
    println!(
        "sequential round trips: {trips} for {STEPS} steps, the receive and the completed status included ({:.2} per step without those two)",
        trips.saturating_sub(2) as f64 / STEPS as f64
    );
}
