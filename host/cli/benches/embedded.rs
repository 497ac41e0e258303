//! Embedded-mode throughput: a 1000-node chain and a 100-way fan-out/fan-in,
//! run with the trivial WebAssembly node (`plugins-example/dist/testkit/trivial.wasm`,
//! uses `noop`) and with a native no-op runner (the engine's own cost per node);
//! then the order-approval demo (`plugins-example/orders/blueprints`) with the
//! Rust `orders` bundle (`dist/`) and the TypeScript `orders-ts` (`dist/ts/`),
//! or only with the plugins directory in `BENCH_DEMO_PLUGINS`.
//! Prints tables; asserts nothing. Run with `cargo bench -p flowcraft-host --bench embedded`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::{ContextMap, context_from_value};
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::memory::{self, MemoryBackend, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::{NodeCall, NodeOutcome, NodeRunner, NodeSuccess, PinError, Pins};
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// Nodes one run of the order-approval demo executes: validate, price, route
/// and one of the three notify nodes.
const DEMO_NODE_JOBS: usize = 4;
/// Runs of the demo measured one at a time, and in flight at once.
const DEMO_RUNS: usize = 400;
const DEMO_IN_FLIGHT: usize = 8;

/// Answers every node with its input, without any sandbox.
struct NativeNoop;

impl NodeRunner for NativeNoop {
    fn implements(&self, _uses: &str) -> bool {
        true
    }

    fn pin(&self, _blueprint: &Blueprint) -> Result<Pins, PinError> {
        Ok(Pins::new())
    }

    async fn run(&self, call: NodeCall) -> NodeOutcome {
        NodeOutcome {
            result: Ok(NodeSuccess {
                output: call.input.as_ref().map(|input| input.to_value()),
                ..NodeSuccess::default()
            }),
            context: call.context,
        }
    }
}

fn chain(length: usize) -> Blueprint {
    let nodes: Vec<Value> = (0..length)
        .map(|i| json!({"id": format!("n{i}"), "uses": "noop"}))
        .collect();
    let edges: Vec<Value> = (1..length)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    serde_json::from_value(json!({"id": "chain", "nodes": nodes, "edges": edges})).unwrap()
}

fn fan(width: usize) -> Blueprint {
    let mut nodes = vec![
        json!({"id": "start", "uses": "noop"}),
        json!({"id": "join", "uses": "noop"}),
    ];
    let mut edges = Vec::new();
    for i in 0..width {
        nodes.push(json!({"id": format!("w{i}"), "uses": "noop"}));
        edges.push(json!({"source": "start", "target": format!("w{i}")}));
        edges.push(json!({"source": format!("w{i}"), "target": "join"}));
    }
    serde_json::from_value(json!({"id": "fan", "nodes": nodes, "edges": edges})).unwrap()
}

/// Runs `blueprint` `runs` times, one after the other, from `context`;
/// returns the wall time of each run.
async fn measure<R: NodeRunner>(
    runner: Arc<R>,
    blueprint: &Blueprint,
    context: &ContextMap,
    runs: usize,
) -> Vec<Duration> {
    let plan = Plan::new(blueprint.clone(), Default::default()).unwrap();
    let registry = Arc::new(PlanRegistry::new([plan]));
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (backend, mut receiver) = MemoryBackend::new();
        let engine = Engine::new(
            Arc::new(backend),
            runner.clone(),
            registry.clone(),
            EngineSettings::default(),
        );
        let started = Instant::now();
        let run = engine
            .start_run(&blueprint.id, None, context.clone())
            .await
            .unwrap();
        let report = memory::drive(&engine, &mut receiver, &run, 16, TimerPolicy::Wait)
            .await
            .unwrap();
        samples.push(started.elapsed());
        assert_eq!(report.state, RunState::Completed, "{:?}", report.errors);
    }
    samples
}

/// The mean wall time per run of `runs` runs of `blueprint` from an empty context.
async fn mean_run<R: NodeRunner>(runner: Arc<R>, blueprint: &Blueprint, runs: usize) -> Duration {
    let samples = measure(runner, blueprint, &ContextMap::new(), runs).await;
    samples.iter().sum::<Duration>() / runs as u32
}

/// Runs per second of `blueprint` with `in_flight` runs at a time.
async fn runs_per_second(
    runner: Arc<PluginHost>,
    blueprint: &Blueprint,
    context: &ContextMap,
    in_flight: usize,
    runs: usize,
) -> f64 {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..in_flight {
        let (runner, blueprint, context) = (runner.clone(), blueprint.clone(), context.clone());
        tasks.spawn(async move { measure(runner, &blueprint, &context, runs / in_flight).await });
    }
    tasks.join_all().await;
    runs as f64 / started.elapsed().as_secs_f64()
}

/// The order-approval demo with the bundles of each plugins directory:
/// latency one run at a time, throughput with several in flight.
async fn order_demo(dist: &Path) {
    let (blueprint, context) = demo_inputs();
    let dirs: Vec<PathBuf> = match std::env::var_os("BENCH_DEMO_PLUGINS") {
        Some(dir) => vec![dir.into()],
        None => vec![dist.to_owned(), dist.join("ts")],
    };
    let in_flight = format!("{DEMO_IN_FLIGHT} in flight");
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "order-approval demo", "p50 run", "runs/s", "runs/s", "node-jobs/s"
    );
    println!(
        "{:<28} {:>12} {:>12} {in_flight:>12} {in_flight:>12}",
        "(bundle)", "1 at a time", "1 at a time"
    );
    for dir in dirs {
        demo_row(&dir, &blueprint, &context).await;
    }
}

/// One row of the demo's table: the bundle implementing the demo's node
/// types in `dir`, its p50 run latency and its throughput.
async fn demo_row(dir: &Path, blueprint: &Blueprint, context: &ContextMap) {
    let host = Arc::new(load_plugins(dir).await);
    let bundle = host
        .bundles()
        .into_iter()
        .find(|bundle| {
            bundle
                .nodes
                .iter()
                .any(|node| node.uses == "validate-order")
        })
        .expect("a bundle implements validate-order");
    let mut one_at_a_time = measure(host.clone(), blueprint, context, DEMO_RUNS).await;
    one_at_a_time.sort_unstable();
    let sequential = DEMO_RUNS as f64 / one_at_a_time.iter().sum::<Duration>().as_secs_f64();
    let parallel = runs_per_second(host, blueprint, context, DEMO_IN_FLIGHT, DEMO_RUNS).await;
    println!(
        "{:<28} {:>12} {sequential:>12.0} {parallel:>12.0} {:>12.0}",
        format!("{}@{}", bundle.name, bundle.version),
        format!("{:.2} ms", one_at_a_time[DEMO_RUNS / 2].as_secs_f64() * 1e3),
        parallel * DEMO_NODE_JOBS as f64
    );
}

/// The demo's blueprint and initial context (`plugins-example/orders/blueprints`).
fn demo_inputs() -> (Blueprint, ContextMap) {
    let demo =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins-example/orders/blueprints");
    let read = |file: &str| std::fs::read_to_string(demo.join(file)).unwrap();
    let blueprint = Blueprint::from_json(&read("order-approval.json")).unwrap();
    let context = serde_json::from_str(&read("order-approval.context.json")).unwrap();
    (blueprint, context_from_value(context).unwrap())
}

/// A plugin host over `dir`, with the benchmarks' compile cache.
async fn load_plugins(dir: &Path) -> PluginHost {
    let mut config = PluginConfig::new(dir);
    config.cache_dir = Some(std::env::temp_dir().join("flowcraft-bench-cache"));
    let host = PluginHost::load(config).await.unwrap();
    assert!(host.problems().is_empty(), "{:?}", host.problems());
    host
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins-example/dist");
        assert!(
            dist.join("testkit/trivial.wasm").exists(),
            "run scripts/build-plugins.sh first"
        );
        let wasm = Arc::new(load_plugins(&dist.join("testkit")).await);
        let native = Arc::new(NativeNoop);
        println!(
            "{:<28} {:>8} {:>12} {:>12} {:>14}",
            "workload", "nodes", "runner", "nodes/s", "µs per node"
        );
        for (name, blueprint, runs) in [
            ("chain of 1000", chain(1000), 3),
            ("fan-out/in 100", fan(100), 10),
        ] {
            let nodes = blueprint.nodes.len();
            for (runner, per_run) in [
                ("wasm noop", mean_run(wasm.clone(), &blueprint, runs).await),
                (
                    "native noop",
                    mean_run(native.clone(), &blueprint, runs).await,
                ),
            ] {
                let per_node = per_run.as_secs_f64() / nodes as f64;
                println!(
                    "{name:<28} {nodes:>8} {runner:>12} {:>12.0} {:>14.1}",
                    1.0 / per_node,
                    per_node * 1e6
                );
            }
        }
        order_demo(&dist).await;
    });
}
