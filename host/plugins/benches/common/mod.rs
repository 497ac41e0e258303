//! What the plugin benchmarks share: the built bundles, a host over a
//! temporary plugins directory, timed node calls and the formatting of
//! durations.

#![allow(dead_code)] // each benchmark uses the part it needs

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_core::context::{ContextMap, ContextValue, NodeContext};
use flowcraft_core::runner::{NodeCall, NodeRunner};
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::{Value, json};

/// A bundle built by `scripts/build-plugins.sh`, by its path under
/// `plugins-example/dist`.
pub fn built_bundle(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins-example/dist")
        .join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// A host serving copies of `bundles` from a temporary plugins directory,
/// with a temporary compile cache; returns the directory and the cache too.
pub async fn host_with(bundles: &[&Path]) -> (PluginHost, tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for bundle in bundles {
        std::fs::copy(bundle, dir.path().join(bundle.file_name().unwrap())).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let mut config = PluginConfig::new(dir.path());
    config.cache_dir = Some(cache.path().to_owned());
    let host = PluginHost::load(config).await.expect("load bundles");
    assert!(host.problems().is_empty(), "{:?}", host.problems());
    (host, dir, cache)
}

pub fn node_call(uses: &str, input: Option<Value>, snapshot: &Arc<ContextMap>) -> NodeCall {
    NodeCall {
        uses: uses.into(),
        run_id: "bench-run".into(),
        node_id: "A".into(),
        blueprint_id: "bench".into(),
        attempt: 1,
        input: input.map(ContextValue::from),
        params: json!({}),
        pin: None,
        timeout: None,
        context: NodeContext::new(Arc::clone(snapshot)),
    }
}

/// The time of each of `calls` calls of `uses` (new instance + call + JSON),
/// after `calls / 10` warm-up calls.
pub async fn per_call(
    host: &PluginHost,
    snapshot: &Arc<ContextMap>,
    uses: &str,
    input: Option<Value>,
    calls: usize,
) -> Vec<Duration> {
    for _ in 0..calls / 10 {
        let outcome = host.run(node_call(uses, input.clone(), snapshot)).await;
        outcome.result.expect("warm-up call succeeds");
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let call = node_call(uses, input.clone(), snapshot);
        let started = Instant::now();
        let outcome = host.run(call).await;
        samples.push(started.elapsed());
        debug_assert!(outcome.result.is_ok());
    }
    samples
}

pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn micros(duration: Duration) -> String {
    format!("{:.1} us", duration.as_secs_f64() * 1e6)
}

pub fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}
