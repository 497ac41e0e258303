//! Scenario 1, redelivery: the queue stand-in stores every message twice,
//! the copy 1.5–3 s later than the original, so every job (start jobs,
//! successors, retries, groups of jobs a worker took on) is delivered twice
//! and out of order. The copy comes later than a job waits here for a free
//! slot when the fleet is busiest (20 runs started at once), so it is a
//! redelivery of a job already handled; a copy taken while the original
//! still runs is two workers running one attempt at once, which the design
//! answers with at-least-once (scenario 2 counts those re-runs). The runs must
//! end exactly as their single-delivery references, every node attempt must
//! run once, every job must have been enqueued once, and every run's final
//! status must be published once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::harness::{
    Fleet, JobKey, Reference, Row, Service, Stand, compare_runs, job_key, terminal_publications,
    unique,
};
use crate::{SERIAL, mixed_blueprint, seed};

const RUNS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_delivered_twice_and_out_of_order_changes_nothing() {
    let _turn = SERIAL.lock().await;
    let blueprint = mixed_blueprint();
    let stand = Stand::new("redeliver", std::slice::from_ref(&blueprint)).await;
    let reference = Reference::load().await;
    let queue = stand.config.queue.clone();
    stand.control.journal_sends(&queue).await;
    stand
        .control
        .journal_statuses(&stand.config.status_container)
        .await;
    stand
        .control
        .inject(
            Service::Queue,
            json!([{"effect": "duplicate", "match": "message.", "path": format!("/{queue}/"),
                    "minDelayMs": 1500, "maxDelayMs": 3000}]),
        )
        .await;
    let fleet = Fleet::spawn(
        &stand,
        2,
        &["--concurrency", "8", "--visibility-timeout", "10"],
    );

    let tag = unique();
    let runs: Vec<String> = (0..RUNS).map(|i| format!("redeliver-{i}-{tag}")).collect();
    for (i, run) in runs.iter().enumerate() {
        stand.start("mixed", run, &seed(i)).await;
    }
    let reports = stand
        .wait_all(&runs, Duration::from_secs(120), Some(&fleet))
        .await;
    // Let every duplicate arrive and be handled before counting.
    stand.drained(Duration::from_secs(60), &fleet).await;
    stand.control.clear(Service::Queue).await;
    let (_, injected, refused) = stand.control.duplicates().await;

    let expected = reference
        .run_each(&blueprint, (0..RUNS).map(seed).collect())
        .await;
    let (completed, problems) = compare_runs(&runs, &reports, &expected, &blueprint);
    let (repeated, executions) = {
        let ledger = fleet.ledger.lock().unwrap();
        let executions: usize = runs.iter().map(|r| ledger.of_run(r)).sum();
        (ledger.repeated(&runs), executions)
    };
    let mut sends: BTreeMap<JobKey, usize> = BTreeMap::new();
    let (sent, enqueue_requests) = stand.control.sent_jobs().await;
    for job in &sent {
        *sends.entry(job_key(job)).or_default() += 1;
    }
    let sent_twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    let changes = stand.control.status_changes(&stand.config.database).await;
    let publications = terminal_publications(&changes);
    let republished: Vec<_> = publications.iter().filter(|(_, n)| **n != 1).collect();

    Row {
        scenario: "1 redelivery".into(),
        runs: RUNS,
        faults_injected: injected,
        runs_completed: completed,
        runs_failed_as_designed: 0,
        runs_lost: RUNS - reports.len(),
        duplicate_effects: repeated.len() + sent_twice.len() + republished.len(),
        notes: format!(
            "{injected} duplicate deliveries; node executions {}; jobs enqueued {}; final statuses {}{}",
            executions,
            sends.len(),
            publications.values().sum::<usize>(),
            if repeated.is_empty() && sent_twice.is_empty() && republished.is_empty() {
                String::new()
            } else {
                format!(
                    "; run more than once: {repeated:?}; enqueued more than once: {sent_twice:?}; published other than once: {republished:?}"
                )
            },
        ),
    }
    .record();
    assert_eq!(refused, 0, "the queue refused injected duplicates");
    assert_eq!(
        injected, enqueue_requests as u64,
        "every send and rewrite was duplicated"
    );
    assert!(
        injected >= (RUNS * 5) as u64,
        "only {injected} duplicates stored"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(completed, RUNS);
    assert!(
        repeated.is_empty(),
        "node attempts run more than once: {repeated:?}"
    );
    assert!(
        sent_twice.is_empty(),
        "jobs enqueued more than once: {sent_twice:?}"
    );
    assert_eq!(publications.len(), RUNS, "final statuses: {publications:?}");
    assert!(republished.is_empty(), "{republished:?}");
}
