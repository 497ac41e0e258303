//! Scenario 4, backend outages and throttling: three workers run the mixed
//! blueprint in waves while the backends misbehave under them:
//!
//! - throttling all along: the Cosmos stand-in answers 10 % of the
//!   scenario's document requests with `429` + `x-ms-retry-after-ms`, the
//!   queue stand-in 5 % of its message sends with `429` + `Retry-After` and
//!   3 % of its other message requests with `503 ServerBusy` + `Retry-After`;
//! - the Cosmos database, then the queue, unreachable for 3 s each (every
//!   connection reset);
//! - the scenario's own redis-server (AOF persistence, fsync per write)
//!   restarted, later killed with SIGKILL and started again.
//!
//! The workers run with a visibility timeout longer than the scenario (60 s
//! at the default size). A job that failed on a backend error would come
//! back only after it, so its run could not end within that timeout less 5 s
//! of the first start: every run must end within that, equal to
//! its reference, with no "delivered again" warning in any worker's log and
//! no node attempt executed twice. That is what "retry with back-off" and
//! "throttling honoured" mean here: failed requests are repeated in place
//! after the advised wait or a short back-off, not by failing the job. The
//! one exception is a write cut off by the Redis kill whose outcome cannot
//! be known (another job changed the record meanwhile): its job must go
//! round again, so its run gets one more visibility timeout to end.
//! (The Cosmos SDK honours `429` + `x-ms-retry-after-ms` itself; the queue's
//! throttling and every connection failure are handled by
//! `flowcraft_azure::retry`, whose debug lines the notes count.) The
//! workers' logs are kept in `target/tmp/fault-suite/4-backend-outages.log`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Fleet, Reference, Row, Service, Stand, differences, soak_runs, unique};
use crate::support::azure::azure_config;
use crate::{SERIAL, mixed_blueprint, seed};

/// The workers' visibility timeout (seconds) for `runs` runs: longer than
/// the scenario takes (60 s for the default 40 runs, half a second more per
/// further run).
fn visibility(runs: usize) -> u64 {
    60 + runs.saturating_sub(40) as u64 / 2
}
/// How long each of the Cosmos and queue outages lasts.
const OUTAGE: Duration = Duration::from_millis(3_000);
/// How long a wave of runs gets before the next fault.
const IN_FLIGHT: Duration = Duration::from_millis(1_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_outages_and_honour_throttling() {
    let _turn = SERIAL.lock().await;
    let total = soak_runs(40).max(4);
    let visibility = visibility(total);
    let blueprint = mixed_blueprint();
    let redis = PrivateRedis::start();
    let mut config = azure_config("outage");
    config.redis_url = redis.url();
    let stand = Stand::with_config(config, std::slice::from_ref(&blueprint)).await;
    let reference = Reference::load().await;
    let throttling = Throttling::of(&stand);
    let fleet = Fleet::spawn_with(
        &stand,
        3,
        &[
            "--concurrency",
            "8",
            "--visibility-timeout",
            &visibility.to_string(),
            // A write of unknown outcome that was in fact applied leaves its
            // redelivered job nothing to do, and its successors unsent: the
            // reconciler re-sends a run that stalls, as in production.
            "--reconcile-interval",
            "5",
            "--stalled-after",
            "30",
        ],
        &crate::support::dist(),
        &[
            // (workers take their settings from the environment)
            ("REDIS_URL", &stand.config.redis_url),
            (
                "FLOWCRAFT_LOG",
                "warn,flowcraft_core::engine=info,flowcraft_azure::retry=debug",
            ),
        ],
    );
    let tag = unique();
    let runs: Vec<String> = (0..total).map(|i| format!("outage-{i}-{tag}")).collect();
    let waves: Vec<&[String]> = runs.chunks(total.div_ceil(4)).collect();
    let start_wave = async |wave: usize| {
        let first = waves[..wave].iter().map(|w| w.len()).sum::<usize>();
        for (offset, run) in waves[wave].iter().enumerate() {
            stand.start("mixed", run, &seed(first + offset)).await;
        }
    };
    let (mut cosmos_429, mut queue_throttled, mut resets, mut restarts) = (0, 0, 0, 0);

    let started = Instant::now();
    throttling.on(None).await;
    start_wave(0).await;
    tokio::time::sleep(IN_FLIGHT).await;
    // The Cosmos database unreachable.
    cosmos_429 += stand.control.clear(Service::Cosmos).await;
    throttling.on(Some(Service::Cosmos)).await;
    tokio::time::sleep(OUTAGE + Duration::from_millis(500)).await;
    resets += stand.control.clear(Service::Cosmos).await;
    throttling.on(None).await;
    start_wave(1).await;
    tokio::time::sleep(IN_FLIGHT).await;
    // The queue unreachable.
    queue_throttled += stand.control.clear(Service::Queue).await;
    throttling.on(Some(Service::Queue)).await;
    tokio::time::sleep(OUTAGE + Duration::from_millis(500)).await;
    resets += stand.control.clear(Service::Queue).await;
    throttling.on(None).await;
    start_wave(2).await;
    tokio::time::sleep(IN_FLIGHT).await;
    // Redis restarted, then killed and started again.
    redis.restart();
    restarts += 1;
    start_wave(3).await;
    tokio::time::sleep(IN_FLIGHT).await;
    redis.kill_and_start();
    restarts += 1;
    let faults_done = started.elapsed();

    // A job that had to wait for its visibility timeout cannot end in time.
    let limit = Duration::from_secs(visibility - 5).saturating_sub(started.elapsed());
    let mut reports = stand.wait_all(&runs, limit, Some(&fleet)).await;
    let elapsed = started.elapsed();
    // The one honest exception: a write cut off by the Redis kill whose
    // outcome nobody can tell (another job changed the record meanwhile)
    // leaves its job to be delivered again. Such runs get one more timeout.
    let ambiguous = fleet.log_lines("whether the write was applied is unknown");
    let unknown_outcome: Vec<String> = runs
        .iter()
        .filter(|run| ambiguous.iter().any(|line| line.contains(run.as_str())))
        .cloned()
        .collect();
    let late: Vec<String> = unknown_outcome
        .iter()
        .filter(|run| !reports.contains_key(*run))
        .cloned()
        .collect();
    if !late.is_empty() {
        let again = Duration::from_secs(visibility + 30);
        reports.extend(stand.wait_all(&late, again, Some(&fleet)).await);
    }
    cosmos_429 += stand.control.clear(Service::Cosmos).await;
    queue_throttled += stand.control.clear(Service::Queue).await;

    let mut problems = Vec::new();
    let mut completed = 0;
    for (i, run) in runs.iter().enumerate() {
        let Some(report) = reports.get(run) else {
            let now = match stand.engine.report(run).await {
                Ok(report) => format!("{:?}", report.state),
                Err(error) => error.to_string(),
            };
            problems.push(format!(
                "run {run} did not end within {limit:?} (now: {now})"
            ));
            continue;
        };
        let expected = reference
            .run(std::slice::from_ref(&blueprint), "mixed", &seed(i))
            .await;
        let diff = differences(report, &expected, &blueprint);
        if diff.is_empty() {
            completed += 1;
        } else {
            problems.push(format!("run {run}: {}", diff.join("; ")));
        }
    }
    // A job that went round again after a write of unknown outcome runs its
    // node again (at least once): not a duplicate effect, whether the run
    // then waited for the redelivery or the reconciler re-sent it sooner.
    let (repeated, rerun): (Vec<_>, Vec<_>) = fleet
        .ledger
        .lock()
        .unwrap()
        .repeated(&runs)
        .into_iter()
        .partition(|((run, _, _), _)| !unknown_outcome.contains(run));
    let redelivered: Vec<String> = fleet
        .log_lines("delivered again")
        .into_iter()
        .filter(|line| !ambiguous.contains(line))
        .collect();
    let abandoned = fleet.log_lines("visibility timeout");
    let unreachable = |service: &str| {
        fleet
            .log_lines(&format!("{service} unreachable; retrying"))
            .len()
    };
    let throttled = cosmos_429 + queue_throttled;
    let retried_throttled = |service: &str| {
        fleet
            .log_lines(&format!("{service} throttled the request"))
            .len()
    };
    let warnings = fleet.log_lines(" WARN ");
    // The workers' logs, for a look after a failure.
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-suite/4-backend-outages.log");
    let _ = std::fs::create_dir_all(log.parent().unwrap());
    let _ = std::fs::write(&log, fleet.log_lines("").join("\n"));
    let redis_lost = fleet.log_lines("Redis connection lost").len();

    for problem in &problems {
        eprintln!("4 backend outages: {problem}");
    }
    Row {
        scenario: "4 backend outages".into(),
        runs: total,
        faults_injected: throttled + resets + restarts,
        runs_completed: completed,
        runs_failed_as_designed: 0,
        runs_lost: total - reports.len(),
        duplicate_effects: repeated.len(),
        notes: format!(
            "{throttled} throttling answers (Cosmos {cosmos_429} 429 + x-ms-retry-after-ms, queue {queue_throttled} 429/503 + Retry-After), \
             {resets} connection resets (Cosmos 3 s, queue 3 s), Redis restarted and kill -9'd; \
             all runs ended {:.1} s after the first start ({:.1} s after the last fault) with a {visibility} s visibility timeout; \
             in-place retries: throttled Cosmos {} / queue {}; unreachable warnings Cosmos {} / queue {} / Redis {} (+{redis_lost} connection lost); \
             {} warn lines in all; {} run(s) met a write whose outcome the Redis kill made unknown ({} of them waited for a redelivery; {} node attempt(s) re-run)",
            elapsed.as_secs_f64(),
            (elapsed - faults_done).as_secs_f64(),
            retried_throttled("Cosmos DB"),
            retried_throttled("queue service"),
            unreachable("Cosmos DB"),
            unreachable("queue service"),
            unreachable("Redis"),
            warnings.len(),
            unknown_outcome.len(),
            late.len(),
            rerun.len(),
        ),
    }
    .record();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(completed, total);
    assert!(
        repeated.is_empty(),
        "node attempts run more than once: {repeated:?}"
    );
    assert!(
        redelivered.is_empty() && abandoned.is_empty(),
        "jobs left to their visibility timeout:\n{}",
        [redelivered, abandoned].concat().join("\n")
    );
    assert!(
        throttled >= 2 * total as u64,
        "only {throttled} throttling answers injected"
    );
    assert!(resets >= 10, "only {resets} connections reset");
    assert!(redis_lost >= 1, "no worker noticed the Redis restarts");
}

/// The throttling rules of both stand-ins, scoped to the stand's queue and
/// database, with an outage of one service in front when asked.
struct Throttling<'a> {
    stand: &'a Stand,
    queue_path: String,
    database_path: String,
}

impl<'a> Throttling<'a> {
    fn of(stand: &'a Stand) -> Self {
        Self {
            stand,
            queue_path: format!("/{}", stand.config.queue),
            database_path: format!("/dbs/{}/", stand.config.database),
        }
    }

    /// Replaces the rules of both services: throttling, and for `outage`
    /// every connection reset for [`OUTAGE`] first.
    async fn on(&self, outage: Option<Service>) {
        let cosmos = json!([{"effect": "status", "status": 429, "match": "doc.", "path": self.database_path,
                             "headers": {"x-ms-retry-after-ms": "150"}, "probability": 0.1}]);
        let queue = json!([
            {"effect": "status", "status": 429, "match": "message.send", "path": self.queue_path,
             "headers": {"Retry-After": "1"}, "probability": 0.05},
            {"effect": "status", "status": 503, "code": "ServerBusy", "match": "message.", "path": self.queue_path,
             "headers": {"Retry-After": "1"}, "probability": 0.03},
        ]);
        for (service, rules, path) in [
            (Service::Cosmos, cosmos, &self.database_path),
            (Service::Queue, queue, &self.queue_path),
        ] {
            let mut rules: Vec<Value> = rules.as_array().unwrap().clone();
            if matches!(
                (outage, service),
                (Some(Service::Cosmos), Service::Cosmos) | (Some(Service::Queue), Service::Queue)
            ) {
                rules.insert(
                    0,
                    json!({"effect": "reset", "path": path, "forMs": OUTAGE.as_millis() as u64}),
                );
            }
            self.stand
                .control
                .inject(service, Value::Array(rules))
                .await;
        }
    }
}

/// A redis-server of this scenario's own (a free port, a state directory
/// of its own, AOF persistence with an fsync per write), managed with
/// `scripts/azure-local.sh`; stopped when dropped.
struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let redis = Self {
            dir: tempfile::tempdir().unwrap(),
            port,
        };
        redis.script(&["restart", "redis"]);
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn script(&self, args: &[&str]) {
        let script = repo().join("scripts/azure-local.sh");
        let status = Command::new(&script)
            .args(args)
            .env("FLOWCRAFT_LOCAL_DIR", self.dir.path())
            .env("FLOWCRAFT_REDIS_PORT", self.port.to_string())
            .env("FLOWCRAFT_REDIS_PERSIST", "1")
            .status()
            .expect("scripts/azure-local.sh runs");
        assert!(
            status.success(),
            "scripts/azure-local.sh {args:?}: {status}"
        );
    }

    /// Stops the server (SIGTERM) and starts it again.
    fn restart(&self) {
        self.script(&["restart", "redis"]);
    }

    /// `kill -9`s the server, then starts it again.
    fn kill_and_start(&self) {
        let pid =
            std::fs::read_to_string(self.dir.path().join("redis.pid")).expect("redis pid file");
        let pid = pid.trim();
        let status = Command::new("kill")
            .args(["-9", pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -9 {pid}: {status}");
        let gone = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.script(&["restart", "redis"]);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/azure-local.sh"))
            .arg("stop")
            .env("FLOWCRAFT_LOCAL_DIR", self.dir.path())
            .env("FLOWCRAFT_REDIS_PORT", self.port.to_string())
            .status();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
