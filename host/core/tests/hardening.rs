//! Inputs that must not knock a job over: out-of-range numbers that reach
//! the engine without `validate`, a node step that panics, subflows that
//! run themselves, dynamic nodes that ask for more than their spawner has,
//! and conditions that read their own source node by plain id. Each ends
//! as a run that completes or fails with a clear reason, never as a panic
//! or a run left `running`.

use std::sync::Arc;

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::ContextMap;
use flowcraft_core::engine::{Engine, EngineSettings, RunReport};
use flowcraft_core::memory::{self, MemoryBackend, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::{
    NodeCall, NodeFailure, NodeOutcome, NodeRunner, NodeSuccess, PinError, Pins,
};
use serde_json::{Value, json};

/// Node types of two pretend bundles, told apart by their first letter:
/// bundle `a` has `a-const` (params.value), `a-panic` (panics with
/// params.message), `a-spawn` (returns params.nodes as dynamic nodes) and
/// `a-fail` (always fails, retryably); bundle `b` has `b-const`.
struct TwoBundles;

impl NodeRunner for TwoBundles {
    fn implements(&self, uses: &str) -> bool {
        matches!(
            uses,
            "a-const" | "a-panic" | "a-spawn" | "a-fail" | "b-const"
        )
    }

    fn pin(&self, _blueprint: &Blueprint) -> Result<Pins, PinError> {
        Ok(Pins::new())
    }

    async fn run(&self, call: NodeCall) -> NodeOutcome {
        let success = |output: Option<Value>, dynamic_nodes| NodeSuccess {
            output,
            action: None,
            dynamic_nodes,
        };
        let result = match call.uses.as_str() {
            "a-const" | "b-const" => Ok(success(call.params.get("value").cloned(), vec![])),
            "a-panic" => panic!("{}", call.params["message"].as_str().unwrap_or("boom")),
            "a-spawn" => {
                let nodes = serde_json::from_value(call.params["nodes"].clone()).expect("nodes");
                Ok(success(Some(json!("spawned")), nodes))
            }
            _ => Err(NodeFailure::retryable("failing on purpose")),
        };
        NodeOutcome {
            context: call.context,
            result,
        }
    }

    fn shares_bundle(&self, spawner: &str, _pin: Option<&str>, uses: &str) -> bool {
        spawner.split('-').next() == uses.split('-').next()
    }
}

type TestEngine = Engine<MemoryBackend, TwoBundles>;

/// An engine over the in-memory stores with `blueprints` loaded unvalidated,
/// as a worker would meet a blueprint whose checks were skipped.
fn engine_over(blueprints: &[Value]) -> (TestEngine, memory::JobReceiver) {
    let registry = PlanRegistry::new(blueprints.iter().map(|blueprint| {
        let blueprint: Blueprint = serde_json::from_value(blueprint.clone()).expect("blueprint");
        Plan::new(blueprint, Default::default()).expect("plan")
    }));
    let (backend, receiver) = MemoryBackend::new();
    let engine = Engine::new(
        Arc::new(backend),
        Arc::new(TwoBundles),
        Arc::new(registry),
        EngineSettings::default(),
    );
    (engine, receiver)
}

async fn run_to_end(
    engine: &TestEngine,
    receiver: &mut memory::JobReceiver,
    blueprint: &str,
) -> RunReport {
    let run = engine
        .start_run(blueprint, None, ContextMap::new())
        .await
        .expect("run starts");
    memory::drive(engine, receiver, &run, 4, TimerPolicy::Stop)
        .await
        .expect("the run is driven to its end")
}

fn first_error(report: &RunReport) -> &str {
    report
        .errors
        .first()
        .map(|error| error.message.as_str())
        .unwrap_or("(no error)")
}

#[tokio::test]
async fn out_of_range_numbers_fail_their_node_with_the_range() {
    let cases = [
        (
            json!({"uses": "a-const", "config": {"timeout": 1e300}}),
            "config.timeout 1e+300 is out of range",
        ),
        (
            json!({"uses": "a-fail", "config": {"maxRetries": 3, "retryDelay": 1e308}}),
            "config.retryDelay 1e+308 is out of range",
        ),
        (
            json!({"uses": "a-fail", "config": {"maxRetries": 1_000_000, "retryDelay": 0}}),
            "config.maxRetries 1000000 is out of range",
        ),
        (
            json!({"uses": "sleep", "params": {"duration": "99999999999d"}}),
            "params.duration \"99999999999d\" is out of range",
        ),
        (
            json!({"uses": "sleep", "params": {"duration": 1e300}}),
            "params.duration 1e+300 is out of range",
        ),
    ];
    for (node, expected) in cases {
        let mut node = node;
        node["id"] = json!("N");
        let (engine, mut receiver) = engine_over(&[json!({"id": "bounds", "nodes": [node]})]);
        let report = run_to_end(&engine, &mut receiver, "bounds").await;
        assert_eq!(report.state, RunState::Failed, "{expected}");
        assert!(
            first_error(&report).contains(expected),
            "{expected}: {:?}",
            report.errors
        );
        assert!(
            first_error(&report).contains("allowed:"),
            "{:?}",
            report.errors
        );
    }
}

#[tokio::test]
async fn a_panicking_step_fails_its_node_and_other_runs_go_on() {
    let (engine, mut receiver) = engine_over(&[
        json!({"id": "panics", "nodes": [
            {"id": "P", "uses": "a-panic", "params": {"message": "injected panic"},
             "config": {"maxRetries": 3, "fallback": "F"}},
            {"id": "F", "uses": "a-const", "params": {"value": "fallback"}}]}),
        json!({"id": "fine", "nodes": [{"id": "A", "uses": "a-const", "params": {"value": 1}}]}),
    ]);
    let panicking = engine
        .start_run("panics", None, ContextMap::new())
        .await
        .unwrap();
    let fine = engine
        .start_run("fine", None, ContextMap::new())
        .await
        .unwrap();
    let report = memory::drive(&engine, &mut receiver, &panicking, 4, TimerPolicy::Stop)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Failed);
    assert_eq!(
        report.errors.len(),
        1,
        "no retry, no fallback: {:?}",
        report.errors
    );
    let error = first_error(&report);
    assert!(
        error.contains("internal error") && error.contains("injected panic"),
        "{error}"
    );
    assert!(!report.context.contains_key("_outputs.F"));
    let other = memory::drive(&engine, &mut receiver, &fine, 4, TimerPolicy::Stop)
        .await
        .unwrap();
    assert_eq!(other.state, RunState::Completed);
    assert_eq!(other.context["_outputs.A"], json!(1));
}

fn subflow(id: &str, child: &str, metadata: Value) -> Value {
    json!({"id": id, "metadata": metadata, "nodes": [
        {"id": "s", "uses": "subflow", "params": {"blueprintId": child}}]})
}

#[tokio::test]
async fn a_self_recursive_subflow_ends_at_the_depth_limit() {
    let (engine, mut receiver) = engine_over(&[subflow("rec", "rec", json!({}))]);
    let report = run_to_end(&engine, &mut receiver, "rec").await;
    assert_eq!(report.state, RunState::Failed);
    let runs = engine.backend().snapshot().progress.len();
    assert_eq!(runs, 33, "the root and 32 nested children");
    let deepest = engine
        .backend()
        .snapshot()
        .progress
        .into_values()
        .find(|run| run.errors.iter().any(|e| e.message.contains("nest deeper")))
        .expect("the deepest run names the limit");
    let message = &deepest.errors[0].message;
    assert!(
        message.contains("nest deeper than 32 runs (rec → rec"),
        "{message}"
    );
    assert!(first_error(&report).contains("did not complete successfully"));
}

#[tokio::test]
async fn mutual_subflows_end_at_their_own_limit() {
    let (engine, mut receiver) = engine_over(&[
        subflow("ping", "pong", json!({"maxSubflowDepth": 3})),
        subflow("pong", "ping", json!({"maxSubflowDepth": 3})),
    ]);
    let report = run_to_end(&engine, &mut receiver, "ping").await;
    assert_eq!(report.state, RunState::Failed);
    assert_eq!(engine.backend().snapshot().progress.len(), 4);
    let chains: Vec<String> = engine
        .backend()
        .snapshot()
        .progress
        .into_values()
        .flat_map(|run| run.errors)
        .map(|error| error.message)
        .filter(|message| message.starts_with("Node 's': subflows nest deeper"))
        .collect();
    assert_eq!(chains.len(), 1, "{chains:?}");
    assert!(
        chains[0].contains("(ping → pong → ping → pong → ping)"),
        "{chains:?}"
    );
    assert!(first_error(&report).contains("(ping → pong → ping → pong → ping)"));
}

#[tokio::test]
async fn a_condition_sees_its_own_source_by_plain_id() {
    let (engine, mut receiver) = engine_over(&[json!({"id": "plain", "nodes": [
        {"id": "A", "uses": "a-const", "params": {"value": {"ok": true}}},
        {"id": "B", "uses": "a-const", "params": {"value": "taken"}},
        {"id": "C", "uses": "a-const", "params": {"value": "not taken"}}],
        "edges": [{"source": "A", "target": "B", "condition": "A.ok"},
                  {"source": "A", "target": "C", "condition": "!A.ok"}]})]);
    let report = run_to_end(&engine, &mut receiver, "plain").await;
    assert_eq!(report.state, RunState::Completed);
    assert_eq!(report.context["_outputs.B"], json!("taken"));
    assert!(!report.context.contains_key("_outputs.C"));
}

fn spawner(nodes: Value, config: Value) -> Value {
    json!({"id": "dyn", "nodes": [
        {"id": "S", "uses": "a-spawn", "params": {"nodes": nodes}, "config": config}]})
}

#[tokio::test]
async fn dynamic_nodes_get_no_more_attempts_than_their_spawner() {
    let greedy = json!([{"id": "d", "uses": "a-fail",
        "config": {"maxRetries": 1000, "retryDelay": 0, "timeout": 3600000}}]);
    let (engine, mut receiver) = engine_over(&[spawner(greedy, json!({"maxRetries": 2}))]);
    let report = run_to_end(&engine, &mut receiver, "dyn").await;
    assert_eq!(report.state, RunState::Failed);
    let progress = engine
        .backend()
        .snapshot()
        .progress
        .into_values()
        .next()
        .unwrap();
    let admitted = progress.dynamic_node("d").expect("admitted");
    let config = admitted.config.as_ref().unwrap();
    assert_eq!(config.max_retries, Some(2.into()));
    assert_eq!(config.timeout, Some(30_000.into()));
    assert_eq!(progress.attempt("d"), 2);
}

#[tokio::test]
async fn dynamic_nodes_of_another_bundle_fail_their_spawner() {
    let borrowed = json!([{"id": "d", "uses": "b-const", "params": {"value": "secret"}}]);
    let (engine, mut receiver) = engine_over(&[spawner(borrowed.clone(), json!({}))]);
    let report = run_to_end(&engine, &mut receiver, "dyn").await;
    assert_eq!(report.state, RunState::Failed);
    assert!(
        first_error(&report).contains("of type 'b-const'"),
        "{:?}",
        report.errors
    );
    assert!(!report.context.contains_key("_outputs.d"));

    let mut allowed = spawner(borrowed, json!({}));
    allowed["metadata"] = json!({"dynamicNodeTypes": ["b-const"]});
    let (engine, mut receiver) = engine_over(&[allowed]);
    let report = run_to_end(&engine, &mut receiver, "dyn").await;
    assert_eq!(report.state, RunState::Completed, "{:?}", report.errors);
    assert_eq!(report.context["_outputs.d"], json!("secret"));
}

#[tokio::test]
async fn a_fan_out_at_the_dynamic_node_limit_runs_every_node_once() {
    let nodes: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("d{i}"), "uses": "a-const", "params": {"value": i}}))
        .collect();
    let (engine, mut receiver) = engine_over(&[spawner(Value::Array(nodes.clone()), json!({}))]);
    let report = run_to_end(&engine, &mut receiver, "dyn").await;
    assert_eq!(report.state, RunState::Completed, "{:?}", report.errors);
    assert_eq!(report.context["_outputs.d999"], json!(999));

    let mut too_many = nodes;
    too_many.push(json!({"id": "one-more", "uses": "a-const"}));
    let (engine, mut receiver) = engine_over(&[spawner(Value::Array(too_many), json!({}))]);
    let report = run_to_end(&engine, &mut receiver, "dyn").await;
    assert_eq!(report.state, RunState::Failed);
    assert!(
        first_error(&report).contains("more than the limit of 1000"),
        "{:?}",
        report.errors
    );
}
