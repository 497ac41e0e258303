//! Scenario 8, `serve` killed: one `flowcraft-host serve` process on the
//! SQLite backend runs 200 runs started through its API — the mixed
//! blueprint, runs that sleep two seconds, runs that wait to be resumed —
//! while a supervisor `kill -9`s it every 0.5–1.5 s and starts it again on
//! the same data directory. The client retries every request while the
//! server is down (a start is idempotent by run id). Every run must end
//! `completed` with its reference context, a node's committed effect must
//! not repeat (each run's `inc` counter ends at 1), and a sleep must not end
//! before its time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowcraft_core::context::{ContextMap, context_from_value};
use flowcraft_core::engine::RunReport;
use flowcraft_core::progress::RunState;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{Reference, Row, compare_runs, soak_runs};
use crate::{SERIAL, mixed_blueprint, seed};

/// How long the sleeping runs sleep, in seconds.
const NAP_SECONDS: i64 = 2;

/// tick (inc) → nap (sleep) → late (const).
fn napper() -> Value {
    json!({"id": "napper", "nodes": [
        {"id": "tick", "uses": "inc", "params": {"limit": 10}},
        {"id": "nap", "uses": "sleep", "params": {"duration": NAP_SECONDS * 1000}},
        {"id": "late", "uses": "const", "params": {"value": "woke"}}
    ], "edges": [{"source": "tick", "target": "nap"}, {"source": "nap", "target": "late"}]})
}

/// tick (inc) → gate (wait) → after (echo of the resume's output).
fn gatekeeper() -> Value {
    json!({"id": "gatekeeper", "nodes": [
        {"id": "tick", "uses": "inc", "params": {"limit": 10}},
        {"id": "gate", "uses": "wait"},
        {"id": "after", "uses": "echo"}
    ], "edges": [{"source": "tick", "target": "gate"}, {"source": "gate", "target": "after"}]})
}

/// The `serve` process, started again after each kill.
struct Server {
    child: Mutex<Option<Child>>,
    args: Vec<String>,
    logs: PathBuf,
    launches: AtomicUsize,
}

impl Server {
    fn new(data: &Path, blueprints: &Path, port: u16) -> Self {
        let args = [
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
            "--plugins",
            crate::support::dist().to_str().unwrap(),
            "--blueprints",
            blueprints.to_str().unwrap(),
            "--concurrency",
            "16",
            "--visibility-timeout",
            "5",
            "--reconcile-interval",
            "3",
            "--stalled-after",
            "10",
        ]
        .map(str::to_owned)
        .to_vec();
        let server = Self {
            child: Mutex::new(None),
            args,
            logs: data.join("logs"),
            launches: AtomicUsize::new(0),
        };
        std::fs::create_dir_all(&server.logs).unwrap();
        server.launch();
        server
    }

    fn launch(&self) {
        let index = self.launches.fetch_add(1, Ordering::SeqCst);
        let log = std::fs::File::create(self.logs.join(format!("{index}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
            .args(&self.args)
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("COSMOS_DB_CONNECTION_STRING")
            .env_remove("REDIS_URL")
            .env("FLOWCRAFT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("flowcraft-host serve starts");
        *self.child.lock().unwrap() = Some(child);
    }

    fn kill_and_restart(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            child.kill().expect("serve killed");
            child.wait().expect("serve reaped");
        }
        self.launch();
    }

    /// Node attempts started more than once (at-least-once after a kill),
    /// from every launch's `node started` lines.
    fn attempts_rerun(&self) -> usize {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for entry in std::fs::read_dir(&self.logs).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in text.lines().filter(|line| line.contains("node started")) {
                let key: Vec<&str> = line
                    .split_whitespace()
                    .filter(|part| {
                        ["run=", "node=", "attempt="]
                            .iter()
                            .any(|p| part.starts_with(p))
                    })
                    .collect();
                *seen.entry(key.join(" ")).or_default() += 1;
            }
        }
        seen.values().map(|n| n - 1).sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An API client that retries while the server is down or restarting.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// The answer to `method path body` once the server gave one that is not
    /// a 5xx (connection refused, reset or a 503 are retried).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .timeout(Duration::from_secs(20));
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            if let Ok(response) = request.send().await {
                let status = response.status().as_u16();
                if let (false, Ok(text)) = (status >= 500, response.text().await) {
                    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                    return (status, body);
                }
            }
            assert!(Instant::now() < deadline, "{path}: no answer for 5 minutes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start(&self, blueprint: &str, run_id: &str, context: &ContextMap) {
        let body = json!({"blueprintId": blueprint, "runId": run_id,
                          "context": flowcraft_core::context::context_to_object(context)});
        let (status, answer) = self
            .call(reqwest::Method::POST, "/api/v1/runs", Some(&body))
            .await;
        assert!(
            status == 201 || status == 200,
            "start {run_id}: {status} {answer}"
        );
    }

    /// Follows a run to its end, resuming it with `resume` when it awaits
    /// (again, after a resume the server died in).
    async fn finish(&self, run_id: &str, resume: Option<Value>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(
                Instant::now() < deadline,
                "{run_id} did not end in 5 minutes"
            );
            // Short polls: the server lives about a second between kills.
            let path = format!("/api/v1/runs/{run_id}?wait=1");
            let (status, run) = self.call(reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{run_id}: {run}");
            match (run["status"].as_str(), &resume) {
                (Some("completed" | "failed" | "cancelled"), _) => return run,
                (Some("awaiting"), Some(output)) if run["awaiting"].get("gate").is_some() => {
                    let body = json!({"nodeId": "gate", "output": output});
                    let path = format!("/api/v1/runs/{run_id}/resume");
                    // 409: resumed already (an answer lost to a kill).
                    let (status, answer) =
                        self.call(reqwest::Method::POST, &path, Some(&body)).await;
                    assert!(
                        status == 200 || status == 409,
                        "resume {run_id}: {status} {answer}"
                    );
                }
                _ => {}
            }
        }
    }
}

/// Whole seconds since the Unix epoch, as status documents keep time.
fn unix_seconds() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |elapsed| {
        i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
    })
}

/// A run's report from the API's view of it.
fn report(run: &Value) -> RunReport {
    RunReport {
        run_id: run["runId"].as_str().unwrap_or_default().to_owned(),
        state: serde_json::from_value(run["status"].clone()).unwrap_or(RunState::Running),
        context: context_from_value(run["context"].clone()).unwrap_or_default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_serve_killed_at_random() {
    let _turn = SERIAL.lock().await;
    let mixed_runs = soak_runs(100);
    let (nappers, gated) = (mixed_runs / 2, mixed_runs / 2);
    // Kept after the test (its logs are in `logs/`), cleared before.
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-kill");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let blueprints = tempfile::tempdir().unwrap();
    for blueprint in [mixed_blueprint(), napper(), gatekeeper()] {
        let path = blueprints
            .path()
            .join(format!("{}.json", blueprint["id"].as_str().unwrap()));
        std::fs::write(path, blueprint.to_string()).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let server = Arc::new(Server::new(&data, blueprints.path(), port));
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let supervisor = {
        let (server, stop, kills) = (server.clone(), stop.clone(), kills.clone());
        std::thread::spawn(move || {
            let mut state = u64::from(std::process::id()) | 1;
            let mut random = move |below: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % below
            };
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500 + random(1000)));
                if !stop.load(Ordering::SeqCst) {
                    server.kill_and_restart();
                    kills.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    let mut runs = JoinSet::new();
    for i in 0..mixed_runs {
        let client = client.clone();
        runs.spawn(async move {
            let run_id = format!("mixed-{i}");
            client.start("mixed", &run_id, &seed(i)).await;
            (run_id, 0, client.finish(&format!("mixed-{i}"), None).await)
        });
    }
    for i in 0..nappers {
        let client = client.clone();
        runs.spawn(async move {
            let run_id = format!("nap-{i}");
            let before = unix_seconds();
            client.start("napper", &run_id, &ContextMap::new()).await;
            (run_id.clone(), before, client.finish(&run_id, None).await)
        });
    }
    for i in 0..gated {
        let client = client.clone();
        runs.spawn(async move {
            let run_id = format!("gate-{i}");
            client
                .start("gatekeeper", &run_id, &ContextMap::new())
                .await;
            (
                run_id.clone(),
                0,
                client.finish(&run_id, Some(json!({"n": i}))).await,
            )
        });
    }
    let mut ended = std::collections::BTreeMap::new();
    while let Some(done) = runs.join_next().await {
        let (run_id, before, run) = done.expect("a run's client ends");
        ended.insert(run_id, (before, run));
    }
    stop.store(true, Ordering::SeqCst);
    supervisor.join().expect("the supervisor ends");
    let elapsed = started.elapsed();

    let mut problems = Vec::new();
    let mut repeated_effects = 0;
    let mixed_ids: Vec<String> = (0..mixed_runs).map(|i| format!("mixed-{i}")).collect();
    let expected = Reference::load()
        .await
        .run_each(&mixed_blueprint(), (0..mixed_runs).map(seed).collect())
        .await;
    let reports = mixed_ids
        .iter()
        .map(|id| (id.clone(), report(&ended[id].1)))
        .collect();
    let (mixed_completed, mixed_problems) =
        compare_runs(&mixed_ids, &reports, &expected, &mixed_blueprint());
    problems.extend(mixed_problems);
    let mut others_completed = 0;
    for (run_id, (before, run)) in ended.iter().filter(|(id, _)| !id.starts_with("mixed-")) {
        let context = &run["context"];
        let count = context["count"].as_i64().unwrap_or(0);
        repeated_effects += usize::try_from(count - 1).unwrap_or(0);
        let wanted_output = if run_id.starts_with("nap-") {
            context["_outputs.late"] == json!("woke")
        } else {
            let n: i64 = run_id.trim_start_matches("gate-").parse().unwrap();
            context["_outputs.after"] == json!({"n": n})
        };
        if run["status"] != "completed" || count != 1 || !wanted_output {
            problems.push(format!("run {run_id}: {run}"));
            continue;
        }
        if run_id.starts_with("nap-")
            && run["lastUpdated"].as_i64().unwrap_or(0) < before + NAP_SECONDS
        {
            problems.push(format!(
                "run {run_id} woke before its {NAP_SECONDS} s were up: {run}"
            ));
            continue;
        }
        others_completed += 1;
    }
    let total = mixed_runs + nappers + gated;
    let kills = kills.load(Ordering::SeqCst);
    Row {
        scenario: "8 serve killed (SQLite)".into(),
        runs: total,
        faults_injected: kills as u64,
        runs_completed: mixed_completed + others_completed,
        runs_failed_as_designed: 0,
        runs_lost: total - ended.len(),
        duplicate_effects: repeated_effects,
        notes: format!(
            "{kills} kill -9 of serve in {:.0} s ({mixed_runs} mixed, {nappers} sleeping {NAP_SECONDS} s, {gated} resumed through the API); {} node attempts re-run after a kill (at-least-once); no sleep ended early",
            elapsed.as_secs_f64(),
            server.attempts_rerun()
        ),
    }
    .record();
    assert!(
        problems.is_empty(),
        "{} wrong runs:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(kills > 0, "serve was never killed");
}
