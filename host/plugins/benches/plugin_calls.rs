//! Plugin call benchmark: per-call overhead (fresh instance + call + JSON in
//! and out) for a trivial node and for 1 KiB / 64 KiB payloads, cold compile
//! vs cache load of a bundle, and trivial calls per second on two cores.
//!
//! Run with `cargo bench -p flowcraft-plugins` after `scripts/build-plugins.sh`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{built_bundle, host_with, micros, millis, node_call, per_call, percentile};
use flowcraft_core::context::ContextMap;
use flowcraft_core::runner::NodeRunner;
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::{Value, json};

const THROUGHPUT_SECONDS: u64 = 3;
const CONCURRENT_TASKS: usize = 64;

fn main() {
    let trivial = built_bundle("testkit/trivial.wasm");
    let conformance = built_bundle("conformance.wasm");

    println!();
    println!("flowcraft-plugins benchmark (wasmtime 48, pooling allocator, epoch interruption)");
    println!();

    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (host, _dir, _cache) = single.block_on(host_with(&[&trivial, &conformance]));

    println!(
        "{:<48} {:>9} {:>9} {:>9}",
        "per call (new instance + call + JSON)", "p50", "p99", "calls"
    );
    let snapshot = Arc::new(ContextMap::new());
    let kib = |n: usize| json!("x".repeat(n * 1024 - 2));
    let cases: [(&str, &str, Option<Value>, usize); 4] = [
        ("trivial (noop, no input)", "noop", None, 20_000),
        ("trivial (noop, 1 KiB input)", "noop", Some(kib(1)), 20_000),
        (
            "echo, 1 KiB (guest parses JSON)",
            "echo",
            Some(kib(1)),
            10_000,
        ),
        (
            "echo, 64 KiB (guest parses JSON)",
            "echo",
            Some(kib(64)),
            1_000,
        ),
    ];
    for (label, uses, input, calls) in cases {
        let samples = single.block_on(per_call(&host, &snapshot, uses, input, calls));
        println!(
            "{label:<48} {:>9} {:>9} {calls:>9}",
            micros(percentile(&samples, 0.50)),
            micros(percentile(&samples, 0.99))
        );
    }
    drop(host);

    println!();
    let size_kib = std::fs::metadata(&conformance).unwrap().len() / 1024;
    println!(
        "{:<48} {:>9}",
        format!("bundle load (conformance.wasm, {size_kib} KiB)"),
        "time"
    );
    let (cold, cached) = single.block_on(load_times(&conformance));
    println!(
        "{:<48} {:>9}",
        "cold: read + sha256 + compile + describe",
        millis(cold)
    );
    println!(
        "{:<48} {:>9}",
        "cached: read + sha256 + deserialize + describe",
        millis(cached)
    );

    println!();
    let two_cores = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (rate, completed) = two_cores.block_on(async {
        let (host, _dir, _cache) = host_with(&[&trivial]).await;
        throughput(&host).await
    });
    println!(
        "{:<48} {:>9}",
        format!("trivial calls/s, 2 worker threads, {CONCURRENT_TASKS} tasks"),
        format!("{:.0}k", rate / 1000.0)
    );
    println!("{:<48} {:>9}", "  (calls completed)", completed);
    println!();
    println!(
        "budget: p50 <= 25 us (trivial, 1 KiB), cache load <= 5 ms, >= 50k trivial calls/s on 2 cores"
    );
    println!();
}

/// Cold and cached load time of one bundle, measured as a reload that
/// brings the file into an otherwise empty plugins directory.
async fn load_times(bundle: &PathBuf) -> (Duration, Duration) {
    let cache = tempfile::tempdir().unwrap();
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = PluginConfig::new(dir.path());
        config.cache_dir = Some(cache.path().to_owned());
        let host = PluginHost::load(config).await.unwrap();
        std::fs::copy(bundle, dir.path().join("bundle.wasm")).unwrap();
        let started = Instant::now();
        host.reload().await.unwrap();
        let elapsed = started.elapsed();
        let digest = host.bundles()[0].digest.clone();
        match host.loaded_from_cache(&digest) {
            Some(true) => cached.push(elapsed),
            _ => cold.push(elapsed),
        }
    }
    cached.sort();
    (cold[0], cached[cached.len() / 2])
}

async fn throughput(host: &PluginHost) -> (f64, u64) {
    let completed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let snapshot = Arc::new(ContextMap::new());
    let tasks: Vec<_> = (0..CONCURRENT_TASKS)
        .map(|_| {
            let (host, completed, stop, snapshot) = (
                host.clone(),
                completed.clone(),
                stop.clone(),
                snapshot.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = host.run(node_call("noop", None, &snapshot)).await;
                    debug_assert!(outcome.result.is_ok());
                    completed.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(THROUGHPUT_SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let count = completed.load(Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    (count as f64 / elapsed.as_secs_f64(), count)
}
