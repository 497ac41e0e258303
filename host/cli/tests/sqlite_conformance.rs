//! The conformance suite on the local durable backend: every case of
//! `conformance/cases/` marked `both` or `DA`, started through the engine and
//! executed by a worker in this process (`flowcraft_worker::run`, as `serve`
//! runs it without Azure) over a SQLite database in a temporary directory.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::runner::NodeRunner;
use flowcraft_plugins::{PluginConfig, PluginHost};
use flowcraft_sqlite::SqliteBackend;
use flowcraft_worker::WorkerSettings;

use support::Case;
use support::queued::QueuedRuns;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_passes_on_the_sqlite_backend() {
    let cases: Vec<Case> = support::load_cases()
        .into_iter()
        .filter(|c| c.applies_to("DA"))
        .collect();
    let data = tempfile::tempdir().expect("temp dir");
    let backend = SqliteBackend::open(data.path()).expect("database opens");
    let mut plugin_config = PluginConfig::new(support::dist());
    plugin_config.cache_dir = Some(std::env::temp_dir().join("flowcraft-conformance-cache"));
    let host = PluginHost::load(plugin_config).await.expect("bundles load");
    let registry = PlanRegistry::new(
        support::distinct_blueprints(&cases)
            .into_iter()
            .map(|blueprint| Plan::new(blueprint, Default::default()).expect("plan")),
    );
    let engine = Arc::new(Engine::new(
        Arc::new(backend),
        Arc::new(host.clone()),
        Arc::new(registry),
        EngineSettings::default(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker_ended = Arc::new(AtomicBool::new(false));
    let worker = {
        let engine = engine.clone();
        let ended = worker_ended.clone();
        let settings = WorkerSettings {
            concurrency: 8,
            ..WorkerSettings::default()
        };
        tokio::spawn(async move {
            flowcraft_worker::run(engine, settings, async {
                let _ = stopped.await;
            })
            .await;
            ended.store(true, Ordering::SeqCst);
        })
    };
    let driver = QueuedRuns {
        engine,
        check_workers: Box::new(move || {
            assert!(!worker_ended.load(Ordering::SeqCst), "the worker stopped");
        }),
        tag: std::process::id().to_string(),
    };
    support::run_all("DA", &driver, &|uses| host.implements(uses)).await;
    let _ = stop.send(());
    worker.await.expect("the worker shuts down");
}
