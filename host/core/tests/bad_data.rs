//! Bad data on the engine's path, with the in-memory stores: a node whose
//! context writes the store refuses for good (the run's context would exceed
//! the item limit), a final status too large to hold the context, a job for
//! a node the blueprint lacks, and a run whose context document is gone.
//! Each ends where it can be seen (a failed run with its reason, or an
//! error for the job's message) instead of being retried forever or dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::engine::{Engine, EngineError, EngineSettings};
use flowcraft_core::memory::{self, MemoryBackend, MemorySnapshot, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::{
    FailureKind, NodeCall, NodeFailure, NodeOutcome, NodeRunner, NodeSuccess, PinError, Pins,
};
use flowcraft_core::store::{Job, StatusStore, StoreError};
use serde_json::{Value, json};

/// `big` (a string of params.bytes characters), `const` (params.value) and
/// `number` (its input, which must be a number); counts the calls of each
/// node.
#[derive(Default)]
struct Nodes {
    calls: Mutex<BTreeMap<String, usize>>,
}

impl Nodes {
    fn calls(&self, node: &str) -> usize {
        self.calls.lock().unwrap().get(node).copied().unwrap_or(0)
    }
}

impl NodeRunner for Nodes {
    fn implements(&self, uses: &str) -> bool {
        matches!(uses, "big" | "const" | "number")
    }

    fn pin(&self, _blueprint: &Blueprint) -> Result<Pins, PinError> {
        Ok(Pins::new())
    }

    async fn run(&self, call: NodeCall) -> NodeOutcome {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(call.node_id.clone())
            .or_default() += 1;
        let result = match call.uses.as_str() {
            "big" => {
                let bytes = call.params.get("bytes").and_then(Value::as_u64);
                Ok(Some(json!("x".repeat(bytes.unwrap_or(0) as usize))))
            }
            "const" => Ok(call.params.get("value").cloned()),
            "number" => match call.input.as_ref().map(|input| input.to_value()) {
                Some(Value::Number(n)) => Ok(Some(Value::Number(n))),
                other => Err(NodeFailure {
                    kind: FailureKind::InvalidInput,
                    message: format!("node `number`: expected a number, got {other:?}"),
                }),
            },
            other => Err(NodeFailure::fatal(format!("no node type '{other}'"))),
        };
        NodeOutcome {
            context: call.context,
            result: result.map(|output| NodeSuccess {
                output,
                ..NodeSuccess::default()
            }),
        }
    }
}

type TestEngine = Engine<MemoryBackend, Nodes>;

fn engine_on(backend: MemoryBackend, blueprint: &str) -> TestEngine {
    engine_with(backend, blueprint, Arc::default())
}

fn engine_with(backend: MemoryBackend, blueprint: &str, nodes: Arc<Nodes>) -> TestEngine {
    let blueprint = Blueprint::from_json(blueprint).expect("blueprint");
    let registry = PlanRegistry::new([Plan::new(blueprint, Default::default()).expect("plan")]);
    Engine::new(
        Arc::new(backend),
        nodes,
        Arc::new(registry),
        EngineSettings::default(),
    )
}

/// A writes 1000 characters (as its output and B's input), then B writes
/// 1000 more; B would retry and has a fallback.
const TWO_BIG: &str = r#"{"id":"two-big","nodes":[
    {"id":"A","uses":"big","params":{"bytes":1000}},
    {"id":"B","uses":"big","params":{"bytes":1000},"config":{"maxRetries":3,"fallback":"F"}},
    {"id":"F","uses":"const","params":{"value":"fallback"}}],
    "edges":[{"source":"A","target":"B"}]}"#;

#[tokio::test]
async fn a_node_whose_writes_the_store_refuses_fails_at_once_without_its_fallback() {
    // A's writes (~2 kB) fit; B's would take the context past the limit.
    let (backend, mut receiver) = MemoryBackend::new();
    let nodes = Arc::new(Nodes::default());
    let engine = engine_with(backend.with_item_limit(2_600), TWO_BIG, nodes.clone());
    let run = engine
        .start_run("two-big", Some("r".into()), Default::default())
        .await
        .unwrap();
    let report = memory::drive(&engine, &mut receiver, &run, 4, TimerPolicy::Wait)
        .await
        .expect("a refused write is not an engine error");

    assert_eq!(report.state, RunState::Failed);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let error = &report.errors[0];
    assert_eq!(error.node_id, "B");
    assert!(
        error
            .message
            .starts_with("Node 'B' ran, but the store refused its")
            && error.message.contains("bytes of context writes")
            && error.message.contains("more than the limit of 2600 bytes"),
        "{}",
        error.message
    );
    assert_eq!(nodes.calls("A"), 1);
    assert_eq!(nodes.calls("B"), 1, "a refused write is not retried");
    assert_eq!(nodes.calls("F"), 0, "a refused write has no fallback");
    assert!(report.context.contains_key("_outputs.A"));
    assert!(!report.context.contains_key("_outputs.B"));
    let status = engine.backend().read_status(&run).await.unwrap().unwrap();
    assert_eq!(status.status, RunState::Failed);
    assert_eq!(
        status.final_status.unwrap()["reason"],
        json!(error.message.clone())
    );
}

#[test]
fn only_permanent_store_refusals_stop_redelivery() {
    let outage = EngineError::from(StoreError::new("cosmos context", "connection reset"));
    assert!(outage.is_transient());
    let refusal = EngineError::from(StoreError::refused("cosmos context", "too large"));
    assert!(!refusal.is_transient());
}

/// A writes 1000 characters, C a short constant: the context fits the
/// limit, the completed status (which copies the context twice) does not.
const BIG_RESULT: &str = r#"{"id":"big-result","nodes":[
    {"id":"A","uses":"big","params":{"bytes":1000}},
    {"id":"C","uses":"const","params":{"value":"done"}}],
    "edges":[{"source":"A","target":"C"}]}"#;

#[tokio::test]
async fn a_completed_run_too_large_for_its_status_is_published_without_the_context() {
    let (backend, mut receiver) = MemoryBackend::new();
    let engine = engine_on(backend.with_item_limit(3_000), BIG_RESULT);
    let run = engine
        .start_run("big-result", Some("r".into()), Default::default())
        .await
        .unwrap();
    let report = memory::drive(&engine, &mut receiver, &run, 4, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Completed);
    assert_eq!(report.context["_outputs.C"], json!("done"));

    let status = engine.backend().read_status(&run).await.unwrap().unwrap();
    assert_eq!(status.status, RunState::Completed);
    let final_status = status.final_status.expect("a final status");
    assert_eq!(final_status["status"], json!("completed"));
    assert!(final_status["payload"].get("context").is_none());
    let note = final_status["payload"]["contextOmitted"].as_str().unwrap();
    assert!(
        note.contains("read it from the run's context document"),
        "{note}"
    );
}

const CHAIN: &str = r#"{"id":"chain","nodes":[
    {"id":"A","uses":"const","params":{"value":1}},
    {"id":"B","uses":"const","params":{"value":2}}],
    "edges":[{"source":"A","target":"B"}]}"#;

#[tokio::test]
async fn a_job_for_a_node_the_blueprint_lacks_is_refused_and_the_run_goes_on() {
    let (backend, mut receiver) = MemoryBackend::new();
    let engine = engine_on(backend, CHAIN);
    let run = engine
        .start_run("chain", Some("r".into()), Default::default())
        .await
        .unwrap();
    let stray = engine
        .handle_and_send(&Job::new(&run, "chain", "nosuch"))
        .await;
    match stray {
        Err(error @ EngineError::UnknownNode { .. }) => {
            assert!(!error.is_transient());
            let text = error.to_string();
            assert!(
                text.contains("'nosuch'") && text.contains("'chain'") && text.contains("'r'"),
                "{text}"
            );
        }
        other => panic!("expected UnknownNode, got {other:?}"),
    }
    let report = memory::drive(&engine, &mut receiver, &run, 4, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Completed);
    assert!(report.errors.is_empty());
    // Once the run is over, a stray job is still not a duplicate to drop.
    let late = engine
        .handle_and_send(&Job::new(&run, "chain", "nosuch"))
        .await;
    assert!(
        matches!(late, Err(EngineError::UnknownNode { .. })),
        "{late:?}"
    );
}

#[tokio::test]
async fn a_run_whose_context_document_is_gone_fails_naming_it_and_the_way_back() {
    let (backend, _receiver) = MemoryBackend::new();
    let engine = engine_on(backend, CHAIN);
    let run = engine
        .start_run("chain", Some("r".into()), Default::default())
        .await
        .unwrap();
    // The same stores without the run's context document.
    let mut stored: MemorySnapshot = engine.backend().snapshot();
    assert!(stored.contexts.remove(&run).is_some());
    let (backend, mut receiver) = MemoryBackend::from_snapshot(stored);
    let engine = engine_on(backend, CHAIN);
    engine
        .handle_and_send(&Job::new(&run, "chain", "A"))
        .await
        .expect("a missing document fails the run, not the job");
    let report = memory::drive(&engine, &mut receiver, &run, 4, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Failed);
    let error = &report.errors[0];
    assert_eq!(error.node_id, "A");
    assert!(
        error
            .message
            .contains("the context document of run 'r' is missing")
            && error.message.contains("flowcraft-host retry r"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn invalid_input_names_where_the_node_read_it() {
    let blueprint = r#"{"id":"typed","nodes":[
        {"id":"N","uses":"number","inputs":"amount"},
        {"id":"M","uses":"number","inputs":{"x":"_raw","y":"N.total"}}],
        "edges":[{"source":"N","target":"M"}]}"#;
    let (backend, mut receiver) = MemoryBackend::new();
    let engine = engine_on(backend, blueprint);
    let initial = serde_json::from_value(json!({"amount": "twenty-one"})).unwrap();
    let run = engine
        .start_run("typed", Some("r".into()), initial)
        .await
        .unwrap();
    let report = memory::drive(&engine, &mut receiver, &run, 4, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Failed);
    let message = &report.errors[0].message;
    assert!(
        message.starts_with("node `number`: expected a number")
            && message.ends_with(
                "(node 'N' reads its input from context key '_outputs.amount', else 'amount')"
            ),
        "{message}"
    );
    let plan = engine.plans().get("typed").unwrap();
    let m = plan.blueprint.node("M").unwrap();
    assert_eq!(
        flowcraft_core::routing::input_source(&plan, m),
        "x: context key '_raw'; y: 'total' of context key '_outputs.N'"
    );
}
