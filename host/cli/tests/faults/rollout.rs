//! Scenario 7, version rollout: runs started on version 1 of a blueprint
//! while the only worker has version 2. That worker hands their jobs back to
//! the queue (delayed) instead of dropping them (upstream's FC-52); after
//! the delivery limit a job goes to the poison queue with the version in its
//! reason. Once a worker with both versions joins, the version-1 runs finish
//! on version 1 (the poisoned one after `flowcraft-host poison replay`), and
//! version-2 runs keep running on either worker.

use std::process::Command;
use std::time::Duration;

use flowcraft_core::context::ContextMap;
use serde_json::{Value, json};

use crate::SERIAL;
use crate::harness::{Fleet, Reference, Row, Stand, differences, unique};

/// Version 1: a → b. Version 2 adds c after b and changes a's value.
fn roll(version: &str) -> Value {
    let (value, extra) = if version == "1" {
        (1, false)
    } else {
        (2, true)
    };
    let mut nodes = vec![
        json!({"id": "a", "uses": "const", "params": {"value": value}}),
        json!({"id": "b", "uses": "double"}),
    ];
    let mut edges = vec![json!({"source": "a", "target": "b"})];
    if extra {
        nodes.push(json!({"id": "c", "uses": "times10"}));
        edges.push(json!({"source": "b", "target": "c"}));
    }
    json!({"id": "roll", "metadata": {"version": version}, "nodes": nodes, "edges": edges})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_version_a_worker_lacks_go_back_to_the_queue_and_finish_where_it_exists() {
    let _turn = SERIAL.lock().await;
    let (v1, v2) = (roll("1"), roll("2"));
    let config = crate::support::azure::azure_config("rollout");
    // Clients that start runs on one version; worker directories.
    let only_v1 = Stand::with_config(config.clone(), std::slice::from_ref(&v1)).await;
    let only_v2 = Stand::with_config(config.clone(), std::slice::from_ref(&v2)).await;
    let both = Stand::with_config(config.clone(), &[v1.clone(), v2.clone()]).await;
    let reference = Reference::load().await;
    let expected_v1 = reference
        .run(std::slice::from_ref(&v1), "roll", &ContextMap::new())
        .await;
    let expected_v2 = reference
        .run(std::slice::from_ref(&v2), "roll", &ContextMap::new())
        .await;
    let tag = unique();
    let flags = [
        "--concurrency",
        "8",
        "--visibility-timeout",
        "2",
        "--max-dequeue-count",
    ];

    // Only version 2 is deployed: a version-1 run's job is handed back until
    // its delivery limit, then poisoned with a reason naming the version.
    let strict = Fleet::spawn(&only_v2, 1, &[&flags[..], &["3"]].concat());
    let orphan = format!("roll-orphan-{tag}");
    only_v1.start("roll", &orphan, &ContextMap::new()).await;
    let queue = only_v1.engine.backend().queue();
    let poisoned = loop {
        strict.assert_running();
        let records = queue.peek_poison(32).await.expect("poison queue readable");
        if let Some(record) = records.into_iter().next() {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = poisoned.entry.reason.clone().unwrap_or_default();
    let handed_back = strict.log_lines("returning the job to the queue").len();
    drop(strict);

    // Mixed traffic while only version 2 is deployed, then a worker with both
    // joins. During a rollout jobs bounce between versions, so the delivery
    // limit is set higher than the number of bounces a job may take.
    let new_fleet = Fleet::spawn(&only_v2, 1, &[&flags[..], &["20"]].concat());
    let mut runs = Vec::new();
    for i in 0..5 {
        let (old, new) = (format!("roll-v1-{i}-{tag}"), format!("roll-v2-{i}-{tag}"));
        only_v1.start("roll", &old, &ContextMap::new()).await;
        only_v2.start("roll", &new, &ContextMap::new()).await;
        runs.push((old, &v1, &expected_v1));
        runs.push((new, &v2, &expected_v2));
    }
    let old_fleet = Fleet::spawn(&both, 1, &[&flags[..], &["20"]].concat());
    let replay = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(["poison", "replay", "--id", &poisoned.message.id])
        .env("FLOWCRAFT_QUEUE", &config.queue)
        .env("FLOWCRAFT_DATABASE", &config.database)
        .output()
        .expect("flowcraft-host runs");
    assert!(
        replay.status.success(),
        "poison replay: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    runs.push((orphan.clone(), &v1, &expected_v1));

    let ids: Vec<String> = runs.iter().map(|(run, _, _)| run.clone()).collect();
    let reports = both
        .wait_all(&ids, Duration::from_secs(90), Some(&old_fleet))
        .await;
    new_fleet.assert_running();
    let mut problems = Vec::new();
    for (run, blueprint, expected) in &runs {
        if let Some(report) = reports.get(run) {
            let diff = differences(report, expected, blueprint);
            if !diff.is_empty() {
                problems.push(format!("run {run}: {}", diff.join("; ")));
            }
        }
    }
    let old_on_new = {
        let ledger = new_fleet.ledger.lock().unwrap();
        runs.iter()
            .filter(|(_, blueprint, _)| blueprint["metadata"]["version"] == "1")
            .map(|(run, _, _)| ledger.of_run(run))
            .sum::<usize>()
    };
    let repeated = old_fleet.ledger.lock().unwrap().repeated(&ids).len()
        + new_fleet.ledger.lock().unwrap().repeated(&ids).len();
    Row {
        scenario: "7 version rollout".into(),
        runs: runs.len(),
        faults_injected: 1,
        runs_completed: runs.len() - problems.len() - (runs.len() - reports.len()),
        runs_failed_as_designed: 0,
        runs_lost: runs.len() - reports.len(),
        duplicate_effects: repeated,
        notes: format!(
            "a v2-only worker handed version-1 jobs back {handed_back} times and poisoned one at the limit (replayed once a v1 worker joined); it ran {old_on_new} version-1 nodes"
        ),
    }
    .record();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        reason.contains("version") && reason.contains("delivered 3 times"),
        "poison reason: {reason}"
    );
    assert!(
        handed_back >= 2,
        "the v2 worker handed the job back {handed_back} times"
    );
    assert_eq!(old_on_new, 0, "the v2-only worker ran version-1 nodes");
}
