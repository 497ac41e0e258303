//! The distributed worker against the real local services (Azurite, the
//! Cosmos stand-in, redis-server; `scripts/azure-local.sh`) with real
//! `flowcraft-host` worker processes: upstream wire compatibility, a fan-out
//! at scale over three workers, bad input, the DA conformance targets that
//! need a real queue (FC-53, FC-55, FC-57, FC-58) and graceful shutdown.
//!
//! Every test has a queue and a database of its own (`azure_config(tag)`),
//! run ids unique to this process, and waits by polling with a deadline.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use flowcraft_azure::backend::{AzureBackend, AzureConfig};
use flowcraft_azure::cosmos::{CosmosConnection, CosmosStores};
use flowcraft_azure::wire;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::{ContextMap, context_from_object, context_from_value};
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::{NodeStatus, RunState};
use flowcraft_core::store::{ContextStore, CoordinationStore, Job, RunStatusRecord, StatusStore};
use serde_json::{Map, Value, json};

use support::azure::{NoRunner, Workers, azure_config, worker_command};
use support::eventually;

// ---------------------------------------------------------------------------
// Harness

/// Properties Cosmos adds to every document.
const SYSTEM_PROPERTIES: &[&str] = &["_rid", "_self", "_etag", "_attachments", "_ts", "_lsn"];

/// A suffix that makes run ids unique to this test process (Redis is shared
/// by every test and every earlier run of the suite).
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

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Reads a document by id = partition key = `run` and drops Cosmos' own
/// properties (a macro: the SDK's types are not named in this crate).
macro_rules! raw_document {
    ($container:expr, $run:expr) => {{
        let run: &str = $run;
        let response = $container
            .read_item(run.to_owned(), run, None)
            .await
            .unwrap_or_else(|e| panic!("document {run} readable: {e}"));
        let mut document: Map<String, Value> = response.into_model().expect("a JSON object");
        document.retain(|key, _| !SYSTEM_PROPERTIES.contains(&key.as_str()));
        document
    }};
}

/// One test's services, blueprints and client engine.
struct Harness {
    config: AzureConfig,
    engine: Engine<AzureBackend, NoRunner>,
    /// The same Cosmos containers, for raw documents.
    stores: CosmosStores,
    redis: redis::aio::MultiplexedConnection,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn new(tag: &str, blueprints: &[Value]) -> Self {
        let config = azure_config(tag);
        let backend = AzureBackend::connect(&config)
            .await
            .expect("local services reachable (scripts/azure-local.sh start)");
        let stores = CosmosStores::connect(
            &CosmosConnection::parse(config.cosmos.text()).unwrap(),
            &config.database,
            &config.context_container,
            &config.status_container,
            false,
        )
        .await
        .expect("cosmos containers");
        let redis = redis::Client::open(config.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("redis reachable");
        let dir = tempfile::tempdir().unwrap();
        let mut plans = Vec::new();
        for value in blueprints {
            let blueprint: Blueprint = serde_json::from_value(value.clone()).unwrap();
            let path = dir.path().join(format!("{}.json", blueprint.id));
            std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
            plans.push(Plan::new(blueprint, Default::default()).expect("plan"));
        }
        let registry = PlanRegistry::new(plans);
        let engine = Engine::new(
            Arc::new(backend),
            Arc::new(NoRunner),
            Arc::new(registry),
            EngineSettings::default(),
        );
        Self {
            config,
            engine,
            stores,
            redis,
            dir,
        }
    }

    fn backend(&self) -> &AzureBackend {
        self.engine.backend()
    }

    fn blueprints(&self) -> &Path {
        self.dir.path()
    }

    fn workers(&self, count: usize, flags: &[&str]) -> Workers {
        Workers::spawn_with(count, &self.config, self.blueprints(), flags)
    }

    /// Starts a run through the library engine (our client).
    async fn start(&self, blueprint: &str, run_id: &str, initial: Value) -> String {
        let Value::Object(initial) = initial else {
            panic!("initial context must be an object")
        };
        self.engine
            .start_run(
                blueprint,
                Some(run_id.to_owned()),
                context_from_object(initial),
            )
            .await
            .expect("run starts")
    }

    /// Writes a run's documents the way upstream §5.2 says a client must:
    /// the context `{id, runId, blueprintId, blueprintVersion, ...initial}`
    /// and the status `{id, runId, status: "running", lastUpdated}`. No
    /// progress record: the worker adopts the run.
    async fn create_upstream_run(
        &self,
        run: &str,
        blueprint: &str,
        version: Value,
        initial: Value,
    ) {
        let mut context = ContextMap::new();
        context.insert("blueprintId".into(), json!(blueprint).into());
        context.insert("blueprintVersion".into(), version.into());
        context.extend(context_from_value(initial).unwrap_or_default());
        self.stores
            .context
            .create_context(run, context)
            .await
            .expect("context document created");
        let status =
            json!({"id": run, "runId": run, "status": "running", "lastUpdated": now_seconds()});
        self.stores
            .status
            .container()
            .create_item(run.to_owned(), run, &status, None)
            .await
            .expect("status document created");
    }

    /// Sends a message text to the job queue, visible at once.
    async fn send(&self, text: &str) {
        self.backend()
            .queue()
            .send(text, Duration::ZERO)
            .await
            .expect("message sent");
    }

    /// Takes every visible message off the job queue (no worker runs);
    /// answers their texts.
    async fn take_queued(&self) -> Vec<String> {
        let queue = self.backend().queue();
        let mut texts = Vec::new();
        loop {
            let batch = queue.receive(32, Duration::from_secs(60)).await.unwrap();
            if batch.is_empty() {
                return texts;
            }
            for message in batch {
                queue.delete(&message).await.unwrap();
                texts.push(message.text);
            }
        }
    }

    /// The raw context document of `run` (Cosmos' own properties removed).
    async fn raw_context(&self, run: &str) -> Map<String, Value> {
        raw_document!(self.stores.context.container(), run)
    }

    /// The raw status document of `run` (Cosmos' own properties removed).
    async fn raw_status(&self, run: &str) -> Map<String, Value> {
        raw_document!(self.stores.status.container(), run)
    }

    async fn status(&self, run: &str) -> Option<RunStatusRecord> {
        self.backend()
            .read_status(run)
            .await
            .expect("status readable")
    }

    /// Polls the status document until the run is over.
    async fn wait_final(&self, run: &str, workers: &Workers, limit: Duration) -> RunStatusRecord {
        eventually(&format!("run {run} to end"), limit, || async {
            workers.assert_running();
            self.status(run).await.filter(|s| s.status.is_terminal())
        })
        .await
    }

    /// Runs `flowcraft-host ARGS --blueprints DIR` on this test's queue and
    /// database and returns its output.
    async fn client(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"));
        command
            .args(args)
            .args(["--blueprints", self.blueprints().to_str().unwrap()])
            .env("FLOWCRAFT_QUEUE", &self.config.queue)
            .env("FLOWCRAFT_DATABASE", &self.config.database)
            .env("FLOWCRAFT_LOG", "warn");
        tokio::task::spawn_blocking(move || command.output().expect("flowcraft-host runs"))
            .await
            .unwrap()
    }

    async fn redis_type(&self, key: &str) -> String {
        let mut connection = self.redis.clone();
        redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap()
    }

    async fn redis_keys(&self, pattern: &str) -> Vec<String> {
        let mut connection = self.redis.clone();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut connection)
            .await
            .unwrap();
        keys.sort();
        keys
    }

    /// Every visible poison record: (reason, original text).
    async fn poison(&self) -> Vec<(String, String)> {
        self.backend()
            .queue()
            .peek_poison(32)
            .await
            .expect("poison queue readable")
            .into_iter()
            .map(|p| (p.entry.reason.unwrap_or_default(), p.entry.original))
            .collect()
    }
}

/// Upstream's message for a job: the JSON text exactly as upstream writes it
/// (`runId`, `blueprintId`, `nodeId`; no whitespace), built by hand, and its
/// standard base64.
fn upstream_message(run: &str, blueprint: &str, node: &str) -> (String, String) {
    let json = format!(r#"{{"runId":"{run}","blueprintId":"{blueprint}","nodeId":"{node}"}}"#);
    let base64 = base64::engine::general_purpose::STANDARD.encode(&json);
    (json, base64)
}

/// The context part of a raw context document.
fn context_of(mut document: Map<String, Value>) -> Map<String, Value> {
    document.shift_remove("id");
    document.shift_remove("runId");
    document
}

fn context(value: Value) -> ContextMap {
    context_from_value(value).expect("a JSON object")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

/// Reads a child's stderr on a thread; lines arrive on the channel.
fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits for `child` to exit within `limit` (killing it and failing if not).
fn exit_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Blueprints

/// start (echo) → end (double).
fn chain_blueprint(id: &str) -> Value {
    json!({
        "id": id,
        "nodes": [{"id": "start", "uses": "echo"}, {"id": "end", "uses": "double"}],
        "edges": [{"source": "start", "target": "end"}]
    })
}

/// FC-51's one-node versioned blueprint.
fn fc51_blueprint() -> Value {
    json!({"id": "v", "metadata": {"version": "1.0"},
           "nodes": [{"id": "A", "uses": "const", "params": {"value": 1}}], "edges": []})
}

/// The final context of a chain run with input `v`.
fn chain_context(id: &str, v: i64) -> Map<String, Value> {
    object(json!({
        "blueprintId": id, "blueprintVersion": null,
        "_inputs.start": v, "_outputs.start": v, "_inputs.end": v, "_outputs.end": 2 * v
    }))
}

// ---------------------------------------------------------------------------
// 1. Wire compatibility

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_started_the_upstream_way_execute_with_upstreams_documents_and_keys() {
    let fail = json!({"id": "wf", "nodes": [{"id": "F", "uses": "fail"}], "edges": []});
    let h = Harness::new("wire", &[chain_blueprint("chain"), fc51_blueprint(), fail]).await;
    let u = unique();
    let (b64_run, plain_run, v_run, fail_run) = (
        format!("wire-b64-{u}"),
        format!("wire-plain-{u}"),
        format!("wire-v-{u}"),
        format!("wire-fail-{u}"),
    );

    // Keys an upstream worker of the same fleet would have written: they
    // must keep their types and values.
    let foreign_blueprint = format!("flowcraft:blueprint:{b64_run}");
    let foreign_counter = format!("flowcraft:fanin:{b64_run}:end");
    {
        let mut connection = h.redis.clone();
        let _: () = redis::cmd("SET")
            .arg(&foreign_blueprint)
            .arg("chain")
            .arg("EX")
            .arg(3600)
            .query_async(&mut connection)
            .await
            .unwrap();
        let _: i64 = redis::cmd("INCR")
            .arg(&foreign_counter)
            .query_async(&mut connection)
            .await
            .unwrap();
        let _: i64 = redis::cmd("EXPIRE")
            .arg(&foreign_counter)
            .arg(3600)
            .query_async(&mut connection)
            .await
            .unwrap();
    }

    // (a) base64 message text, exactly upstream's, after upstream's documents.
    h.create_upstream_run(&b64_run, "chain", Value::Null, json!({"_inputs.start": 21}))
        .await;
    let (json_text, b64_text) = upstream_message(&b64_run, "chain", "start");
    assert_eq!(
        wire::encode(&Job::new(&b64_run, "chain", "start")),
        b64_text,
        "our encoder writes upstream's exact text"
    );
    assert_eq!(
        wire::to_json(&Job::new(&b64_run, "chain", "start")),
        json_text
    );
    h.send(&b64_text).await;
    // (b) plain JSON message text (the adapter guide's client sends that).
    h.create_upstream_run(
        &plain_run,
        "chain",
        Value::Null,
        json!({"_inputs.start": 5}),
    )
    .await;
    let (plain_text, _) = upstream_message(&plain_run, "chain", "start");
    h.send(&plain_text).await;
    // FC-51: versioned blueprint, stored version "1.0".
    h.create_upstream_run(&v_run, "v", json!("1.0"), json!({}))
        .await;
    h.send(&upstream_message(&v_run, "v", "A").1).await;
    // A failing run, for the failed status shape.
    h.create_upstream_run(&fail_run, "wf", Value::Null, json!({}))
        .await;
    h.send(&upstream_message(&fail_run, "wf", "F").1).await;

    let workers = h.workers(1, &["--concurrency", "8"]);
    let limit = Duration::from_secs(60);
    for run in [&b64_run, &plain_run, &v_run] {
        let status = h.wait_final(run, &workers, limit).await;
        assert_eq!(status.status, RunState::Completed, "run {run}: {status:?}");
    }
    let failed = h.wait_final(&fail_run, &workers, limit).await;
    assert_eq!(failed.status, RunState::Failed);

    // (a), (b): executed to the expected context; (c) the context document
    // is upstream's: id = runId = partition key, flat dotted keys.
    for (run, v) in [(&b64_run, 21), (&plain_run, 5)] {
        let document = h.raw_context(run).await;
        assert_eq!(document["id"], json!(run));
        assert_eq!(document["runId"], json!(run));
        assert!(!document.contains_key("_outputs") && !document.contains_key("_inputs"));
        assert_eq!(context_of(document), chain_context("chain", v), "run {run}");
        let status = h.raw_status(run).await;
        let keys: Vec<&str> = status.keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["finalStatus", "id", "lastUpdated", "runId", "status"]
        );
        assert_eq!(
            status["finalStatus"]["payload"]["context"],
            Value::Object(chain_context("chain", v))
        );
    }

    // FC-51's status document, field by field.
    let status = h.raw_status(&v_run).await;
    assert_eq!(status["id"], json!(v_run));
    assert_eq!(status["runId"], json!(v_run));
    assert_eq!(status["status"], json!("completed"));
    let last_updated = status["lastUpdated"]
        .as_i64()
        .expect("lastUpdated is an integer");
    assert!(
        (now_seconds() - last_updated).abs() < 120,
        "lastUpdated is unix seconds"
    );
    let expected_context = json!({"blueprintId": "v", "blueprintVersion": "1.0", "_outputs.A": 1});
    let final_status = object(status["finalStatus"].clone());
    let mut final_keys: Vec<&String> = final_status.keys().collect();
    final_keys.sort();
    assert_eq!(final_keys, ["payload", "status"], "{final_status:?}");
    assert_eq!(final_status["status"], json!("completed"));
    let payload = object(final_status["payload"].clone());
    let mut payload_keys: Vec<&String> = payload.keys().collect();
    payload_keys.sort();
    assert_eq!(payload_keys, ["context", "serializedContext", "status"]);
    assert_eq!(payload["status"], json!("completed"));
    assert_eq!(payload["context"], expected_context);
    let serialized = payload["serializedContext"]
        .as_str()
        .expect("a JSON string");
    assert!(!serialized.contains(' '), "compact JSON: {serialized}");
    assert_eq!(
        serde_json::from_str::<Value>(serialized).unwrap(),
        expected_context
    );

    // Failed: {status: "failed", reason}.
    let status = h.raw_status(&fail_run).await;
    assert_eq!(status["status"], json!("failed"));
    assert!(status["lastUpdated"].is_i64());
    let final_status = object(status["finalStatus"].clone());
    assert_eq!(final_status.len(), 2, "{final_status:?}");
    assert_eq!(final_status["status"], json!("failed"));
    let reason = final_status["reason"].as_str().unwrap();
    assert!(reason.starts_with("Node 'F' execution failed"), "{reason}");

    // Redis: our record is a hash under a new key name; the upstream keys
    // of the fleet keep their types and values; we add no other keys.
    for run in [&b64_run, &plain_run, &v_run, &fail_run] {
        let progress = format!("flowcraft:progress:{run}");
        assert_eq!(h.redis_type(&progress).await, "hash", "{progress}");
        let mut expected = vec![progress];
        if *run == b64_run {
            expected.extend([foreign_counter.clone(), foreign_blueprint.clone()]);
            expected.sort();
        }
        assert_eq!(h.redis_keys(&format!("*{run}*")).await, expected);
    }
    assert_eq!(h.redis_type(&foreign_blueprint).await, "string");
    assert_eq!(h.redis_type(&foreign_counter).await, "string");
    let mut connection = h.redis.clone();
    let (blueprint, counter): (String, String) = redis::pipe()
        .get(&foreign_blueprint)
        .get(&foreign_counter)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!((blueprint.as_str(), counter.as_str()), ("chain", "1"));
}

// ---------------------------------------------------------------------------
// 2. Fan-out at scale

const FAN_WIDTH: i64 = 8;
const FAN_RUNS: i64 = 200;

/// start → w0..w7 (edge transform `input + i`, then double) → join (all;
/// echo of {w0..w7}) → end (echo).
fn fan_blueprint() -> Value {
    let mut nodes = vec![json!({"id": "start", "uses": "echo"})];
    let mut edges = Vec::new();
    let mut join_inputs = Map::new();
    for i in 0..FAN_WIDTH {
        let id = format!("w{i}");
        nodes.push(json!({"id": id, "uses": "double"}));
        edges.push(json!({"source": "start", "target": id, "transform": format!("input + {i}")}));
        edges.push(json!({"source": id, "target": "join"}));
        join_inputs.insert(id.clone(), json!(id));
    }
    nodes.push(json!({"id": "join", "uses": "echo", "inputs": join_inputs, "config": {"joinStrategy": "all"}}));
    nodes.push(json!({"id": "end", "uses": "echo"}));
    edges.push(json!({"source": "join", "target": "end"}));
    json!({"id": "fan8", "nodes": nodes, "edges": edges})
}

/// The final context of a fan run with input `v`, without `_inputs.join`
/// (every worker writes it; the last one wins, upstream §2.5), and the values
/// `_inputs.join` may have.
fn fan_context(v: i64) -> (Map<String, Value>, Vec<Value>) {
    let mut context = object(json!({
        "blueprintId": "fan8", "blueprintVersion": null, "_inputs.start": v, "_outputs.start": v
    }));
    let mut gathered = Map::new();
    for i in 0..FAN_WIDTH {
        context.insert(format!("_inputs.w{i}"), json!(v + i));
        context.insert(format!("_outputs.w{i}"), json!(2 * (v + i)));
        gathered.insert(format!("w{i}"), json!(2 * (v + i)));
    }
    for key in ["_outputs.join", "_inputs.end", "_outputs.end"] {
        context.insert(key.into(), Value::Object(gathered.clone()));
    }
    let last_writer = (0..FAN_WIDTH).map(|i| json!(2 * (v + i))).collect();
    (context, last_writer)
}

/// "Exactly one final status per run" is established by three checks:
/// the progress record (changed only by compare-and-set) shows the run
/// completed with every node scheduled exactly once (`steps` = node count)
/// and no errors, so exactly one settlement made the run terminal — and
/// only that settlement publishes; the status document holds that one
/// `completed` status with the exact payload; and the status store refuses
/// any later terminal write to it (probed once per run with a `failed`
/// write that must be refused and leave the document unchanged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_finish_200_fan_out_runs_with_one_final_status_each() {
    let h = Harness::new("fanout", &[fan_blueprint()]).await;
    let workers = h.workers(3, &["--concurrency", "8"]);
    let runs: Vec<(String, i64)> = (0..FAN_RUNS)
        .map(|i| (format!("fan-{i}-{}", unique()), i + 1))
        .collect();
    let started = Instant::now();
    let mut starts = tokio::task::JoinSet::new();
    for (run, v) in runs.clone() {
        let engine = h.engine.clone();
        starts.spawn(async move {
            engine
                .start_run("fan8", Some(run), context(json!({"_inputs.start": v})))
                .await
                .expect("run starts")
        });
    }
    while let Some(started) = starts.join_next().await {
        started.unwrap();
    }
    let mut remaining: BTreeMap<String, i64> = runs.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(150);
    while !remaining.is_empty() {
        workers.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} of {FAN_RUNS} runs not final after {:?}",
            remaining.len(),
            started.elapsed()
        );
        let mut finished = Vec::new();
        for run in remaining.keys() {
            if h.status(run).await.is_some_and(|s| s.status.is_terminal()) {
                finished.push(run.clone());
            }
        }
        for run in finished {
            remaining.remove(&run);
        }
        if !remaining.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "fan-out: {FAN_RUNS} runs x {} node jobs on 3 workers in {seconds:.1} s ({:.1} runs/s, {:.0} node-jobs/s)",
        FAN_WIDTH + 3,
        FAN_RUNS as f64 / seconds,
        (FAN_RUNS * (FAN_WIDTH + 3)) as f64 / seconds
    );

    let nodes = (FAN_WIDTH + 3) as u64;
    for (run, v) in &runs {
        let (mut expected, last_writer) = fan_context(*v);
        let mut context = context_of(h.raw_context(run).await);
        let join_input = context.shift_remove("_inputs.join");
        assert!(
            join_input.as_ref().is_some_and(|i| last_writer.contains(i)),
            "run {run}: _inputs.join = {join_input:?}"
        );
        assert_eq!(context, expected, "run {run}");
        expected.insert("_inputs.join".into(), join_input.unwrap());

        let status = h.raw_status(run).await;
        assert_eq!(status["status"], json!("completed"), "run {run}");
        assert_eq!(status["finalStatus"]["status"], json!("completed"));
        assert_eq!(
            status["finalStatus"]["payload"]["context"],
            Value::Object(expected),
            "run {run}"
        );

        let progress = h
            .backend()
            .load_progress(run)
            .await
            .unwrap()
            .expect("progress record");
        assert_eq!(progress.state, RunState::Completed, "run {run}");
        assert!(
            progress.errors.is_empty(),
            "run {run}: {:?}",
            progress.errors
        );
        assert!(progress.pending.is_empty(), "run {run}");
        assert_eq!(
            progress.steps, nodes,
            "run {run}: every node scheduled once"
        );
        assert!(
            progress
                .nodes
                .values()
                .all(|n| n.status == NodeStatus::Done)
                && progress.nodes.len() as u64 == nodes,
            "run {run}: {:?}",
            progress.nodes
        );

        let overwritten = h
            .backend()
            .write_status(
                run,
                RunState::Failed,
                Some(json!({"status": "failed", "reason": "probe"})),
            )
            .await
            .unwrap();
        assert!(
            !overwritten,
            "run {run}: a later terminal write was accepted"
        );
        assert_eq!(
            h.raw_status(run).await,
            status,
            "run {run}: the final status changed"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_end_in_the_poison_queue_with_a_reason_and_the_worker_keeps_going() {
    let h = Harness::new("badinput", &[chain_blueprint("chain")]).await;
    let u = unique();
    // (a) undecodable text.
    let garbage = format!("%% not a job {u} %%");
    h.send(&garbage).await;
    // (b) a run of a blueprint no worker has (documents written upstream's way).
    let ghost_run = format!("ghost-{u}");
    h.create_upstream_run(&ghost_run, "ghost-bp", Value::Null, json!({}))
        .await;
    let ghost = upstream_message(&ghost_run, "ghost-bp", "start").1;
    h.send(&ghost).await;
    // (c) a run that does not exist (no context, no progress record).
    let missing_run = format!("missing-{u}");
    let missing = upstream_message(&missing_run, "chain", "start").1;
    h.send(&missing).await;

    let workers = h.workers(
        1,
        &[
            "--concurrency",
            "4",
            "--max-dequeue-count",
            "2",
            "--visibility-timeout",
            "2",
        ],
    );
    let poisoned = eventually("three poison records", Duration::from_secs(45), || async {
        workers.assert_running();
        let records = h.poison().await;
        (records.len() >= 3).then_some(records)
    })
    .await;
    assert_eq!(poisoned.len(), 3, "{poisoned:#?}");
    let reason_of = |original: &str| {
        poisoned
            .iter()
            .find(|(_, text)| text == original)
            .map(|(reason, _)| reason.clone())
            .unwrap_or_else(|| panic!("{original} not in the poison queue: {poisoned:#?}"))
    };
    let reason = reason_of(&garbage);
    assert!(reason.contains("undecodable"), "{reason}");
    let reason = reason_of(&ghost);
    assert!(
        reason.contains("'ghost-bp'") && reason.contains("delivered 2 times"),
        "{reason}"
    );
    let reason = reason_of(&missing);
    assert!(
        reason.contains(&missing_run) && reason.contains("not found"),
        "{reason}"
    );

    // The worker keeps going.
    let run = h
        .start(
            "chain",
            &format!("after-bad-{u}"),
            json!({"_inputs.start": 4}),
        )
        .await;
    let status = h.wait_final(&run, &workers, Duration::from_secs(30)).await;
    assert_eq!(status.status, RunState::Completed);
    assert_eq!(
        context_of(h.raw_context(&run).await),
        chain_context("chain", 4)
    );
    // Nothing left behind in the job queue either.
    eventually("an empty job queue", Duration::from_secs(15), || async {
        (h.backend().queue().approximate_count().await.unwrap() == 0).then_some(())
    })
    .await;
}

/// Runs a worker with one setting replaced; returns its exit status and stderr.
fn worker_with_setting(
    config: &AzureConfig,
    dir: &Path,
    variable: &str,
    value: &str,
) -> (ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut child = worker_command(config, dir)
        .args(["--concurrency", "1"])
        .env(variable, value)
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let status = exit_within(
        &mut child,
        Duration::from_secs(20),
        "worker with a wrong setting",
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_connection_string_stops_the_worker_at_once_with_one_line() {
    let config = azure_config("badconn");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("chain.json"),
        chain_blueprint("chain").to_string(),
    )
    .unwrap();
    let cases = [
        (
            "AZURE_STORAGE_CONNECTION_STRING",
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=not*base64!;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;",
            "AccountKey",
        ),
        (
            "COSMOS_DB_CONNECTION_STRING",
            "AccountEndpoint=http://127.0.0.1:9/;AccountKey=C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==;",
            "127.0.0.1:9",
        ),
    ];
    for (variable, value, detail) in cases {
        let (config, dir) = (config.clone(), dir.path().to_owned());
        let (status, stderr, took) = tokio::task::spawn_blocking(move || {
            worker_with_setting(&config, &dir, variable, value)
        })
        .await
        .unwrap();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!status.success(), "{variable}: exit {status}");
        assert_eq!(
            lines.len(),
            1,
            "{variable}: one line on stderr, got {stderr:?}"
        );
        assert!(
            lines[0].contains(variable) && lines[0].contains(detail),
            "{variable}: {:?}",
            lines[0]
        );
        assert!(
            !value.is_empty() && !lines[0].contains("C2y6yDjf5"),
            "no key in the message"
        );
        assert!(took < Duration::from_secs(15), "{variable}: took {took:?}");
    }
}

// ---------------------------------------------------------------------------
// 4. DA conformance targets

/// FC-53: a job delivered twice runs its node once and enqueues the
/// successor once (upstream re-enqueues it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fc53_a_job_delivered_twice_runs_once() {
    let blueprint = json!({"id": "fc53", "nodes": [
        {"id": "A", "uses": "inc", "params": {"limit": 10}},
        {"id": "B", "uses": "inc", "params": {"limit": 10}}
    ], "edges": [{"source": "A", "target": "B"}]});
    let h = Harness::new("fc53", &[blueprint]).await;
    let run = format!("fc53-{}", unique());
    h.create_upstream_run(&run, "fc53", Value::Null, json!({}))
        .await;
    let message = upstream_message(&run, "fc53", "A").1;
    h.send(&message).await;
    h.send(&message).await;
    // One job at a time, as upstream's FIFO worker in the case: the second
    // delivery comes after the first was handled.
    let workers = h.workers(1, &["--concurrency", "1"]);
    let status = h.wait_final(&run, &workers, Duration::from_secs(30)).await;
    assert_eq!(status.status, RunState::Completed);
    // Every message consumed (the duplicate dropped, not left or poisoned).
    eventually("an empty job queue", Duration::from_secs(15), || async {
        (h.backend().queue().approximate_count().await.unwrap() == 0).then_some(())
    })
    .await;
    let context = context_of(h.raw_context(&run).await);
    // inc counts executions: A then B, once each.
    assert_eq!(context["count"], json!(2), "{context:?}");
    assert_eq!(context["_outputs.A"], json!(1));
    assert_eq!(context["_outputs.B"], json!(2));
    let progress = h.backend().load_progress(&run).await.unwrap().unwrap();
    assert_eq!(progress.steps, 2, "A and B scheduled once each");
    assert!(h.poison().await.is_empty());
}

/// FC-55: C fails in the diamond A → {B, C} → D: the run fails with C's
/// reason, D never runs, B's output is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fc55_failure_in_a_diamond() {
    let blueprint = json!({"id": "fc55", "nodes": [
        {"id": "A", "uses": "const", "params": {"value": 1}},
        {"id": "B", "uses": "echo"},
        // Retried once after 1.5 s, so that B has finished when C fails.
        {"id": "C", "uses": "fail", "config": {"maxRetries": 2, "retryDelay": 1500}},
        {"id": "D", "uses": "echo"}
    ], "edges": [
        {"source": "A", "target": "B"}, {"source": "A", "target": "C"},
        {"source": "B", "target": "D"}, {"source": "C", "target": "D"}
    ]});
    let h = Harness::new("fc55", &[blueprint]).await;
    let workers = h.workers(1, &["--concurrency", "4"]);
    let run = h
        .start("fc55", &format!("fc55-{}", unique()), json!({}))
        .await;
    let status = h.wait_final(&run, &workers, Duration::from_secs(30)).await;
    assert_eq!(status.status, RunState::Failed);
    let reason = status.final_status.as_ref().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.starts_with("Node 'C' execution failed"), "{reason}");
    let context = context_of(h.raw_context(&run).await);
    assert_eq!(context["_outputs.A"], json!(1));
    assert_eq!(context["_outputs.B"], json!(1), "B's output kept");
    assert_eq!(context["_inputs.D"], json!(1));
    assert!(
        !context.contains_key("_outputs.C") && !context.contains_key("_outputs.D"),
        "{context:?}"
    );
    let progress = h.backend().load_progress(&run).await.unwrap().unwrap();
    assert_eq!(
        progress.status("D"),
        NodeStatus::Waiting,
        "D never scheduled"
    );
    assert_eq!(progress.errors.len(), 1, "{:?}", progress.errors);
    assert_eq!(progress.errors[0].node_id, "C");
}

/// FC-57 (target: our reconcile): a run whose scheduled job was lost is
/// found stalled by `flowcraft-host reconcile`, re-enqueued, and finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fc57_reconcile_restarts_a_run_whose_job_was_lost() {
    let blueprint = json!({"id": "fc57", "nodes": [
        {"id": "A", "uses": "const", "params": {"value": 1}}, {"id": "B", "uses": "echo"}
    ], "edges": [{"source": "A", "target": "B"}]});
    let h = Harness::new("fc57", &[blueprint]).await;
    let run = h
        .start("fc57", &format!("fc57-{}", unique()), json!({}))
        .await;
    // No worker yet: lose the queued start job.
    let queue = h.backend().queue();
    let lost = h.take_queued().await;
    // FC-51: what we enqueue is upstream's exact text.
    assert_eq!(lost, [upstream_message(&run, "fc57", "A").1]);
    // `--stalled-after 0` finds runs whose lastUpdated is before this second.
    eventually(
        "the run's lastUpdated to be in the past",
        Duration::from_secs(5),
        || async {
            let status = h.status(&run).await.unwrap();
            (status.last_updated < now_seconds()).then_some(())
        },
    )
    .await;
    let output = h.client(&["reconcile", "--stalled-after", "0"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(
        summary,
        json!({"stalledRuns": 1, "reconciledRuns": 1, "failedRuns": 0})
    );
    let requeued: Vec<String> = queue
        .peek(32)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(requeued, [upstream_message(&run, "fc57", "A").1]);

    let workers = h.workers(1, &["--concurrency", "4"]);
    let status = h.wait_final(&run, &workers, Duration::from_secs(30)).await;
    assert_eq!(status.status, RunState::Completed);
    let context = context_of(h.raw_context(&run).await);
    assert_eq!(context["_outputs.A"], json!(1));
    assert_eq!(context["_outputs.B"], json!(1));
}

/// A `sleep` whose wake-up job was lost (its worker died between pausing the
/// node and sending the wake-up) is woken by the reconciler once the run's
/// awaiting status is old, and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_wakes_a_sleeping_run_whose_wake_up_was_lost() {
    let blueprint = json!({"id": "napper", "nodes": [
        {"id": "S", "uses": "sleep", "params": {"duration": 1}},
        {"id": "B", "uses": "const", "params": {"value": "woke"}}
    ], "edges": [{"source": "S", "target": "B"}]});
    let h = Harness::new("napper", &[blueprint]).await;
    let run = h
        .start("napper", &format!("napper-{}", unique()), json!({}))
        .await;
    // This process runs the start job: S pauses and sends its wake-up ...
    let start = h.take_queued().await;
    let job = wire::decode(&start[0]).expect("a job");
    h.engine.handle(&job).await.expect("S pauses");
    assert_eq!(h.status(&run).await.unwrap().status, RunState::Awaiting);
    // ... which is lost.
    eventually("the wake-up message", Duration::from_secs(10), || async {
        let taken = h.take_queued().await;
        (!taken.is_empty()).then_some(())
    })
    .await;
    // An hour of silence, behind the store's back.
    let mut document = h.raw_status(&run).await;
    document.insert("lastUpdated".into(), json!(now_seconds() - 3600));
    h.stores
        .status
        .container()
        .upsert_item(run.clone(), &run, &document, None)
        .await
        .unwrap();

    let output = h.client(&["reconcile", "--stalled-after", "300"]).await;
    assert!(output.status.success(), "{output:?}");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(
        summary,
        json!({"stalledRuns": 1, "reconciledRuns": 1, "failedRuns": 0})
    );
    let workers = h.workers(1, &["--concurrency", "4"]);
    let status = h.wait_final(&run, &workers, Duration::from_secs(30)).await;
    assert_eq!(status.status, RunState::Completed);
    assert_eq!(
        context_of(h.raw_context(&run).await)["_outputs.B"],
        json!("woke")
    );
}

/// A message may stand for a group of one run's jobs: a worker that took a
/// fan-out on itself rewrites its message into one. Whoever receives such a
/// message runs every job of it that is still scheduled, a group whose
/// jobs are all done is deleted without changing the run, and a copy of a
/// group another message holds is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_runs_the_jobs_it_stands_for() {
    let blueprint = json!({"id": "group", "nodes": [
        {"id": "A", "uses": "const", "params": {"value": "a"}},
        {"id": "B", "uses": "const", "params": {"value": "b"}},
        {"id": "C", "uses": "const", "params": {"value": "c"}},
        {"id": "gather", "uses": "echo", "inputs": {"a": "A", "b": "B", "c": "C"}}
    ], "edges": [
        {"source": "A", "target": "gather"},
        {"source": "B", "target": "gather"},
        {"source": "C", "target": "gather"}
    ]});
    let h = Harness::new("group", &[blueprint]).await;
    let run = h
        .start("group", &format!("group-{}", unique()), json!({}))
        .await;
    // No worker yet: take the three start jobs off the queue and stand one
    // group message in for them.
    let queue = h.backend().queue();
    let mut taken: Vec<String> = h
        .take_queued()
        .await
        .iter()
        .map(|text| wire::decode(text).unwrap().node_id)
        .collect();
    taken.sort();
    assert_eq!(taken, ["A", "B", "C"]);
    let jobs = ["A", "B", "C"].map(|node| Job::new(&run, "group", node));
    let workers = h.workers(1, &["--concurrency", "4"]);
    let queue_empty = || async { (queue.approximate_count().await.unwrap() == 0).then_some(()) };

    // A copy of a group another message holds (a duplicated delivery) is
    // dropped: its holder runs the jobs.
    h.send(&wire::encode_group(&jobs, Some("another-message")))
        .await;
    eventually(
        "the copy to be dropped",
        Duration::from_secs(30),
        queue_empty,
    )
    .await;
    let context = context_of(h.raw_context(&run).await);
    assert!(!context.contains_key("_outputs.A"), "{context:?}");
    assert_eq!(h.status(&run).await.unwrap().status, RunState::Running);

    let group = wire::encode_group(&jobs, None);
    h.send(&group).await;
    let status = h.wait_final(&run, &workers, Duration::from_secs(30)).await;
    assert_eq!(status.status, RunState::Completed);
    let context = context_of(h.raw_context(&run).await);
    assert_eq!(
        context["_outputs.gather"],
        json!({"a": "a", "b": "b", "c": "c"})
    );

    // Delivered again (a worker died after the jobs were done): nothing runs.
    let settled = h.raw_status(&run).await;
    h.send(&group).await;
    eventually(
        "the repeated group message to be deleted",
        Duration::from_secs(30),
        queue_empty,
    )
    .await;
    assert_eq!(h.raw_status(&run).await, settled);
    assert!(h.poison().await.is_empty());
    workers.assert_running();
}

/// FC-58: resuming a wait with an action and output through the CLI
/// completes the fan-in behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fc58_resume_with_an_action_into_a_fan_in() {
    let blueprint = json!({"id": "fc58", "nodes": [
        {"id": "A", "uses": "const", "params": {"value": "a"}},
        {"id": "B", "uses": "const", "params": {"value": "b"}},
        {"id": "wait", "uses": "wait"},
        {"id": "gather", "uses": "echo", "inputs": {"wait": "wait", "b": "B"}}
    ], "edges": [
        {"source": "A", "target": "wait"}, {"source": "wait", "target": "gather"},
        {"source": "B", "target": "gather"}
    ]});
    let h = Harness::new("fc58", &[blueprint]).await;
    let workers = h.workers(1, &["--concurrency", "4"]);
    let run = h
        .start("fc58", &format!("fc58-{}", unique()), json!({}))
        .await;
    eventually("the run to await", Duration::from_secs(30), || async {
        workers.assert_running();
        let state = h.backend().read_progress(&run, |p| p.state).await.unwrap();
        (state == Some(RunState::Awaiting)).then_some(())
    })
    .await;
    let context = context_of(h.raw_context(&run).await);
    assert_eq!(context["_awaitingNodeIds"], json!(["wait"]));
    assert_eq!(
        context["_awaitingDetails"],
        json!({"wait": {"reason": "external_event"}})
    );

    let output = h
        .client(&[
            "resume",
            &run,
            "--node",
            "wait",
            "--action",
            "approve",
            "--output",
            r#"{"approved":true}"#,
        ])
        .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = h.wait_final(&run, &workers, Duration::from_secs(30)).await;
    assert_eq!(status.status, RunState::Completed);
    let context = context_of(h.raw_context(&run).await);
    assert_eq!(context["_resume.action"], json!("approve"));
    assert_eq!(context["_resume.output"], json!({"approved": true}));
    assert_eq!(context["_outputs.wait"], json!({"approved": true}));
    assert_eq!(
        context["_outputs.gather"],
        json!({"wait": {"approved": true}, "b": "b"})
    );
    assert!(
        !context.contains_key("_awaitingNodeIds") && !context.contains_key("_awaitingDetails"),
        "{context:?}"
    );
}

// ---------------------------------------------------------------------------
// 5. Graceful shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_idle_worker_with_status_0() {
    let h = Harness::new("shutdown", &[chain_blueprint("chain")]).await;
    let mut child = worker_command(&h.config, h.blueprints())
        .args(["--concurrency", "2"])
        .env("FLOWCRAFT_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let lines = stderr_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("worker started") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("the worker did not start within 30 s");
            }
        }
    }
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let status = exit_within(&mut child, Duration::from_secs(5), "worker after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit {status}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("worker stopped")),
        "{rest:?}"
    );
}

// ---------------------------------------------------------------------------
// Panic containment on the Azure stores

/// A node runner whose `explode` node type panics inside the job step and
/// whose `steady` node type outputs `params.value`.
struct PanicsOnDemand;

impl flowcraft_core::runner::NodeRunner for PanicsOnDemand {
    fn implements(&self, uses: &str) -> bool {
        matches!(uses, "explode" | "steady")
    }

    fn pin(
        &self,
        _: &Blueprint,
    ) -> Result<flowcraft_core::runner::Pins, flowcraft_core::runner::PinError> {
        Ok(Default::default())
    }

    async fn run(
        &self,
        call: flowcraft_core::runner::NodeCall,
    ) -> flowcraft_core::runner::NodeOutcome {
        if call.uses == "explode" {
            panic!("injected panic in node '{}'", call.node_id);
        }
        flowcraft_core::runner::NodeOutcome {
            result: Ok(flowcraft_core::runner::NodeSuccess {
                output: call.params.get("value").cloned(),
                ..Default::default()
            }),
            context: call.context,
        }
    }
}

/// A job step that panics on the real queue, Cosmos DB and Redis fails its
/// node with the panic's message (fatally: no retry, no fallback), the run
/// is published `failed`, and the runs handled alongside complete.
#[tokio::test]
async fn a_panicking_job_fails_its_run_and_other_runs_complete_on_azure() {
    let config = azure_config("panics");
    let backend = AzureBackend::connect(&config)
        .await
        .expect("local services reachable (scripts/azure-local.sh start)");
    let registry = PlanRegistry::new(
        [
            json!({"id": "explodes", "nodes": [
                {"id": "boom", "uses": "explode", "config": {"maxRetries": 3, "fallback": "rescue"}},
                {"id": "rescue", "uses": "steady", "params": {"value": "rescued"}}]}),
            json!({"id": "steady", "nodes": [
                {"id": "one", "uses": "steady", "params": {"value": 1}},
                {"id": "two", "uses": "steady", "params": {"value": 2}}],
                "edges": [{"source": "one", "target": "two"}]}),
        ]
        .map(|value| {
            let blueprint: Blueprint = serde_json::from_value(value).unwrap();
            Plan::new(blueprint, Default::default()).unwrap()
        }),
    );
    let engine = Engine::new(
        Arc::new(backend),
        Arc::new(PanicsOnDemand),
        Arc::new(registry),
        EngineSettings::default(),
    );
    let exploding = format!("explodes-{}", unique());
    let steady: Vec<String> = (0..3).map(|i| format!("steady-{i}-{}", unique())).collect();
    engine
        .start_run("explodes", Some(exploding.clone()), ContextMap::new())
        .await
        .unwrap();
    for run in &steady {
        engine
            .start_run("steady", Some(run.clone()), ContextMap::new())
            .await
            .unwrap();
    }
    let queue = engine.backend().queue();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut runs = steady.clone();
    runs.push(exploding.clone());
    loop {
        let mut over = 0;
        for run in &runs {
            let status = engine.backend().read_status(run).await.unwrap();
            over += usize::from(status.is_some_and(|s| s.status.is_terminal()));
        }
        if over == runs.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs did not end: {over} of {}",
            runs.len()
        );
        for message in queue.receive(32, Duration::from_secs(30)).await.unwrap() {
            for job in wire::decode_group(&message.text).unwrap().jobs {
                engine
                    .handle_and_send(&job)
                    .await
                    .expect("the panic is contained");
            }
            queue.delete(&message).await.unwrap();
        }
    }
    let failed = engine.report(&exploding).await.unwrap();
    assert_eq!(failed.state, RunState::Failed);
    assert_eq!(failed.errors.len(), 1, "{:?}", failed.errors);
    let message = &failed.errors[0].message;
    assert!(
        message.contains("internal error") && message.contains("injected panic in node 'boom'"),
        "{message}"
    );
    assert!(
        !failed.context.contains_key("_outputs.rescue"),
        "no fallback for a bug"
    );
    let status = engine
        .backend()
        .read_status(&exploding)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.final_status.unwrap()["reason"], json!(message));
    for run in &steady {
        let report = engine.report(run).await.unwrap();
        assert_eq!(report.state, RunState::Completed, "{run}");
        assert_eq!(report.context["_outputs.two"], json!(2));
    }
}

// ---------------------------------------------------------------------------
// Wake-ups

impl Harness {
    /// Subscribers of this queue's wake-up channel (idle workers).
    async fn wake_listeners(&self) -> i64 {
        let mut connection = self.redis.clone();
        let channel = format!("flowcraft:wake:{}", self.config.queue);
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut connection)
            .await
            .unwrap();
        counts.first().map_or(0, |(_, count)| *count)
    }

    /// Cuts every pub/sub connection of the Redis server (all tests'); their
    /// listeners poll until they subscribe again.
    async fn cut_pubsub(&self) {
        let mut connection = self.redis.clone();
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

/// A worker that polls once a minute takes a run our client starts at once:
/// the start is announced on Redis. After every pub/sub connection is cut,
/// the worker subscribes again and the next announced run is taken at once
/// as well. (Without the wake-up each run would wait for the minute's poll,
/// past this test's limit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_takes_an_announced_run_at_once() {
    let h = Harness::new("wake", &[chain_blueprint("wake")]).await;
    let workers = h.workers(1, &["--idle-poll-ms", "60000", "--no-reconciler"]);
    for round in 0..2 {
        eventually(
            "the idle worker to listen",
            Duration::from_secs(30),
            || async { (h.wake_listeners().await > 0).then_some(()) },
        )
        .await;
        let run = h
            .start(
                "wake",
                &format!("wake-{round}-{}", unique()),
                json!({"_inputs.start": round}),
            )
            .await;
        let status = h.wait_final(&run, &workers, Duration::from_secs(30)).await;
        assert_eq!(status.status, RunState::Completed, "round {round}");
        h.cut_pubsub().await;
    }
}

/// `start --wait` prints the run id, then the final status document, and
/// exits 0 for a completed run and 1 for a failed one; it is told of the
/// end by the run's announcement (the worker polls once a minute, so the
/// start is taken through its wake-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_wait_prints_the_final_status_and_exits_by_it() {
    let fail = json!({"id": "startwait-fail", "nodes": [{"id": "F", "uses": "fail"}], "edges": []});
    let h = Harness::new("startwait", &[chain_blueprint("startwait"), fail]).await;
    let workers = h.workers(1, &["--idle-poll-ms", "60000", "--no-reconciler"]);
    eventually(
        "the idle worker to listen",
        Duration::from_secs(30),
        || async { (h.wake_listeners().await > 0).then_some(()) },
    )
    .await;
    for (blueprint, code, state) in [
        ("startwait", 0, "completed"),
        ("startwait-fail", 1, "failed"),
    ] {
        let run = format!("{blueprint}-{}", unique());
        let output = h
            .client(&[
                "start",
                blueprint,
                "--run-id",
                &run,
                "--context",
                r#"{"_inputs.start": 4}"#,
                "--wait",
                "--timeout",
                "60",
            ])
            .await;
        workers.assert_running();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            output.status.code(),
            Some(code),
            "{blueprint}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(lines.len(), 2, "{stdout}");
        assert_eq!(lines[0], run);
        let status: Value = serde_json::from_str(lines[1]).expect("a status document");
        assert_eq!(status["status"], state, "{status}");
    }
}

/// With every wake-up lost (pub/sub connections cut again and again), runs
/// still start and complete: idle workers find them by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_complete_by_polling_when_every_wake_up_is_lost() {
    let h = Harness::new("nowake", &[chain_blueprint("nowake")]).await;
    let workers = h.workers(2, &["--idle-poll-ms", "500"]);
    let cutter = {
        let mut connection = h.redis.clone();
        tokio::spawn(async move {
            loop {
                let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query_async(&mut connection)
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut runs = Vec::new();
    for i in 0..10 {
        let run = format!("nowake-{i}-{}", unique());
        runs.push(h.start("nowake", &run, json!({"_inputs.start": i})).await);
    }
    for run in &runs {
        let status = h.wait_final(run, &workers, Duration::from_secs(60)).await;
        assert_eq!(status.status, RunState::Completed, "{run}");
    }
    cutter.abort();
}
