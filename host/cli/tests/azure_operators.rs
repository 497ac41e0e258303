//! Operator commands against the real local services (Azurite, the Cosmos
//! stand-in, redis-server; `scripts/azure-local.sh`) with a real
//! `flowcraft-host` worker: `retry RUN_ID` re-runs a failed run from its
//! failed node, and `cancel RUN_ID` interrupts a node that is running.
//!
//! Runs are started and inspected with the `flowcraft-host` client commands;
//! the worker logs at `info` so that the tests can see what it published and
//! what it interrupted. Every test has a queue and a database of its own.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flowcraft_azure::backend::{AzureBackend, AzureConfig};
use flowcraft_core::context::context_to_object;
use flowcraft_core::progress::{NodeStatus, RunProgress, RunState};
use flowcraft_core::store::{ContextStore, CoordinationStore, RunStatusRecord, StatusStore};
use serde_json::{Map, Value, json};

use support::azure::{azure_config, worker_command};

/// A suffix that makes run ids unique to this test process.
fn unique() -> &'static str {
    static UNIQUE: OnceLock<String> = OnceLock::new();
    UNIQUE.get_or_init(|| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        format!("{}-{millis}", std::process::id())
    })
}

/// One test's services, blueprint directory and worker.
struct Harness {
    config: AzureConfig,
    backend: AzureBackend,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn new(tag: &str, blueprints: &[Value]) -> Self {
        let config = azure_config(tag);
        let backend = AzureBackend::connect(&config)
            .await
            .expect("local services reachable (scripts/azure-local.sh start)");
        let dir = tempfile::tempdir().unwrap();
        for blueprint in blueprints {
            let path = dir
                .path()
                .join(format!("{}.json", blueprint["id"].as_str().unwrap()));
            std::fs::write(path, serde_json::to_string_pretty(blueprint).unwrap()).unwrap();
        }
        Self {
            config,
            backend,
            dir,
        }
    }

    fn blueprints(&self) -> &Path {
        self.dir.path()
    }

    /// One worker logging at `info`, its stderr lines collected.
    fn worker(&self) -> Worker {
        let mut child = worker_command(&self.config, self.blueprints())
            .args(["--concurrency", "4"])
            .env("FLOWCRAFT_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("a worker starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let receiver = collect_lines(&mut child, lines.clone());
        let worker = Worker {
            child,
            lines,
            receiver,
        };
        worker.wait_for_line("the worker to start", Duration::from_secs(30), |l| {
            l.contains("worker started")
        });
        worker
    }

    /// Starts `flowcraft-host ARGS --blueprints DIR` on this test's queue and
    /// database.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"));
        command
            .args(args)
            .args(["--blueprints", self.blueprints().to_str().unwrap()])
            .env("FLOWCRAFT_QUEUE", &self.config.queue)
            .env("FLOWCRAFT_DATABASE", &self.config.database)
            .env("FLOWCRAFT_LOG", "warn");
        command
    }

    /// Runs a client command to its end.
    async fn client(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().expect("flowcraft-host runs"))
            .await
            .unwrap()
    }

    /// `flowcraft-host start`; returns the run id.
    async fn start(&self, blueprint: &str, run: &str, context: Value) -> String {
        let context = context.to_string();
        let output = self
            .client(&["start", blueprint, "--run-id", run, "--context", &context])
            .await;
        assert_success(&output, "start");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    async fn status(&self, run: &str) -> Option<RunStatusRecord> {
        self.backend
            .read_status(run)
            .await
            .expect("status readable")
    }

    async fn progress(&self, run: &str) -> RunProgress {
        self.backend
            .load_progress(run)
            .await
            .expect("progress readable")
            .expect("the run has a progress record")
    }

    async fn context(&self, run: &str) -> Map<String, Value> {
        let stored = self
            .backend
            .load_context(run)
            .await
            .expect("context readable")
            .expect("the run has a context");
        context_to_object(&stored.values)
    }

    /// Polls the status document until the run is over.
    async fn wait_final(&self, run: &str, worker: &mut Worker) -> RunStatusRecord {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            worker.assert_running();
            if let Some(status) = self.status(run).await.filter(|s| s.status.is_terminal()) {
                return status;
            }
            assert!(Instant::now() < deadline, "run {run} did not end in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A worker process with its stderr collected; killed when dropped.
struct Worker {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    receiver: Receiver<()>,
}

impl Worker {
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the worker exited with {status}: {:#?}", self.lines());
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a logged line satisfies `wanted`; returns it.
    fn wait_for_line(&self, what: &str, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| wanted(l)) {
                return line;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {limit:?} waiting for {what}; worker log:\n{}",
                self.lines().join("\n")
            );
            let _ = self
                .receiver
                .recv_timeout(left.min(Duration::from_millis(200)));
        }
    }

    /// How many "run status changed" lines name `run` and `status`.
    fn publications(&self, run: &str, status: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| {
                l.contains("run status changed")
                    && l.contains(&format!("run={run} "))
                    && (l.contains(&format!("status={status}"))
                        || l.contains(&format!("status=\"{status}\"")))
            })
            .count()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's stderr on a thread into `lines` (escape sequences
/// removed); a message on the returned channel for every line.
fn collect_lines(child: &mut Child, lines: Arc<Mutex<Vec<String>>>) -> Receiver<()> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(support::strip_ansi(&line));
            let _ = sender.send(());
        }
    });
    receiver
}

/// Waits up to 10 s for the worker's log to satisfy `check`.
fn eventually_logged(worker: &Worker, check: impl Fn() -> bool) {
    worker.wait_for_line(
        "a publication to be logged",
        Duration::from_secs(10),
        |_| check(),
    );
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

// ---------------------------------------------------------------------------
// retry

/// A (inc) → G (double of context key `amount`) → B (inc), and A → P
/// (const). With `amount` not a number, G fails with invalid input (fatal):
/// the run fails after A and P completed. `inc` counts executions in context
/// key `count`, so `count` tells how often A and B ran.
fn gated_blueprint() -> Value {
    json!({"id": "gated", "nodes": [
        {"id": "A", "uses": "inc", "params": {"limit": 10}},
        {"id": "P", "uses": "const", "params": {"value": "p"}},
        {"id": "G", "uses": "double", "inputs": "amount"},
        {"id": "B", "uses": "inc", "params": {"limit": 10}}
    ], "edges": [
        {"source": "A", "target": "G"}, {"source": "A", "target": "P"},
        {"source": "G", "target": "B"}
    ]})
}

/// A node that fails while its attempt is below 3, with 2 attempts allowed.
fn flaky_blueprint() -> Value {
    json!({"id": "flaky", "nodes": [
        {"id": "F", "uses": "flaky", "params": {"succeedOn": 3},
         "config": {"maxRetries": 2, "retryDelay": 50}}
    ], "edges": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_retried_with_fixed_data_completes_from_its_failed_node() {
    let h = Harness::new("retry", &[gated_blueprint()]).await;
    let mut worker = h.worker();
    let run = h
        .start(
            "gated",
            &format!("retry-{}", unique()),
            json!({"amount": "oops"}),
        )
        .await;

    let failed = h.wait_final(&run, &mut worker).await;
    assert_eq!(failed.status, RunState::Failed);
    let progress = h.progress(&run).await;
    assert_eq!(progress.errors.len(), 1, "{:?}", progress.errors);
    assert_eq!(progress.errors[0].node_id, "G");
    assert_eq!(progress.status("G"), NodeStatus::Failed);
    let context = h.context(&run).await;
    assert_eq!(context["_outputs.A"], json!(1));
    // P ran beside G: it finished before the failure, or it is left
    // scheduled for the retry (its job dropped, or its completion refused
    // once G had failed the run: a node's output is written before its
    // completion is recorded, so it may be there already; the retry writes
    // it again).
    match progress.status("P") {
        NodeStatus::Done => assert_eq!(context["_outputs.P"], json!("p")),
        NodeStatus::Scheduled => {}
        other => panic!("P is {other:?}"),
    }
    assert!(!context.contains_key("_outputs.G"), "{context:?}");

    // Two operators retry at once, each with a fix of their own: exactly
    // one retry wins, and only its fix is written.
    let fix = |by: &str| json!({"amount": 21, "fixedBy": by}).to_string();
    let (one, two) = (fix("one"), fix("two"));
    let mut first = h.command(&["retry", &run, "--context", &one]);
    let mut second = h.command(&["retry", &run, "--context", &two]);
    let (first, second) = tokio::task::spawn_blocking(move || {
        let first = first.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        let second = second.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        (
            first.unwrap().wait_with_output().unwrap(),
            second.unwrap().wait_with_output().unwrap(),
        )
    })
    .await
    .unwrap();
    let (winner, loser, winner_name) = match (first.status.success(), second.status.success()) {
        (true, false) => (first, second, "one"),
        (false, true) => (second, first, "two"),
        outcome => panic!(
            "expected exactly one retry to win, got {outcome:?}:\n{}\n{}",
            String::from_utf8_lossy(&first.stderr),
            String::from_utf8_lossy(&second.stderr)
        ),
    };
    let refusal = String::from_utf8_lossy(&loser.stderr);
    assert!(
        refusal.contains(&format!("cannot retry run '{run}': it is "))
            && refusal.contains("only a failed run can be retried"),
        "{refusal}"
    );
    assert_eq!(loser.status.code(), Some(2));
    let printed = stdout_json(&winner);
    assert_eq!(printed["runId"], json!(run));
    assert_eq!(printed["progress"]["retries"], json!(1));
    assert_eq!(printed["progress"]["errors"], json!([]));
    assert_eq!(
        printed["progress"]["retriedErrors"][0]["nodeId"],
        json!("G")
    );

    let completed = h.wait_final(&run, &mut worker).await;
    assert_eq!(completed.status, RunState::Completed, "{completed:?}");
    let final_status = completed.final_status.expect("a final status");
    assert_eq!(final_status["status"], json!("completed"));
    let context = h.context(&run).await;
    assert_eq!(context["_outputs.G"], json!(42));
    assert_eq!(
        context["fixedBy"],
        json!(winner_name),
        "only the winner's fix"
    );
    assert_eq!(context["_outputs.A"], json!(1), "A kept its output");
    assert_eq!(context["_outputs.P"], json!("p"));
    assert_eq!(context["_outputs.B"], json!(2));
    assert_eq!(context["count"], json!(2), "A ran once and B once");
    assert_eq!(
        final_status["payload"]["context"]["_outputs.G"],
        json!(42),
        "the completed status carries the final context"
    );
    let progress = h.progress(&run).await;
    assert!(progress.errors.is_empty(), "{:?}", progress.errors);
    assert_eq!(progress.retried_errors.len(), 1);

    // One publication per terminal state: failed once, completed once.
    eventually_logged(&worker, || worker.publications(&run, "completed") > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        worker.publications(&run, "failed"),
        1,
        "{:#?}",
        worker.lines()
    );
    assert_eq!(
        worker.publications(&run, "completed"),
        1,
        "{:#?}",
        worker.lines()
    );

    // A completed run is not retried; neither is an unknown one.
    let again = h.client(&["retry", &run]).await;
    assert_eq!(again.status.code(), Some(2));
    let message = String::from_utf8_lossy(&again.stderr);
    assert!(
        message.contains(&format!(
            "cannot retry run '{run}': it is completed; only a failed run can be retried"
        )),
        "{message}"
    );
    let unknown = format!("nobody-{}", unique());
    let missing = h.client(&["retry", &unknown]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains(&format!("run '{unknown}' not found")),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert_eq!(h.status(&run).await.unwrap().status, RunState::Completed);
}

/// Attempts start at 1 again on a retry: a node that needs a third attempt
/// but is allowed two fails again, with the same error, and can be retried
/// once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_gives_the_failed_node_fresh_attempts() {
    let h = Harness::new("retry-flaky", &[flaky_blueprint()]).await;
    let mut worker = h.worker();
    let run = h
        .start("flaky", &format!("flaky-{}", unique()), json!({}))
        .await;
    assert_eq!(
        h.wait_final(&run, &mut worker).await.status,
        RunState::Failed
    );
    let first = h.progress(&run).await.errors;
    assert!(first[0].message.contains("attempt 2 fails"), "{first:?}");

    let output = h.client(&["retry", &run]).await;
    assert_success(&output, "retry");
    assert_eq!(
        h.wait_final(&run, &mut worker).await.status,
        RunState::Failed
    );
    let progress = h.progress(&run).await;
    assert_eq!(progress.errors, first, "attempts 1 and 2 again, not 3");
    assert_eq!(progress.retried_errors, first);
    eventually_logged(&worker, || worker.publications(&run, "failed") >= 2);
    assert_eq!(
        worker.publications(&run, "failed"),
        2,
        "{:#?}",
        worker.lines()
    );

    let output = h.client(&["retry", &run]).await;
    assert_success(&output, "second retry");
    assert_eq!(
        h.wait_final(&run, &mut worker).await.status,
        RunState::Failed
    );
    assert_eq!(h.progress(&run).await.retries, 2);
}

// ---------------------------------------------------------------------------
// cancel

/// S (slow, `ms`) → N (const).
fn slow_blueprint(ms: u64) -> Value {
    json!({"id": "slow", "nodes": [
        {"id": "S", "uses": "slow", "params": {"ms": ms}, "config": {"timeout": 60000}},
        {"id": "N", "uses": "const", "params": {"value": "after"}}
    ], "edges": [{"source": "S", "target": "N"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_interrupts_a_running_node_and_drops_its_result() {
    const SLOW_MS: u64 = 8_000;
    let h = Harness::new("cancel", &[slow_blueprint(SLOW_MS)]).await;
    let mut worker = h.worker();
    let run = h
        .start("slow", &format!("cancel-{}", unique()), json!({}))
        .await;
    worker.wait_for_line("S to start", Duration::from_secs(30), |l| {
        l.contains("node started") && l.contains(&format!("run={run} ")) && l.contains("node=S")
    });
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let output = h.client(&["cancel", &run]).await;
    assert_success(&output, "cancel");
    let cancelled_at = Instant::now();
    assert_eq!(stdout_json(&output)["status"]["status"], json!("cancelled"));

    worker.wait_for_line("the worker to interrupt S", Duration::from_secs(4), |l| {
        l.contains("node interrupted") && l.contains(&format!("run={run} ")) && l.contains("node=S")
    });
    let noticed = cancelled_at.elapsed();
    eprintln!("the worker interrupted S {noticed:?} after the cancel");
    assert!(
        started.elapsed() < Duration::from_millis(SLOW_MS),
        "interrupted {noticed:?} after the cancel, well before S would have finished"
    );

    let status = h.status(&run).await.unwrap();
    assert_eq!(status.status, RunState::Cancelled);
    assert_eq!(status.final_status, Some(json!({"status": "cancelled"})));

    // Past the time S would have finished: nothing of S or N was written.
    let finish_line = Duration::from_millis(SLOW_MS + 2_000);
    tokio::time::sleep(finish_line.saturating_sub(started.elapsed())).await;
    worker.assert_running();
    let context = h.context(&run).await;
    for key in ["_outputs.S", "_outputs.N", "_inputs.N"] {
        assert!(!context.contains_key(key), "{key} written: {context:?}");
    }
    let progress = h.progress(&run).await;
    assert_eq!(progress.state, RunState::Cancelled);
    assert_eq!(
        progress.status("N"),
        NodeStatus::Waiting,
        "N never scheduled"
    );
    assert!(
        !worker
            .lines()
            .iter()
            .any(|l| l.contains("node finished") && l.contains(&format!("run={run} "))),
        "{:#?}",
        worker.lines()
    );
    // The interrupted job's message is gone (deleted, not poisoned or left).
    assert_eq!(h.backend.queue().approximate_count().await.unwrap(), 0);
    assert!(h.backend.queue().peek_poison(32).await.unwrap().is_empty());

    // Cancelled exactly once: a second cancel publishes nothing.
    let before = h.status(&run).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = h.client(&["cancel", &run]).await;
    assert_success(&again, "second cancel");
    assert_eq!(h.status(&run).await.unwrap(), before);
    assert_eq!(
        worker.publications(&run, "cancelled"),
        0,
        "the client published it"
    );
}
