//! Scenario 5, hostile and broken bundles inside real runs: an endless loop,
//! a memory bomb, a panic, output that is not JSON, output over the limit,
//! each with and without a fallback; and a bundle file replaced by garbage
//! while a run that needs it is under way. Retryable failures are retried
//! and then fall back; fatal ones fail the run at once; every failure names
//! its cause; the worker keeps serving ordinary runs throughout.

use std::path::Path;
use std::time::Duration;

use flowcraft_core::context::ContextMap;
use serde_json::{Map, Value, json};

use crate::SERIAL;
use crate::harness::{Fleet, Reference, Row, Stand, differences, hostile_plugin_dir, unique};

/// Hostile node types: (uses, params, extra config, retryable, the cause the
/// failure must name).
const HOSTILE: &[(&str, &str, &str, bool, &str)] = &[
    (
        "spin",
        "{}",
        r#"{"timeout": 1000}"#,
        true,
        "time limit of 1000 ms exceeded",
    ),
    ("hog", "{}", "{}", true, "memory limit"),
    ("panic", "{}", "{}", true, "the node panicked"),
    ("bad-output", "{}", "{}", false, "not valid JSON"),
    (
        "big-output",
        r#"{"bytes": 2000000}"#,
        "{}",
        false,
        "more than the limit",
    ),
    // Issue 14's attacks on the host API that the plugin runtime refuses.
    (
        "forge",
        r#"{"key": "_outputs.after"}"#,
        "{}",
        false,
        "context key '_outputs.after'",
    ),
    (
        "deep-write",
        "{}",
        "{}",
        false,
        "nesting depth of the value 200",
    ),
    (
        "big-writes",
        r#"{"count": 10, "bytes": 200000}"#,
        "{}",
        false,
        "bytes per node call",
    ),
    (
        "huge-action",
        r#"{"bytes": 2000000}"#,
        "{}",
        false,
        "(output, action and dynamic nodes)",
    ),
    (
        "spawn-flood",
        r#"{"count": 34000}"#,
        "{}",
        false,
        "34000 dynamic nodes",
    ),
];

fn hostile_blueprint(uses: &str, params: &str, config: &str, fallback: bool) -> Value {
    let mut config: Map<String, Value> = serde_json::from_str(config).unwrap();
    config.insert("maxRetries".into(), json!(2));
    let mut nodes = vec![json!({"id": "bad", "uses": uses,
        "params": serde_json::from_str::<Value>(params).unwrap()})];
    if fallback {
        config.insert("fallback".into(), json!("safe"));
        nodes.push(json!({"id": "safe", "uses": "const", "params": {"value": "safe"}}));
    }
    nodes[0]["config"] = Value::Object(config);
    nodes.push(json!({"id": "after", "uses": "double"}));
    let suffix = if fallback { "-fb" } else { "" };
    json!({"id": format!("h-{uses}{suffix}"), "nodes": nodes,
           "edges": [{"source": "bad", "target": "after"}]})
}

/// Ordinary work that must go on meanwhile (conformance nodes only).
fn serve_blueprint() -> Value {
    json!({"id": "serve", "nodes": [
        {"id": "start", "uses": "double"}, {"id": "end", "uses": "times10"}
    ], "edges": [{"source": "start", "target": "end"}]})
}

/// A slow node, then a node of the bundle that is replaced meanwhile.
fn swap_blueprint() -> Value {
    json!({"id": "swap", "nodes": [
        {"id": "first", "uses": "slow", "params": {"ms": 3000}},
        {"id": "second", "uses": "big-output", "params": {"bytes": 10}}
    ], "edges": [{"source": "first", "target": "second"}]})
}

/// Replaces `file` by bytes that are not a component (via a rename, as a
/// deployment tool would).
fn break_bundle(file: &Path) {
    let temporary = file.with_extension("part");
    std::fs::write(&temporary, b"\0asm but not really a component").unwrap();
    std::fs::rename(&temporary, file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_nodes_fail_with_their_cause_and_the_worker_keeps_serving() {
    let _turn = SERIAL.lock().await;
    let plugins = hostile_plugin_dir();
    let mut blueprints = vec![serve_blueprint(), swap_blueprint()];
    for (uses, params, config, _, _) in HOSTILE {
        blueprints.push(hostile_blueprint(uses, params, config, false));
        blueprints.push(hostile_blueprint(uses, params, config, true));
    }
    let stand = Stand::new("hostile", &blueprints).await;
    let reference = Reference::load_from(plugins.path()).await;
    let fleet = Fleet::spawn_with(&stand, 1, &["--concurrency", "8"], plugins.path(), &[]);
    let tag = unique();

    let mut runs: Vec<(String, Value, ContextMap)> = Vec::new();
    for blueprint in &blueprints[2..] {
        let id = blueprint["id"].as_str().unwrap();
        runs.push((format!("{id}-{tag}"), blueprint.clone(), ContextMap::new()));
    }
    for i in 0..10 {
        let mut seed = ContextMap::new();
        seed.insert("_inputs.start".into(), json!(i).into());
        runs.push((format!("serve-{i}-{tag}"), blueprints[0].clone(), seed));
    }
    let swap = format!("swap-{tag}");
    runs.push((swap.clone(), blueprints[1].clone(), ContextMap::new()));
    let mut expected = Vec::new();
    for (_, blueprint, seed) in &runs {
        let id = blueprint["id"].as_str().unwrap();
        expected.push(reference.run(&blueprints, id, seed).await);
    }
    for (run, blueprint, seed) in &runs {
        stand
            .start(blueprint["id"].as_str().unwrap(), run, seed)
            .await;
    }
    // While the swap run's slow node runs, its next node's bundle breaks.
    fleet
        .until("the swap run to start", Duration::from_secs(30), |ledger| {
            (ledger.executions(&swap, "first", 1) > 0).then_some(())
        })
        .await;
    break_bundle(&plugins.path().join("hostile.wasm"));

    let ids: Vec<String> = runs.iter().map(|(run, _, _)| run.clone()).collect();
    let reports = stand
        .wait_all(&ids, Duration::from_secs(120), Some(&fleet))
        .await;
    let kept_old_version = fleet.log_lines("hostile.wasm");
    let ledger = fleet.ledger.lock().unwrap();
    let mut problems = Vec::new();
    let (mut completed, mut failed_as_designed) = (0, 0);
    for ((run, blueprint, _), expected) in runs.iter().zip(&expected) {
        let Some(report) = reports.get(run) else {
            continue;
        };
        let diff = differences(report, expected, blueprint);
        if !diff.is_empty() {
            problems.push(format!("run {run}: {}", diff.join("; ")));
            continue;
        }
        let id = blueprint["id"].as_str().unwrap();
        let hostile = HOSTILE
            .iter()
            .find(|h| id.starts_with(&format!("h-{}", h.0)));
        match hostile {
            None => completed += 1,
            Some((uses, _, _, retryable, cause)) => {
                let attempts = if *retryable { 2 } else { 1 };
                for attempt in 1..=attempts {
                    if ledger.executions(run, "bad", attempt) != 1 {
                        problems.push(format!(
                            "run {run}: attempt {attempt} of '{uses}' ran {} times",
                            ledger.executions(run, "bad", attempt)
                        ));
                    }
                }
                if ledger.executions(run, "bad", attempts + 1) != 0 {
                    problems.push(format!(
                        "run {run}: '{uses}' ran more than {attempts} attempts"
                    ));
                }
                let falls_back = *retryable && id.ends_with("-fb");
                if falls_back {
                    completed += 1;
                } else if report
                    .errors
                    .iter()
                    .any(|e| e.node_id == "bad" && e.message.contains(cause))
                {
                    failed_as_designed += 1;
                } else {
                    problems.push(format!(
                        "run {run}: errors {:?} do not name '{cause}'",
                        report.errors
                    ));
                }
            }
        }
    }
    Row {
        scenario: "5 hostile plugins".into(),
        runs: runs.len(),
        faults_injected: (HOSTILE.len() * 2 + 1) as u64,
        runs_completed: completed,
        runs_failed_as_designed: failed_as_designed,
        runs_lost: runs.len() - reports.len(),
        duplicate_effects: ledger.repeated(&ids).len(),
        notes: "spin/hog/panic retried then fell back; non-JSON and oversized output fatal; a bundle broken mid-run kept its previous version serving".into(),
    }
    .record();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(completed + failed_as_designed, runs.len());
    assert!(
        !kept_old_version.is_empty(),
        "the broken bundle file was not reported in the worker's log"
    );
}
