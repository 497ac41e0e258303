//! `RedisCoordination` against a real `redis-server`: each test starts its
//! own instance on a free loopback port (no persistence) and kills it when
//! done, so tests share no state.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flowcraft_azure::redis_store::{RedisCoordination, RedisOptions, progress_key};
use flowcraft_core::progress::{DEFAULT_STEP_LIMIT, RunError, RunProgress, RunState};
use flowcraft_core::runner::Pins;
use flowcraft_core::store::CoordinationStore;

/// A private `redis-server`, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a private port; if it exits at once (its port was
    /// taken after all), tries the next one.
    fn start() -> Self {
        for _ in 0..5 {
            let mut server = Self {
                port: private_port(),
                child: None,
            };
            if server.launch().is_ok() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on its port and waits until it answers.
    fn restart(&mut self) {
        if let Err(status) = self.launch() {
            panic!("redis-server on port {} exited: {status}", self.port);
        }
    }

    /// Spawns the server and waits until it answers; answers its exit status
    /// if it exits first (most likely its port is in use).
    fn launch(&mut self) -> Result<(), std::process::ExitStatus> {
        assert!(self.child.is_none(), "server already running");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install -y redis-server)");
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("redis-server status") {
                return Err(status);
            }
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
            if pong.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "redis-server on port {} did not come up: {pong:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server and waits until the process is gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain synchronous connection, for looking at keys directly.
    fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that is free now and stays free for the test's server:
/// it lies below Linux's ephemeral range (32768 and up), which outgoing
/// connections take their local ports from, so the other tests' clients
/// cannot occupy it. Tests in one process step through the range; processes
/// start at different places.
fn private_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (std::process::id().wrapping_mul(613) + step * 7) % COUNT;
        let port = u16::try_from(port).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn record(run_id: &str) -> RunProgress {
    RunProgress::new(run_id, "bp-redis", Pins::default(), DEFAULT_STEP_LIMIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_load_read_round_trip() {
    let server = RedisServer::start();
    let store = RedisCoordination::connect(&server.url()).await.unwrap();
    store.ping().await.unwrap();

    let mut progress = record("run-1");
    progress.steps = 3;
    progress.pending.insert("a".to_owned());
    assert!(store.create_progress(&progress).await.unwrap());
    assert_eq!(
        store.load_progress("run-1").await.unwrap(),
        Some(progress.clone())
    );
    assert_eq!(
        store
            .read_progress("run-1", |p| (p.steps, p.state))
            .await
            .unwrap(),
        Some((3, RunState::Running))
    );

    // A second create changes nothing.
    let mut other = record("run-1");
    other.steps = 99;
    assert!(!store.create_progress(&other).await.unwrap());
    assert_eq!(store.load_progress("run-1").await.unwrap(), Some(progress));

    // Layout: a hash {v, r, w} under the new key name.
    let mut raw = server.raw();
    let (version, json): (i64, String) = redis::cmd("HMGET")
        .arg(progress_key("run-1"))
        .arg("v")
        .arg("r")
        .query(&mut raw)
        .unwrap();
    assert_eq!(version, 1);
    assert_eq!(serde_json::from_str::<RunProgress>(&json).unwrap().steps, 3);

    // Unknown runs.
    assert_eq!(store.load_progress("nope").await.unwrap(), None);
    assert_eq!(
        store.read_progress("nope", |p| p.steps).await.unwrap(),
        None
    );
    let calls = AtomicU32::new(0);
    let updated = store
        .update_progress("nope", |p| {
            calls.fetch_add(1, Ordering::Relaxed);
            p.steps += 1;
        })
        .await
        .unwrap();
    assert_eq!(updated, None);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_lose_nothing() {
    let server = RedisServer::start();
    let store = RedisCoordination::connect(&server.url()).await.unwrap();
    assert!(store.create_progress(&record("run-c")).await.unwrap());

    let calls = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                store
                    .update_progress("run-c", |p| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        p.steps += 1;
                        p.steps
                    })
                    .await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap().unwrap().unwrap());
    }
    seen.sort_unstable();
    // Every update saw a distinct count: none was lost or applied twice.
    assert_eq!(seen, (1..=40).collect::<Vec<u64>>());
    assert_eq!(
        store.read_progress("run-c", |p| p.steps).await.unwrap(),
        Some(40)
    );
    let version: i64 = redis::cmd("HGET")
        .arg(progress_key("run-c"))
        .arg("v")
        .query(&mut server.raw())
        .unwrap();
    assert_eq!(version, 41);
    assert!(calls.load(Ordering::Relaxed) >= 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_records_are_not_written() {
    let server = RedisServer::start();
    let store = RedisCoordination::connect(&server.url()).await.unwrap();
    assert!(store.create_progress(&record("run-u")).await.unwrap());
    let steps = store.update_progress("run-u", |p| p.steps).await.unwrap();
    assert_eq!(steps, Some(0));
    let version: i64 = redis::cmd("HGET")
        .arg(progress_key("run-u"))
        .arg("v")
        .query(&mut server.raw())
        .unwrap();
    assert_eq!(version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_records_expire() {
    let server = RedisServer::start();
    let store = RedisCoordination::connect(&server.url()).await.unwrap();
    let key = progress_key("run-t");
    let ttl =
        |raw: &mut redis::Connection| -> i64 { redis::cmd("TTL").arg(&key).query(raw).unwrap() };
    let mut raw = server.raw();

    assert!(store.create_progress(&record("run-t")).await.unwrap());
    store
        .update_progress("run-t", |p| p.steps += 1)
        .await
        .unwrap();
    assert_eq!(ttl(&mut raw), -1, "a live run's record must not expire");

    store
        .update_progress("run-t", |p| p.state = RunState::Completed)
        .await
        .unwrap();
    let week = 7 * 24 * 60 * 60;
    let left = ttl(&mut raw);
    assert!(left > week - 60 && left <= week, "TTL {left}");

    // A configured TTL applies too.
    let short = RedisCoordination::connect_with(
        &server.url(),
        RedisOptions {
            terminal_ttl: Duration::from_secs(120),
            ..RedisOptions::default()
        },
    )
    .await
    .unwrap();
    let mut failed = record("run-f");
    failed.state = RunState::Failed;
    assert!(short.create_progress(&failed).await.unwrap());
    let left: i64 = redis::cmd("TTL")
        .arg(progress_key("run-f"))
        .query(&mut raw)
        .unwrap();
    assert!(left > 0 && left <= 120, "TTL {left}");

    // A failed run that an operator retries is live again: no expiry.
    let state = short
        .update_progress("run-f", |p| {
            p.pending.insert("A".into());
            p.retry().map(|_| p.state)
        })
        .await
        .unwrap();
    assert_eq!(state, Some(Ok(RunState::Running)));
    let left: i64 = redis::cmd("TTL")
        .arg(progress_key("run-f"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(left, -1, "a retried run's record must not expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_is_bounded() {
    let server = RedisServer::start();
    let store = RedisCoordination::connect_with(
        &server.url(),
        RedisOptions {
            max_attempts: 3,
            ..RedisOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(store.create_progress(&record("run-x")).await.unwrap());

    // Every attempt's change is overtaken by another writer bumping the version.
    let mut rival = server.raw();
    let mut calls = 0;
    let err = store
        .update_progress("run-x", |p| {
            calls += 1;
            let _: i64 = redis::cmd("HINCRBY")
                .arg(progress_key("run-x"))
                .arg("v")
                .arg(1)
                .query(&mut rival)
                .unwrap();
            p.steps += 1;
        })
        .await
        .unwrap_err();
    // The first change is applied to the record the store remembers from
    // creating it; the conflict answer is the read an update would make
    // without it, so that attempt does not count: then 3 attempts.
    assert_eq!(calls, 4);
    assert_eq!(err.service, "redis");
    assert!(err.message.contains("run-x is contended"), "{err}");
    assert_eq!(
        store.read_progress("run-x", |p| p.steps).await.unwrap(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart() {
    let mut server = RedisServer::start();
    let store = RedisCoordination::connect(&server.url()).await.unwrap();
    assert!(store.create_progress(&record("run-r")).await.unwrap());

    // Restart between two operations: the next one reconnects and succeeds.
    // (No persistence: the restarted server is empty.)
    server.stop();
    server.restart();
    assert_eq!(store.load_progress("run-r").await.unwrap(), None);
    assert!(store.create_progress(&record("run-r")).await.unwrap());
    assert_eq!(
        store
            .update_progress("run-r", |p| {
                p.steps += 1;
                p.steps
            })
            .await
            .unwrap(),
        Some(1)
    );

    // While Redis is down, operations fail with a StoreError naming the run.
    server.stop();
    let err = store.load_progress("run-r").await.unwrap_err();
    assert_eq!(err.service, "redis");
    assert!(err.message.contains("run-r"), "{err}");
    let err = store
        .update_progress("run-r", |p| p.steps += 1)
        .await
        .unwrap_err();
    assert!(err.message.contains("run-r"), "{err}");
    assert!(store.create_progress(&record("run-s")).await.is_err());
    assert!(store.ping().await.is_err());

    // ...and work again once it is back.
    server.restart();
    store.ping().await.unwrap();
    assert!(store.create_progress(&record("run-s")).await.unwrap());
    store
        .update_progress("run-s", |p| p.steps += 1)
        .await
        .unwrap();
    assert_eq!(
        store.read_progress("run-s", |p| p.steps).await.unwrap(),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_a_clear_start_up_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    let err = RedisCoordination::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains('\n'), "{text}");

    let err = RedisCoordination::connect("http://nowhere")
        .await
        .unwrap_err();
    assert!(err.message.contains("invalid Redis URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_records_are_reported() {
    let server = RedisServer::start();
    let store = RedisCoordination::connect(&server.url()).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(progress_key("run-bad"))
        .arg("v")
        .arg(1)
        .arg("r")
        .arg("{not json")
        .query(&mut server.raw())
        .unwrap();
    let err = store.load_progress("run-bad").await.unwrap_err();
    assert!(err.message.contains("run-bad"), "{err}");
    let err = store
        .update_progress("run-bad", |p| p.steps += 1)
        .await
        .unwrap_err();
    assert!(err.message.contains("not valid"), "{err}");
}

/// Calls per command since the server started (`INFO commandstats`),
/// including the commands scripts run; the progress read is the only
/// `HMGET` the store sends itself, the compare-and-set the only `EVALSHA`.
fn command_calls(raw: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// What `f` made the server run, as calls per command (without `INFO`).
async fn commands_of<T>(
    raw: &mut redis::Connection,
    f: impl Future<Output = T>,
) -> (T, BTreeMap<String, u64>) {
    let before = command_calls(raw);
    let value = f.await;
    let after = command_calls(raw);
    let delta = after
        .into_iter()
        .filter(|(name, _)| name != "info")
        .map(|(name, n)| {
            let was = before.get(&name).copied().unwrap_or(0);
            (name, n - was)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    (value, delta)
}

fn calls(delta: &BTreeMap<String, u64>, command: &str) -> u64 {
    delta.get(command).copied().unwrap_or(0)
}

fn version(raw: &mut redis::Connection, run_id: &str) -> i64 {
    redis::cmd("HGET")
        .arg(progress_key(run_id))
        .arg("v")
        .query(raw)
        .unwrap()
}

/// A store with its own memory of runs, as another worker process has.
async fn worker(server: &RedisServer) -> RedisCoordination {
    RedisCoordination::connect(&server.url()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_after_a_read_is_one_round_trip() {
    let server = RedisServer::start();
    let mut raw = server.raw();
    let creator = worker(&server).await;
    assert!(creator.create_progress(&record("run-1")).await.unwrap());
    // Scripts loaded, so that no NOSCRIPT round trip counts below.
    creator
        .update_progress("run-1", |p| p.steps += 1)
        .await
        .unwrap();

    // A job: read the run's progress, then settle it.
    let job = worker(&server).await;
    let (steps, read) = commands_of(&mut raw, job.read_progress("run-1", |p| p.steps)).await;
    assert_eq!(steps.unwrap(), Some(1));
    assert_eq!(calls(&read, "hmget"), 1, "{read:?}");
    assert_eq!(calls(&read, "evalsha"), 0, "{read:?}");
    let (updated, settle) =
        commands_of(&mut raw, job.update_progress("run-1", |p| p.steps += 1)).await;
    assert_eq!(updated.unwrap(), Some(()));
    assert_eq!(calls(&settle, "evalsha"), 1, "{settle:?}");
    assert_eq!(calls(&settle, "hmget"), 0, "{settle:?}");
    assert_eq!(calls(&settle, "hincrby"), 1, "{settle:?}");

    // Updates in a row: each one a single compare-and-set.
    let (_, more) = commands_of(&mut raw, async {
        for _ in 0..5 {
            job.update_progress("run-1", |p| p.steps += 1)
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(calls(&more, "evalsha"), 5, "{more:?}");
    assert_eq!(calls(&more, "hmget"), 0, "{more:?}");
    assert_eq!(version(&mut raw, "run-1"), 8);

    // With nothing remembered, an update reads first, as it used to.
    let forgetful = RedisCoordination::connect_with(
        &server.url(),
        RedisOptions {
            remembered_runs: 0,
            ..RedisOptions::default()
        },
    )
    .await
    .unwrap();
    let (_, without) = commands_of(&mut raw, async {
        forgetful.read_progress("run-1", |p| p.steps).await.unwrap();
        forgetful
            .update_progress("run-1", |p| p.steps += 1)
            .await
            .unwrap();
    })
    .await;
    assert_eq!(calls(&without, "hmget"), 2, "{without:?}");
    assert_eq!(calls(&without, "evalsha"), 1, "{without:?}");
    assert_eq!(
        forgetful.read_progress("run-1", |p| p.steps).await.unwrap(),
        Some(8)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_interleaving_apply_every_change_once() {
    let server = RedisServer::start();
    let mut raw = server.raw();
    let a = worker(&server).await;
    let b = worker(&server).await;
    assert!(a.create_progress(&record("run-w")).await.unwrap());
    assert_eq!(
        b.read_progress("run-w", |p| p.steps).await.unwrap(),
        Some(0)
    );
    // Scripts loaded on the server.
    a.update_progress("run-w", |p| p.steps += 1).await.unwrap();

    // Each worker's remembered record is out of date at each of its turns:
    // the other one wrote since.
    let mut applied = Vec::new();
    for turn in 0..20 {
        let (store, name) = if turn % 2 == 0 { (&b, "b") } else { (&a, "a") };
        let mut calls_of_change = 0;
        let (outcome, delta) = commands_of(
            &mut raw,
            store.update_progress("run-w", |p| {
                calls_of_change += 1;
                p.steps += 1;
                p.errors.push(RunError {
                    node_id: format!("{name}{turn}"),
                    message: String::new(),
                });
                p.steps
            }),
        )
        .await;
        let steps = outcome.unwrap().unwrap();
        // Once on the outdated record, once on the current one from the
        // conflict answer, which needs no read.
        assert_eq!(calls_of_change, 2, "turn {turn}");
        assert_eq!(calls(&delta, "evalsha"), 2, "turn {turn}: {delta:?}");
        assert_eq!(calls(&delta, "hmget"), 0, "turn {turn}: {delta:?}");
        assert_eq!(calls(&delta, "hincrby"), 1, "turn {turn}: {delta:?}");
        applied.push(steps);
    }
    assert_eq!(applied, (2..=21).collect::<Vec<u64>>());
    let progress = a.load_progress("run-w").await.unwrap().unwrap();
    assert_eq!(progress.steps, 21);
    let written: Vec<String> = progress.errors.iter().map(|e| e.node_id.clone()).collect();
    let expected: Vec<String> = (0..20)
        .map(|turn| format!("{}{turn}", if turn % 2 == 0 { "b" } else { "a" }))
        .collect();
    assert_eq!(written, expected, "every change applied once, in order");
    assert_eq!(version(&mut raw, "run-w"), 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_answer_carries_the_current_record() {
    let server = RedisServer::start();
    let mut raw = server.raw();
    let store = worker(&server).await;
    assert!(store.create_progress(&record("run-k")).await.unwrap());
    store
        .update_progress("run-k", |p| p.steps += 1)
        .await
        .unwrap();

    // Another writer (an older worker's script, say) stores a record the
    // store has not seen: new version, new token, different content.
    let mut other = record("run-k");
    other.steps = 77;
    other.pending.insert("elsewhere".into());
    let _: () = redis::cmd("HSET")
        .arg(progress_key("run-k"))
        .arg("v")
        .arg(3)
        .arg("r")
        .arg(serde_json::to_string(&other).unwrap())
        .arg("w")
        .arg("someone-else")
        .query(&mut raw)
        .unwrap();

    let mut seen = Vec::new();
    let (outcome, delta) = commands_of(
        &mut raw,
        store.update_progress("run-k", |p| {
            seen.push((p.steps, p.pending.contains("elsewhere")));
            p.steps += 1;
            p.steps
        }),
    )
    .await;
    assert_eq!(outcome.unwrap(), Some(78));
    assert_eq!(seen, vec![(1, false), (77, true)]);
    assert_eq!(calls(&delta, "evalsha"), 2, "{delta:?}");
    assert_eq!(calls(&delta, "hmget"), 0, "{delta:?}");
    // Only what the scripts run: no read of the store's own.
    for command in delta.keys() {
        assert!(
            [
                "evalsha", "hget", "hincrby", "hset", "persist", "ttl", "expire"
            ]
            .contains(&command.as_str()),
            "{delta:?}"
        );
    }
    let stored = store.load_progress("run-k").await.unwrap().unwrap();
    assert_eq!(stored.steps, 78);
    assert!(stored.pending.contains("elsewhere"));
    assert_eq!(version(&mut raw, "run-k"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_remembered_record_is_checked() {
    let server = RedisServer::start();
    let mut raw = server.raw();
    let a = worker(&server).await;
    let b = worker(&server).await;
    assert!(a.create_progress(&record("run-n")).await.unwrap());
    b.update_progress("run-n", |p| p.steps = 3).await.unwrap();

    // A's record (steps 0) is out of date; a change that leaves it as it
    // is must not answer from it.
    let (steps, delta) = commands_of(&mut raw, a.update_progress("run-n", |p| p.steps)).await;
    assert_eq!(steps.unwrap(), Some(3));
    assert_eq!(calls(&delta, "evalsha"), 1, "{delta:?}");
    assert_eq!(calls(&delta, "hincrby"), 0, "{delta:?}");
    // Now current: checked again, not written.
    let (steps, delta) = commands_of(&mut raw, a.update_progress("run-n", |p| p.steps)).await;
    assert_eq!(steps.unwrap(), Some(3));
    assert_eq!(calls(&delta, "evalsha"), 1, "{delta:?}");
    assert_eq!(calls(&delta, "hincrby"), 0, "{delta:?}");
    assert_eq!(version(&mut raw, "run-n"), 2);

    // Another worker changes the run's state: A's answer shows it.
    b.update_progress("run-n", |p| p.state = RunState::Awaiting)
        .await
        .unwrap();
    assert_eq!(
        a.update_progress("run-n", |p| p.state).await.unwrap(),
        Some(RunState::Awaiting)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_created_anew_is_not_taken_for_the_remembered_one() {
    let server = RedisServer::start();
    let mut raw = server.raw();
    let a = worker(&server).await;
    let b = worker(&server).await;
    let key = progress_key("run-z");
    assert!(a.create_progress(&record("run-z")).await.unwrap());
    a.update_progress("run-z", |p| p.steps += 1).await.unwrap();
    assert_eq!(version(&mut raw, "run-z"), 2);

    // The record is gone (expired, or deleted) and another worker creates
    // the run anew and moves it to the same version A remembers.
    let _: () = redis::cmd("DEL").arg(&key).query(&mut raw).unwrap();
    let mut fresh = record("run-z");
    fresh.steps = 40;
    assert!(b.create_progress(&fresh).await.unwrap());
    b.update_progress("run-z", |p| p.steps += 1).await.unwrap();
    assert_eq!(version(&mut raw, "run-z"), 2);

    let mut seen = Vec::new();
    let steps = a
        .update_progress("run-z", |p| {
            seen.push(p.steps);
            p.steps += 1;
            p.steps
        })
        .await
        .unwrap();
    assert_eq!(seen, vec![1, 41], "the new record's write token differs");
    assert_eq!(steps, Some(42));
    assert_eq!(version(&mut raw, "run-z"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_record_that_is_gone_reads_as_unknown() {
    let server = RedisServer::start();
    let mut raw = server.raw();
    let store = worker(&server).await;
    assert!(store.create_progress(&record("run-g")).await.unwrap());
    assert_eq!(
        store.read_progress("run-g", |p| p.steps).await.unwrap(),
        Some(0)
    );
    let _: () = redis::cmd("DEL")
        .arg(progress_key("run-g"))
        .query(&mut raw)
        .unwrap();
    let calls_of_change = AtomicU32::new(0);
    let change = |p: &mut RunProgress| {
        calls_of_change.fetch_add(1, Ordering::Relaxed);
        p.steps += 1;
    };
    assert_eq!(store.update_progress("run-g", change).await.unwrap(), None);
    // Forgotten: the next update reads, finds nothing, changes nothing.
    let (outcome, delta) = commands_of(&mut raw, store.update_progress("run-g", change)).await;
    assert_eq!(outcome.unwrap(), None);
    assert_eq!(calls(&delta, "hmget"), 1, "{delta:?}");
    assert_eq!(calls(&delta, "evalsha"), 0, "{delta:?}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(progress_key("run-g"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(exists, 0, "nothing recreated the record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_from_several_workers_lose_nothing() {
    let server = RedisServer::start();
    let workers = [
        worker(&server).await,
        worker(&server).await,
        worker(&server).await,
    ];
    assert!(workers[0].create_progress(&record("run-m")).await.unwrap());
    let calls_of_change = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = workers[i % 3].clone();
            let calls_of_change = calls_of_change.clone();
            tokio::spawn(async move {
                // A job reads, then settles.
                store.read_progress("run-m", |p| p.steps).await.unwrap();
                store
                    .update_progress("run-m", |p| {
                        calls_of_change.fetch_add(1, Ordering::Relaxed);
                        p.steps += 1;
                        p.pending.insert(format!("job-{i}"));
                        p.steps
                    })
                    .await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap().unwrap().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=60).collect::<Vec<u64>>());
    for store in &workers {
        let progress = store.load_progress("run-m").await.unwrap().unwrap();
        assert_eq!(progress.steps, 60);
        assert_eq!(progress.pending.len(), 60);
    }
    assert_eq!(version(&mut server.raw(), "run-m"), 61);
    assert!(calls_of_change.load(Ordering::Relaxed) >= 60);
}
