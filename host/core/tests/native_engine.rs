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

/// `const` (params.value), `add` (input + params.n), `count` (counts calls in
/// context key `seen`), `gate` (fails unless context key `fixed` is true) and
/// `boom` (always fails).
#[derive(Default)]
struct NativeNodes {
    calls: AtomicUsize,
}

impl NodeRunner for NativeNodes {
    fn implements(&self, uses: &str) -> bool {
        matches!(uses, "const" | "add" | "count" | "boom" | "gate")
    }

    fn pin(&self, _blueprint: &Blueprint) -> Result<Pins, PinError> {
        Ok(Pins::new())
    }

    async fn run(&self, mut call: NodeCall) -> NodeOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let result = match call.uses.as_str() {
            "const" => Ok(call.params.get("value").cloned()),
            "add" => {
                let input = call
                    .input
                    .as_ref()
                    .and_then(|v| v.to_value().as_i64())
                    .unwrap_or(0);
                let n = call.params.get("n").and_then(Value::as_i64).unwrap_or(1);
                Ok(Some(json!(input + n)))
            }
            "count" => {
                let seen = call
                    .context
                    .get("seen")
                    .and_then(|v| v.to_value().as_i64())
                    .unwrap_or(0);
                call.context
                    .set("seen", json!(seen + 1).into())
                    .expect("writable");
                Ok(Some(json!(seen + 1)))
            }
            // Fails until an operator fixes the data it reads.
            "gate" if !call.context.get("fixed").is_some_and(|v| *v == json!(true)) => {
                Err(NodeFailure::retryable("not fixed yet"))
            }
            "gate" => Ok(Some(json!("passed"))),
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
    let registry = PlanRegistry::new([Plan::new(blueprint, Default::default()).expect("plan")]);
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
        twice.handle_and_send(&job).await.unwrap();
        twice.handle_and_send(&job).await.unwrap();
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
    engine.handle_and_send(&start).await.unwrap();
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
    context.insert("blueprintId".into(), json!(id).into());
    context.insert("blueprintVersion".into(), Value::Null.into());
    engine
        .backend()
        .create_context("upstream-run", context)
        .await
        .unwrap();
    engine
        .handle_and_send(&Job::new("upstream-run", &id, "A"))
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
    let outcome = engine.handle_and_send(&Job::new("nobody", &id, "A")).await;
    assert!(matches!(outcome, Err(EngineError::UnknownRun(run)) if run == "nobody"));
}

/// count → gate → count, and count → boom-or-not: the gate fails the run
/// until the context says `fixed`.
const GATED: &str = r#"{"id":"g","nodes":[{"id":"A","uses":"count"},
    {"id":"G","uses":"gate","config":{"maxRetries":2,"retryDelay":1}},{"id":"B","uses":"count"}],
    "edges":[{"source":"A","target":"G"},{"source":"G","target":"B"}]}"#;

async fn failed_gated_run(
    engine: &Engine<MemoryBackend, NativeNodes>,
    receiver: &mut memory::JobReceiver,
    id: &str,
) -> String {
    let run = engine.start_run(id, None, ContextMap::new()).await.unwrap();
    let report = memory::drive(engine, receiver, &run, 2, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Failed);
    run
}

#[tokio::test]
async fn a_retried_run_runs_its_failed_node_again_and_completes() {
    use flowcraft_core::store::StatusStore;
    let (engine, mut receiver, id) = engine(GATED);
    let run = failed_gated_run(&engine, &mut receiver, &id).await;
    let failed = engine.backend().read_status(&run).await.unwrap().unwrap();
    assert_eq!(failed.status, RunState::Failed);

    let mut patch = ContextMap::new();
    patch.insert("fixed".into(), json!(true).into());
    let again = engine.retry(&run, patch).await.unwrap();
    assert_eq!(again, vec!["G"]);
    let reopened = engine.backend().read_status(&run).await.unwrap().unwrap();
    assert_eq!(reopened.status, RunState::Running);
    assert_eq!(reopened.final_status, None);

    let report = memory::drive(&engine, &mut receiver, &run, 2, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Completed, "{:?}", report.errors);
    assert_eq!(report.context["_outputs.G"], json!("passed"));
    assert_eq!(report.context["seen"], json!(2), "A ran once, B once");
    assert!(report.errors.is_empty());
    let progress = engine.backend().load_progress(&run).await.unwrap().unwrap();
    assert_eq!(progress.retries, 1);
    assert_eq!(progress.retried_errors.len(), 1);
    assert_eq!(progress.retried_errors[0].node_id, "G");
    let status = engine.backend().read_status(&run).await.unwrap().unwrap();
    assert_eq!(status.status, RunState::Completed);
}

#[tokio::test]
async fn retry_refuses_runs_that_are_not_failed() {
    use flowcraft_core::engine::EngineError;
    let (engine, mut receiver, id) = engine(DIAMOND);
    let unknown = engine.retry("nobody", ContextMap::new()).await;
    assert!(
        matches!(unknown, Err(EngineError::UnknownRun(_))),
        "{unknown:?}"
    );

    let run = engine
        .start_run(&id, None, ContextMap::new())
        .await
        .unwrap();
    let running = engine.retry(&run, ContextMap::new()).await;
    assert!(
        matches!(
            running,
            Err(EngineError::NotRetryable {
                state: RunState::Running,
                ..
            })
        ),
        "{running:?}"
    );
    memory::drive(&engine, &mut receiver, &run, 2, TimerPolicy::Wait)
        .await
        .unwrap();
    let completed = engine.retry(&run, ContextMap::new()).await;
    let Err(refusal) = completed else {
        panic!("a completed run was retried")
    };
    assert_eq!(
        refusal.to_string(),
        format!("cannot retry run '{run}': it is completed; only a failed run can be retried")
    );

    let cancelled = engine
        .start_run(&id, None, ContextMap::new())
        .await
        .unwrap();
    engine.cancel(&cancelled).await.unwrap();
    let outcome = engine.retry(&cancelled, ContextMap::new()).await;
    assert!(
        matches!(
            outcome,
            Err(EngineError::NotRetryable {
                state: RunState::Cancelled,
                ..
            })
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn of_two_retries_at_once_exactly_one_wins() {
    use flowcraft_core::engine::EngineError;
    let (engine, mut receiver, id) = engine(GATED);
    let run = failed_gated_run(&engine, &mut receiver, &id).await;
    let mut first_patch = ContextMap::new();
    first_patch.insert("fixed".into(), json!(true).into());
    let mut second_patch = ContextMap::new();
    second_patch.insert("loser".into(), json!(true).into());
    let (first, second) = tokio::join!(
        engine.retry(&run, first_patch),
        engine.retry(&run, second_patch)
    );
    let outcomes = [&first, &second];
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    let loser = outcomes.iter().find(|o| o.is_err()).unwrap();
    assert!(
        matches!(
            loser,
            Err(EngineError::NotRetryable {
                state: RunState::Running,
                ..
            })
        ),
        "{loser:?}"
    );
    let progress = engine.backend().load_progress(&run).await.unwrap().unwrap();
    assert_eq!(progress.retries, 1);
    assert_eq!(progress.pending.len(), 1, "G scheduled once");
    let report = engine.report(&run).await.unwrap();
    let winner_patched = report.context.contains_key("fixed");
    assert!(
        winner_patched != report.context.contains_key("loser"),
        "only the winner's patch is written: {:?}",
        report.context
    );
}

#[tokio::test]
async fn retry_refuses_to_change_the_documents_identity() {
    use flowcraft_core::engine::EngineError;
    let (engine, mut receiver, id) = engine(GATED);
    let run = failed_gated_run(&engine, &mut receiver, &id).await;
    let mut patch = ContextMap::new();
    patch.insert("runId".into(), json!("other").into());
    let outcome = engine.retry(&run, patch).await;
    assert!(
        matches!(outcome, Err(EngineError::ReservedKey { .. })),
        "{outcome:?}"
    );
    let progress = engine.backend().load_progress(&run).await.unwrap().unwrap();
    assert_eq!(progress.state, RunState::Failed, "nothing changed");
}

/// A retry is recorded in the progress record before it is enqueued, so a
/// late second delivery of the failed attempt neither runs the node again
/// nor enqueues a second retry.
#[tokio::test]
async fn a_late_delivery_of_a_retried_attempt_is_dropped() {
    let (engine, mut receiver, id) = engine(
        r#"{"id":"r","nodes":[{"id":"A","uses":"boom","config":{"maxRetries":3}}],"edges":[]}"#,
    );
    engine
        .start_run(&id, Some("r".into()), ContextMap::new())
        .await
        .unwrap();
    let first = receiver.try_recv().expect("attempt 1");
    engine.handle_and_send(&first).await.unwrap();
    let retry = receiver.try_recv().expect("attempt 2 enqueued");
    assert_eq!(retry.attempt, Some(2));
    engine.handle_and_send(&first).await.unwrap();
    assert!(
        receiver.try_recv().is_err(),
        "the late delivery enqueued another retry"
    );
    let progress = engine.backend().load_progress("r").await.unwrap().unwrap();
    assert_eq!(progress.attempt("A"), 2);
}

/// A node that failed for good writes `_catch_error` and a null output, then
/// hands over to its fallback. A crash between the two must not turn that
/// null into the node's result on redelivery: the fallback still runs.
#[tokio::test]
async fn a_crash_before_the_fallback_handover_still_runs_the_fallback() {
    use flowcraft_core::context::ContextChange;
    use flowcraft_core::store::ContextStore;
    let (engine, mut receiver, id) = engine(
        r#"{"id":"fb","nodes":[{"id":"A","uses":"boom","config":{"fallback":"F"}},
            {"id":"F","uses":"const","params":{"value":"rescued"}}],"edges":[]}"#,
    );
    let run = engine
        .start_run(&id, Some("fb".into()), ContextMap::new())
        .await
        .unwrap();
    // What the crashed delivery of A's job had written.
    let written = [
        ContextChange::Set {
            key: "_catch_error".into(),
            value: json!({"message": "boom", "nodeId": "A", "blueprintId": "fb"}).into(),
        },
        ContextChange::Set {
            key: "_outputs.A".into(),
            value: Value::Null.into(),
        },
    ];
    engine
        .backend()
        .apply_changes(&run, &written)
        .await
        .unwrap();
    let report = memory::drive(&engine, &mut receiver, &run, 1, TimerPolicy::Wait)
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Completed);
    assert_eq!(report.context["_outputs.F"], json!("rescued"));
}

/// Queue Storage delays a message by at most 7 days, so a longer sleep is a
/// chain of wake-ups: one that arrives before `wakeUpAt` waits again instead
/// of resuming the node.
#[tokio::test]
async fn a_sleep_longer_than_the_longest_queue_delay_is_chained() {
    use flowcraft_core::store::{Job, JobSignal};
    let eight_days_ms = 8 * 24 * 3_600 * 1_000_u64;
    let (engine, mut receiver, id) = engine(&format!(
        r#"{{"id":"nap","nodes":[{{"id":"S","uses":"sleep","params":{{"duration":{eight_days_ms}}}}},
            {{"id":"B","uses":"const","params":{{"value":1}}}}],"edges":[{{"source":"S","target":"B"}}]}}"#
    ));
    let run = engine
        .start_run(&id, Some("nap".into()), ContextMap::new())
        .await
        .unwrap();
    let start = receiver.try_recv().expect("the sleep job");
    engine.handle_and_send(&start).await.unwrap();
    assert_eq!(engine.backend().pending_timers(), 1, "the first wake-up");
    let mut early = Job::new(&run, &id, "S");
    early.signal = Some(JobSignal::Wake);
    engine.handle_and_send(&early).await.unwrap();
    assert_eq!(
        engine.backend().pending_timers(),
        2,
        "an early wake-up schedules the next one"
    );
    let report = engine.report(&run).await.unwrap();
    assert_eq!(report.state, RunState::Awaiting);
    assert!(receiver.try_recv().is_err(), "B must not be scheduled yet");
}

/// `handle` answers the run's successors instead of enqueueing
/// them (the caller runs them itself), and a run driven that way ends
/// exactly as one driven through the queue alone.
#[tokio::test]
async fn a_continuing_step_hands_back_its_successors() {
    let (engine, mut receiver, id) = engine(DIAMOND);
    let run = engine
        .start_run(&id, Some("r".into()), ContextMap::new())
        .await
        .unwrap();
    let start = receiver.try_recv().expect("the start job");
    let next = engine.handle(&start).await.unwrap();
    assert!(receiver.try_recv().is_err(), "nothing was enqueued");
    let mut pair: Vec<&str> = next.iter().map(|job| job.node_id.as_str()).collect();
    pair.sort();
    assert_eq!(pair, ["B", "C"]);
    let mut work = next;
    while let Some(job) = work.pop() {
        work.extend(engine.handle(&job).await.unwrap());
        assert!(receiver.try_recv().is_err(), "nothing was enqueued");
    }
    let report = engine.report(&run).await.unwrap();
    assert_eq!(report.state, RunState::Completed);
    assert_eq!(report.context["_outputs.D"], json!(111));
    assert_eq!(report.context["seen"], json!(1));
}

/// In a fleet shared with upstream's TypeScript workers, a worker that does
/// not keep the progress record runs node A and sends B's job itself. With
/// `shared_with_upstream` the record catches up (A done) and B runs;
/// without it, B's job is taken for a stale one and dropped.
#[tokio::test]
async fn a_job_an_upstream_worker_scheduled_runs_only_in_a_shared_fleet() {
    use flowcraft_core::context::ContextChange;
    use flowcraft_core::store::{ContextStore, Job};
    const CHAIN: &str = r#"{"id":"c","nodes":[{"id":"A","uses":"const","params":{"value":1}},
        {"id":"B","uses":"add","params":{"n":1}},{"id":"C","uses":"add","params":{"n":1}}],
        "edges":[{"source":"A","target":"B"},{"source":"B","target":"C"}]}"#;
    for shared in [false, true] {
        let blueprint = Blueprint::from_json(CHAIN).unwrap();
        let registry = PlanRegistry::new([Plan::new(blueprint, Default::default()).unwrap()]);
        let (backend, mut receiver) = MemoryBackend::new();
        let engine = Engine::new(
            Arc::new(backend),
            Arc::new(NativeNodes::default()),
            Arc::new(registry),
            EngineSettings {
                shared_with_upstream: shared,
                ..EngineSettings::default()
            },
        );
        let run = engine
            .start_run("c", Some("r".into()), ContextMap::new())
            .await
            .unwrap();
        let _taken_by_upstream = receiver.try_recv().expect("A's job");
        // What the TypeScript worker did with it: A's output, B's input.
        let written = [
            ContextChange::Set {
                key: "_outputs.A".into(),
                value: json!(1).into(),
            },
            ContextChange::Set {
                key: "_inputs.B".into(),
                value: json!(1).into(),
            },
        ];
        engine
            .backend()
            .apply_changes(&run, &written)
            .await
            .unwrap();
        engine
            .handle_and_send(&Job::new(&run, "c", "B"))
            .await
            .unwrap();
        if shared {
            let report = memory::drive(&engine, &mut receiver, &run, 1, TimerPolicy::Wait)
                .await
                .unwrap();
            assert_eq!(report.state, RunState::Completed);
            assert_eq!(report.context["_outputs.C"], json!(3));
        } else {
            let report = engine.report(&run).await.unwrap();
            assert_eq!(report.state, RunState::Running);
            assert!(!report.context.contains_key("_outputs.B"), "B ran");
        }
    }
}
