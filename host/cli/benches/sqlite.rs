//! The local durable backend's throughput and per-step latency: an
//! in-process worker (`flowcraft_worker::run`, default concurrency) over a
//! SQLite database with fsync'd commits in `target/bench-sqlite/` (on disk,
//! not a memory file system, unless `BENCH_SQLITE_DIR` says otherwise), running the benchmark's blueprints
//! (`bench/workloads/blueprints`) with the example bundles
//! (`scripts/build-plugins.sh`).
//!
//! For chain-10 and fan-8 (11 nodes) it runs [`RUNS`] runs closed-loop, at most
//! [`IN_FLIGHT`] at a time, and prints runs/s and node-jobs/s; then it runs
//! chain-10 [`SINGLE_RUNS`] times one at a time and prints the p50 run time
//! and per step (a tenth of it). Goals: ≥ 2,000 node-jobs/s on chain-10,
//! ≤ 1 ms per step unloaded. Run with
//! `cargo bench -p flowcraft-host --bench sqlite`; with `BENCH_METRICS=1`
//! the process keeps its metrics (the Prometheus recorder of `serve`) and
//! renders them once a second, as a Prometheus scrape would; with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set it exports the runs' traces there
//! (`node bench/driver/otlp-sink.mjs PORT` takes them and keeps nothing).
//! `BENCH_SQLITE_DIR` puts the database elsewhere: in a memory file system
//! (`/dev/shm`) the disk's variance is gone and what the host's own work
//! costs (such as trace spans) shows in the throughput.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::context_from_value;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::store::StatusStore;
use flowcraft_plugins::{PluginConfig, PluginHost};
use flowcraft_sqlite::SqliteBackend;
use flowcraft_worker::WorkerSettings;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Runs per throughput measurement.
const RUNS: usize = 2_000;
/// Runs in flight at once in the throughput measurements.
const IN_FLIGHT: usize = 100;
/// Runs of the unloaded latency measurement.
const SINGLE_RUNS: usize = 50;
/// How often a run's status is read while waiting for its end.
const POLL: Duration = Duration::from_millis(1);

type Local = Engine<SqliteBackend, PluginHost>;

fn blueprint(name: &str) -> Blueprint {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/workloads/blueprints")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("benchmark blueprint");
    serde_json::from_str(&text).expect("blueprint JSON")
}

/// Starts one run of `blueprint` and waits for its end.
async fn one_run(engine: &Local, blueprint: &str, run_id: String) {
    let initial = context_from_value(json!({"value": 1})).expect("object");
    let run_id = engine
        .start_run(blueprint, Some(run_id), initial)
        .await
        .expect("run starts");
    loop {
        let status = engine.backend().read_status(&run_id).await.expect("status");
        if status.is_some_and(|status| status.status.is_terminal()) {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `RUNS` runs of `blueprint`, at most `IN_FLIGHT` at once; answers runs/s.
async fn throughput(engine: &Arc<Local>, blueprint: &str) -> f64 {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut runs = JoinSet::new();
    let began = Instant::now();
    for i in 0..RUNS {
        let permit = slots.clone().acquire_owned().await.expect("open");
        let engine = engine.clone();
        let name = blueprint.to_owned();
        runs.spawn(async move {
            one_run(&engine, &name, format!("{name}-{i}")).await;
            drop(permit);
        });
    }
    while runs.join_next().await.is_some() {}
    RUNS as f64 / began.elapsed().as_secs_f64()
}

/// With `BENCH_METRICS` set: installs the metrics recorder and renders
/// every metric once a second.
fn metrics_if_asked() {
    if std::env::var_os("BENCH_METRICS").is_none() {
        println!("metrics: off");
        return;
    }
    let metrics = flowcraft_telemetry::Metrics::install().expect("the recorder installs");
    tokio::spawn(async move {
        let mut scrape = tokio::time::interval(Duration::from_secs(1));
        loop {
            scrape.tick().await;
            std::hint::black_box(metrics.render());
        }
    });
    println!("metrics: on, rendered once a second");
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set: exports the runs' traces, as
/// `serve` does.
fn traces_if_asked() -> Option<flowcraft_telemetry::Traces> {
    let traces = flowcraft_telemetry::Traces::from_environment().expect("the trace export starts");
    match &traces {
        Some(traces) => {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            tracing_subscriber::registry().with(traces.layer()).init();
            println!("traces: exported over OTLP");
        }
        None => println!("traces: off"),
    }
    traces
}

#[tokio::main]
async fn main() {
    metrics_if_asked();
    let traces = traces_if_asked();
    let data = match std::env::var_os("BENCH_SQLITE_DIR") {
        Some(dir) => Path::new(&dir).join("bench-sqlite"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-sqlite"),
    };
    let _ = std::fs::remove_dir_all(&data);
    let backend = SqliteBackend::open(&data).expect("database opens");
    let mut config = PluginConfig::new(support::dist());
    config.cache_dir = Some(std::env::temp_dir().join("flowcraft-bench-cache"));
    let host = PluginHost::load(config).await.expect("bundles load");
    let blueprints = [("bench-chain", 10), ("bench-fan", 11)];
    let registry = PlanRegistry::new(
        blueprints
            .iter()
            .map(|(name, _)| Plan::new(blueprint(name), Default::default()).expect("plan")),
    );
    let tunables = WorkerSettings::default();
    // As `serve` configures its engine: each job slot may remember the
    // contexts of two runs, so that a step reads what its predecessor on
    // this worker wrote from memory.
    let settings = EngineSettings {
        context_cache: tunables.concurrency * 2,
        ..EngineSettings::default()
    };
    let engine = Arc::new(Engine::new(
        Arc::new(backend),
        Arc::new(host),
        Arc::new(registry),
        settings,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(flowcraft_worker::run(engine.clone(), tunables, async {
        let _ = stopped.await;
    }));
    for i in 0..20 {
        one_run(&engine, "bench-chain", format!("warm-{i}")).await;
    }
    for (name, nodes) in blueprints {
        let runs_per_second = throughput(&engine, name).await;
        println!(
            "{name}: {runs_per_second:.0} runs/s, {:.0} node-jobs/s ({RUNS} runs, {IN_FLIGHT} in flight)",
            runs_per_second * nodes as f64
        );
    }
    let mut times = Vec::with_capacity(SINGLE_RUNS);
    for i in 0..SINGLE_RUNS {
        let began = Instant::now();
        one_run(&engine, "bench-chain", format!("single-{i}")).await;
        times.push(began.elapsed());
    }
    times.sort();
    let p50 = times[SINGLE_RUNS / 2];
    println!(
        "bench-chain one at a time: p50 {:.2} ms per run, {:.2} ms per step ({SINGLE_RUNS} runs)",
        p50.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e2
    );
    let _ = stop.send(());
    worker.await.expect("worker stops");
    if let Some(traces) = traces {
        tokio::task::spawn_blocking(move || traces.shutdown())
            .await
            .expect("the export stops");
    }
}
