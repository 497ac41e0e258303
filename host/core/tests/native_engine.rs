//! The engine with native test nodes behind the node-runner trait: the same
//! job step the plugin runtime drives, checked for behaviour that does not
//! depend on WebAssembly — above all that every job may be delivered twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::ContextMap;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::memory::{self, MemoryBackend, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::{
    NodeCall, NodeFailure, NodeOutcome, NodeRunner, NodeSuccess, PinError, Pins,
};
use flowcraft_core::store::CoordinationStore;
use serde_json::{Value, json};

/// `const` (params.value), `add` (input + params.n) and `count` (counts calls).
#[derive(Default)]
struct NativeNodes {
    calls: AtomicUsize,
}

impl NodeRunner for NativeNodes {
    fn implements(&self, uses: &str) -> bool {
        matches!(uses, "const" | "add" | "count" | "boom")
    }

    fn pin(&self, _blueprint: &Blueprint) -> Result<Pins, PinError> {
        Ok(Pins::new())
    }

    async fn run(&self, mut call: NodeCall) -> NodeOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let result = match call.uses.as_str() {
            "const" => Ok(call.params.get("value").cloned()),
            "add" => {
                let input = call.input.as_ref().and_then(Value::as_i64).unwrap_or(0);
                let n = call.params.get("n").and_then(Value::as_i64).unwrap_or(1);
                Ok(Some(json!(input + n)))
            }
            "count" => {
                let seen = call
                    .context
                    .get("seen")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                call.context.set("seen", json!(seen + 1)).expect("writable");
                Ok(Some(json!(seen + 1)))
            }
            _ => Err(NodeFailure::retryable("boom")),
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

fn engine(
    blueprint: &str,
) -> (
    Engine<MemoryBackend, NativeNodes>,
    memory::JobReceiver,
    String,
) {
    let blueprint = Blueprint::from_json(blueprint).expect("blueprint");
    let id = blueprint.id.clone();
    let registry = PlanRegistry::new();
    registry.insert(Plan::new(blueprint, Default::default()).expect("plan"));
    let (backend, receiver) = MemoryBackend::new();
    let engine = Engine::new(
        Arc::new(backend),
        Arc::new(NativeNodes::default()),
        Arc::new(registry),
        EngineSettings::default(),
    );
    (engine, receiver, id)
}

const DIAMOND: &str = r#"{"id":"d","nodes":[{"id":"A","uses":"const","params":{"value":1}},
    {"id":"B","uses":"add","params":{"n":10}},{"id":"C","uses":"count"},{"id":"D","uses":"add","params":{"n":100}}],
    "edges":[{"source":"A","target":"B"},{"source":"A","target":"C"},{"source":"B","target":"D"},{"source":"C","target":"D"}]}"#;

#[tokio::test]
async fn a_diamond_runs_each_node_once() {
    let (engine, mut receiver, id) = engine(DIAMOND);
    let run = engine
        .start_run(&id, None, ContextMap::new())
        .await
        .unwrap();
    let report = memory::drive(&engine, &mut receiver, &run, 4, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Completed);
    assert_eq!(report.context["_outputs.B"], json!(11));
    assert_eq!(report.context["seen"], json!(1));
    assert!(report.context.contains_key("_outputs.D"));
}

/// Delivers every job twice, the duplicate after the original finished:
/// the final context must equal a single-delivery run, and no node body may
/// run twice.
#[tokio::test]
async fn every_job_delivered_twice_changes_nothing() {
    let (single, mut single_receiver, id) = engine(DIAMOND);
    let run = single
        .start_run(&id, Some("r".into()), ContextMap::new())
        .await
        .unwrap();
    let expected = memory::drive(&single, &mut single_receiver, &run, 1, TimerPolicy::Wait)
        .await
        .unwrap();

    let (twice, mut receiver, id) = engine(DIAMOND);
    let run = twice
        .start_run(&id, Some("r".into()), ContextMap::new())
        .await
        .unwrap();
    let mut deliveries = BTreeMap::<String, usize>::new();
    while let Ok(job) = receiver.try_recv() {
        twice.handle(&job).await.unwrap();
        twice.handle(&job).await.unwrap();
        *deliveries.entry(job.node_id.clone()).or_default() += 1;
    }
    let report = twice.report(&run).await.unwrap();
    assert_eq!(report.state, RunState::Completed);
    assert_eq!(report.context, expected.context);
    assert_eq!(report.context["seen"], json!(1), "C's body ran once");
    assert_eq!(
        deliveries.get("D"),
        Some(&1),
        "the join was enqueued once: {deliveries:?}"
    );
    let progress = twice.backend().load_progress(&run).await.unwrap().unwrap();
    assert_eq!(progress.steps, 4);
}

#[tokio::test]
async fn a_failure_is_final_and_reported_once() {
    let (engine, mut receiver, id) = engine(
        r#"{"id":"f","nodes":[{"id":"A","uses":"boom","config":{"maxRetries":2,"retryDelay":1}},{"id":"B","uses":"const","params":{"value":1}}],
            "edges":[{"source":"A","target":"B"}]}"#,
    );
    let run = engine
        .start_run(&id, None, ContextMap::new())
        .await
        .unwrap();
    let report = memory::drive(&engine, &mut receiver, &run, 2, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Failed);
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0]
            .message
            .starts_with("Node 'A' execution failed")
    );
    assert!(!report.context.contains_key("_outputs.B"));
}

/// A job lost between settling and enqueueing (a crash) leaves its node
/// scheduled; reconcile sends it again, and nothing else.
#[tokio::test]
async fn reconcile_resends_lost_jobs_and_nothing_else() {
    let (engine, mut receiver, id) = engine(DIAMOND);
    let run = engine
        .start_run(&id, None, ContextMap::new())
        .await
        .unwrap();
    let start = receiver.try_recv().expect("the start job");
    engine.handle(&start).await.unwrap();
    let lost: Vec<String> = std::iter::from_fn(|| receiver.try_recv().ok())
        .map(|job| job.node_id)
        .collect();
    assert_eq!(lost, vec!["B", "C"]);
    let mut resent = engine.reconcile(&run).await.unwrap();
    resent.sort();
    assert_eq!(resent, vec!["B", "C"]);
    let report = memory::drive(&engine, &mut receiver, &run, 2, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Completed);
    assert_eq!(report.context["seen"], json!(1));
    assert!(
        engine.reconcile(&run).await.unwrap().is_empty(),
        "a finished run needs nothing"
    );
}

/// A run started the upstream way (context document + start job, no progress
/// record) is adopted and runs to the end.
#[tokio::test]
async fn runs_started_by_an_upstream_client_are_adopted() {
    use flowcraft_core::store::{ContextStore, Job};
    let (engine, mut receiver, id) = engine(DIAMOND);
    let mut context = ContextMap::new();
    context.insert("blueprintId".into(), json!(id));
    context.insert("blueprintVersion".into(), Value::Null);
    engine
        .backend()
        .create_context("upstream-run", context)
        .await
        .unwrap();
    engine
        .handle(&Job::new("upstream-run", &id, "A"))
        .await
        .unwrap();
    let report = memory::drive(&engine, &mut receiver, "upstream-run", 2, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Completed);
    assert_eq!(report.context["_outputs.B"], json!(11));
}

#[tokio::test]
async fn a_job_for_an_unknown_run_is_an_error_not_a_silent_drop() {
    use flowcraft_core::engine::EngineError;
    use flowcraft_core::store::Job;
    let (engine, _receiver, id) = engine(DIAMOND);
    let outcome = engine.handle(&Job::new("nobody", &id, "A")).await;
    assert!(matches!(outcome, Err(EngineError::UnknownRun(run)) if run == "nobody"));
}
