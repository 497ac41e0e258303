//! What the conformance suites share: the case files of `conformance/cases/`,
//! running one case through any [`Driver`] (embedded, or by workers off a
//! queue on Azure or SQLite), and checking
//! a run's report against a case's expectations. A failure names every
//! differing key.

#![allow(dead_code)] // each test binary uses the part it needs

pub mod azure;
pub mod queued;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::{ContextMap, context_to_object};
use flowcraft_core::engine::RunReport;
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::validate::{Catalog, validate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process, killed when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port()
}

/// Polls `probe` until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The example bundles, built by `scripts/build-plugins.sh`.
pub fn dist() -> PathBuf {
    built_bundles("plugins-example/dist", "conformance.wasm")
}

/// The TypeScript example bundles (`conformance-ts`, `orders-ts`), built by
/// `scripts/build-plugins.sh`.
pub fn dist_ts() -> PathBuf {
    built_bundles("plugins-example/dist/ts", "conformance-ts.wasm")
}

/// `directory` of the repository, checked to hold `bundle`.
fn built_bundles(directory: &str, bundle: &str) -> PathBuf {
    let dist = repo_root().join(directory);
    assert!(
        dist.join(bundle).exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        dist.join(bundle).display()
    );
    dist
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub id: String,
    pub name: String,
    pub applies: String,
    #[serde(default)]
    evaluator: Option<EvaluatorMode>,
    #[serde(default)]
    step_limit: Option<u64>,
    #[serde(default)]
    timers: Option<String>,
    pub blueprint: Blueprint,
    #[serde(default)]
    pub blueprints: Vec<Blueprint>,
    #[serde(default)]
    pub context: ContextMap,
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
    context: Map<String, Value>,
    /// Objects that must contain at least these members.
    #[serde(default)]
    partial: Map<String, Value>,
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

impl Case {
    /// Whether the case applies to a mode (`IM` embedded, `DA` distributed).
    pub fn applies_to(&self, mode: &str) -> bool {
        self.applies == "both" || self.applies == mode
    }

    /// The case's blueprints, with its evaluator and step limit written into
    /// their metadata (so any worker runs them the same way).
    pub fn blueprints(&self) -> Vec<Blueprint> {
        let mut all = vec![self.blueprint.clone()];
        all.extend(self.blueprints.iter().cloned());
        for blueprint in &mut all {
            let metadata = blueprint.metadata.get_or_insert_with(Default::default);
            if let Some(evaluator) = self.evaluator {
                metadata.insert("evaluator".into(), json!(evaluator.as_str()));
            }
            if let Some(limit) = self.step_limit {
                metadata.insert("stepLimit".into(), json!(limit));
            }
        }
        all
    }

    /// Whether the case expects its blueprint to be rejected.
    pub fn expects_rejection(&self) -> bool {
        self.expect.invalid.is_some()
    }

    /// Stop at a sleeping node instead of waiting for its timer.
    pub fn stops_at_timers(&self) -> bool {
        self.timers.as_deref() == Some("stop")
    }
}

pub fn load_cases() -> Vec<Case> {
    let dir = repo_root().join("conformance/cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let cases: Vec<Case> = paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("readable case");
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect();
    assert!(
        cases.len() >= 40,
        "expected the whole catalogue, found {} cases",
        cases.len()
    );
    cases
}

/// How a suite executes a case's run.
pub trait Driver {
    /// Starts the case's run; returns its id.
    fn start(&self, case: &Case) -> impl Future<Output = String>;
    /// Waits until the run is over, or awaiting (immediately when
    /// `stop_at_timers`, else once no timer is pending), and reports it.
    fn settle(&self, run_id: &str, stop_at_timers: bool) -> impl Future<Output = RunReport>;
    /// Resumes a node; `Err` carries the engine's message.
    fn resume(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> impl Future<Output = Result<(), String>>;
}

/// Every blueprint the cases define (outside those that expect a
/// rejection), each once; panics if two cases define one id differently.
pub fn distinct_blueprints(cases: &[Case]) -> Vec<Blueprint> {
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
    all.into_values().collect()
}

/// Runs one case; returns the differences found.
pub async fn run_case<D: Driver>(
    case: &Case,
    driver: &D,
    implements: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let catalog = Catalog {
        implements,
        knows_blueprint: None,
        evaluator: EvaluatorMode::Safe,
    };
    let problems: Vec<String> = case
        .blueprints()
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
    let run_id = driver.start(case).await;
    let mut differences = Vec::new();
    let report = driver.settle(&run_id, case.stops_at_timers()).await;
    check("run", &case.expect, &report, &mut differences);
    for (index, step) in case.then.iter().enumerate() {
        let phase = format!("resume #{}", index + 1);
        let resumed = driver
            .resume(
                &run_id,
                step.resume.node.as_deref(),
                step.resume.action.clone(),
                step.resume.output.clone(),
            )
            .await;
        match (&step.error, resumed) {
            // Upstream's message first; guidance may follow it.
            (Some(expected), Err(error)) if error.starts_with(expected.as_str()) => continue,
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
        let report = driver.settle(&run_id, case.stops_at_timers()).await;
        if let Some(expect) = &step.expect {
            check(&phase, expect, &report, &mut differences);
        }
    }
    differences
}

/// Runs every case of `mode` and fails listing each failing case.
pub async fn run_all<D: Driver>(mode: &str, driver: &D, implements: &dyn Fn(&str) -> bool) {
    let mut failures = Vec::new();
    for case in load_cases().iter().filter(|c| c.applies_to(mode)) {
        let started = std::time::Instant::now();
        let differences = run_case(case, driver, implements).await;
        eprintln!(
            "{mode} {} {:?}: {}",
            case.id,
            started.elapsed(),
            if differences.is_empty() {
                "ok"
            } else {
                "FAILED"
            }
        );
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

fn check(phase: &str, expect: &Expectation, report: &RunReport, out: &mut Vec<String>) {
    let context = &context_to_object(&report.context);
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

/// `line` without ANSI escape sequences (worker logs read by the tests).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
