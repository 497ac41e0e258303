//! The sandbox and the limits, with the hostile test bundle: a guest that
//! spins, hogs memory, panics, probes files/sockets/env, or returns bad or
//! oversized output fails cleanly, and the host stays healthy.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flowcraft_core::runner::{FailureKind, NodeCall, NodeRunner};
use flowcraft_plugins::{Grants, PluginHost};
use serde_json::{Value, json};

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_cpu_limit() {
    let (host, _dir, label) = hostile().await;
    let started = Instant::now();
    let failure = failure(&host, with_timeout(call("spin"), 200)).await;
    assert_eq!(failure.kind, FailureKind::Retryable);
    assert_eq!(
        failure.message,
        format!("{label}, node type 'spin': CPU time limit of 200 ms exceeded")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly: {:?}",
        started.elapsed()
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn the_default_time_limit_applies_without_a_node_timeout() {
    let dir = plugins_dir(&["testkit/hostile.wasm"]);
    let mut config = config(dir.path());
    config.default_timeout = Duration::from_millis(150);
    let host = PluginHost::load(config).await.unwrap();
    let failure = failure(&host, call("spin")).await;
    assert!(
        failure
            .message
            .ends_with("CPU time limit of 150 ms exceeded"),
        "{}",
        failure.message
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_yields_so_other_calls_keep_running() {
    let (host, _dir, _) = hostile().await;
    let spinner = tokio::spawn({
        let host = host.clone();
        async move { host.run(with_timeout(call("spin"), 3_000)).await }
    });
    // On this single-threaded runtime the echo calls only run if the
    // spinning guest yields at its epoch ticks.
    for n in 0..20 {
        assert_eq!(
            output(&host, with_input("echo", json!(n))).await,
            Some(json!(n))
        );
    }
    assert!(
        !spinner.is_finished(),
        "the echo calls ran while the guest was spinning"
    );
    let spun = spinner.await.unwrap();
    assert!(spun.result.unwrap_err().message.contains("CPU time limit"));
}

#[tokio::test]
async fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    let dir = plugins_dir(&["testkit/hostile.wasm"]);
    let mut config = config(dir.path());
    config.memory_limit = 32 << 20;
    let host = PluginHost::load(config).await.unwrap();
    let bundle = &host.bundles()[0];
    let failure = failure(&host, call("hog")).await;
    assert_eq!(failure.kind, FailureKind::Retryable);
    let expected = format!(
        "bundle {}@{}, node type 'hog': memory limit of 32 MiB exceeded",
        bundle.name, bundle.version
    );
    assert!(
        failure.message.starts_with(&expected),
        "{}",
        failure.message
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn files_sockets_and_environment_are_denied() {
    let (host, _dir, _) = hostile().await;
    let file = output(&host, call("read-file")).await.unwrap();
    assert_eq!(file["ok"], json!(false), "{file}");
    assert!(file.get("content").is_none(), "{file}");
    assert!(!file.to_string().contains("root:"), "{file}");

    let socket = output(&host, call("open-socket")).await.unwrap();
    assert_eq!(socket["ok"], json!(false), "{socket}");
    assert!(
        socket["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{socket}"
    );

    assert!(
        std::env::vars().next().is_some(),
        "the host itself has environment variables"
    );
    let env = output(&host, call("read-env")).await.unwrap();
    assert_eq!(env, json!({}), "the guest sees none of them");
}

#[tokio::test]
async fn a_panic_becomes_a_node_error_and_the_next_call_succeeds() {
    let (host, _dir, label) = hostile().await;
    let failure = failure(&host, call("panic")).await;
    assert_eq!(failure.kind, FailureKind::Retryable);
    assert!(
        failure
            .message
            .starts_with(&format!("{label}, node type 'panic': the node panicked")),
        "{}",
        failure.message
    );
    assert!(
        failure
            .message
            .contains("hostile bundle: panicking on purpose"),
        "{}",
        failure.message
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn output_that_is_not_json_is_a_fatal_failure() {
    let (host, _dir, label) = hostile().await;
    let failure = failure(&host, call("bad-output")).await;
    assert_eq!(failure.kind, FailureKind::Fatal);
    assert!(
        failure.message.starts_with(&format!(
            "{label}, node type 'bad-output': the output is not valid JSON"
        )),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("this is {not JSON"),
        "quotes the output: {}",
        failure.message
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn output_over_the_limit_is_a_fatal_failure() {
    let dir = plugins_dir(&["testkit/hostile.wasm"]);
    let mut config = config(dir.path());
    config.max_output_bytes = 64 << 10;
    let host = PluginHost::load(config).await.unwrap();

    assert_big_output_is_cut_at_64_kib(&host).await;
}

#[tokio::test]
async fn config_values_are_visible_only_when_granted() {
    let dir = plugins_dir(&["testkit/hostile.wasm"]);
    let mut config = config(dir.path());
    let mut grants = Grants::default();
    grants.config.insert("apiKey".into(), "s3cret".into());
    config.grants.insert("hostile".into(), grants);
    let granted = PluginHost::load(config).await.unwrap();
    let ask = |name: &str| with_params("config", json!({"name": name}));
    assert_eq!(output(&granted, ask("apiKey")).await, Some(json!("s3cret")));
    assert_eq!(output(&granted, ask("other")).await, None);

    let (ungranted, _dir, _) = hostile().await;
    assert_eq!(output(&ungranted, ask("apiKey")).await, None);
}

#[tokio::test]
async fn context_writes_are_bounded_by_the_quota() {
    let (host, _dir, _) = hostile().await;
    let outcome = host
        .run(with_params("ctx-write-many", json!({"count": 10})))
        .await;
    assert_eq!(outcome.result.unwrap().output, Some(json!(10)));
    assert_eq!(outcome.context.into_changes().len(), 10);

    let flood = failure(
        &host,
        with_params("ctx-write-many", json!({"count": 5_000})),
    )
    .await;
    assert!(flood.message.contains("quota"), "{flood:?}");
    still_healthy(&host).await;
}

#[tokio::test]
async fn a_node_sees_only_the_context_it_was_given() {
    let (host, _dir) = host_with(&["conformance.wasm"]).await;
    let write = NodeCall {
        run_id: "run-a".into(),
        ..with_params("setKey", json!({"key": "secret", "value": "a"}))
    };
    assert!(host.run(write).await.result.is_ok());
    let read = NodeCall {
        run_id: "run-b".into(),
        ..with_params("readKey", json!({"key": "secret"}))
    };
    assert_eq!(output(&host, read).await, None::<Value>);
}

#[tokio::test]
async fn many_concurrent_calls_all_complete() {
    let (host, _dir, _) = hostile().await;
    let calls = (0..200).map(|n| {
        let host = host.clone();
        tokio::spawn(async move { output(&host, with_input("echo", json!(n))).await })
    });
    for (n, call) in calls.enumerate() {
        assert_eq!(call.await.unwrap(), Some(json!(n)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_pool_size_wait_for_a_free_instance() {
    let dir = plugins_dir(&["testkit/hostile.wasm"]);
    let mut config = config(dir.path());
    config.max_instances = 2;
    let host = PluginHost::load(config).await.unwrap();
    let calls = (0..100).map(|n| {
        let host = host.clone();
        tokio::spawn(async move { output(&host, with_input("echo", json!(n))).await })
    });
    for (n, call) in calls.enumerate() {
        assert_eq!(call.await.unwrap(), Some(json!(n)));
    }
}
