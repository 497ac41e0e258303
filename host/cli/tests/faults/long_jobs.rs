//! Scenario 3, long jobs: with a 2 s visibility timeout, a node that runs
//! 7 s is not handed to the second worker (its visibility is renewed while it
//! runs), and when the worker running it is killed, the job reappears after
//! the timeout and the other worker runs it to the end.

use std::time::Duration;

use flowcraft_core::context::ContextMap;
use serde_json::{Value, json};

use crate::SERIAL;
use crate::harness::{Fleet, Reference, Row, Stand, differences, unique};

/// A node that takes longer than the visibility timeout, then one more.
fn long_blueprint() -> Value {
    json!({"id": "long", "nodes": [
        {"id": "slow", "uses": "slow", "params": {"ms": 7000}},
        {"id": "after", "uses": "echo"}
    ], "edges": [{"source": "slow", "target": "after"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_its_visibility_timeout_runs_once_and_reappears_when_its_worker_dies() {
    let _turn = SERIAL.lock().await;
    let blueprint = long_blueprint();
    let stand = Stand::new("long", std::slice::from_ref(&blueprint)).await;
    let fleet = Fleet::spawn(
        &stand,
        2,
        &["--concurrency", "4", "--visibility-timeout", "2"],
    );
    let expected = Reference::load()
        .await
        .run(std::slice::from_ref(&blueprint), "long", &ContextMap::new())
        .await;
    let tag = unique();

    // A healthy worker keeps its job: one execution although the node runs
    // for three and a half visibility timeouts.
    let kept = format!("long-kept-{tag}");
    stand.start("long", &kept, &ContextMap::new()).await;
    let reports = stand
        .wait_all(
            std::slice::from_ref(&kept),
            Duration::from_secs(60),
            Some(&fleet),
        )
        .await;
    let kept_report = reports.get(&kept).expect("the long run ends");
    let kept_runs = fleet.ledger.lock().unwrap().executions(&kept, "slow", 1);

    // A worker killed mid-node: its job comes back after the timeout.
    let orphaned = format!("long-orphaned-{tag}");
    stand.start("long", &orphaned, &ContextMap::new()).await;
    let first = fleet
        .until(
            "the slow node to start",
            Duration::from_secs(30),
            |ledger| ledger.workers_of(&orphaned, "slow", 1).first().copied(),
        )
        .await;
    fleet.kill(first);
    let second = fleet
        .until(
            "the slow node to start again",
            Duration::from_secs(30),
            |ledger| ledger.workers_of(&orphaned, "slow", 1).get(1).copied(),
        )
        .await;
    let reports = stand
        .wait_all(
            std::slice::from_ref(&orphaned),
            Duration::from_secs(60),
            Some(&fleet),
        )
        .await;
    let orphaned_report = reports.get(&orphaned);

    let mut completed = 0;
    for report in [Some(kept_report), orphaned_report].into_iter().flatten() {
        let diff = differences(report, &expected, &blueprint);
        assert!(
            diff.is_empty(),
            "run {}: {}",
            report.run_id,
            diff.join("; ")
        );
        completed += 1;
    }
    Row {
        scenario: "3 long jobs".into(),
        runs: 2,
        faults_injected: 1,
        runs_completed: completed,
        runs_failed_as_designed: 0,
        runs_lost: 2 - completed,
        duplicate_effects: kept_runs.saturating_sub(1),
        notes: format!(
            "7 s node, 2 s visibility: {kept_runs} execution(s) while renewed; after kill -9 of worker {first} the job reappeared and worker {second} ran it"
        ),
    }
    .record();
    assert_eq!(kept_runs, 1, "the renewed job ran {kept_runs} times");
    assert_ne!(first, second, "the killed worker cannot run it again");
}
