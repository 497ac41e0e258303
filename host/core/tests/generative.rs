//! Generated blueprints, contexts and resume commands against the engine on
//! the in-memory stores (`flowcraft_core::generate`): validation never
//! panics; an accepted blueprint's run never panics, keeps its progress
//! record consistent after every job, and ends (`completed`, `failed` or
//! `awaiting`) within a bounded number of jobs; a resume command is applied
//! or refused with an error, never a panic.
//!
//! Runs `FLOWCRAFT_GENERATIVE_CASES` cases (default 200) from a printed
//! seed; `FLOWCRAFT_GENERATIVE_SEED` repeats a run. Needs the `generate`
//! feature: `cargo test -p flowcraft-core --features generate --test generative`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::ContextMap;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::generate::{self, GeneratedNodes};
use flowcraft_core::memory::{JobReceiver, MemoryBackend};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::{NodeStatus, RunProgress, RunState};
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::store::CoordinationStore;
use flowcraft_core::validate::{Catalog, validate};
use proptest::test_runner::TestCaseError;
use serde_json::Value;

/// Jobs one generated run (with its child runs) may take: the engine's step
/// limit below bounds node executions, this bounds everything else.
const MAX_JOBS: usize = 20_000;

/// How a generated case ended, for the printed counts: `rejected` by
/// validation, else the run's final state.
type Ending = &'static str;

type TestEngine = Engine<MemoryBackend, GeneratedNodes>;

/// The run record's invariants, and that a terminal state is never left.
fn check_record(progress: &RunProgress, before: Option<RunState>) -> Result<(), String> {
    let run = &progress.run_id;
    if let Some(node) = progress
        .pending
        .iter()
        .find(|node| progress.status(node) != NodeStatus::Scheduled)
    {
        return Err(format!("run {run}: pending node '{node}' is not scheduled"));
    }
    if let Some(node) = progress
        .awaiting
        .keys()
        .find(|node| progress.status(node) != NodeStatus::Awaiting)
    {
        return Err(format!("run {run}: awaiting node '{node}' is not awaiting"));
    }
    match progress.state {
        RunState::Completed if !progress.pending.is_empty() || !progress.awaiting.is_empty() => {
            return Err(format!("run {run} completed with work left: {progress:?}"));
        }
        RunState::Awaiting if !progress.pending.is_empty() || progress.awaiting.is_empty() => {
            return Err(format!(
                "run {run} awaiting without only awaiting nodes: {progress:?}"
            ));
        }
        RunState::Failed if progress.errors.is_empty() => {
            return Err(format!("run {run} failed without an error"));
        }
        _ => {}
    }
    match before {
        Some(state) if state.is_terminal() && state != progress.state => Err(format!(
            "run {run} left terminal state {} for {}",
            state.as_str(),
            progress.state.as_str()
        )),
        _ => Ok(()),
    }
}

/// Handles every job until none is left (waiting for timers), checking each
/// touched run's record after each job.
async fn drain(
    engine: &TestEngine,
    receiver: &mut JobReceiver,
    states: &mut HashMap<String, RunState>,
) -> Result<(), String> {
    let mut handled = 0;
    loop {
        let job = match receiver.try_recv() {
            Ok(job) => job,
            Err(_) if engine.backend().pending_timers() > 0 => match receiver.recv().await {
                Some(job) => job,
                None => return Ok(()),
            },
            Err(_) => return Ok(()),
        };
        handled += 1;
        if handled > MAX_JOBS {
            return Err(format!("more than {MAX_JOBS} jobs: the run does not end"));
        }
        // An error here is a job refused for a reason (a stray node); the
        // property is that nothing panics and the records stay consistent.
        let _ = engine.handle_and_send(&job).await;
        let progress = engine
            .backend()
            .load_progress(&job.run_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("run {} has no record", job.run_id))?;
        check_record(&progress, states.get(&job.run_id).copied())?;
        states.insert(job.run_id.clone(), progress.state);
    }
}

fn accepted(value: &Value) -> Option<Plan> {
    let blueprint: Blueprint = serde_json::from_value(value.clone()).ok()?;
    let runner = GeneratedNodes;
    let implements = |uses: &str| runner.implements(uses);
    let knows = |id: &str| id == "self";
    let catalog = Catalog {
        implements: &implements,
        knows_blueprint: Some(&knows),
        evaluator: EvaluatorMode::Safe,
    };
    if !validate(&blueprint, &catalog).is_empty() {
        return None;
    }
    Plan::new(blueprint, EvaluatorMode::Safe).ok()
}

async fn run_case(
    blueprint: Value,
    context: Value,
    resume: (Option<String>, Option<String>, Option<Value>),
) -> Result<Ending, String> {
    let Some(plan) = accepted(&blueprint) else {
        return Ok("rejected");
    };
    let registry = PlanRegistry::new([plan]);
    let (backend, mut receiver) = MemoryBackend::new();
    let settings = EngineSettings {
        step_limit: 200,
        ..EngineSettings::default()
    };
    let engine = Engine::new(
        Arc::new(backend),
        Arc::new(GeneratedNodes),
        Arc::new(registry),
        settings,
    );
    let initial: ContextMap =
        flowcraft_core::context::context_from_value(context).unwrap_or_default();
    let run = match engine.start_run("self", Some("root".into()), initial).await {
        Ok(run) => run,
        // Initial keys that are the engine's own are refused by the store
        // or overwritten; either way nothing runs.
        Err(error) => return Err(format!("the run did not start: {error}")),
    };
    let mut states = HashMap::new();
    drain(&engine, &mut receiver, &mut states).await?;
    let report = engine.report(&run).await.map_err(|e| e.to_string())?;
    if report.state == RunState::Awaiting {
        let (node, action, output) = resume;
        // Applied or refused with an error; either way the run stays consistent.
        let _ = engine.resume(&run, node.as_deref(), action, output).await;
        drain(&engine, &mut receiver, &mut states).await?;
    }
    let report = engine.report(&run).await.map_err(|e| e.to_string())?;
    if report.state == RunState::Running {
        return Err(format!(
            "the run was left running: {:?}",
            engine.backend().snapshot().progress["root"]
        ));
    }
    Ok(report.state.as_str())
}

#[test]
fn validation_never_panics_and_accepted_runs_end_consistently() {
    // Paused time: retry delays and timers of any length pass at once, so
    // a run is bounded by its number of jobs, not by the clock.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let endings: RefCell<HashMap<Ending, usize>> = RefCell::default();
    let strategy = (
        generate::blueprint(),
        generate::json_value(),
        generate::resume_command(),
    );
    let outcome =
        generate::runner("blueprints", 200).run(&strategy, |(blueprint, context, resume)| {
            let text = blueprint.to_string();
            let ending = runtime
                .block_on(run_case(blueprint, context, resume))
                .map_err(|problem| TestCaseError::fail(format!("{problem}\nblueprint: {text}")))?;
            *endings.borrow_mut().entry(ending).or_default() += 1;
            Ok(())
        });
    generate::report(&format!(
        "generative blueprints: endings {:?}",
        endings.borrow()
    ));
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// Blueprints the generators found that once broke a property, kept as
/// fixed cases: each must be rejected or end consistently.
#[tokio::test(start_paused = true)]
async fn regressions_found_by_the_generators() {
    let cases = [
        // Two subflow nodes that each run the blueprint again: 2^depth runs
        // until the run tree's budget of child runs stopped it.
        r#"{"id":"self","nodes":[{"id":"n0","uses":"subflow","params":{"blueprintId":"self"}},
            {"id":"n1","uses":"fail","config":{"fallback":"n3"}},
            {"id":"n3","uses":"subflow","params":{"blueprintId":"self"}}],"edges":[]}"#,
        // A node that is its own fallback: the handover was dropped as a
        // late attempt and the run stayed running.
        r#"{"id":"self","nodes":[{"id":"n0","uses":"fail","config":{"maxRetries":3,"fallback":"n0"}}]}"#,
        // A valid retry delay of 1 000 s: the run ends (with the clock paused).
        r#"{"id":"self","nodes":[{"id":"n0","uses":"flaky","config":{"maxRetries":3,"retryDelay":1000000}}]}"#,
        // A loop whose controller re-arms a body node that is still
        // scheduled (a self-looping node behind the `continue` edge): the
        // node stayed pending while waiting, and the run could never end.
        r#"{"id":"self","nodes":[{"id":"n0","uses":"const","config":{"fallback":"n1","joinStrategy":"any"}},
            {"id":"n1","uses":"subflow","params":{"blueprintId":"self"},"config":{"fallback":"n3"},"inputs":"k"},
            {"id":"n2","uses":"loop-controller","params":{"condition":"('a') ?? (input)"}},
            {"id":"n3","uses":"echo","params":{"action":"b"},"inputs":"n0"},
            {"id":"n4","uses":"spawn","params":{"nodes":[]}}],
          "edges":[{"source":"n4","target":"n4","action":"a"},{"source":"n2","target":"n0"},{"source":"n4","target":"n3"},
            {"source":"n2","target":"n2"},{"source":"n0","target":"n2"},
            {"source":"n2","target":"n4","action":"continue"},{"source":"n1","target":"n3","action":"break"},
            {"source":"n0","target":"n1","action":"a"},{"source":"n1","target":"n2","condition":"(result.output) ? (-1) : (null)"}]}"#,
        // A failing start node whose fallback is a `wait` node already
        // awaiting: the fallback was scheduled while it still awaited.
        r#"{"id":"self","nodes":[{"id":"n0","uses":"wait"},{"id":"n1","uses":"fail","config":{"maxRetries":3,"fallback":"n0"}}],
          "edges":[{"source":"n0","target":"n0","action":"a"},{"source":"n1","target":"n1","action":"b"},{"source":"n0","target":"n1"}]}"#,
        // Two nodes that are each other's fallback.
        r#"{"id":"self","nodes":[{"id":"n0","uses":"fail","config":{"fallback":"n1"}},
            {"id":"n1","uses":"fail","config":{"fallback":"n0"}}],"edges":[{"source":"n0","target":"n1"}]}"#,
    ];
    for case in cases {
        let blueprint: Value = serde_json::from_str(case).unwrap();
        let ending = run_case(blueprint, Value::Null, (None, None, None)).await;
        assert!(ending.is_ok(), "{case}: {ending:?}");
    }
}
