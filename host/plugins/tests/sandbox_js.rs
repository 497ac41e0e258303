//! The sandbox holds for JavaScript bundles too: `hostile-js` (built with the
//! `flowcraft-node` SDK on SpiderMonkey) loops, allocates without bound,
//! returns oversized output and throws; each ends as a node failure with a
//! clear reason, and the bundle's next call works.

mod common;

use common::*;
use flowcraft_core::runner::FailureKind;
use flowcraft_plugins::PluginHost;

const HOSTILE_JS: &str = "testkit/js/hostile-js.wasm";

async fn hostile_js(
    configure: impl FnOnce(&mut flowcraft_plugins::PluginConfig),
) -> (PluginHost, tempfile::TempDir, String) {
    let dir = plugins_dir(&[HOSTILE_JS]);
    let mut config = config(dir.path());
    configure(&mut config);
    let host = PluginHost::load(config).await.expect("load hostile-js");
    assert!(
        host.problems().is_empty(),
        "load problems: {:?}",
        host.problems()
    );
    let bundle = &host.bundles()[0];
    let label = format!("bundle {}@{}", bundle.name, bundle.version);
    (host, dir, label)
}

#[tokio::test]
async fn an_endless_javascript_loop_is_stopped_by_the_cpu_limit() {
    let (host, _dir, label) = hostile_js(|_| {}).await;
    let failure = failure(&host, with_timeout(call("spin"), 300)).await;
    assert_eq!(failure.kind, FailureKind::Retryable);
    assert_eq!(
        failure.message,
        format!("{label}, node type 'spin': CPU time limit of 300 ms exceeded")
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn unbounded_javascript_allocation_is_stopped_by_the_memory_limit() {
    let (host, _dir, label) = hostile_js(|config| config.memory_limit = 64 << 20).await;
    let failure = failure(&host, call("hog")).await;
    assert_eq!(failure.kind, FailureKind::Retryable, "{}", failure.message);
    assert!(
        failure.message.starts_with(&format!(
            "{label}, node type 'hog': memory limit of 64 MiB exceeded"
        )),
        "{}",
        failure.message
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn javascript_output_over_the_limit_is_a_fatal_failure() {
    let (host, _dir, _) = hostile_js(|config| config.max_output_bytes = 64 << 10).await;
    assert_big_output_is_cut_at_64_kib(&host).await;
}

#[tokio::test]
async fn thrown_errors_and_rejections_are_retryable_failures_naming_what_was_thrown() {
    let (host, _dir, _) = hostile_js(|_| {}).await;
    let thrown = failure(&host, call("throw")).await;
    assert_eq!(thrown.kind, FailureKind::Retryable);
    assert!(
        thrown
            .message
            .ends_with("TypeError: hostile-js: throwing on purpose"),
        "{}",
        thrown.message
    );
    let rejected = failure(&host, call("reject")).await;
    assert_eq!(rejected.kind, FailureKind::Retryable);
    assert!(
        rejected
            .message
            .ends_with("a node threw hostile-js: rejected on purpose"),
        "{}",
        rejected.message
    );
    still_healthy(&host).await;
}
