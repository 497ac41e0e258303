//! Pinning: blueprints bind node types to bundle versions in
//! `metadata.plugins`, so two versions of one bundle serve side by side;
//! unbound keys take the highest version; ambiguity is a clear error.

mod common;

use common::*;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::runner::{FailureKind, NodeCall, NodeRunner};
use flowcraft_plugins::PluginHost;
use serde_json::{Value, json};

fn blueprint(uses: &[&str], plugins: Option<Value>) -> Blueprint {
    let nodes: Vec<Value> = uses
        .iter()
        .enumerate()
        .map(|(i, uses)| json!({"id": format!("N{i}"), "uses": uses}))
        .collect();
    let mut value = json!({"id": "bp", "nodes": nodes, "edges": []});
    if let Some(plugins) = plugins {
        value["metadata"] = json!({"plugins": plugins});
    }
    serde_json::from_value(value).unwrap()
}

async fn both_greeters() -> (PluginHost, tempfile::TempDir, String, String) {
    let (host, dir) = host_with(&["testkit/greeter-v1.wasm", "testkit/greeter-v2.wasm"]).await;
    let digest = |version: &str| {
        host.bundles()
            .into_iter()
            .find(|b| b.version == version)
            .unwrap_or_else(|| panic!("greeter {version} loaded"))
            .digest
    };
    let (v1, v2) = (digest("1.0.0"), digest("2.0.0"));
    (host, dir, v1, v2)
}

#[tokio::test]
async fn two_blueprints_bound_to_two_versions_run_side_by_side() {
    let (host, _dir, v1, v2) = both_greeters().await;
    let old = host
        .pin(&blueprint(
            &["greet", "greet-slow"],
            Some(json!({"greeter": "1.0.0"})),
        ))
        .unwrap();
    let new = host
        .pin(&blueprint(
            &["greet", "greet-slow"],
            Some(json!({"greeter": "2.0.0"})),
        ))
        .unwrap();
    assert_eq!(old["greet"], v1);
    assert_eq!(old["greet-slow"], v1);
    assert_eq!(new["greet"], v2);

    let slow = |pin: &str| NodeCall {
        pin: Some(pin.to_owned()),
        ..with_params("greet-slow", json!({"ms": 500}))
    };
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        host.run(slow(&old["greet-slow"])),
        host.run(slow(&new["greet-slow"]))
    );
    assert_eq!(
        a.result.unwrap().output,
        Some(json!("hello from greeter v1"))
    );
    assert_eq!(
        b.result.unwrap().output,
        Some(json!("hello from greeter v2"))
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(990),
        "the two calls overlapped"
    );
}

#[tokio::test]
async fn unbound_keys_take_the_highest_version() {
    let (host, _dir, _v1, v2) = both_greeters().await;
    assert_eq!(host.pin(&blueprint(&["greet"], None)).unwrap()["greet"], v2);
    assert_eq!(
        output(&host, call("greet")).await,
        Some(json!("hello from greeter v2"))
    );
}

#[tokio::test]
async fn bindings_accept_requirements_and_digests() {
    let (host, _dir, v1, v2) = both_greeters().await;
    let pin = |plugins: Value| {
        host.pin(&blueprint(&["greet"], Some(plugins)))
            .map(|p| p["greet"].clone())
    };
    assert_eq!(pin(json!({"greeter": "^1"})).unwrap(), v1);
    assert_eq!(pin(json!({"greeter": {}})).unwrap(), v2);
    assert_eq!(pin(json!({"greeter": v1.clone()})).unwrap(), v1);
    assert_eq!(
        pin(json!({"greeter": {"version": "2.0.0", "digest": v2.clone()}})).unwrap(),
        v2
    );
}

#[tokio::test]
async fn bindings_that_cannot_be_met_are_clear_errors() {
    let (host, _dir, v1, _v2) = both_greeters().await;
    let pin = |plugins: Value| {
        host.pin(&blueprint(&["greet"], Some(plugins)))
            .unwrap_err()
            .0
    };

    let missing_version = pin(json!({"greeter": "3.0.0"}));
    assert!(
        missing_version.contains("metadata.plugins.greeter asks for version 3.0.0"),
        "{missing_version}"
    );
    assert!(
        missing_version.contains("2.0.0, 1.0.0"),
        "lists the loaded versions: {missing_version}"
    );

    let unknown = pin(json!({"pricing": "1.0.0"}));
    assert!(
        unknown.contains("no bundle named 'pricing' is loaded"),
        "{unknown}"
    );

    let wrong_digest = pin(json!({"greeter": {"version": "2.0.0", "digest": v1}}));
    assert!(
        wrong_digest.contains("that digest is version 1.0.0"),
        "{wrong_digest}"
    );

    let malformed = pin(json!({"greeter": 5}));
    assert!(
        malformed.contains("metadata.plugins.greeter"),
        "{malformed}"
    );
}

#[tokio::test]
async fn a_key_claimed_by_two_bundles_must_be_bound() {
    // Both the conformance and the hostile bundle implement `echo`.
    let (host, _dir) = host_with(&["conformance.wasm", "testkit/hostile.wasm"]).await;
    let ambiguous = host.pin(&blueprint(&["echo"], None)).unwrap_err().0;
    assert!(
        ambiguous.contains("node 'N0'") && ambiguous.contains("node type 'echo'"),
        "{ambiguous}"
    );
    assert!(
        ambiguous.contains("conformance@") && ambiguous.contains("hostile@"),
        "{ambiguous}"
    );
    assert!(
        ambiguous.contains("metadata.plugins"),
        "says how to fix it: {ambiguous}"
    );

    let bound = host
        .pin(&blueprint(
            &["echo", "spin"],
            Some(json!({"conformance": {}})),
        ))
        .unwrap();
    let conformance = host
        .bundles()
        .into_iter()
        .find(|b| b.name == "conformance")
        .unwrap();
    let hostile = host
        .bundles()
        .into_iter()
        .find(|b| b.name == "hostile")
        .unwrap();
    assert_eq!(bound["echo"], conformance.digest);
    assert_eq!(
        bound["spin"], hostile.digest,
        "unambiguous keys still resolve"
    );

    let unpinned = failure(&host, with_input("echo", json!(1))).await;
    assert_eq!(unpinned.kind, FailureKind::Fatal);
    assert!(
        unpinned.message.contains("several bundles"),
        "{}",
        unpinned.message
    );
    let pinned = NodeCall {
        pin: Some(bound["echo"].clone()),
        ..with_input("echo", json!(1))
    };
    assert_eq!(output(&host, pinned).await, Some(json!(1)));
}

#[tokio::test]
async fn built_ins_and_missing_keys_are_not_pinned() {
    let (host, _dir) = host_with(&["conformance.wasm"]).await;
    let mut bp = blueprint(&["wait", "const", "nope"], None);
    bp.nodes.push(
        serde_json::from_value(json!({"id": "S", "uses": "batch-scatter",
            "params": {"workerUsesKey": "double", "gatherNodeId": "G"}}))
        .unwrap(),
    );
    let pins = host.pin(&bp).unwrap();
    let keys: Vec<&str> = pins.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["const", "double"]);
}

#[tokio::test]
async fn a_pin_to_an_unknown_digest_is_a_retryable_failure() {
    let (host, _dir) = host_with(&["conformance.wasm"]).await;
    let call = NodeCall {
        pin: Some("sha256:00".into()),
        ..call("const")
    };
    let failure = failure(&host, call).await;
    assert_eq!(failure.kind, FailureKind::Retryable);
    assert!(
        failure.message.contains("no longer loaded"),
        "{}",
        failure.message
    );
}
