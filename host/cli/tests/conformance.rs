//! The conformance suite in embedded mode: every case of `conformance/cases/`
//! marked `both` or `IM`, run by the engine over the in-memory stores with
//! the real `conformance` WebAssembly bundle, and again with its TypeScript
//! port `conformance-ts` (built with the `flowcraft-node` SDK).

mod support;

use std::sync::Arc;

use flowcraft_core::engine::{Engine, EngineSettings, RunReport};
use flowcraft_core::memory::{self, JobReceiver, MemoryBackend, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::runner::NodeRunner;
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde_json::Value;
use tokio::sync::Mutex;

use support::{Case, Driver};

/// One engine and in-memory backend per case.
struct Embedded {
    host: Arc<PluginHost>,
    current: Mutex<Option<(Engine<MemoryBackend, PluginHost>, JobReceiver)>>,
}

impl Driver for Embedded {
    async fn start(&self, case: &Case) -> String {
        let registry = PlanRegistry::new(
            case.blueprints()
                .into_iter()
                .map(|blueprint| Plan::new(blueprint, Default::default()).expect("plan")),
        );
        let (backend, receiver) = MemoryBackend::new();
        let engine = Engine::new(
            Arc::new(backend),
            self.host.clone(),
            Arc::new(registry),
            EngineSettings::default(),
        );
        let run_id = engine
            .start_run(&case.blueprint.id, Some("r1".into()), case.context.clone())
            .await
            .expect("run starts");
        *self.current.lock().await = Some((engine, receiver));
        run_id
    }

    async fn settle(&self, run_id: &str, stop_at_timers: bool) -> RunReport {
        let mut current = self.current.lock().await;
        let (engine, receiver) = current.as_mut().expect("a started run");
        let timers = if stop_at_timers {
            TimerPolicy::Stop
        } else {
            TimerPolicy::Wait
        };
        memory::drive(engine, receiver, run_id, 8, timers)
            .await
            .expect("in-memory stores do not fail")
    }

    async fn resume(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> Result<(), String> {
        let current = self.current.lock().await;
        let (engine, _) = current.as_ref().expect("a started run");
        engine
            .resume(run_id, node, action, output)
            .await
            .map_err(|e| e.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_passes_in_embedded_mode() {
    run_catalogue(support::dist()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_passes_with_the_typescript_bundle() {
    run_catalogue(support::dist_ts()).await;
}

/// Runs the catalogue with the bundles of `plugins`.
async fn run_catalogue(plugins: std::path::PathBuf) {
    let mut config = PluginConfig::new(plugins);
    config.cache_dir = Some(std::env::temp_dir().join("flowcraft-conformance-cache"));
    let host = Arc::new(
        PluginHost::load(config)
            .await
            .expect("conformance bundles load"),
    );
    let driver = Embedded {
        host: host.clone(),
        current: Mutex::new(None),
    };
    support::run_all("IM", &driver, &|uses| host.implements(uses)).await;
}
