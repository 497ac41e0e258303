//! Outbound HTTP (`wasi:http`) only to allow-listed hosts, with the hostile
//! bundle's `fetch` node (and `twin-fetch` of the `hostile-twin` bundle)
//! against real HTTP servers on 127.0.0.1 started by each test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use flowcraft_core::runner::{FailureKind, NodeCall};
use flowcraft_plugins::{Grants, PluginError, PluginHost};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A tiny HTTP/1.1 server: answers `GET /path` with 200 and the body
/// `hello from /path`, except `/hang`, which it never answers.
struct TestServer {
    addr: SocketAddr,
    /// The request head of every request received, in order.
    requests: mpsc::UnboundedReceiver<String>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (seen, requests) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(respond(stream, seen.clone()));
            }
        });
        Self {
            addr,
            requests,
            connections,
        }
    }

    /// The allow-list entry for this server.
    fn entry(&self) -> String {
        self.addr.to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The head of the next request the server received (it has already
    /// been recorded when the guest got the response).
    fn next_request(&mut self) -> Option<String> {
        self.requests.try_recv().ok()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn respond(mut stream: TcpStream, seen: mpsc::UnboundedSender<String>) {
    let mut head = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let _ = seen.send(head);
    if path == "/hang" {
        // Keep the connection open without ever answering.
        std::future::pending::<()>().await;
    }
    let body = format!("hello from {path}");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A host over `bundles` where bundle `name` may reach `entries`.
async fn host_granting(
    bundles: &[&str],
    grants: &[(&str, &[String])],
) -> (PluginHost, tempfile::TempDir) {
    let dir = plugins_dir(bundles);
    let mut config = config(dir.path());
    for (name, entries) in grants {
        config.grants.insert(
            (*name).to_owned(),
            Grants {
                http: entries.to_vec(),
                ..Grants::default()
            },
        );
    }
    let host = PluginHost::load(config).await.expect("load plugins");
    assert!(host.problems().is_empty(), "{:?}", host.problems());
    (host, dir)
}

fn fetch(uses: &str, url: &str) -> NodeCall {
    with_params(uses, json!({ "url": url }))
}

/// The `{error}` of a fetch that must have been denied.
fn denial(output: Option<Value>) -> String {
    let output = output.expect("fetch has an output");
    let error = output["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a denial, got {output}"));
    assert!(error.contains("HttpRequestDenied"), "{error}");
    error.to_owned()
}

#[tokio::test]
async fn a_granted_host_is_reached() {
    let mut server = TestServer::start().await;
    let (host, _dir) =
        host_granting(&["testkit/hostile.wasm"], &[("hostile", &[server.entry()])]).await;

    let fetched = output(&host, fetch("fetch", &server.url("/greeting?x=1"))).await;
    assert_eq!(
        fetched,
        Some(json!({"status": 200, "body": "hello from /greeting?x=1"}))
    );
    let request = server.next_request().expect("the server saw the request");
    assert!(
        request.starts_with("GET /greeting?x=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains(&format!("host: {}", server.addr)),
        "{request}"
    );
    assert_eq!(host.bundles()[0].granted_http, vec![server.entry()]);
}

#[tokio::test]
async fn a_bundle_without_a_grant_is_denied() {
    let server = TestServer::start().await;
    let (host, _dir) = host_with(&["testkit/hostile.wasm"]).await;

    denial(output(&host, fetch("fetch", &server.url("/hello"))).await);
    assert_eq!(server.connections(), 0, "a denied request never connects");
    assert!(host.bundles()[0].granted_http.is_empty());
}

#[tokio::test]
async fn hosts_ports_and_schemes_not_on_the_list_are_denied() {
    let mut granted = TestServer::start().await;
    let other = TestServer::start().await;
    let (host, _dir) = host_granting(
        &["testkit/hostile.wasm"],
        &[("hostile", &[granted.entry()])],
    )
    .await;

    // Another port on the same address, and the same server under another
    // name: neither matches the entry.
    denial(output(&host, fetch("fetch", &other.url("/hello"))).await);
    let by_name = format!("http://localhost:{}/hello", granted.addr.port());
    denial(output(&host, fetch("fetch", &by_name)).await);

    // An entry naming a scheme allows only that scheme.
    let (https_only, _dir) = host_granting(
        &["testkit/hostile.wasm"],
        &[("hostile", &[format!("https://{}", other.addr)])],
    )
    .await;
    denial(output(&https_only, fetch("fetch", &other.url("/hello"))).await);
    assert_eq!(
        other.connections(),
        0,
        "the other server was never contacted"
    );

    let fetched = output(&host, fetch("fetch", &granted.url("/allowed"))).await;
    assert_eq!(
        fetched,
        Some(json!({"status": 200, "body": "hello from /allowed"}))
    );
    let requests: Vec<String> = std::iter::from_fn(|| granted.next_request()).collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].starts_with("GET /allowed "), "{requests:?}");
}

#[tokio::test]
async fn a_grant_does_not_leak_to_another_bundle() {
    let server = TestServer::start().await;
    let bundles = ["testkit/hostile.wasm", "testkit/twin/hostile-twin.wasm"];
    let url = server.url("/hello");
    let reached = Some(json!({"status": 200, "body": "hello from /hello"}));

    let (twin_granted, _dir) =
        host_granting(&bundles, &[("hostile-twin", &[server.entry()])]).await;
    assert_eq!(
        output(&twin_granted, fetch("twin-fetch", &url)).await,
        reached
    );
    denial(output(&twin_granted, fetch("fetch", &url)).await);

    let (hostile_granted, _dir) = host_granting(&bundles, &[("hostile", &[server.entry()])]).await;
    assert_eq!(
        output(&hostile_granted, fetch("fetch", &url)).await,
        reached
    );
    denial(output(&hostile_granted, fetch("twin-fetch", &url)).await);

    assert_eq!(server.connections(), 2, "only the granted calls connected");
}

#[tokio::test]
async fn a_hanging_request_ends_at_the_time_limit() {
    let mut server = TestServer::start().await;
    let (host, _dir) =
        host_granting(&["testkit/hostile.wasm"], &[("hostile", &[server.entry()])]).await;
    let label = {
        let bundle = &host.bundles()[0];
        format!("bundle {}@{}", bundle.name, bundle.version)
    };

    let started = Instant::now();
    let failure = failure(
        &host,
        with_timeout(fetch("fetch", &server.url("/hang")), 300),
    )
    .await;
    assert_eq!(failure.kind, FailureKind::Retryable);
    assert_eq!(
        failure.message,
        format!("{label}, node type 'fetch': time limit of 300 ms exceeded")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(server.next_request().unwrap().starts_with("GET /hang "));

    // The host is fine afterwards.
    let fetched = output(&host, fetch("fetch", &server.url("/after"))).await;
    assert_eq!(fetched.unwrap()["status"], json!(200));
}

#[tokio::test]
async fn bundles_without_wasi_http_run_unchanged_next_to_a_grant() {
    let server = TestServer::start().await;
    let (host, _dir) = host_granting(
        &["testkit/trivial.wasm", "testkit/hostile.wasm"],
        &[("trivial", &[server.entry()])],
    )
    .await;
    assert!(output(&host, call("noop")).await.is_none());
    // trivial's grant gives hostile nothing.
    denial(output(&host, fetch("fetch", &server.url("/hello"))).await);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn invalid_http_entries_are_a_load_error() {
    let dir = plugins_dir(&["testkit/trivial.wasm"]);
    let mut config = config(dir.path());
    config.grants.insert(
        "trivial".into(),
        Grants {
            http: vec!["https://api.example.com/v1".into()],
            ..Grants::default()
        },
    );
    let error = PluginHost::load(config).await.err().expect("load fails");
    assert!(matches!(error, PluginError::Grant { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("'trivial'") && message.contains("https://api.example.com/v1"),
        "{message}"
    );
}

#[test]
fn grants_deserialize_with_an_http_list_and_reject_unknown_fields() {
    let grants: Grants = serde_json::from_value(json!({
        "config": {"currency": "EUR"},
        "http": ["api.example.com", "127.0.0.1:8080", "*.example.org"],
    }))
    .unwrap();
    assert_eq!(grants.http.len(), 3);
    assert!(
        serde_json::from_value::<Grants>(json!({"http": []}))
            .unwrap()
            .config
            .is_empty()
    );
    let unknown = serde_json::from_value::<Grants>(json!({"hosts": ["x"]})).unwrap_err();
    assert!(unknown.to_string().contains("unknown field"), "{unknown}");
}

/// `fetch` of the JavaScript bundle `hostile-js` (built with wasi:http):
/// granted, it reaches the server; without a grant, it never connects.
#[tokio::test]
async fn javascript_fetch_obeys_the_allow_list() {
    let mut server = TestServer::start().await;
    let (granted, _dir) = host_granting(
        &["testkit/js/hostile-js.wasm"],
        &[("hostile-js", &[server.entry()])],
    )
    .await;
    let fetched = output(&granted, fetch("fetch", &server.url("/from-js"))).await;
    assert_eq!(
        fetched,
        Some(json!({"status": 200, "body": "hello from /from-js"}))
    );
    let request = server.next_request().expect("the server saw the request");
    assert!(
        request.starts_with("GET /from-js HTTP/1.1\r\n"),
        "{request}"
    );

    let (ungranted, _dir) = host_with(&["testkit/js/hostile-js.wasm"]).await;
    let refused = output(&ungranted, fetch("fetch", &server.url("/refused")))
        .await
        .expect("fetch has an output");
    assert!(refused["error"].is_string(), "{refused}");
    assert_eq!(
        server.connections(),
        1,
        "the refused request never connected"
    );
}
