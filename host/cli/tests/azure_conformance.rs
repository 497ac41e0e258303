//! The conformance suite on Azure: every case of `conformance/cases/` marked
//! `both` or `DA`, started through the engine on the real local services
//! (Azurite, the Cosmos stand-in, redis-server; `scripts/azure-local.sh`) and
//! executed by two `flowcraft-host` worker processes sharing one queue.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_azure::backend::{AzureBackend, AzureConfig};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::engine::{Engine, EngineSettings, RunReport};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::{AwaitReason, RunState};
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::store::CoordinationStore;
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::Value;

use support::{Case, Driver};

/// The local services' settings, with a queue and database of this test's own.
fn azure_config(tag: &str) -> AzureConfig {
    let variable = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: start the local services: scripts/azure-local.sh start; eval \"$(scripts/azure-local.sh env)\"")
        })
    };
    AzureConfig {
        storage_connection_string: variable("AZURE_STORAGE_CONNECTION_STRING"),
        cosmos_connection_string: variable("COSMOS_DB_CONNECTION_STRING"),
        redis_url: variable("REDIS_URL"),
        queue: format!("{tag}-{}", std::process::id()),
        database: format!("flowcraft-{tag}-{}", std::process::id()),
        context_container: "workflow-contexts".into(),
        status_container: "workflow-statuses".into(),
        create_resources: true,
    }
}

/// Worker processes, killed when dropped.
struct Workers(std::sync::Mutex<Vec<Child>>);

impl Workers {
    /// Panics if a worker has exited (its stderr is in the test output).
    fn assert_running(&self) {
        for child in self.0.lock().unwrap().iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("a worker exited with {status}");
            }
        }
    }

    fn spawn(count: usize, config: &AzureConfig, blueprints: &std::path::Path) -> Self {
        let children = (0..count)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
                    .args(["--plugins", support::dist().to_str().unwrap()])
                    .args(["--blueprints", blueprints.to_str().unwrap()])
                    .args(["--create-resources", "--concurrency", "8"])
                    .env("FLOWCRAFT_QUEUE", &config.queue)
                    .env("FLOWCRAFT_DATABASE", &config.database)
                    .env("FLOWCRAFT_LOG", "warn")
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("a worker starts")
            })
            .collect();
        Self(std::sync::Mutex::new(children))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in self.0.get_mut().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Distributed {
    engine: Engine<AzureBackend, PluginHost>,
    workers: Workers,
    tag: String,
}

impl Distributed {
    async fn timers_pending(&self, run_id: &str) -> bool {
        self.engine
            .backend()
            .read_progress(run_id, |p| {
                p.awaiting
                    .values()
                    .any(|reason| matches!(reason, AwaitReason::Timer { .. }))
            })
            .await
            .expect("redis answers")
            .unwrap_or(false)
    }
}

impl Driver for Distributed {
    async fn start(&self, case: &Case) -> String {
        let run_id = format!("{}-{}", case.id, self.tag);
        self.engine
            .start_run(&case.blueprint.id, Some(run_id), case.context.clone())
            .await
            .expect("run starts")
    }

    async fn settle(&self, run_id: &str, stop_at_timers: bool) -> RunReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.workers.assert_running();
            let report = self.engine.report(run_id).await.expect("stores answer");
            let settled = report.state.is_terminal()
                || (report.state == RunState::Awaiting
                    && (stop_at_timers || !self.timers_pending(run_id).await));
            if settled || Instant::now() > deadline {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn resume(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> Result<(), String> {
        self.engine
            .resume(run_id, node, action, output)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Writes every blueprint of the DA cases into one directory for the workers.
fn blueprint_dir(cases: &[support::Case]) -> (tempfile::TempDir, Vec<Blueprint>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all: BTreeMap<String, Blueprint> = BTreeMap::new();
    for case in cases.iter().filter(|c| !c.expects_rejection()) {
        for blueprint in case.blueprints() {
            if let Some(existing) = all.get(&blueprint.id) {
                assert_eq!(
                    existing, &blueprint,
                    "two cases define blueprint '{}' differently",
                    blueprint.id
                );
            }
            all.insert(blueprint.id.clone(), blueprint);
        }
    }
    for (id, blueprint) in &all {
        let path = dir.path().join(format!("{id}.json"));
        std::fs::write(path, serde_json::to_string(blueprint).unwrap()).unwrap();
    }
    (dir, all.into_values().collect())
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
    let registry = PlanRegistry::new();
    for blueprint in blueprints {
        registry.insert(Plan::new(blueprint, Default::default()).expect("plan"));
    }
    let engine = Engine::new(
        Arc::new(backend),
        Arc::new(host.clone()),
        Arc::new(registry),
        EngineSettings::default(),
    );
    let driver = Distributed {
        engine,
        workers,
        tag: std::process::id().to_string(),
    };
    support::run_all("DA", &driver, &|uses| host.implements(uses)).await;
}
