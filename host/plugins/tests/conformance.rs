//! Every node behaviour of the conformance bundle, called through
//! `NodeRunner::run` on the real compiled component.

mod common;

use common::*;
use flowcraft_core::blueprint::NodeDefinition;
use flowcraft_core::context::ContextChange;
use flowcraft_core::runner::{FailureKind, NodeCall, NodeRunner};
use serde_json::{Value, json};

async fn conformance() -> (flowcraft_plugins::PluginHost, tempfile::TempDir) {
    host_with(&["conformance.wasm"]).await
}

#[tokio::test]
async fn the_bundle_describes_every_conformance_node_type() {
    let (host, _dir) = conformance().await;
    let bundles = host.bundles();
    assert_eq!(bundles.len(), 1);
    let mut uses: Vec<&str> = bundles[0].nodes.iter().map(|n| n.uses.as_str()).collect();
    uses.sort_unstable();
    let mut expected = vec![
        "const",
        "echo",
        "double",
        "times10",
        "sum",
        "fail",
        "fatal",
        "flaky",
        "act",
        "setKey",
        "readKey",
        "inc",
        "slow",
        "noOutput",
        "spawn",
        "readResume",
        "withErrorField",
        "many",
        "delTmp",
    ];
    expected.sort_unstable();
    assert_eq!(uses, expected);
    assert!(bundles[0].digest.starts_with("sha256:"));
    for key in expected {
        assert!(host.implements(key), "{key}");
    }
    assert!(!host.implements("nope"));
}

#[tokio::test]
async fn value_nodes() {
    let (host, _dir) = conformance().await;
    let value = json!({"id": 5, "name": "n"});
    assert_eq!(
        output(&host, with_params("const", json!({"value": value}))).await,
        Some(value.clone())
    );
    assert_eq!(
        output(&host, with_params("const", json!({"value": 21}))).await,
        Some(json!(21))
    );
    assert_eq!(
        output(&host, with_input("echo", value.clone())).await,
        Some(value)
    );
    assert_eq!(
        output(&host, call("echo")).await,
        None,
        "no input: no output"
    );
    assert_eq!(output(&host, call("noOutput")).await, None);
    assert_eq!(
        output(&host, call("withErrorField")).await,
        Some(json!("x"))
    );
}

#[tokio::test]
async fn arithmetic_nodes() {
    let (host, _dir) = conformance().await;
    let doubled = output(&host, with_input("double", json!(21)))
        .await
        .unwrap();
    assert_eq!(doubled.to_string(), "42", "integral results stay integers");
    assert_eq!(
        output(&host, with_input("times10", json!(4))).await,
        Some(json!(40))
    );
    assert_eq!(
        output(&host, with_input("sum", json!([1, 2, 3.5]))).await,
        Some(json!(6.5))
    );
    assert_eq!(
        output(&host, call("sum")).await.unwrap().to_string(),
        "0",
        "missing input sums to 0"
    );
    let invalid = failure(&host, with_input("double", json!("x"))).await;
    assert_eq!(invalid.kind, FailureKind::InvalidInput, "{invalid:?}");
}

#[tokio::test]
async fn failing_nodes_keep_the_guest_message_and_kind() {
    let (host, _dir) = conformance().await;
    let boom = failure(&host, call("fail")).await;
    assert_eq!(
        (boom.kind, boom.message.as_str()),
        (FailureKind::Retryable, "boom")
    );
    let fatal = failure(&host, call("fatal")).await;
    assert_eq!(
        (fatal.kind, fatal.message.as_str()),
        (FailureKind::Fatal, "fatal!")
    );
    assert!(fatal.is_fatal());
}

#[tokio::test]
async fn flaky_succeeds_from_the_requested_attempt() {
    let (host, _dir) = conformance().await;
    let attempt = |n: u32| NodeCall {
        attempt: n,
        ..with_params("flaky", json!({"succeedOn": 3}))
    };
    for n in 1..3 {
        let failure = failure(&host, attempt(n)).await;
        assert_eq!(failure.kind, FailureKind::Retryable, "{failure:?}");
    }
    assert_eq!(output(&host, attempt(3)).await, Some(json!("ok@3")));
}

#[tokio::test]
async fn act_returns_an_action() {
    let (host, _dir) = conformance().await;
    let outcome = host
        .run(with_params("act", json!({"value": 1, "action": "high"})))
        .await;
    let success = outcome.result.unwrap();
    assert_eq!(success.output, Some(json!(1)));
    assert_eq!(success.action.as_deref(), Some("high"));
}

#[tokio::test]
async fn context_nodes_read_and_write_the_run_context() {
    let (host, _dir) = conformance().await;

    let set = host
        .run(with_params("setKey", json!({"key": "shared", "value": 42})))
        .await;
    assert_eq!(set.result.unwrap().output, Some(json!(42)));
    assert_eq!(
        set.context.into_changes(),
        vec![ContextChange::Set {
            key: "shared".into(),
            value: json!(42).into()
        }]
    );

    let read = NodeCall {
        context: context(json!({"shared": {"deep": [1, 2]}})),
        ..with_params("readKey", json!({"key": "shared"}))
    };
    assert_eq!(output(&host, read).await, Some(json!({"deep": [1, 2]})));
    assert_eq!(
        output(&host, with_params("readKey", json!({"key": "absent"}))).await,
        None
    );

    let resume = NodeCall {
        context: context(json!({"_resume.action": "approve", "_resume.output": {"ok": true}})),
        ..call("readResume")
    };
    assert_eq!(
        output(&host, resume).await,
        Some(json!({"action": "approve", "output": {"ok": true}}))
    );
    assert_eq!(output(&host, call("readResume")).await, Some(json!({})));
}

#[tokio::test]
async fn inc_counts_in_the_context() {
    let (host, _dir) = conformance().await;
    let first = host.run(with_params("inc", json!({"limit": 2}))).await;
    assert_eq!(first.result.unwrap().output, Some(json!(1)));
    assert_eq!(
        first.context.into_changes(),
        vec![
            ContextChange::Set {
                key: "count".into(),
                value: json!(1).into()
            },
            ContextChange::Set {
                key: "keepGoing".into(),
                value: json!(true).into()
            },
        ]
    );
    let second = NodeCall {
        context: context(json!({"count": 1, "keepGoing": true})),
        ..with_params("inc", json!({"limit": 2}))
    };
    let second = host.run(second).await;
    assert_eq!(second.result.unwrap().output, Some(json!(2)));
    assert_eq!(
        second.context.get("keepGoing").map(|v| v.to_value()),
        Some(json!(false))
    );
}

#[tokio::test]
async fn many_writes_eleven_keys_and_del_tmp_deletes() {
    let (host, _dir) = conformance().await;
    let many = host.run(call("many")).await;
    assert_eq!(many.result.unwrap().output, Some(json!("many")));
    let changes = many.context.into_changes();
    assert_eq!(changes.len(), 11);
    assert_eq!(
        changes[10],
        ContextChange::Set {
            key: "k10".into(),
            value: json!(10).into()
        }
    );

    let del = host
        .run(NodeCall {
            context: context(json!({"tmp": 1, "keep": 2})),
            ..call("delTmp")
        })
        .await;
    assert_eq!(del.result.unwrap().output, Some(json!("deleted")));
    assert!(!del.context.has("tmp"));
    assert_eq!(
        del.context.into_changes(),
        vec![ContextChange::Delete { key: "tmp".into() }]
    );
}

#[tokio::test]
async fn spawn_returns_dynamic_nodes() {
    let (host, _dir) = conformance().await;
    let success = host.run(call("spawn")).await.result.unwrap();
    assert_eq!(success.output, Some(json!("spawned")));
    let nodes: Vec<(String, String, Option<Value>)> = success
        .dynamic_nodes
        .into_iter()
        .map(
            |NodeDefinition {
                 id, uses, params, ..
             }| (id, uses, params),
        )
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("d1".into(), "const".into(), Some(json!({"value": "x"}))),
            ("d2".into(), "const".into(), Some(json!({"value": "y"}))),
        ]
    );
}

#[tokio::test]
async fn slow_waits_and_a_node_timeout_stops_it() {
    let (host, _dir) = conformance().await;
    let started = std::time::Instant::now();
    assert_eq!(
        output(&host, with_params("slow", json!({"ms": 50}))).await,
        Some(json!("slow-done"))
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));

    let late = failure(
        &host,
        with_timeout(with_params("slow", json!({"ms": 5000})), 100),
    )
    .await;
    assert_eq!(late.kind, FailureKind::Retryable, "{late:?}");
    assert!(
        late.message.contains("time limit of 100 ms exceeded"),
        "{}",
        late.message
    );
    assert!(
        late.message.contains("node type 'slow'"),
        "{}",
        late.message
    );
}

#[tokio::test]
async fn a_missing_implementation_fails_like_upstream() {
    let (host, _dir) = conformance().await;
    let missing = failure(&host, call("nope")).await;
    assert_eq!(missing.kind, FailureKind::Fatal);
    assert_eq!(missing.message, "Implementation for 'nope' not found.");
}
