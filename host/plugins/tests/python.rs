//! A Python bundle (`greeter-py`, built with the `flowcraft-node` SDK for
//! Python on componentize-py) in the plugin runtime: its calls work, its
//! failures keep their kind, and an instance slot of the pool holds one of
//! its instances, although each needs 14 core instances.

mod common;

use common::*;
use flowcraft_core::runner::FailureKind;
use flowcraft_plugins::PluginHost;
use serde_json::json;

const GREETER_PY: &str = "py/greeter-py.wasm";

#[tokio::test]
async fn python_nodes_run_and_keep_their_failure_kind() {
    let (host, _dir) = host_with(&[GREETER_PY]).await;
    assert_eq!(
        output(&host, with_input("py-greet", json!("Ada"))).await,
        Some(json!("Hello, Ada!"))
    );
    let fatal = failure(&host, with_params("py-fail", json!({"mode": "fatal"}))).await;
    assert_eq!(fatal.kind, FailureKind::Fatal);
    assert!(
        fatal
            .message
            .ends_with("py-fail: failing as asked (fatal, attempt 1)"),
        "{}",
        fatal.message
    );
    let retryable = failure(&host, with_params("py-fail", json!({"mode": "retryable"}))).await;
    assert_eq!(retryable.kind, FailureKind::Retryable);
}

/// Each instance slot of the pool must admit a whole Python instance, which
/// instantiates 14 core modules: with one slot, the bundle still loads and runs.
#[tokio::test]
async fn one_instance_slot_holds_a_python_instance() {
    let dir = plugins_dir(&[GREETER_PY]);
    let mut config = config(dir.path());
    config.max_instances = 1;
    let host = PluginHost::load(config).await.expect("load greeter-py");
    assert!(
        host.problems().is_empty(),
        "load problems: {:?}",
        host.problems()
    );
    for name in ["Ada", "Grace"] {
        assert_eq!(
            output(&host, with_input("py-greet", json!(name))).await,
            Some(json!(format!("Hello, {name}!")))
        );
    }
}
