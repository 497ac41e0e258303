//! Generated blueprints run on the embedded stores and on the Azure stores
//! (the real local services: `scripts/azure-local.sh`) end identically: the
//! same state and the same final context. The blueprints are trees
//! (`flowcraft_core::generate::tree_blueprint`), whose results do not depend
//! on the order jobs run in.
//!
//! Runs `FLOWCRAFT_GENERATIVE_CASES` cases (default 12) from a printed seed
//! (`FLOWCRAFT_GENERATIVE_SEED` repeats a run).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_azure::backend::AzureBackend;
use flowcraft_azure::wire;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::ContextMap;
use flowcraft_core::engine::{Engine, EngineSettings, RunReport};
use flowcraft_core::generate::{self, GeneratedNodes};
use flowcraft_core::memory::{self, MemoryBackend, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::store::StatusStore;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use support::azure::azure_config;

fn registry(blueprint: &Value) -> Arc<PlanRegistry> {
    let blueprint: Blueprint = serde_json::from_value(blueprint.clone()).expect("a blueprint");
    let plan = Plan::new(blueprint, Default::default()).expect("a plan");
    Arc::new(PlanRegistry::new([plan]))
}

async fn run_embedded(blueprint: &Value) -> RunReport {
    let (backend, mut receiver) = MemoryBackend::new();
    let engine = Engine::new(
        Arc::new(backend),
        Arc::new(GeneratedNodes),
        registry(blueprint),
        EngineSettings::default(),
    );
    let run = engine
        .start_run("tree", None, ContextMap::new())
        .await
        .unwrap();
    memory::drive(&engine, &mut receiver, &run, 1, TimerPolicy::Wait)
        .await
        .unwrap()
}

/// Runs `blueprint` on the Azure stores, handling its jobs from the real
/// queue one at a time in this process.
async fn run_on_azure(backend: Arc<AzureBackend>, blueprint: &Value, run_id: String) -> RunReport {
    let engine = Engine::new(
        backend,
        Arc::new(GeneratedNodes),
        registry(blueprint),
        EngineSettings::default(),
    );
    engine
        .start_run("tree", Some(run_id.clone()), ContextMap::new())
        .await
        .unwrap();
    let queue = engine.backend().queue();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = engine.backend().read_status(&run_id).await.unwrap();
        if status.is_some_and(|status| status.status.is_terminal()) {
            break;
        }
        assert!(Instant::now() < deadline, "run {run_id} did not end");
        for message in queue.receive(1, Duration::from_secs(30)).await.unwrap() {
            for job in wire::decode_group(&message.text).unwrap().jobs {
                engine.handle_and_send(&job).await.expect("stores answer");
            }
            queue.delete(&message).await.unwrap();
        }
    }
    engine.report(&run_id).await.unwrap()
}

fn context_json(report: &RunReport) -> Value {
    serde_json::to_value(&report.context).unwrap()
}

#[test]
fn generated_runs_end_alike_in_embedded_mode_and_on_azure() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = azure_config("generative");
    let backend = Arc::new(
        runtime
            .block_on(AzureBackend::connect(&config))
            .expect("local services reachable (scripts/azure-local.sh start)"),
    );
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let cases = std::sync::atomic::AtomicUsize::new(0);
    let outcome =
        generate::runner("embedded vs Azure", 12).run(&generate::tree_blueprint(), |blueprint| {
            let case = cases.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let run_id = format!("tree-{unique}-{case}");
            let (embedded, azure) = runtime.block_on(async {
                let embedded = run_embedded(&blueprint).await;
                let azure = run_on_azure(backend.clone(), &blueprint, run_id).await;
                (embedded, azure)
            });
            let differs =
                embedded.state != azure.state || context_json(&embedded) != context_json(&azure);
            if differs {
                return Err(TestCaseError::fail(format!(
                    "blueprint {blueprint}\nembedded: {} {}\nazure: {} {}",
                    embedded.state.as_str(),
                    context_json(&embedded),
                    azure.state.as_str(),
                    context_json(&azure)
                )));
            }
            Ok(())
        });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
