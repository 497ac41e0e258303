//! Language benchmark: the trivial bundle (one node, `noop`, that returns its
//! input) written in Rust (`trivial`), JavaScript (`trivial-js`) and Python
//! (`trivial-py`), side by side: per-call latency, compile time, compiled code
//! size, load from the compile cache, and the time from a hot swap's file
//! change until the first call on the new version succeeds, with a cold cache
//! and with the new version precompiled (`flowcraft-host plugins compile`).
//! The JavaScript and Python nodes parse the input JSON and serialize the
//! output; the Rust node passes the text through.
//!
//! Run with `cargo bench -p flowcraft-plugins --bench languages` after
//! `scripts/build-plugins.sh`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{built_bundle, host_with, micros, millis, node_call, per_call, percentile};
use flowcraft_core::context::ContextMap;
use flowcraft_core::runner::NodeRunner;
use flowcraft_plugins::{PluginConfig, PluginHost, check_bundle};
use serde_json::{Value, json};
use wasm_encoder::{ComponentSection, CustomSection};

/// Column heading and built file of each bundle.
const BUNDLES: [(&str, &str); 3] = [
    ("Rust trivial", "testkit/trivial.wasm"),
    ("JS trivial-js", "testkit/js/trivial-js.wasm"),
    ("Python trivial-py", "testkit/py/trivial-py.wasm"),
];

/// Roughly how long the calls of one bundle and input are sampled.
const SAMPLING_TIME: Duration = Duration::from_secs(3);
/// How long a hot swap may take before the benchmark gives up.
const SWAP_TIMEOUT: Duration = Duration::from_secs(300);

/// What is measured for one bundle.
struct Measured {
    file_bytes: u64,
    no_input: Vec<Duration>,
    kib_input: Vec<Duration>,
    compile: Duration,
    artifact_bytes: u64,
    cached_load: Duration,
    swap_cold: Duration,
    swap_precompiled: Duration,
}

fn main() {
    let bundles: Vec<_> = BUNDLES.iter().map(|(_, file)| built_bundle(file)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!();
    println!("flowcraft-plugins language benchmark: the noop node in Rust, JavaScript and Python");
    println!();
    let measured: Vec<Measured> = bundles
        .iter()
        .map(|bundle| runtime.block_on(measure(bundle)))
        .collect();
    print_table(&measured);
}

async fn measure(bundle: &Path) -> Measured {
    let started = Instant::now();
    check_bundle(bundle).await.expect("the bundle loads");
    let compile = started.elapsed();

    let (host, dir, cache) = host_with(&[bundle]).await;
    let artifact = host
        .compiled_artifact(&served_digest(&host))
        .expect("the compiled code is cached");
    let cached_load = cached_load_time(dir.path(), cache.path()).await;
    first_call(&host).await;
    let snapshot = Arc::new(ContextMap::new());
    let no_input = sample_calls(&host, &snapshot, None).await;
    let kib_input = sample_calls(&host, &snapshot, Some(json!("x".repeat(1022)))).await;

    let _watching = host.watch().expect("watch the plugins directory");
    let served = dir.path().join(bundle.file_name().unwrap());
    let swap_cold = hot_swap(&host, &served, "bench-cold", false).await;
    let swap_precompiled = hot_swap(&host, &served, "bench-precompiled", true).await;
    Measured {
        file_bytes: std::fs::metadata(bundle).unwrap().len(),
        no_input,
        kib_input,
        compile,
        artifact_bytes: std::fs::metadata(artifact).unwrap().len(),
        cached_load,
        swap_cold,
        swap_precompiled,
    }
}

/// The start of a second host on the same directory and cache: reading,
/// hashing and deserializing the compiled code, and `describe()`.
async fn cached_load_time(dir: &Path, cache: &Path) -> Duration {
    let mut config = PluginConfig::new(dir);
    config.cache_dir = Some(cache.to_owned());
    let started = Instant::now();
    let host = PluginHost::load(config).await.expect("load from the cache");
    let elapsed = started.elapsed();
    assert_eq!(host.loaded_from_cache(&served_digest(&host)), Some(true));
    elapsed
}

/// Call latencies of `noop` with `input`, as many calls as fit in about
/// [`SAMPLING_TIME`] (at least 200).
async fn sample_calls(
    host: &PluginHost,
    snapshot: &Arc<ContextMap>,
    input: Option<Value>,
) -> Vec<Duration> {
    let probe = per_call(host, snapshot, "noop", input.clone(), 20).await;
    let mean = probe.iter().sum::<Duration>() / probe.len() as u32;
    let calls = (SAMPLING_TIME.as_secs_f64() / mean.as_secs_f64()) as usize;
    per_call(host, snapshot, "noop", input, calls.clamp(200, 20_000)).await
}

/// Replaces the served bundle file by a new version of it (the same
/// component plus a custom section named `variant`), compiled into the cache
/// beforehand or not, the way a deploy does: written elsewhere, then renamed
/// into the watched directory. Returns the time from the rename until the
/// first call on the new version succeeded.
async fn hot_swap(host: &PluginHost, served: &Path, variant: &str, precompile: bool) -> Duration {
    let staging = tempfile::tempdir().unwrap();
    let staged = staging.path().join(served.file_name().unwrap());
    std::fs::write(
        &staged,
        with_custom_section(&std::fs::read(served).unwrap(), variant),
    )
    .unwrap();
    if precompile {
        host.check_file(&staged)
            .await
            .expect("the new version loads");
    }
    let old = served_digest(host);
    let mut reloads = host.reloads();
    let started = Instant::now();
    std::fs::rename(&staged, served).unwrap();
    let swapped = async {
        while served_digest(host) == old {
            reloads.changed().await.unwrap();
        }
    };
    tokio::time::timeout(SWAP_TIMEOUT, swapped)
        .await
        .expect("the new version is served");
    first_call(host).await;
    let elapsed = started.elapsed();
    assert_eq!(
        host.loaded_from_cache(&served_digest(host)),
        Some(precompile)
    );
    elapsed
}

/// `component` with a custom section appended: the same component under
/// another digest.
fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    let mut bytes = component.to_vec();
    let section = CustomSection {
        name: name.into(),
        data: b"flowcraft benchmark".into(),
    };
    section.append_to_component(&mut bytes);
    bytes
}

/// Calls `noop` once and checks that it returned its input.
async fn first_call(host: &PluginHost) {
    let input = json!({"n": 1});
    let call = node_call("noop", Some(input.clone()), &Arc::new(ContextMap::new()));
    let success = host.run(call).await.result.expect("noop succeeds");
    assert_eq!(success.output, Some(input));
}

fn served_digest(host: &PluginHost) -> String {
    host.bundles()[0].digest.clone()
}

/// A row of the table: its label and how a cell is made from a bundle's
/// measurements.
type Row = (&'static str, fn(&Measured) -> String);

const ROWS: [Row; 10] = [
    ("bundle file", |m| size(m.file_bytes)),
    ("per call, no input: p50", |m| p50(&m.no_input)),
    ("per call, no input: p99", |m| p99(&m.no_input)),
    ("per call, 1 KiB input: p50 (JS/Py parse JSON)", |m| {
        p50(&m.kib_input)
    }),
    ("per call, 1 KiB input: p99 (JS/Py parse JSON)", |m| {
        p99(&m.kib_input)
    }),
    ("compile, cache off (+ read, sha256, describe)", |m| {
        millis(m.compile)
    }),
    ("compiled artifact (.cwasm)", |m| size(m.artifact_bytes)),
    ("host start, code from the cache", |m| millis(m.cached_load)),
    ("hot swap to first call: cold cache", |m| {
        millis(m.swap_cold)
    }),
    ("hot swap to first call: precompiled", |m| {
        millis(m.swap_precompiled)
    }),
];

fn print_table(measured: &[Measured]) {
    let headings: Vec<String> = BUNDLES.iter().map(|(name, _)| name.to_string()).collect();
    print_row("", &headings);
    for (label, cell) in ROWS {
        print_row(label, &measured.iter().map(cell).collect::<Vec<_>>());
    }
    let calls: Vec<String> = measured
        .iter()
        .map(|m| format!("{} / {}", m.no_input.len(), m.kib_input.len()))
        .collect();
    print_row("  (calls sampled: no input / 1 KiB)", &calls);
    println!();
}

fn p50(samples: &[Duration]) -> String {
    micros(percentile(samples, 0.50))
}

fn p99(samples: &[Duration]) -> String {
    micros(percentile(samples, 0.99))
}

fn print_row(label: &str, cells: &[String]) {
    print!("{label:<48}");
    for cell in cells {
        print!(" {cell:>18}");
    }
    println!();
}

fn size(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}
