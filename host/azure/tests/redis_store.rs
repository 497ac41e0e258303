//! `RedisCoordination` against a real `redis-server`: each test starts its
//! own instance on a free loopback port (no persistence) and kills it when
//! done, so tests share no state.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flowcraft_azure::redis_store::{RedisCoordination, RedisOptions, progress_key};
use flowcraft_core::progress::{DEFAULT_STEP_LIMIT, RunProgress, RunState};
use flowcraft_core::runner::Pins;
use flowcraft_core::store::CoordinationStore;

/// A private `redis-server`, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install -y redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
            if pong.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not come up: {pong:?}",
                self.port
            );
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
    assert_eq!(calls, 3);
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
