//! Embedded-mode throughput: a 1000-node chain and a 100-way fan-out/fan-in,
//! run with the trivial WebAssembly node (`plugins-example/dist/testkit/trivial.wasm`,
//! uses `noop`) and with a native no-op runner (the engine's own cost per node).
//! Prints a table; asserts nothing. Run with `cargo bench -p flowcraft-host`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::ContextMap;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::memory::{self, MemoryBackend, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::{NodeCall, NodeOutcome, NodeRunner, NodeSuccess, PinError, Pins};
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::{Value, json};

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

/// Runs `blueprint` `runs` times; returns the wall time per run.
async fn measure<R: NodeRunner>(runner: Arc<R>, blueprint: &Blueprint, runs: usize) -> Duration {
    let plan = Plan::new(blueprint.clone(), Default::default()).unwrap();
    let registry = Arc::new(PlanRegistry::new([plan]));
    let mut total = Duration::ZERO;
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
            .start_run(&blueprint.id, None, ContextMap::new())
            .await
            .unwrap();
        let report = memory::drive(&engine, &mut receiver, &run, 16, TimerPolicy::Wait)
            .await
            .unwrap();
        total += started.elapsed();
        assert_eq!(report.state, RunState::Completed, "{:?}", report.errors);
    }
    total / runs as u32
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../plugins-example/dist/testkit");
        assert!(
            dist.join("trivial.wasm").exists(),
            "run scripts/build-plugins.sh first"
        );
        let mut config = PluginConfig::new(&dist);
        config.cache_dir = Some(std::env::temp_dir().join("flowcraft-bench-cache"));
        let wasm = Arc::new(PluginHost::load(config).await.unwrap());
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
                ("wasm noop", measure(wasm.clone(), &blueprint, runs).await),
                (
                    "native noop",
                    measure(native.clone(), &blueprint, runs).await,
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
    });
}
