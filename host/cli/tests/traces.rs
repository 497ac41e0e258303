//! One OpenTelemetry trace per run, as a collector receives it: two
//! `flowcraft-host` workers on the local Azure stand-ins export over OTLP
//! (HTTP, protobuf) to a receiver in this test, which decodes the requests
//! with `opentelemetry-proto`. A fan-out run (start → w0…w7 → join → end)
//! started by a client without any OpenTelemetry settings, then a redelivered copy
//! of one of its jobs, must give exactly one trace: the run's root span,
//! one span per node attempt parented to the span that scheduled it, the
//! redelivery's span in the same trace, and the plugin calls under their
//! nodes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use flowcraft_azure::backend::AzureBackend;
use flowcraft_azure::wire;
use flowcraft_core::store::Job;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use support::azure::{Workers, azure_config, start_and_wait};
use support::{eventually, repo_root};

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attributes: BTreeMap<String, String>,
    /// The span's events, by name.
    events: Vec<String>,
}

/// An OTLP/HTTP trace receiver on a port of its own; answers its address
/// and the spans it has received so far.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let router = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                kept.lock().unwrap().extend(received(request));
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, spans)
}

fn received(request: ExportTraceServiceRequest) -> Vec<Received> {
    let spans = request
        .resource_spans
        .into_iter()
        .flat_map(|resource| resource.scope_spans)
        .flat_map(|scope| scope.spans);
    spans
        .map(|span| Received {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent: hex(&span.parent_span_id),
            name: span.name,
            events: span.events.into_iter().map(|event| event.name).collect(),
            attributes: span
                .attributes
                .into_iter()
                .map(|attribute| {
                    let value = attribute.value.and_then(|v| v.value).map(|v| match v {
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            s,
                        ) => s,
                        other => format!("{other:?}"),
                    });
                    (attribute.key, value.unwrap_or_default())
                })
                .collect(),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn node_spans(spans: &[Received]) -> Vec<Received> {
    spans
        .iter()
        .filter(|span| span.attributes.contains_key("flowcraft.node_id"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_on_two_workers_is_one_trace_with_a_span_per_node_attempt() {
    let config = azure_config("traces");
    let backend = AzureBackend::connect(&config)
        .await
        .expect("local services reachable (scripts/azure-local.sh start)");
    let dir = tempfile::tempdir().unwrap();
    let blueprints = repo_root().join("bench/workloads/blueprints");
    std::fs::copy(
        blueprints.join("bench-fan.json"),
        dir.path().join("bench-fan.json"),
    )
    .unwrap();
    let (address, spans) = receiver().await;
    let endpoint = format!("http://{address}");
    let workers = Workers::spawn_with_env(
        2,
        &config,
        dir.path(),
        &["--concurrency", "4"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );

    let run = format!("traced-{}", std::process::id());
    let output = start_and_wait(&config, dir.path(), "bench-fan", &run, r#"{"value": 1}"#);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    workers.assert_running();

    let nodes: BTreeSet<String> = ["start", "join", "end"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..8).map(|i| format!("w{i}")))
        .collect();
    let root = eventually("the run's spans", Duration::from_secs(60), || async {
        let spans = spans.lock().unwrap().clone();
        let root = spans
            .iter()
            .find(|span| span.name == "run bench-fan")?
            .clone();
        let seen: BTreeSet<String> = node_spans(&spans)
            .iter()
            .map(|span| span.attributes["flowcraft.node_id"].clone())
            .collect();
        (seen == nodes).then_some(root)
    })
    .await;

    // A copy of the start job's message, as a redelivery brings it.
    backend
        .queue()
        .send(
            &wire::encode(&Job::new(&run, "bench-fan", "start")),
            Duration::ZERO,
        )
        .await
        .unwrap();
    let duplicate = eventually("the redelivery's span", Duration::from_secs(60), || async {
        let spans = spans.lock().unwrap().clone();
        spans.into_iter().find(|span| {
            span.attributes.get("flowcraft.outcome").map(String::as_str) == Some("duplicate")
        })
    })
    .await;
    workers.assert_running();

    let spans = spans.lock().unwrap().clone();
    let traces: BTreeSet<&str> = spans.iter().map(|span| span.trace_id.as_str()).collect();
    assert_eq!(
        traces,
        BTreeSet::from([root.trace_id.as_str()]),
        "one trace for the run"
    );
    assert_eq!(root.parent, "", "the run's span is the root");
    assert_eq!(root.attributes["flowcraft.run_id"], run);
    assert_eq!(root.attributes["flowcraft.status"], "completed");
    assert_eq!(
        duplicate.parent, root.span_id,
        "a redelivered job without a traceparent joins the run's span"
    );

    let attempts: Vec<Received> = node_spans(&spans)
        .into_iter()
        .filter(|span| span.attributes["flowcraft.outcome"] != "duplicate")
        .collect();
    assert_eq!(
        attempts.len(),
        nodes.len(),
        "one span per node attempt: {attempts:#?}"
    );
    let by_node: BTreeMap<&str, &Received> = attempts
        .iter()
        .map(|span| (span.attributes["flowcraft.node_id"].as_str(), span))
        .collect();
    assert_eq!(
        by_node["start"].parent, root.span_id,
        "the first node under the run"
    );
    for i in 0..8 {
        let branch = by_node[format!("w{i}").as_str()];
        assert_eq!(
            branch.parent, by_node["start"].span_id,
            "w{i} under the node that scheduled it"
        );
        assert_eq!(branch.attributes["flowcraft.outcome"], "completed");
    }
    let join_parent = &by_node["join"].parent;
    assert!(
        (0..8).any(|i| by_node[format!("w{i}").as_str()].span_id == *join_parent),
        "the join under the branch that scheduled it"
    );
    assert_eq!(by_node["end"].parent, by_node["join"].span_id);
    let calls: Vec<&Received> = spans
        .iter()
        .filter(|span| span.name.starts_with("call "))
        .collect();
    assert_eq!(calls.len(), nodes.len(), "one plugin call per attempt");
    for call in calls {
        assert!(
            attempts
                .iter()
                .any(|attempt| attempt.span_id == call.parent),
            "{} is a child of a node attempt",
            call.name
        );
    }
}

/// A local `serve` (SQLite) with the same settings exports the same kind of
/// trace: the run's root span and its nodes' spans in one trace, their
/// database requests under them, and what a node logs as events of its
/// plugin call (`price-order` logs "order priced").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_serve_exports_a_trace_per_run() {
    let (address, spans) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let blueprints = repo_root().join("plugins-example/orders/blueprints");
    let port = support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--plugins", support::dist().to_str().unwrap()])
        .args(["--blueprints", blueprints.to_str().unwrap()])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("COSMOS_DB_CONNECTION_STRING")
        .env_remove("REDIS_URL")
        .env("FLOWCRAFT_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{address}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn()
        .expect("serve starts");
    let _serving = support::Killed(child);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("serve to listen", Duration::from_secs(60), || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(drop)
    })
    .await;
    let order = std::fs::read_to_string(blueprints.join("order-approval.context.json")).unwrap();
    let started = client
        .post(format!("{base}/api/v1/runs"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"blueprintId": "order-approval", "runId": "served-1", "context": {order}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);

    let (root, spans) = eventually("the run's trace", Duration::from_secs(60), || async {
        let spans = spans.lock().unwrap().clone();
        let root = spans
            .iter()
            .find(|span| span.name == "run order-approval")?
            .clone();
        Some((root, spans))
    })
    .await;
    assert!(
        spans.iter().all(|span| span.trace_id == root.trace_id),
        "one trace"
    );
    assert_eq!(root.attributes["flowcraft.run_id"], "served-1");
    let ran: BTreeSet<String> = node_spans(&spans)
        .iter()
        .map(|span| span.attributes["flowcraft.node_id"].clone())
        .collect();
    for node in ["validate", "price", "route"] {
        assert!(ran.contains(node), "{node} has a span: {ran:?}");
    }
    let nodes: BTreeSet<String> = node_spans(&spans)
        .iter()
        .map(|span| span.span_id.clone())
        .collect();
    let backend: Vec<&Received> = spans
        .iter()
        .filter(|span| span.name.starts_with("sqlite "))
        .collect();
    assert!(
        !backend.is_empty(),
        "the database requests of the nodes are spans too"
    );
    assert!(
        backend.iter().all(|span| nodes.contains(&span.parent)),
        "under their nodes"
    );
    let pricing = spans
        .iter()
        .find(|span| span.name == "call price-order")
        .expect("the price node's plugin call");
    assert!(
        pricing
            .events
            .iter()
            .any(|event| event.contains("order priced")),
        "the node's log record is an event of its call: {:?}",
        pricing.events
    );
}

/// `flowcraft-host run` with `arguments` and the example bundles, its trace
/// exported to `endpoint`, with `environment` set as well; it must succeed.
async fn embedded_run(
    arguments: Vec<String>,
    endpoint: String,
    environment: &[(&str, &str)],
) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"));
    command
        .arg("run")
        .args(arguments)
        .args(["--plugins", support::dist().to_str().unwrap()])
        .arg("--quiet")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        .envs(environment.iter().copied());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The order-approval example's arguments for `run`.
fn order_approval() -> Vec<String> {
    let orders = repo_root().join("plugins-example/orders/blueprints");
    vec![
        orders.join("order-approval.json").display().to_string(),
        "--context".into(),
        format!("@{}", orders.join("order-approval.context.json").display()),
    ]
}

/// An embedded `run` exports its trace before it exits, and exits 0 also
/// when nothing receives what it exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_run_exports_its_trace_before_it_exits() {
    let (address, spans) = receiver().await;
    embedded_run(order_approval(), format!("http://{address}"), &[]).await;
    let spans = spans.lock().unwrap().clone();
    let root = spans
        .iter()
        .find(|span| span.name == "run order-approval")
        .expect("the run's root span was exported before the process ended");
    assert_eq!(root.attributes["flowcraft.status"], "completed");
    assert!(
        node_spans(&spans)
            .iter()
            .all(|span| span.trace_id == root.trace_id)
    );

    let nobody = format!("http://127.0.0.1:{}", support::free_port());
    embedded_run(order_approval(), nobody, &[]).await;
}

/// A run the sampler leaves out (`OTEL_TRACES_SAMPLER`, here a ratio of
/// 0) exports no span at all: not its root, not its nodes, not their
/// backend requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_sampler_leaves_out_exports_nothing() {
    let (address, spans) = receiver().await;
    let never = [
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ];
    embedded_run(order_approval(), format!("http://{address}"), &never).await;
    let spans = spans.lock().unwrap().clone();
    assert!(spans.is_empty(), "exported: {spans:?}");
}

/// A subflow's child run is part of its parent's trace: its root span is a
/// child of the span of the subflow node's attempt that started it, and its
/// nodes' spans follow. (Conformance case FC-43: `c43` calls `sub`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subflow_child_run_joins_its_parents_trace() {
    let (address, spans) = receiver().await;
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("conformance/cases/fc-43.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sub.json"),
        case["blueprints"][0].to_string(),
    )
    .unwrap();
    let parent = dir.path().join("c43.json");
    std::fs::write(&parent, case["blueprint"].to_string()).unwrap();
    let arguments = vec![
        parent.display().to_string(),
        "--blueprints".into(),
        dir.path().display().to_string(),
    ];
    embedded_run(arguments, format!("http://{address}"), &[]).await;

    let spans = spans.lock().unwrap().clone();
    let named = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} in {spans:?}"))
    };
    let (parent_root, child_root) = (named("run c43"), named("run sub"));
    let subflow_node = named("node call");
    assert!(
        spans
            .iter()
            .all(|span| span.trace_id == parent_root.trace_id),
        "one trace: {spans:?}"
    );
    assert_eq!(child_root.parent, subflow_node.span_id);
    assert_eq!(child_root.attributes["flowcraft.status"], "completed");
    let child_nodes: Vec<Received> = node_spans(&spans)
        .into_iter()
        .filter(|span| {
            span.attributes["flowcraft.run_id"] != parent_root.attributes["flowcraft.run_id"]
        })
        .collect();
    assert_eq!(child_nodes.len(), 2, "{child_nodes:?}");
    assert!(
        child_nodes
            .iter()
            .any(|span| span.parent == child_root.span_id),
        "the child's first node hangs off its root: {child_nodes:?}"
    );
}
