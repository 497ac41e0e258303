//! The conformance suite on Azure: every case of `conformance/cases/` marked
//! `both` or `DA`, started through the engine on the real local services
//! (Azurite, the Cosmos stand-in, redis-server; `scripts/azure-local.sh`) and
//! executed by two `flowcraft-host` worker processes sharing one queue.

mod support;

use std::sync::Arc;

use flowcraft_azure::backend::AzureBackend;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::runner::NodeRunner;
use flowcraft_plugins::{PluginConfig, PluginHost};

use support::Case;
use support::azure::{Workers, azure_config};
use support::queued::QueuedRuns;

/// Writes every blueprint of the DA cases into one directory for the workers.
fn blueprint_dir(cases: &[Case]) -> (tempfile::TempDir, Vec<Blueprint>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let blueprints = support::distinct_blueprints(cases);
    for blueprint in &blueprints {
        let path = dir.path().join(format!("{}.json", blueprint.id));
        std::fs::write(path, serde_json::to_string(blueprint).unwrap()).unwrap();
    }
    (dir, blueprints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_passes_on_the_azure_stores() {
    let cases: Vec<Case> = support::load_cases()
        .into_iter()
        .filter(|c| c.applies_to("DA"))
        .collect();
    let (dir, blueprints) = blueprint_dir(&cases);
    let config = azure_config("conformance");
    let backend = AzureBackend::connect(&config)
        .await
        .expect("local services reachable");
    let workers = Workers::spawn(2, &config, dir.path());
    let mut plugin_config = PluginConfig::new(support::dist());
    plugin_config.cache_dir = Some(std::env::temp_dir().join("flowcraft-conformance-cache"));
    let host = PluginHost::load(plugin_config).await.expect("bundles load");
    let registry = PlanRegistry::new(
        blueprints
            .into_iter()
            .map(|blueprint| Plan::new(blueprint, Default::default()).expect("plan")),
    );
    let engine = Arc::new(Engine::new(
        Arc::new(backend),
        Arc::new(host.clone()),
        Arc::new(registry),
        EngineSettings::default(),
    ));
    let driver = QueuedRuns {
        engine,
        check_workers: Box::new(move || workers.assert_running()),
        tag: std::process::id().to_string(),
    };
    support::run_all("DA", &driver, &|uses| host.implements(uses)).await;
}
