//! Scenario 2, worker kills: three workers process concurrent runs of the
//! mixed blueprint (chain, fan-out/fan-in, data-dependent branch, retry,
//! fallback) while a supervisor `kill -9`s a random worker every 0.5–1.5 s and
//! starts it again. Every run must end `completed` with its reference
//! context and exactly one final status; jobs of a killed worker come back
//! after the visibility timeout, and runs whose jobs were lost between
//! settling and enqueueing are re-started by the reconciler.
//! `FLOWCRAFT_FAULT_RUNS` sets the number of runs (the soak is 300).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::harness::{
    Fleet, Reference, Row, Stand, compare_runs, soak_runs, terminal_publications, unique,
};
use crate::{SERIAL, mixed_blueprint, seed};

/// Seconds without progress before the reconciler re-starts a run.
const STALLED_AFTER: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_workers_killed_at_random() {
    let _turn = SERIAL.lock().await;
    let runs_wanted = soak_runs(100);
    let blueprint = mixed_blueprint();
    let stand = Arc::new(Stand::new("kill", std::slice::from_ref(&blueprint)).await);
    stand
        .control
        .journal_statuses(&stand.config.status_container)
        .await;
    let stalled_after = STALLED_AFTER.to_string();
    let fleet = Arc::new(Fleet::spawn(
        &stand,
        3,
        &[
            "--concurrency",
            "16",
            "--visibility-timeout",
            "5",
            "--reconcile-interval",
            "3",
            "--stalled-after",
            &stalled_after,
        ],
    ));
    let tag = unique();
    let runs: Vec<String> = (0..runs_wanted)
        .map(|i| format!("kill-{i}-{tag}"))
        .collect();
    let started = Instant::now();
    let mut starts = JoinSet::new();
    for (i, run) in runs.iter().enumerate() {
        let (stand, run) = (stand.clone(), run.clone());
        starts.spawn(async move { stand.start("mixed", &run, &seed(i)).await });
    }
    while let Some(done) = starts.join_next().await {
        done.expect("run starts");
    }

    // The supervisor: kill -9 a random worker every 0.5–1.5 s, start it again.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let supervisor = {
        let (fleet, stop, kills) = (fleet.clone(), stop.clone(), kills.clone());
        std::thread::spawn(move || {
            let mut state = std::process::id() as u64 ^ started.elapsed().as_nanos() as u64;
            let mut random = move |below: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % below
            };
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500 + random(1000)));
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let victim = random(fleet.len() as u64) as usize;
                fleet.kill(victim);
                kills.fetch_add(1, Ordering::SeqCst);
                fleet.restart(victim);
            }
        })
    };
    let limit = Duration::from_secs(120 + runs_wanted as u64);
    let reports = stand.wait_all(&runs, limit, None).await;
    stop.store(true, Ordering::SeqCst);
    supervisor.join().expect("the supervisor ends");
    let elapsed = started.elapsed();

    let expected = Reference::load()
        .await
        .run_each(&blueprint, (0..runs_wanted).map(seed).collect())
        .await;
    let (completed, problems) = compare_runs(&runs, &reports, &expected, &blueprint);
    let changes = stand.control.status_changes(&stand.config.database).await;
    let publications = terminal_publications(&changes);
    let republished = publications.values().filter(|n| **n > 1).count();
    let reexecuted: usize = {
        let ledger = fleet.ledger.lock().unwrap();
        ledger.repeated(&runs).iter().map(|(_, n)| n - 1).sum()
    };
    let reconciled = reconciled_runs(&fleet);
    let kills = kills.load(Ordering::SeqCst);
    Row {
        scenario: "2 worker kills".into(),
        runs: runs_wanted,
        faults_injected: kills as u64,
        runs_completed: completed,
        runs_failed_as_designed: 0,
        runs_lost: runs_wanted - reports.len(),
        duplicate_effects: republished,
        notes: format!(
            "3 workers, {kills} kill -9 in {:.0} s; {reexecuted} node attempts re-run after a kill (at-least-once); {reconciled} runs re-sent by the reconcilers (no status change for {STALLED_AFTER} s)",
            elapsed.as_secs_f64()
        ),
    }
    .record();
    assert!(
        problems.is_empty(),
        "{} wrong runs:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(publications.len(), runs_wanted, "runs with a final status");
    assert!(kills > 0, "no worker was killed");
}

/// Runs the workers' reconcilers re-started (`reconciler pass` log lines).
fn reconciled_runs(fleet: &Fleet) -> usize {
    fleet
        .log_lines("reconciler pass")
        .iter()
        .filter_map(|line| {
            let (_, after) = line.split_once("reconciled_runs: ")?;
            after
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}
