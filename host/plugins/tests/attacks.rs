//! Issue 14's attacks on the host API, row by row, each run by a node of the
//! hostile bundle through the plugin runtime: each ends in a contained
//! failure with a clear reason, or in a harmless result the engine then
//! bounds, and the host stays healthy. (The engine's side — dynamic node
//! configs clamped, node types of other bundles refused, run totals — is
//! tested in core; guest logs in `guest_logs.rs`.)

mod common;

use common::*;
use flowcraft_core::context::ContextChange;
use flowcraft_core::limits::{DEFAULT_WRITE_BYTES, MAX_DYNAMIC_NODES_PER_CALL};
use flowcraft_core::runner::{FailureKind, NodeCall, NodeFailure, NodeRunner, NodeSuccess};
use flowcraft_plugins::{DEFAULT_MAX_OUTPUT_BYTES, PluginError, PluginHost, check_bundle};
use serde_json::json;

/// Runs `call`, which must fail; returns the failure and the context
/// changes the call made before it failed.
async fn refused(host: &PluginHost, call: NodeCall) -> (NodeFailure, Vec<ContextChange>) {
    let outcome = host.run(call).await;
    match outcome.result {
        Ok(success) => panic!("succeeded unexpectedly: {success:?}"),
        Err(failure) => (failure, outcome.context.into_changes()),
    }
}

/// Runs `call`, which must succeed.
async fn succeeds(host: &PluginHost, call: NodeCall) -> NodeSuccess {
    match host.run(call).await.result {
        Ok(success) => success,
        Err(failure) => panic!("call failed: {failure:?}"),
    }
}

#[tokio::test]
async fn writes_to_the_engines_keys_are_refused() {
    let (host, _dir, _) = hostile().await;
    for key in [
        "_outputs.victim",
        "_actions.victim",
        "_dynamicNodes.victim",
        "blueprintId",
    ] {
        let (failure, changes) = refused(&host, with_params("forge", json!({"key": key}))).await;
        assert_eq!(failure.kind, FailureKind::Fatal, "{key}: {failure:?}");
        assert!(
            failure.message.contains(&format!("context key '{key}'")),
            "names the key: {}",
            failure.message
        );
        assert_eq!(changes, [], "{key}: nothing was written");
    }
    let ordinary = host
        .run(with_params("forge", json!({"key": "mine", "value": 1})))
        .await;
    assert!(ordinary.result.is_ok());
    assert_eq!(
        ordinary.context.into_changes().len(),
        1,
        "own keys are writable"
    );
}

#[tokio::test]
async fn a_deeply_nested_value_is_refused_before_it_is_parsed() {
    let (host, _dir, _) = hostile().await;
    let (failure, changes) = refused(&host, call("deep-write")).await;
    assert_eq!(failure.kind, FailureKind::Fatal);
    assert!(
        failure.message.contains(
            "context-set 'deep': the nesting depth of the value 200 is out of range; \
             allowed: at most 64 levels of arrays and objects"
        ),
        "{}",
        failure.message
    );
    assert_eq!(changes, []);

    let at_the_limit = host
        .run(with_params("deep-write", json!({"depth": 64})))
        .await;
    assert!(at_the_limit.result.is_ok());
    assert_eq!(at_the_limit.context.into_changes().len(), 1);
    still_healthy(&host).await;
}

#[tokio::test]
async fn large_context_writes_stop_at_the_per_call_byte_budget() {
    let (host, _dir, _) = hostile().await;
    let bytes = 200_000;
    let (failure, changes) = refused(
        &host,
        with_params("big-writes", json!({"count": 10, "bytes": bytes})),
    )
    .await;
    assert_eq!(failure.kind, FailureKind::Fatal);
    assert!(
        failure
            .message
            .contains(&format!("limit of {DEFAULT_WRITE_BYTES} bytes")),
        "{}",
        failure.message
    );
    // Each write: key `bigN` (4 bytes) and a JSON string of `bytes` + 2 quotes.
    let per_write = 4 + bytes + 2;
    assert_eq!(changes.len(), DEFAULT_WRITE_BYTES / per_write);
    assert!(changes.iter().map(ContextChange::size).sum::<usize>() <= DEFAULT_WRITE_BYTES);
    still_healthy(&host).await;
}

#[tokio::test]
async fn the_action_counts_in_the_result_limit() {
    let (host, _dir, label) = hostile().await;
    let fits = succeeds(&host, with_params("huge-action", json!({"bytes": 100}))).await;
    assert_eq!(fits.action.map(|a| a.len()), Some(100));

    let bytes = 2 * DEFAULT_MAX_OUTPUT_BYTES;
    let failure = failure(&host, with_params("huge-action", json!({"bytes": bytes}))).await;
    assert_eq!(failure.kind, FailureKind::Fatal);
    assert_eq!(
        failure.message,
        format!(
            "{label}, node type 'huge-action': the result (output, action and dynamic nodes) is \
             {bytes} bytes, more than the limit of {DEFAULT_MAX_OUTPUT_BYTES} bytes (max_output_bytes)"
        )
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn dynamic_nodes_asking_for_more_time_or_retries_reach_the_engine_as_data() {
    let (host, _dir, label) = hostile().await;
    // The runtime hands the definitions over unchanged; the engine clamps
    // them to the spawning node's limits.
    let spin = succeeds(&host, call("spawn-spin")).await;
    let [spinner] = spin.dynamic_nodes.as_slice() else {
        panic!("one dynamic node: {spin:?}");
    };
    assert_eq!(spinner.uses, "spin");
    let timeout = spinner.config.as_ref().and_then(|c| c.timeout.clone());
    assert_eq!(timeout.and_then(|t| t.as_u64()), Some(3_600_000));

    let retry = succeeds(&host, call("spawn-retry")).await;
    let [retrier] = retry.dynamic_nodes.as_slice() else {
        panic!("one dynamic node: {retry:?}");
    };
    assert_eq!(retrier.uses, "fail");
    let attempts = retrier.config.as_ref().and_then(|c| c.max_retries.clone());
    assert_eq!(attempts.and_then(|n| n.as_u64()), Some(1_000_000));

    // Each attempt of the failing node is one contained, retryable failure.
    let failed = failure(&host, call("fail")).await;
    assert_eq!(failed.kind, FailureKind::Retryable);
    assert_eq!(failed.message, "hostile bundle: failing on purpose");
    // And the spinning node is stopped by the time limit of its call.
    let spun = failure(&host, with_timeout(call("spin"), 100)).await;
    assert_eq!(
        spun.message,
        format!("{label}, node type 'spin': CPU time limit of 100 ms exceeded")
    );
}

#[tokio::test]
async fn a_node_type_of_another_bundle_is_not_the_spawners() {
    let (host, _dir) = host_with(&["testkit/hostile.wasm", "testkit/twin/hostile-twin.wasm"]).await;
    let spawned = succeeds(&host, call("spawn-foreign")).await;
    assert_eq!(spawned.dynamic_nodes[0].uses, "twin-fetch");

    assert!(!host.shares_bundle("spawn-foreign", None, "twin-fetch"));
    assert!(host.shares_bundle("spawn-foreign", None, "config"));
    assert!(!host.shares_bundle("twin-fetch", None, "config"));
    assert!(host.shares_bundle("twin-fetch", None, "twin-fetch"));
    assert!(
        !host.shares_bundle("spawn-foreign", None, "subflow"),
        "built-ins are no bundle's"
    );
    assert!(!host.shares_bundle("no-such-type", None, "config"));

    // Pinned: the bundle the run is pinned to decides.
    let digest = |name: &str| {
        host.bundles()
            .into_iter()
            .find(|b| b.name == name)
            .unwrap()
            .digest
    };
    let (hostile, twin) = (digest("hostile"), digest("hostile-twin"));
    assert!(host.shares_bundle("spawn-foreign", Some(&hostile), "config"));
    assert!(!host.shares_bundle("spawn-foreign", Some(&hostile), "twin-fetch"));
    assert!(
        !host.shares_bundle("spawn-foreign", Some(&twin), "twin-fetch"),
        "pinned to a bundle that does not serve the spawner"
    );
    assert!(!host.shares_bundle("spawn-foreign", Some("sha256:00"), "config"));
}

#[tokio::test]
async fn too_many_dynamic_nodes_are_refused_before_they_are_parsed() {
    let (host, _dir, label) = hostile().await;
    let most = succeeds(
        &host,
        with_params("spawn-flood", json!({"count": MAX_DYNAMIC_NODES_PER_CALL})),
    )
    .await;
    assert_eq!(most.dynamic_nodes.len(), MAX_DYNAMIC_NODES_PER_CALL);

    let failure = failure(&host, with_params("spawn-flood", json!({"count": 34_000}))).await;
    assert_eq!(failure.kind, FailureKind::Fatal);
    assert_eq!(
        failure.message,
        format!(
            "{label}, node type 'spawn-flood': the result has 34000 dynamic nodes, more than the \
             limit of {MAX_DYNAMIC_NODES_PER_CALL} per node call"
        )
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn deeply_nested_outputs_and_dynamic_nodes_are_refused() {
    let (host, _dir, label) = hostile().await;
    let fits = output(&host, with_params("deep-output", json!({"depth": 64}))).await;
    assert!(fits.is_some());

    let deep = failure(&host, call("deep-output")).await;
    assert_eq!(deep.kind, FailureKind::Fatal);
    assert_eq!(
        deep.message,
        format!(
            "{label}, node type 'deep-output': the nesting depth of the output 200 is out of \
             range; allowed: at most 64 levels of arrays and objects"
        )
    );
    // The dynamic node wraps its params' 200 levels in two objects.
    let deep = failure(&host, call("deep-dynamic")).await;
    assert_eq!(deep.kind, FailureKind::Fatal);
    assert_eq!(
        deep.message,
        format!(
            "{label}, node type 'deep-dynamic': the nesting depth of dynamic node #0 202 is out \
             of range; allowed: at most 64 levels of arrays and objects"
        )
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn guest_clocks_step_in_whole_milliseconds() {
    let (host, _dir, _) = hostile().await;
    let clocks = output(&host, call("clocks")).await.unwrap();
    assert_eq!(clocks["wallSubMilliNanos"], json!(0), "{clocks}");
    let step = clocks["monotonicStepNanos"].as_u64().unwrap();
    assert!(step > 0 && step % 1_000_000 == 0, "{clocks}");
    assert_eq!(
        clocks["resolutionNanos"],
        json!({"monotonic": 1_000_000, "wall": 1_000_000})
    );
}

#[tokio::test]
async fn a_bundle_listing_too_many_node_types_is_refused_and_the_old_version_keeps_serving() {
    let bomb = bundle("testkit/describe/describe-bomb.wasm");
    let refused = check_bundle(&bomb).await.unwrap_err();
    assert!(
        matches!(refused, PluginError::InvalidBundle { .. }),
        "{refused}"
    );
    assert_eq!(
        refused.to_string(),
        format!(
            "bundle {}: describe() lists 100000 node types, more than the limit of 1000 per bundle",
            bomb.display()
        )
    );

    let (host, dir, _) = hostile().await;
    let installed = dir.path().join("hostile.wasm");
    std::fs::copy(&bomb, &installed).unwrap();
    host.reload().await.unwrap();
    let problems = host.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, installed);
    assert!(
        problems[0]
            .error
            .contains("more than the limit of 1000 per bundle"),
        "{problems:?}"
    );
    assert_eq!(host.bundles()[0].name, "hostile", "the old version serves");
    still_healthy(&host).await;
}

#[tokio::test]
async fn a_describe_that_never_returns_is_stopped_by_its_time_limit() {
    let dir = plugins_dir(&[
        "testkit/describe/describe-spin.wasm",
        "testkit/hostile.wasm",
    ]);
    let mut config = config(dir.path());
    config.describe_timeout = std::time::Duration::from_millis(100);
    let host = PluginHost::load(config).await.unwrap();
    let problems = host.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].path.ends_with("describe-spin.wasm")
            && problems[0].error.contains("describe() failed")
            && problems[0].error.contains("100 ms"),
        "{problems:?}"
    );
    assert_eq!(
        host.bundles()
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        ["hostile"],
        "the other bundle loads"
    );
    still_healthy(&host).await;
}
