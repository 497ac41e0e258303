//! A property test of the host interface: the hostile bundle's `api-fuzz`
//! node performs random host calls with random arguments — reserved and
//! ordinary keys, values of random size and nesting, text that is not JSON,
//! log floods with any characters and any fields — and the runtime must
//! stay in charge: the host never panics, the call ends in success or a
//! contained failure (a refused `context-delete` traps the call), no write
//! to a reserved key reaches the context changes, and the changes stay
//! within the per-call write budgets.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use flowcraft_core::context::{ContextChange, DEFAULT_WRITE_QUOTA, is_engine_key};
use flowcraft_core::limits::{DEFAULT_WRITE_BYTES, MAX_JSON_DEPTH, json_depth};
use flowcraft_core::runner::{FailureKind, NodeRunner};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Random call lists tried; each is one node call (a few seconds in all).
const CASES: u32 = 96;

const RESERVED_KEYS: &[&str] = &[
    "_outputs.victim",
    "_inputs.victim",
    "_actions.victim",
    "_dynamicNodes.victim",
    "_resume.victim",
    "_awaitingNodeIds",
    "_catch_error",
    "blueprintId",
    "blueprintVersion",
    "runId",
    "id",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "order", "k1"]).prop_map(str::to_owned),
        2 => prop::sample::select(RESERVED_KEYS).prop_map(str::to_owned),
        1 => "(?s).{0,12}",
    ]
}

/// JSON text of random size and nesting, or text that is not JSON.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("1".to_owned()),
        Just("null".to_owned()),
        "(?s).{0,16}".prop_map(|text| Value::String(text).to_string()),
    ];
    prop_oneof![
        3 => (0..100usize, any::<bool>(), leaf).prop_map(|(depth, arrays, leaf)| {
            let (open, close) = if arrays { ("[", "]") } else { ("{\"k\":", "}") };
            format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth))
        }),
        1 => (0..150_000usize).prop_map(|bytes| Value::String("x".repeat(bytes)).to_string()),
        1 => "(?s).{0,16}",
    ]
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["trace", "debug", "info", "warn", "error"])
}

/// One host call as `api-fuzz` takes it.
fn api_call() -> impl Strategy<Value = Value> {
    let fields = prop_oneof![
        Just("{}".to_owned()),
        value().prop_map(|value| format!("{{\"v\":{value}}}")),
        "(?s).{0,24}",
    ];
    prop_oneof![
        2 => key().prop_map(|key| json!({"op": "get", "key": key})),
        4 => (key(), value(), 1..4usize)
            .prop_map(|(key, value, times)| json!({"op": "set", "key": key, "value": value, "times": times})),
        1 => (key(), 900..1_200usize)
            .prop_map(|(key, times)| json!({"op": "set", "key": key, "value": "7", "times": times})),
        1 => key().prop_map(|key| json!({"op": "has", "key": key})),
        1 => key().prop_map(|key| json!({"op": "delete", "key": key})),
        1 => Just(json!({"op": "keys"})),
        2 => (level(), "(?s).{0,64}", fields, prop_oneof![1..4usize, 500..1_500usize])
            .prop_map(|(level, message, fields, times)| {
                json!({"op": "log", "level": level, "message": message, "fields": fields, "times": times})
            }),
        1 => Just(json!({"op": "now"})),
        1 => key().prop_map(|key| json!({"op": "config", "key": key})),
    ]
}

/// Whether the host must refuse `set` of `value` under `key`.
fn refusable(key: &str, value: &str) -> bool {
    is_engine_key(key)
        || json_depth(value) > MAX_JSON_DEPTH
        || serde_json::from_str::<Value>(value).is_err()
}

#[test]
fn random_host_calls_never_break_the_host_rules() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (host, _dir, label) = runtime.block_on(hostile());
    let (succeeded, trapped) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let calls = prop::collection::vec(api_call(), 0..16);
    let result = runner.run(&calls, |calls| {
        let call = with_params("api-fuzz", json!({ "calls": calls }));
        let outcome = runtime.block_on(host.run(call));

        let changes = outcome.context.into_changes();
        for change in &changes {
            prop_assert!(
                !is_engine_key(change.key()),
                "reserved key written: {}",
                change.key()
            );
            if let ContextChange::Set { value, .. } = change {
                prop_assert!(json_depth(value.json()) <= MAX_JSON_DEPTH);
            }
        }
        prop_assert!(changes.len() <= DEFAULT_WRITE_QUOTA);
        let bytes: usize = changes.iter().map(ContextChange::size).sum();
        prop_assert!(bytes <= DEFAULT_WRITE_BYTES, "{bytes} bytes written");

        let deletes_reserved = calls
            .iter()
            .any(|call| call["op"] == "delete" && is_engine_key(call["key"].as_str().unwrap()));
        match outcome.result {
            Ok(success) => {
                prop_assert!(!deletes_reserved, "a reserved key's delete must trap");
                let refused_set = calls.iter().find(|call| {
                    call["op"] == "set"
                        && refusable(
                            call["key"].as_str().unwrap(),
                            call["value"].as_str().unwrap(),
                        )
                });
                prop_assert!(
                    refused_set.is_none(),
                    "a refused write must fail the call: {:?}",
                    refused_set
                );
                let done = success.output.unwrap_or_default();
                let done = done
                    .as_array()
                    .ok_or_else(|| TestCaseError::fail("no summary"))?;
                prop_assert_eq!(done.len(), calls.len());
                succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                // A refused write fails the call whatever the node does next.
                prop_assert_eq!(failure.kind, FailureKind::Fatal);
                let prefix = format!("{label}, node type 'api-fuzz': context-");
                let refused = ["delete '", "set '"]
                    .iter()
                    .any(|op| failure.message.starts_with(&format!("{prefix}{op}")));
                prop_assert!(refused, "{}", failure.message);
                trapped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let (succeeded, trapped) = (succeeded.into_inner(), trapped.into_inner());
    println!(
        "api-fuzz: {CASES} cases of random host calls: {succeeded} succeeded, {trapped} failed at a refused context write"
    );
    assert_eq!(succeeded + trapped, CASES as usize);
    runtime.block_on(still_healthy(&host));
}
