//! Azure-mode throughput and backend requests per node-job, on the local
//! stand-ins (`scripts/azure-local.sh start; eval "$(scripts/azure-local.sh env)"`).
//!
//! Starts `flowcraft-host` worker processes (1, then 3) on a queue and
//! database of their own and, for a 10-node chain and an 8-way
//! fan-out/fan-in (start → 8 → join → end) of conformance-bundle nodes, runs
//! N runs closed-loop (at most [`IN_FLIGHT`] at a time) through the library
//! engine. N is sized from a calibration pass so that one measurement takes
//! about [`TARGET_SECONDS`] (`FLOWCRAFT_BENCH_SECONDS`, or a fixed
//! `FLOWCRAFT_BENCH_RUNS`; `FLOWCRAFT_BENCH_WORKERS=1` skips the 3-worker
//! variant). Per measurement it prints runs/s, node-jobs/s, p50/p95 run
//! latency (start → terminal state in the progress record) and the requests
//! each service served per node-job by operation: Cosmos and the queue from
//! their `/_flowcraft/stats` counters, Redis from `INFO commandstats` (deltas,
//! the counters are not reset). The counts include the client's side of each
//! run (`start_run`) and the workers' idle receives, and exclude the bench's
//! own requests (its completion polls, `HMGET`, are subtracted; its `INFO` is
//! left out). Redis counts commands run inside scripts (`EVALSHA`) as well. Prints a verdict against the budget (≤ 2 Cosmos and ≤ 3 queue
//! requests per node-job) and writes everything to `target/bench-azure.json`.
//! Other clients of the same services distort the counts: use services of
//! your own (`FLOWCRAFT_*_PORT`, see scripts/azure-local/README.md).
//! Run with `cargo bench -p flowcraft-host --bench azure`.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flowcraft_azure::backend::{AzureBackend, AzureConfig};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::ContextMap;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::RunState;
use flowcraft_core::store::CoordinationStore;
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Runs in flight at once (closed loop).
const IN_FLIGHT: usize = 50;
/// Wall time one measurement aims at.
const TARGET_SECONDS: f64 = 10.0;
/// Runs of the calibration pass that sizes a measurement (also the warm-up).
const CALIBRATION_RUNS: usize = 50;
/// How often a running run's progress record is polled.
const POLL: Duration = Duration::from_millis(10);
/// A run that takes longer counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Budget per node-job (issue 5).
const COSMOS_BUDGET: f64 = 2.0;
const QUEUE_BUDGET: f64 = 3.0;

type Client = Engine<AzureBackend, PluginHost>;

struct Workload {
    name: &'static str,
    blueprint: Blueprint,
}

impl Workload {
    fn nodes(&self) -> usize {
        self.blueprint.nodes.len()
    }
}

/// n0 → n1 → … → n9, each doubling its input (1 → 1024).
fn chain(length: usize) -> Workload {
    let mut nodes = vec![json!({"id": "n0", "uses": "double", "inputs": "value"})];
    nodes.extend((1..length).map(|i| json!({"id": format!("n{i}"), "uses": "double"})));
    let edges: Vec<Value> = (1..length)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    Workload {
        name: "chain of 10",
        blueprint: serde_json::from_value(
            json!({"id": "bench-chain", "nodes": nodes, "edges": edges}),
        )
        .unwrap(),
    }
}

/// start → w0..w{width-1} → join → end.
fn fan(width: usize) -> Workload {
    let mut nodes = vec![
        json!({"id": "start", "uses": "double", "inputs": "value"}),
        json!({"id": "join", "uses": "echo"}),
        json!({"id": "end", "uses": "echo"}),
    ];
    let mut edges = vec![json!({"source": "join", "target": "end"})];
    for i in 0..width {
        nodes.push(json!({"id": format!("w{i}"), "uses": "double"}));
        edges.push(json!({"source": "start", "target": format!("w{i}")}));
        edges.push(json!({"source": format!("w{i}"), "target": "join"}));
    }
    Workload {
        name: "fan-out/in 8",
        blueprint: serde_json::from_value(
            json!({"id": "bench-fan", "nodes": nodes, "edges": edges}),
        )
        .unwrap(),
    }
}

/// The value of `name=` in a `;`-separated connection string.
fn setting<'a>(connection_string: &'a str, name: &str) -> Option<&'a str> {
    connection_string.split(';').find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// `host:port` of an `http://` endpoint.
fn http_authority(endpoint: &str) -> String {
    let rest = endpoint.strip_prefix("http://").unwrap_or_else(|| {
        eprintln!("the request counters are read over plain HTTP; {endpoint} is not http://");
        std::process::exit(1);
    });
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Where the request counters are.
struct Counters {
    cosmos: String,
    queue: String,
    redis: redis::Client,
}

/// Requests by service and operation.
#[derive(Debug, Clone, Default)]
struct Requests {
    cosmos: BTreeMap<String, u64>,
    queue: BTreeMap<String, u64>,
    redis: BTreeMap<String, u64>,
}

impl Requests {
    fn services(&self) -> [(&'static str, &BTreeMap<String, u64>); 3] {
        [
            ("cosmos", &self.cosmos),
            ("queue", &self.queue),
            ("redis", &self.redis),
        ]
    }

    fn since(&self, before: &Requests) -> Requests {
        let delta = |after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>| {
            after
                .iter()
                .map(|(kind, n)| {
                    (
                        kind.clone(),
                        n - before.get(kind).copied().unwrap_or(0).min(*n),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        Requests {
            cosmos: delta(&self.cosmos, &before.cosmos),
            queue: delta(&self.queue, &before.queue),
            redis: delta(&self.redis, &before.redis),
        }
    }
}

impl Counters {
    fn new(config: &AzureConfig) -> Self {
        let cosmos = setting(config.cosmos.text(), "AccountEndpoint")
            .map(http_authority)
            .expect("COSMOS_DB_CONNECTION_STRING has an AccountEndpoint");
        let queue = setting(config.storage.text(), "QueueEndpoint")
            .map(http_authority)
            .expect("AZURE_STORAGE_CONNECTION_STRING has a QueueEndpoint");
        Self {
            cosmos,
            queue,
            redis: redis::Client::open(config.redis_url.as_str()).expect("REDIS_URL parses"),
        }
    }

    async fn read(&self) -> Requests {
        let redis = {
            let mut connection = self
                .redis
                .get_multiplexed_async_connection()
                .await
                .expect("redis answers");
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut connection)
                .await
                .expect("INFO commandstats");
            command_calls(&info)
        };
        let (cosmos, queue) = (self.cosmos.clone(), self.queue.clone());
        let (cosmos, queue) =
            tokio::task::spawn_blocking(move || (stats_by_kind(&cosmos), stats_by_kind(&queue)))
                .await
                .unwrap();
        Requests {
            cosmos,
            queue,
            redis,
        }
    }
}

/// `cmdstat_<command>:calls=N,…` lines, without the bench's own commands.
fn command_calls(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "info" | "config" | "hello" | "client|setinfo"
            )
        })
        .collect()
}

/// `byKind` of `GET /_flowcraft/stats` at `authority`.
fn stats_by_kind(authority: &str) -> BTreeMap<String, u64> {
    let mut stream = std::net::TcpStream::connect(authority)
        .unwrap_or_else(|e| panic!("cannot reach the request counters at {authority}: {e}"));
    write!(
        stream,
        "GET /_flowcraft/stats HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "GET http://{authority}/_flowcraft/stats answered {}",
        head.lines().next().unwrap_or_default()
    );
    let stats: Value = serde_json::from_str(body).unwrap_or_else(|e| {
        panic!("GET http://{authority}/_flowcraft/stats: not JSON ({e}): {body}")
    });
    stats["byKind"]
        .as_object()
        .map(|kinds| {
            kinds
                .iter()
                .map(|(kind, n)| (kind.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Worker processes, killed when dropped.
struct Workers(Vec<Child>);

impl Workers {
    fn spawn(&mut self, count: usize, config: &AzureConfig, blueprints: &Path) {
        for _ in 0..count {
            let child = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
                .args(["--plugins", support::dist().to_str().unwrap()])
                .args(["--blueprints", blueprints.to_str().unwrap()])
                .arg("--create-resources")
                .env("FLOWCRAFT_QUEUE", &config.queue)
                .env("FLOWCRAFT_DATABASE", &config.database)
                .env("FLOWCRAFT_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("a worker starts");
            self.0.push(child);
        }
    }

    fn assert_running(&mut self) {
        for child in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("a worker exited with {status}");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a batch of runs did.
struct Batch {
    wall: Duration,
    latencies: Vec<Duration>,
    failed: Vec<String>,
}

/// Runs `runs` runs of `blueprint`, at most [`IN_FLIGHT`] at a time.
async fn drive(
    client: &Arc<Client>,
    blueprint: &str,
    prefix: &str,
    runs: usize,
    polls: &Arc<AtomicU64>,
) -> Batch {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..runs {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let (client, polls) = (client.clone(), polls.clone());
        let (blueprint, run_id) = (blueprint.to_owned(), format!("{prefix}-{i}"));
        tasks.spawn(async move {
            let begun = Instant::now();
            let context: ContextMap = serde_json::from_value(json!({"value": 1})).unwrap();
            let run = client
                .start_run(&blueprint, Some(run_id), context)
                .await
                .expect("run starts");
            let outcome = loop {
                tokio::time::sleep(POLL).await;
                polls.fetch_add(1, Ordering::Relaxed);
                let state = client
                    .backend()
                    .read_progress(&run, |p| p.state)
                    .await
                    .expect("redis answers");
                match state {
                    Some(RunState::Completed) => break Ok(begun.elapsed()),
                    Some(state) if state.is_terminal() => break Err(format!("{run}: {state:?}")),
                    _ if begun.elapsed() > RUN_TIMEOUT => break Err(format!("{run}: timed out")),
                    _ => {}
                }
            };
            drop(permit);
            outcome
        });
    }
    let mut batch = Batch {
        wall: Duration::ZERO,
        latencies: Vec::with_capacity(runs),
        failed: Vec::new(),
    };
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(latency) => batch.latencies.push(latency),
            Err(failure) => batch.failed.push(failure),
        }
    }
    batch.wall = started.elapsed();
    batch.latencies.sort();
    batch
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// One workload measured: prints its table and returns its JSON.
async fn measure(
    client: &Arc<Client>,
    counters: &Counters,
    workers: &mut Workers,
    workload: &Workload,
    worker_count: usize,
    polls: &Arc<AtomicU64>,
) -> Value {
    let nodes = workload.nodes();
    let id = &workload.blueprint.id;
    let prefix = format!("{id}-{worker_count}w-{}", std::process::id());
    let calibration = drive(
        client,
        id,
        &format!("{prefix}-cal"),
        CALIBRATION_RUNS,
        polls,
    )
    .await;
    workers.assert_running();
    assert!(
        calibration.failed.is_empty(),
        "calibration runs failed: {:?}",
        calibration.failed
    );
    let rate = CALIBRATION_RUNS as f64 / calibration.wall.as_secs_f64();
    let seconds = env_number("FLOWCRAFT_BENCH_SECONDS").unwrap_or(TARGET_SECONDS);
    let runs = env_number("FLOWCRAFT_BENCH_RUNS")
        .unwrap_or(((rate * seconds) as usize).clamp(IN_FLIGHT, 5_000));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let polls_before = polls.load(Ordering::Relaxed);
    let before = counters.read().await;
    let batch = drive(client, id, &prefix, runs, polls).await;
    // The last runs' status writes and message deletes follow their final
    // progress update.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = counters.read().await;
    let mut requests = after.since(&before);
    let own_polls = polls.load(Ordering::Relaxed) - polls_before;
    if let Some(hmget) = requests.redis.get_mut("hmget") {
        *hmget = hmget.saturating_sub(own_polls);
    }
    workers.assert_running();

    let completed = batch.latencies.len();
    let node_jobs = (completed * nodes) as f64;
    let wall = batch.wall.as_secs_f64();
    let (p50, p95) = (
        percentile(&batch.latencies, 0.50),
        percentile(&batch.latencies, 0.95),
    );
    println!();
    println!(
        "== {} — {worker_count} worker(s), {IN_FLIGHT} runs in flight ==",
        workload.name
    );
    println!(
        "runs {completed} (failed {})   node-jobs {}   wall {wall:.1} s   runs/s {:.1}   node-jobs/s {:.0}   latency p50 {:.0} ms  p95 {:.0} ms",
        batch.failed.len(),
        node_jobs as u64,
        completed as f64 / wall,
        node_jobs / wall,
        p50.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3,
    );
    println!(
        "{:<8} {:<22} {:>10} {:>14}",
        "service", "operation", "requests", "per node-job"
    );
    let per = |n: u64| n as f64 / node_jobs.max(1.0);
    let mut totals = BTreeMap::new();
    let mut per_job = serde_json::Map::new();
    for (service, kinds) in requests.services() {
        let mut by_kind = serde_json::Map::new();
        for (kind, n) in kinds {
            println!("{service:<8} {kind:<22} {n:>10} {:>14.3}", per(*n));
            by_kind.insert(kind.clone(), json!(per(*n)));
        }
        let total: u64 = kinds.values().sum();
        println!(
            "{service:<8} {:<22} {total:>10} {:>14.3}",
            "TOTAL",
            per(total)
        );
        totals.insert(service, per(total));
        per_job.insert(service.to_owned(), Value::Object(by_kind));
    }
    println!(
        "(redis counts include the commands run inside EVALSHA scripts; round trips are evalsha + hmget, the only commands the store sends itself)"
    );
    let (cosmos, queue) = (totals["cosmos"], totals["queue"]);
    let met = cosmos <= COSMOS_BUDGET && queue <= QUEUE_BUDGET && batch.failed.is_empty();
    println!(
        "verdict: cosmos {cosmos:.2}/node-job (budget ≤ {COSMOS_BUDGET}) {}, queue {queue:.2}/node-job (budget ≤ {QUEUE_BUDGET}) {} → {}",
        if cosmos <= COSMOS_BUDGET {
            "ok"
        } else {
            "OVER"
        },
        if queue <= QUEUE_BUDGET { "ok" } else { "OVER" },
        if met { "BUDGET MET" } else { "BUDGET MISSED" }
    );
    if !batch.failed.is_empty() {
        println!(
            "failed runs (first 5): {:?}",
            &batch.failed[..batch.failed.len().min(5)]
        );
    }
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    json!({
        "workload": workload.name,
        "blueprint": id,
        "nodesPerRun": nodes,
        "workers": worker_count,
        "inFlight": IN_FLIGHT,
        "runs": completed,
        "failedRuns": batch.failed.len(),
        "nodeJobs": node_jobs as u64,
        "wallSeconds": wall,
        "runsPerSecond": completed as f64 / wall,
        "nodeJobsPerSecond": node_jobs / wall,
        "latencyMs": {
            "p50": ms(p50),
            "p95": ms(p95),
            "max": ms(batch.latencies.last().copied().unwrap_or_default()),
        },
        "requests": {
            "cosmos": requests.cosmos,
            "queue": requests.queue,
            "redis": requests.redis,
        },
        "perNodeJob": per_job,
        "totalPerNodeJob": totals,
        "budget": {"cosmos": COSMOS_BUDGET, "queue": QUEUE_BUDGET, "met": met},
        "benchPollsSubtractedFromRedisHmget": own_polls,
    })
}

fn main() {
    // `cargo test --benches` runs this binary too (without `--bench`).
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("azure bench: skipped (run with cargo bench -p flowcraft-host --bench azure)");
        return;
    }
    let config = support::local_config("bench-azure");
    assert!(
        support::dist().join("conformance.wasm").exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        support::dist().join("conformance.wasm").display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let workloads = [chain(10), fan(8)];
        let blueprints = tempfile::tempdir().expect("temp dir");
        for workload in &workloads {
            let path = blueprints
                .path()
                .join(format!("{}.json", workload.blueprint.id));
            std::fs::write(path, serde_json::to_string(&workload.blueprint).unwrap()).unwrap();
        }
        let registry =
            PlanRegistry::new(workloads.iter().map(|workload| {
                Plan::new(workload.blueprint.clone(), Default::default()).unwrap()
            }));
        let backend = AzureBackend::connect(&config)
            .await
            .expect("local services reachable");
        let mut plugin_config = PluginConfig::new(support::dist());
        plugin_config.cache_dir = Some(std::env::temp_dir().join("flowcraft-bench-cache"));
        let host = PluginHost::load(plugin_config).await.expect("bundles load");
        let client = Arc::new(Engine::new(
            Arc::new(backend),
            Arc::new(host),
            Arc::new(registry),
            EngineSettings::default(),
        ));
        let counters = Counters::new(&config);
        let polls = Arc::new(AtomicU64::new(0));
        let variants: Vec<usize> = std::env::var("FLOWCRAFT_BENCH_WORKERS")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 3]);
        let mut workers = Workers(Vec::new());
        let mut results = Vec::new();
        println!(
            "azure bench: queue {}, database {}, {} core(s)",
            config.queue,
            config.database,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        for count in variants {
            let more = count.saturating_sub(workers.0.len());
            workers.spawn(more, &config, blueprints.path());
            // Until every worker has loaded its bundles.
            let warm = format!("warm-{count}w-{}", std::process::id());
            let warm_up = drive(&client, "bench-chain", &warm, IN_FLIGHT, &polls).await;
            assert!(
                warm_up.failed.is_empty(),
                "warm-up runs failed: {:?}",
                warm_up.failed
            );
            for workload in &workloads {
                results
                    .push(measure(&client, &counters, &mut workers, workload, count, &polls).await);
            }
        }
        let target = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_owned()))
            .filter(|dir| dir.join("CACHEDIR.TAG").exists())
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        let path = target.join("bench-azure.json");
        let report = json!({
            "queue": config.queue,
            "database": config.database,
            "budgetPerNodeJob": {"cosmos": COSMOS_BUDGET, "queue": QUEUE_BUDGET},
            "results": results,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("\nwrote {}", path.display());
    });
}
