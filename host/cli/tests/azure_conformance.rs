//! The conformance suite on Azure: every case of `conformance/cases/` marked
//! `both` or `DA`, started through the engine on the real local services
//! (Azurite, the Cosmos stand-in, redis-server; `scripts/azure-local.sh`) and
//! executed by two `flowcraft-host` worker processes sharing one queue.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_azure::backend::AzureBackend;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::engine::{Engine, EngineSettings, RunReport};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::{AwaitReason, RunState};
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::store::CoordinationStore;
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::Value;

use support::azure::{Workers, azure_config};
use support::{Case, Driver};

struct Distributed {
    engine: Engine<AzureBackend, PluginHost>,
    workers: Workers,
    tag: String,
}

impl Distributed {
    /// Whether an awaiting run still has work under way: a pending timer,
    /// or a subflow child that is no longer awaiting (a resumed child runs
    /// and ends, then its parent collects it).
    /// Whether an awaiting run still moves by itself: it no longer awaits
    /// (it moved on since the caller looked), a timer is pending, or a child
    /// run still works.
    async fn busy(&self, run_id: &str) -> bool {
        let (state, awaiting) = self
            .engine
            .backend()
            .read_progress(run_id, |p| {
                (p.state, p.awaiting.values().cloned().collect::<Vec<_>>())
            })
            .await
            .expect("redis answers")
            .unwrap_or((RunState::Awaiting, Vec::new()));
        if state != RunState::Awaiting {
            return true;
        }
        for reason in awaiting {
            match reason {
                AwaitReason::Timer { .. } => return true,
                AwaitReason::Subflow { child_run_id } => {
                    let child = self
                        .engine
                        .report(&child_run_id)
                        .await
                        .expect("stores answer");
                    if child.state != RunState::Awaiting || Box::pin(self.busy(&child_run_id)).await
                    {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
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
            if report.state.is_terminal()
                || (report.state == RunState::Awaiting && stop_at_timers)
                || Instant::now() > deadline
            {
                return report;
            }
            // An awaiting run may be about to move on (a zero-length timer
            // fires at once): it has settled only if it still awaits, with
            // nothing pending, after the report was taken; the report taken
            // after that check is the one to look at.
            if report.state == RunState::Awaiting && !self.busy(run_id).await {
                let settled = self.engine.report(run_id).await.expect("stores answer");
                if settled.state == RunState::Awaiting {
                    return settled;
                }
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
    let registry = PlanRegistry::new(
        blueprints
            .into_iter()
            .map(|blueprint| Plan::new(blueprint, Default::default()).expect("plan")),
    );
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
