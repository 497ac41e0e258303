//! The conformance suite: every case file in `conformance/cases/` run through
//! the engine in embedded mode with the real `conformance` WebAssembly bundle
//! (`plugins-example/dist/conformance.wasm`, built by `scripts/build-plugins.sh`).
//!
//! A case file holds a blueprint (plus subflow blueprints), an initial
//! context, the expected status, context entries, absent keys and errors, and
//! optional resume steps with their own expectations. A failure names the case
//! and every differing key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::ContextMap;
use flowcraft_core::engine::{Engine, EngineSettings, RunReport};
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::memory::{self, JobReceiver, MemoryBackend, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::DEFAULT_STEP_LIMIT;
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::validate::{Catalog, validate};
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde::Deserialize;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    id: String,
    name: String,
    applies: String,
    #[serde(default)]
    evaluator: Option<EvaluatorMode>,
    #[serde(default)]
    step_limit: Option<u64>,
    #[serde(default)]
    timers: Option<String>,
    blueprint: Blueprint,
    #[serde(default)]
    blueprints: Vec<Blueprint>,
    #[serde(default)]
    context: ContextMap,
    expect: Expectation,
    #[serde(default)]
    then: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    resume: Resume,
    #[serde(default)]
    expect: Option<Expectation>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Resume {
    node: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    output: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Expectation {
    #[serde(default)]
    status: Option<String>,
    /// Exact values of these keys.
    #[serde(default)]
    context: ContextMap,
    /// Objects that must contain at least these members.
    #[serde(default)]
    partial: ContextMap,
    /// Keys whose value must be one of the listed values.
    #[serde(default)]
    one_of: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    absent: Vec<String>,
    /// Expected errors; `[]` means none.
    #[serde(default)]
    errors: Option<Vec<ExpectedError>>,
    /// Regex → number of context keys matching it.
    #[serde(default)]
    key_patterns: BTreeMap<String, usize>,
    /// The blueprint must be rejected with a problem containing this text.
    #[serde(default)]
    invalid: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpectedError {
    #[serde(default)]
    node_id: Option<String>,
    contains: String,
}

fn load_cases() -> Vec<Case> {
    let dir = repo_root().join("conformance/cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("readable case");
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

async fn plugin_host() -> PluginHost {
    let dist = repo_root().join("plugins-example/dist");
    assert!(
        dist.join("conformance.wasm").exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        dist.join("conformance.wasm").display()
    );
    let cache = std::env::temp_dir().join("flowcraft-conformance-cache");
    let mut config = PluginConfig::new(&dist);
    config.cache_dir = Some(cache);
    PluginHost::load(config)
        .await
        .expect("conformance bundles load")
}

/// Runs one case; returns the differences found.
async fn run_case(case: &Case, host: &Arc<PluginHost>) -> Vec<String> {
    let evaluator = case.evaluator.unwrap_or_default();
    let mut blueprints = vec![case.blueprint.clone()];
    blueprints.extend(case.blueprints.iter().cloned());
    let implements = |uses: &str| host.implements(uses);
    let catalog = Catalog {
        implements: &implements,
        knows_blueprint: None,
        evaluator,
    };
    let problems: Vec<String> = blueprints
        .iter()
        .flat_map(|b| validate(b, &catalog))
        .map(|p| p.to_string())
        .collect();
    if let Some(expected) = &case.expect.invalid {
        return if problems.iter().any(|p| p.contains(expected)) {
            Vec::new()
        } else {
            vec![format!(
                "expected a validation problem containing {expected:?}, got {problems:?}"
            )]
        };
    }
    if !problems.is_empty() {
        return vec![format!("blueprint rejected: {problems:?}")];
    }
    let registry = PlanRegistry::new();
    for blueprint in blueprints {
        registry.insert(Plan::new(blueprint, evaluator).expect("plan"));
    }
    let settings = EngineSettings {
        evaluator,
        step_limit: case.step_limit.unwrap_or(DEFAULT_STEP_LIMIT),
        ..EngineSettings::default()
    };
    let (backend, mut receiver) = MemoryBackend::new();
    let engine = Engine::new(
        Arc::new(backend),
        host.clone(),
        Arc::new(registry),
        settings,
    );
    let timers = match case.timers.as_deref() {
        Some("stop") => TimerPolicy::Stop,
        _ => TimerPolicy::Wait,
    };
    let run_id = engine
        .start_run(&case.blueprint.id, Some("r1".into()), case.context.clone())
        .await
        .expect("run starts");
    let mut differences = Vec::new();
    let report = drive(&engine, &mut receiver, &run_id, timers).await;
    check("run", &case.expect, &report, &mut differences);
    for (index, step) in case.then.iter().enumerate() {
        let phase = format!("resume #{}", index + 1);
        let resumed = engine
            .resume(
                &run_id,
                step.resume.node.as_deref(),
                step.resume.action.clone(),
                step.resume.output.clone(),
            )
            .await;
        match (&step.error, resumed) {
            (Some(expected), Err(error)) if error.to_string() == *expected => continue,
            (Some(expected), outcome) => {
                differences.push(format!(
                    "{phase}: expected error {expected:?}, got {outcome:?}"
                ));
                continue;
            }
            (None, Err(error)) => {
                differences.push(format!("{phase}: resume failed: {error}"));
                continue;
            }
            (None, Ok(())) => {}
        }
        let report = drive(&engine, &mut receiver, &run_id, timers).await;
        if let Some(expect) = &step.expect {
            check(&phase, expect, &report, &mut differences);
        }
    }
    differences
}

async fn drive(
    engine: &Engine<MemoryBackend, PluginHost>,
    receiver: &mut JobReceiver,
    run_id: &str,
    timers: TimerPolicy,
) -> RunReport {
    memory::drive(engine, receiver, run_id, 8, timers)
        .await
        .expect("in-memory stores do not fail")
}

fn check(phase: &str, expect: &Expectation, report: &RunReport, out: &mut Vec<String>) {
    let context = &report.context;
    if let Some(status) = &expect.status
        && report.state.as_str() != status
    {
        out.push(format!(
            "{phase}: status {} (expected {status}); errors {:?}",
            report.state.as_str(),
            report.errors
        ));
    }
    for (key, expected) in &expect.context {
        match context.get(key) {
            Some(actual) if actual == expected => {}
            actual => out.push(format!("{phase}: {key} = {actual:?} (expected {expected})")),
        }
    }
    for (key, expected) in &expect.partial {
        match context.get(key) {
            Some(actual) if contains(actual, expected) => {}
            actual => out.push(format!(
                "{phase}: {key} = {actual:?} (expected to contain {expected})"
            )),
        }
    }
    for (key, allowed) in &expect.one_of {
        match context.get(key) {
            Some(actual) if allowed.contains(actual) => {}
            actual => out.push(format!(
                "{phase}: {key} = {actual:?} (expected one of {allowed:?})"
            )),
        }
    }
    for key in &expect.absent {
        if let Some(actual) = context.get(key) {
            out.push(format!("{phase}: {key} = {actual} (expected absent)"));
        }
    }
    if let Some(errors) = &expect.errors {
        if errors.is_empty() && !report.errors.is_empty() {
            out.push(format!("{phase}: unexpected errors {:?}", report.errors));
        }
        for expected in errors {
            let found = report.errors.iter().any(|error| {
                error.message.contains(&expected.contains)
                    && expected
                        .node_id
                        .as_ref()
                        .is_none_or(|id| *id == error.node_id)
            });
            if !found {
                out.push(format!(
                    "{phase}: no error {:?} on node {:?}; errors {:?}",
                    expected.contains, expected.node_id, report.errors
                ));
            }
        }
    }
    for (pattern, count) in &expect.key_patterns {
        let regex = regex::Regex::new(pattern).expect("valid pattern");
        let matching = context.keys().filter(|k| regex.is_match(k)).count();
        if matching != *count {
            out.push(format!(
                "{phase}: {matching} keys match {pattern} (expected {count})"
            ));
        }
    }
}

/// Whether `actual` contains `expected` (objects: member-wise subset).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(key, value)| actual.get(key).is_some_and(|a| contains(a, value))),
        _ => actual == expected,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_passes_in_embedded_mode() {
    let host = Arc::new(plugin_host().await);
    let cases = load_cases();
    assert!(
        cases.len() >= 40,
        "expected the whole catalogue, found {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in cases
        .iter()
        .filter(|c| c.applies == "both" || c.applies == "IM")
    {
        let differences = run_case(case, &host).await;
        if !differences.is_empty() {
            failures.push(format!(
                "{} {}:\n    {}",
                case.id,
                case.name,
                differences.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
