//! Shared helpers of the integration tests: locating the built bundles,
//! plugin directories in temp dirs, and node calls.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flowcraft_core::context::{ContextMap, NodeContext, context_from_value};
use flowcraft_core::runner::{NodeCall, NodeOutcome, NodeRunner};
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::{Value, json};
use tempfile::TempDir;

/// `plugins-example/dist` of this workspace.
pub fn dist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins-example/dist")
}

/// A built bundle, e.g. `conformance.wasm` or `testkit/hostile.wasm`.
/// Fails (never skips) when the bundles have not been built.
pub fn bundle(relative: &str) -> PathBuf {
    let path = dist_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// A temp plugins directory holding copies of `bundles` (dist-relative
/// paths), each under its file name.
pub fn plugins_dir(bundles: &[&str]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for relative in bundles {
        let source = bundle(relative);
        let name = source.file_name().unwrap();
        std::fs::copy(&source, dir.path().join(name)).expect("copy bundle");
    }
    dir
}

/// A configuration for `dir` whose compiled-code cache is shared by all tests
/// (so each bundle is compiled once per test run, not once per test).
pub fn config(dir: &Path) -> PluginConfig {
    let mut config = PluginConfig::new(dir);
    config.cache_dir = Some(shared_cache_dir());
    config
}

pub fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("flowcraft-plugins-cache")
}

/// A host over a fresh plugins directory holding `bundles`.
pub async fn host_with(bundles: &[&str]) -> (PluginHost, TempDir) {
    let dir = plugins_dir(bundles);
    let host = PluginHost::load(config(dir.path()))
        .await
        .expect("load plugins");
    assert!(
        host.problems().is_empty(),
        "load problems: {:?}",
        host.problems()
    );
    (host, dir)
}

/// A host serving the hostile bundle, and `bundle hostile@<version>`: how
/// its failure messages begin.
pub async fn hostile() -> (PluginHost, TempDir, String) {
    let (host, dir) = host_with(&["testkit/hostile.wasm"]).await;
    let bundle = &host.bundles()[0];
    let label = format!("bundle {}@{}", bundle.name, bundle.version);
    (host, dir, label)
}

/// Asserts that the hostile bundle's next call works.
pub async fn still_healthy(host: &PluginHost) {
    let echoed = output(host, with_input("echo", json!({"still": "fine"}))).await;
    assert_eq!(
        echoed,
        Some(json!({"still": "fine"})),
        "the next call works"
    );
}

/// A call of `uses` with no input, `{}` params and an empty context.
pub fn call(uses: &str) -> NodeCall {
    NodeCall {
        uses: uses.into(),
        run_id: "run-1".into(),
        node_id: "A".into(),
        blueprint_id: "bp".into(),
        attempt: 1,
        input: None,
        params: json!({}),
        pin: None,
        timeout: None,
        context: context(json!({})),
    }
}

pub fn with_params(uses: &str, params: Value) -> NodeCall {
    NodeCall {
        params,
        ..call(uses)
    }
}

pub fn with_input(uses: &str, input: Value) -> NodeCall {
    NodeCall {
        input: Some(input.into()),
        ..call(uses)
    }
}

pub fn with_timeout(mut call: NodeCall, ms: u64) -> NodeCall {
    call.timeout = Some(Duration::from_millis(ms));
    call
}

/// A node context over `snapshot` (a JSON object).
pub fn context(snapshot: Value) -> NodeContext {
    let snapshot = context_from_value(snapshot).expect("context must be an object");
    NodeContext::new(Arc::new(snapshot))
}

pub fn empty_context() -> NodeContext {
    NodeContext::new(Arc::new(ContextMap::new()))
}

/// Runs `call` and returns the output, panicking on failure.
pub async fn output(host: &PluginHost, call: NodeCall) -> Option<Value> {
    let outcome = host.run(call).await;
    match outcome.result {
        Ok(success) => success.output,
        Err(failure) => panic!("call failed: {failure:?}"),
    }
}

/// Runs `call` and returns the failure, panicking on success.
pub async fn failure(host: &PluginHost, call: NodeCall) -> flowcraft_core::runner::NodeFailure {
    let uses = call.uses.clone();
    let outcome: NodeOutcome = host.run(call).await;
    match outcome.result {
        Ok(success) => panic!("'{uses}' succeeded unexpectedly: {success:?}"),
        Err(failure) => failure,
    }
}

/// With `max_output_bytes` at 64 KiB, a bundle's `big-output` node (a JSON
/// string of `params.bytes` characters) succeeds just below the limit and
/// fails fatally, naming the limit, above it; the next call works.
pub async fn assert_big_output_is_cut_at_64_kib(host: &PluginHost) {
    let fits = output(host, with_params("big-output", json!({"bytes": 60_000}))).await;
    assert_eq!(
        fits.as_ref().and_then(Value::as_str).map(str::len),
        Some(60_000)
    );

    let failure = failure(host, with_params("big-output", json!({"bytes": 200_000}))).await;
    assert_eq!(failure.kind, flowcraft_core::runner::FailureKind::Fatal);
    assert!(
        failure.message.contains("node type 'big-output'")
            && failure
                .message
                .contains("more than the limit of 65536 bytes"),
        "{}",
        failure.message
    );
    still_healthy(host).await;
}
