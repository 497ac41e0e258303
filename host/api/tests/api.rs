//! The API over real HTTP: the router on a loopback port, a worker in this
//! process and the example bundles (`scripts/build-plugins.sh`). Every case
//! runs twice: on the SQLite backend in a temporary directory (module
//! `sqlite`) and on the local Azure stand-ins with a queue and database of
//! its own (module `azure`; `eval "$(scripts/azure-local.sh env)"`). Every
//! route, the error shapes, the token rules, idempotent starts and long polls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flowcraft_api::{Api, Tokens};
use flowcraft_azure::backend::{AzureBackend, AzureConfig};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::directory::RunDirectory;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_plugins::{PluginConfig, PluginHost};
use flowcraft_sqlite::SqliteBackend;
use flowcraft_worker::{WorkerBackend, WorkerSettings};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn dist() -> PathBuf {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins-example/dist");
    assert!(
        dist.join("conformance.wasm").exists(),
        "{} has no bundles: run scripts/build-plugins.sh",
        dist.display()
    );
    dist
}

/// chain: A (echo of `_inputs.A`) → B (double).
fn chain() -> Value {
    json!({"id": "chain", "nodes": [{"id": "A", "uses": "echo"}, {"id": "B", "uses": "double"}],
           "edges": [{"source": "A", "target": "B"}]})
}

/// gate: A (const) → W (wait) → B (echo of W's output).
fn gate() -> Value {
    json!({"id": "gate", "nodes": [
        {"id": "A", "uses": "const", "params": {"value": 1}},
        {"id": "W", "uses": "wait"},
        {"id": "B", "uses": "echo"}
    ], "edges": [{"source": "A", "target": "W"}, {"source": "W", "target": "B"}]})
}

/// hook: A (const) → H (webhook) → B (echo of what the webhook was called with).
fn hook() -> Value {
    json!({"id": "hook", "nodes": [
        {"id": "A", "uses": "const", "params": {"value": 1}},
        {"id": "H", "uses": "webhook"},
        {"id": "B", "uses": "echo"}
    ], "edges": [{"source": "A", "target": "H"}, {"source": "H", "target": "B"}]})
}

/// doubling: G doubles context key `amount` (fails for a non-number).
fn doubling() -> Value {
    json!({"id": "doubling", "nodes": [{"id": "G", "uses": "double", "inputs": "amount"}], "edges": []})
}

/// slow: S (sleeps `ms` in the node) → N (const).
fn slow(ms: u64) -> Value {
    json!({"id": format!("slow{ms}"), "nodes": [
        {"id": "S", "uses": "slow", "params": {"ms": ms}, "config": {"timeout": 60000}},
        {"id": "N", "uses": "const", "params": {"value": "after"}}
    ], "edges": [{"source": "S", "target": "N"}]})
}

/// The backend a case runs on.
#[derive(Clone, Copy)]
enum Backing {
    Sqlite,
    Azure,
}

/// Where a server keeps its runs, to put a message on its queue behind the
/// workers' back.
enum Store {
    Sqlite {
        database: PathBuf,
        _data: tempfile::TempDir,
    },
    Azure(Box<AzureBackend>),
}

/// Servers started by this process (names their Azure resources and runs).
static SERVERS: AtomicUsize = AtomicUsize::new(0);

/// A server on a loopback port with a worker; both stop when dropped.
struct Server {
    base: String,
    client: reqwest::Client,
    store: Store,
    /// Prefix of this server's run ids: Azure's progress records are shared
    /// by every test of every run of the suite.
    tag: String,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    async fn start(backing: Backing, tokens: &[&str]) -> Self {
        let tag = format!(
            "api-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        );
        match backing {
            Backing::Sqlite => {
                let data = tempfile::tempdir().unwrap();
                let backend = SqliteBackend::open(data.path()).unwrap();
                let database = backend.path().to_owned();
                let store = Store::Sqlite {
                    database,
                    _data: data,
                };
                Self::start_on(backend, store, tag, tokens).await
            }
            Backing::Azure => {
                let config = AzureConfig::from_environment(&tag, &tag)
                    .unwrap_or_else(|problem| panic!("{problem}"));
                let backend = AzureBackend::connect(&config).await.unwrap();
                let store = Store::Azure(Box::new(backend.clone()));
                Self::start_on(backend, store, tag, tokens).await
            }
        }
    }

    async fn start_on<B: WorkerBackend + RunDirectory>(
        backend: B,
        store: Store,
        tag: String,
        tokens: &[&str],
    ) -> Self {
        let mut config = PluginConfig::new(dist());
        config.cache_dir = Some(std::env::temp_dir().join("flowcraft-api-test-cache"));
        let host = Arc::new(PluginHost::load(config).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let plans = [
            chain(),
            gate(),
            hook(),
            doubling(),
            slow(1_000),
            slow(20_000),
        ]
        .map(|value| {
            let blueprint: Blueprint = serde_json::from_value(value).unwrap();
            Plan::new(blueprint, EvaluatorMode::Safe).unwrap()
        });
        let engine = Arc::new(Engine::new(
            Arc::new(backend),
            host.clone(),
            Arc::new(PlanRegistry::new(plans)),
            EngineSettings {
                public_url: Some(base.clone()),
                ..EngineSettings::default()
            },
        ));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let api = Arc::new(Api {
            engine: engine.clone(),
            plugins: host,
            evaluator: EvaluatorMode::Safe,
            tokens: Tokens::new(tokens.iter().copied()),
            shutdown: stopping.clone(),
            saved_blueprints: None,
            metrics: None,
        });
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let settings = WorkerSettings {
            concurrency: 8,
            ..WorkerSettings::default()
        };
        tokio::spawn(flowcraft_worker::run(
            engine,
            settings,
            stopped(stopping.clone()),
        ));
        tokio::spawn(flowcraft_api::serve(
            listener,
            flowcraft_api::router(api),
            stopped(stopping),
        ));
        Self {
            base,
            client: reqwest::Client::new(),
            store,
            tag,
            _stop: stop,
        }
    }

    /// This server's name for the run the case calls `name`.
    fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// What the workers of this backend say of a message that is no job.
    fn no_job_reason(&self) -> &'static str {
        match self.store {
            Store::Sqlite { .. } => "not a job group",
            Store::Azure(_) => "undecodable message",
        }
    }

    /// Puts `text` on the job queue as a message.
    async fn send_raw_message(&self, text: &str) {
        match &self.store {
            Store::Sqlite { database, .. } => {
                let raw = rusqlite::Connection::open(database).unwrap();
                raw.execute("INSERT INTO jobs (body, visible_at) VALUES (?1, 0)", [text])
                    .unwrap();
            }
            Store::Azure(backend) => {
                backend.queue().send(text, Duration::ZERO).await.unwrap();
            }
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// The run once it is over or awaiting (a long poll of up to 30 s).
    async fn settled(&self, run_id: &str) -> Value {
        let (status, run) = self.get(&format!("/api/v1/runs/{run_id}?wait=30")).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        run
    }
}

/// Runs each case on both backends, as tests of modules `sqlite` and `azure`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backing::Sqlite).await
                }
            )*
        }
        mod azure {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backing::Azure).await
                }
            )*
        }
    };
}

on_both_backends!(
    a_started_run_is_read_back_completed_and_a_retried_start_is_idempotent,
    an_awaiting_run_is_resumed_once,
    a_webhook_node_waits_for_its_url_to_be_called_once,
    a_long_poll_answers_when_the_run_ends_or_its_seconds_are_up,
    a_failed_run_is_retried_with_a_context_patch,
    runs_are_listed_a_page_at_a_time_with_filters,
    blueprints_are_listed_read_and_added_after_validation,
    bundles_health_readiness_and_the_openapi_document,
    a_message_that_is_no_job_is_dead_lettered_listed_and_replayed,
    bad_requests_get_a_named_error,
    with_tokens_every_route_but_healthz_needs_one,
);

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {body}"))
}

async fn a_started_run_is_read_back_completed_and_a_retried_start_is_idempotent(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    let c1 = server.id("c1");
    let start = json!({"blueprintId": "chain", "runId": c1, "context": {"_inputs.A": 21}});
    let (status, body) = server.post("/api/v1/runs", start.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["runId"], c1.as_str());

    let run = server.settled(&c1).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["context"]["_outputs.B"], 42);
    assert_eq!(run["blueprintId"], "chain");
    let states: Vec<(&str, &str, u64)> = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap(),
                n["state"].as_str().unwrap(),
                n["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, vec![("A", "completed", 1), ("B", "completed", 1)]);
    assert_eq!(
        run["edges"],
        json!([{"source": "A", "target": "B", "action": null}])
    );
    let time = |node: usize, field: &str| {
        run["nodes"][node][field]
            .as_i64()
            .unwrap_or_else(|| panic!("node {node} has no {field}: {run}"))
    };
    assert!(time(0, "startedAt") <= time(0, "finishedAt"), "{run}");
    assert!(time(0, "finishedAt") <= time(1, "startedAt"), "{run}");
    assert!(time(1, "startedAt") <= time(1, "finishedAt"), "{run}");
    assert!(run["finalStatus"].is_object(), "{run}");

    let (status, again) = server.post("/api/v1/runs", start).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, json!({"runId": c1, "status": "completed"}));
    let (status, other) = server
        .post("/api/v1/runs", json!({"blueprintId": "gate", "runId": c1}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{other}");
    assert!(
        other["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blueprint 'chain'")
    );

    let (status, fresh) = server
        .post("/api/v1/runs", json!({"blueprintId": "chain"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fresh}");
    assert!(!fresh["runId"].as_str().unwrap().is_empty());
}

async fn an_awaiting_run_is_resumed_once(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    let g1 = server.id("g1");
    server
        .post("/api/v1/runs", json!({"blueprintId": "gate", "runId": g1}))
        .await;
    let run = server.settled(&g1).await;
    assert_eq!(run["status"], "awaiting", "{run}");
    assert_eq!(run["awaiting"], json!({"W": {"reason": "external_event"}}));

    let (status, resumed) = server
        .post(
            &format!("/api/v1/runs/{g1}/resume"),
            json!({"output": {"ok": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["status"], "running");
    let run = server.settled(&g1).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["context"]["_outputs.B"], json!({"ok": true}));

    let (status, refused) = server
        .post(&format!("/api/v1/runs/{g1}/resume"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let (status, missing) = server.post("/api/v1/runs/nobody/resume", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");

    // A cancelled run keeps its awaiting node on record but awaits nothing.
    let g2 = server.id("g2");
    server
        .post("/api/v1/runs", json!({"blueprintId": "gate", "runId": g2}))
        .await;
    assert_eq!(server.settled(&g2).await["status"], "awaiting");
    let (status, cancelled) = server
        .post(&format!("/api/v1/runs/{g2}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let (status, refused) = server
        .post(&format!("/api/v1/runs/{g2}/resume"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{refused}"
    );
}

async fn a_webhook_node_waits_for_its_url_to_be_called_once(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    let h1 = server.id("h1");
    server
        .post("/api/v1/runs", json!({"blueprintId": "hook", "runId": h1}))
        .await;
    let run = server.settled(&h1).await;
    assert_eq!(run["status"], "awaiting", "{run}");
    let url = run["context"]["_outputs.H"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no webhook URL in the node's output: {run}"))
        .to_owned();
    assert_eq!(url, format!("{}/api/v1/webhooks/{h1}/H", server.base));
    assert_eq!(
        run["context"]["_outputs.H"]["event"],
        format!("webhook:{h1}:H")
    );
    assert_eq!(run["awaiting"]["H"]["reason"], "webhook", "{run}");

    let called = server
        .client
        .post(&url)
        .json(&json!({"paid": true, "amount": 12.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(called.status(), StatusCode::OK);
    let run = server.settled(&h1).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        run["context"]["_outputs.B"],
        json!({"paid": true, "amount": 12.5})
    );

    let path = url.trim_start_matches(&server.base);
    let (status, again) = server.post(path, json!({"paid": false})).await;
    assert_eq!(
        (status, error_code(&again)),
        (StatusCode::CONFLICT, "conflict"),
        "{again}"
    );
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("called already"),
        "{again}"
    );
    let (status, body) = server
        .post(&format!("/api/v1/webhooks/{h1}/A"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = server.post("/api/v1/webhooks/nobody/H", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

async fn a_long_poll_answers_when_the_run_ends_or_its_seconds_are_up(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    // Running for a second when the poll starts: answered at its end.
    let (s1, s2) = (server.id("s1"), server.id("s2"));
    server
        .post(
            "/api/v1/runs",
            json!({"blueprintId": "slow1000", "runId": s1}),
        )
        .await;
    let run = server.settled(&s1).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["context"]["_outputs.N"], "after");

    // Running for 20 s: a poll of one second answers while it runs.
    server
        .post(
            "/api/v1/runs",
            json!({"blueprintId": "slow20000", "runId": s2}),
        )
        .await;
    let (status, run) = server.get(&format!("/api/v1/runs/{s2}?wait=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "running", "{run}");
    let states: Vec<&str> = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["running", "pending"]);
    server
        .post(&format!("/api/v1/runs/{s2}/cancel"), json!({}))
        .await;
    let run = server.settled(&s2).await;
    assert_eq!(run["status"], "cancelled", "{run}");

    let (status, body) = server.get(&format!("/api/v1/runs/{s2}?wait=61")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`wait`")
    );
}

async fn a_failed_run_is_retried_with_a_context_patch(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    let d1 = server.id("d1");
    server
        .post(
            "/api/v1/runs",
            json!({"blueprintId": "doubling", "runId": d1, "context": {"amount": "oops"}}),
        )
        .await;
    let run = server.settled(&d1).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["errors"][0]["nodeId"], "G");
    assert_eq!(run["nodes"][0]["state"], "failed");
    assert_eq!(
        run["nodes"][0]["error"], run["errors"][0]["message"],
        "{run}"
    );
    let (status, retried) = server
        .post(
            &format!("/api/v1/runs/{d1}/retry"),
            json!({"context": {"amount": 21}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["rescheduled"], json!(["G"]));
    let run = server.settled(&d1).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["context"]["_outputs.G"], 42);
    let (status, refused) = server
        .post(&format!("/api/v1/runs/{d1}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
}

async fn runs_are_listed_a_page_at_a_time_with_filters(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    for i in 0..3 {
        server
            .post("/api/v1/runs", json!({"blueprintId": "chain", "runId": server.id(&format!("l{i}")), "context": {"_inputs.A": i}}))
            .await;
        server.settled(&server.id(&format!("l{i}"))).await;
    }
    let lg = server.id("lg");
    server
        .post("/api/v1/runs", json!({"blueprintId": "gate", "runId": lg}))
        .await;
    server.settled(&lg).await;

    let (status, page) = server.get("/api/v1/runs?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().expect("a next page").to_owned();
    let (_, rest) = server
        .get(&format!("/api/v1/runs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 2);
    assert!(rest["nextCursor"].is_null());

    let (_, awaiting) = server.get("/api/v1/runs?status=awaiting").await;
    let ids: Vec<&str> = awaiting["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![lg.as_str()]);
    let (_, chains) = server.get("/api/v1/runs?blueprintId=chain").await;
    assert_eq!(chains["runs"].as_array().unwrap().len(), 3);

    for (query, field) in [
        ("status=done", "`status`"),
        ("limit=0", "`limit`"),
        ("limit=x", "`limit`"),
        ("cursor=zz", "cursor"),
    ] {
        let (status, body) = server.get(&format!("/api/v1/runs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{query}: {body}"
        );
    }
}

async fn blueprints_are_listed_read_and_added_after_validation(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    let (_, list) = server.get("/api/v1/blueprints").await;
    let ids: Vec<&str> = list["blueprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["chain", "doubling", "gate", "hook", "slow1000", "slow20000"]
    );
    let (status, chain) = server.get("/api/v1/blueprints/chain").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        chain["mermaid"]
            .as_str()
            .unwrap()
            .starts_with("flowchart TD")
    );
    let (status, _) = server.get("/api/v1/blueprints/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let v1 = json!({"id": "added", "metadata": {"version": "1"},
                    "nodes": [{"id": "A", "uses": "const", "params": {"value": 7}}], "edges": []});
    let (status, body) = server.put("/api/v1/blueprints/added", v1.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = server.put("/api/v1/blueprints/added", v1).await;
    assert_eq!(status, StatusCode::OK);
    let changed = json!({"id": "added", "metadata": {"version": "1"},
                         "nodes": [{"id": "A", "uses": "const", "params": {"value": 8}}], "edges": []});
    let (status, body) = server.put("/api/v1/blueprints/added", changed).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let invalid = json!({"id": "bad", "nodes": [{"id": "A", "uses": "no-such-node"}], "edges": [{"source": "A", "target": "Z"}]});
    let (status, body) = server.put("/api/v1/blueprints/bad", invalid).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no-such-node") && message.contains("'Z'"),
        "{message}"
    );
    let (status, body) = server
        .put(
            "/api/v1/blueprints/other",
            json!({"id": "added", "nodes": [], "edges": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A run of the added blueprint runs.
    let a1 = server.id("a1");
    server
        .post("/api/v1/runs", json!({"blueprintId": "added", "runId": a1}))
        .await;
    let run = server.settled(&a1).await;
    assert_eq!(run["context"]["_outputs.A"], 7, "{run}");
}

async fn bundles_health_readiness_and_the_openapi_document(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    // An awaiting run stays pinned to the bundle of its nodes.
    let pinned = server.id("pinned");
    server
        .post(
            "/api/v1/runs",
            json!({"blueprintId": "gate", "runId": pinned}),
        )
        .await;
    assert_eq!(server.settled(&pinned).await["status"], "awaiting");
    let (status, bundles) = server.get("/api/v1/bundles").await;
    assert_eq!(status, StatusCode::OK);
    let conformance = bundles["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "conformance")
        .expect("the conformance bundle");
    assert!(
        conformance["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        conformance["nodeTypes"]
            .as_array()
            .unwrap()
            .contains(&json!("double"))
    );
    assert_eq!(conformance["pinnedRuns"], json!([pinned]), "{bundles}");
    assert_eq!(bundles["pinnedRunsComplete"], true);
    assert_eq!(
        server.get("/healthz").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        server.get("/readyz").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    let (status, document) = server.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/runs",
        "/api/v1/runs/{runId}",
        "/api/v1/runs/{runId}/resume",
        "/api/v1/runs/{runId}/cancel",
        "/api/v1/runs/{runId}/retry",
        "/api/v1/webhooks/{runId}/{nodeId}",
        "/api/v1/blueprints",
        "/api/v1/blueprints/{blueprintId}",
        "/api/v1/bundles",
        "/api/v1/poison",
        "/api/v1/poison/replay",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not in the OpenAPI document"
        );
    }
}

async fn a_message_that_is_no_job_is_dead_lettered_listed_and_replayed(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    server.send_raw_message("garbage").await;
    let mut letters = Value::Null;
    for _ in 0..300 {
        let (_, body) = server.get("/api/v1/poison").await;
        if !body["messages"].as_array().unwrap().is_empty() {
            letters = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letter = &letters["messages"][0];
    assert_eq!(letter["body"], "garbage", "{letters}");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains(server.no_job_reason()),
        "{letter}"
    );
    let id = letter["id"].as_str().unwrap().to_owned();
    let (status, replayed) = server
        .post("/api/v1/poison/replay", json!({"ids": [id, "nope"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed["replayed"], json!([id]));
}

async fn bad_requests_get_a_named_error(backing: Backing) {
    let server = Server::start(backing, &[]).await;
    let cases = [
        (json!({"runId": "x"}), "missing field `blueprintId`"),
        (
            json!({"blueprintId": "chain", "context": [1]}),
            "`context` must be a JSON object",
        ),
        (json!({"blueprintId": "chain", "runId": "a/b"}), "`runId`"),
        (json!({"blueprintId": "nope"}), "nope"),
    ];
    for (body, wanted) in cases {
        let (status, answer) = server.post("/api/v1/runs", body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(wanted),
            "{body}: {answer}"
        );
    }
    let response = server
        .client
        .post(format!("{}/api/v1/runs", server.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let huge = format!(
        "{{\"blueprintId\":\"chain\",\"context\":{{\"k\":\"{}\"}}}}",
        "x".repeat(5 * 1024 * 1024)
    );
    // The server answers before it has read the whole body and closes the
    // connection; a client of its own keeps that connection out of the
    // shared pool the next requests take theirs from.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/runs", server.base))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "too_large");
    let (status, body) = server.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openapi.json")
    );
    let (status, body) = server.get("/api/v1/runs/nobody").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

async fn with_tokens_every_route_but_healthz_needs_one(backing: Backing) {
    let server = Server::start(backing, &["first", "second"]).await;
    let (status, body) = server.get("/api/v1/runs").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(server.get("/readyz").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    let with = |token: &str| {
        server
            .client
            .get(format!("{}/api/v1/runs", server.base))
            .bearer_auth(token)
            .send()
    };
    let refused = with("third").await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    assert_eq!(with("first").await.unwrap().status(), StatusCode::OK);
    assert_eq!(with("second").await.unwrap().status(), StatusCode::OK);

    // The dashboard's page asks for the token itself: it and its assets are
    // served without one, under a policy that allows no foreign or inline script.
    for path in [
        "/",
        "/runs/some-run",
        "/bundles",
        "/assets/app.js",
        "/assets/style.css",
    ] {
        let response = server
            .client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let policy = &response.headers()["content-security-policy"];
        assert!(
            policy.to_str().unwrap().starts_with("default-src 'self'"),
            "{path}"
        );
    }
    let (status, body) = server.get("/api/v1/nothing-here").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
}
