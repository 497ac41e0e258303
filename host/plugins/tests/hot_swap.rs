//! Hot swap through the directory watcher: new versions are swapped in while
//! calls already running finish on the old one; broken files keep the old
//! version serving; removed bundles stop serving new calls. Tests wait on the
//! host's reload generation, never on fixed sleeps.

mod common;

use std::future::{Future, ready};
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use common::*;
use flowcraft_core::runner::{FailureKind, NodeCall, NodeOutcome, NodeRunner};
use flowcraft_plugins::PluginHost;
use serde_json::json;
use tokio::sync::oneshot;

/// Upper bound for a reload to become visible; only reached when broken.
const RELOAD_DEADLINE: Duration = Duration::from_secs(60);

/// Writes `bytes` next to `target` and renames it into place, as a deploy would.
fn install(target: &Path, bytes: &[u8]) {
    let temp = target.with_extension("wasm.tmp");
    std::fs::write(&temp, bytes).unwrap();
    std::fs::rename(&temp, target).unwrap();
}

/// Waits for reloads until `done` holds.
async fn until(host: &PluginHost, what: &str, done: impl Fn(&PluginHost) -> bool) {
    let mut reloads = host.reloads();
    let wait = async {
        while !done(host) {
            reloads.changed().await.expect("host alive");
        }
    };
    tokio::time::timeout(RELOAD_DEADLINE, wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out waiting for: {what}; problems: {:?}",
                host.problems()
            )
        });
}

fn serves(host: &PluginHost, version: &str) -> bool {
    host.bundles()
        .iter()
        .any(|b| b.name == "greeter" && b.version == version)
}

/// Spawns `call` and returns once it is running inside the guest.
async fn start_in_flight(
    host: &PluginHost,
    call: NodeCall,
) -> tokio::task::JoinHandle<NodeOutcome> {
    let host = host.clone();
    let (started, is_started) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut running = pin!(host.run(call));
        tokio::select! {
            biased;
            finished = &mut running => return finished,
            () = ready(()) => {}
        }
        let _ = started.send(());
        running.await
    });
    is_started
        .await
        .expect("the call started and is waiting inside the guest");
    task
}

/// A watched plugins dir holding greeter 1.0.0 as `greeter.wasm`, with 2.0.0
/// already in the compile cache (so swapping to it is fast).
async fn greeter_v1() -> (PluginHost, tempfile::TempDir, std::path::PathBuf) {
    let warm = plugins_dir(&["testkit/greeter-v2.wasm"]);
    PluginHost::load(config(warm.path())).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greeter.wasm");
    std::fs::copy(bundle("testkit/greeter-v1.wasm"), &path).unwrap();
    let host = PluginHost::load(config(dir.path())).await.unwrap();
    assert!(serves(&host, "1.0.0"));
    (host, dir, path)
}

async fn greet(host: &PluginHost) -> serde_json::Value {
    output(host, call("greet")).await.expect("greet outputs")
}

#[tokio::test]
async fn a_swap_serves_new_calls_while_a_running_call_finishes_on_the_old_version() {
    let (host, _dir, path) = greeter_v1().await;
    let _watching = host.watch().unwrap();
    assert_eq!(greet(&host).await, json!("hello from greeter v1"));

    let in_flight = start_in_flight(&host, with_params("greet-slow", json!({"ms": 3000}))).await;
    install(
        &path,
        &std::fs::read(bundle("testkit/greeter-v2.wasm")).unwrap(),
    );
    until(&host, "greeter 2.0.0 serving", |h| serves(h, "2.0.0")).await;

    assert!(
        !in_flight.is_finished(),
        "the old call was still running during the swap"
    );
    assert_eq!(greet(&host).await, json!("hello from greeter v2"));
    assert!(!serves(&host, "1.0.0"));
    let finished = in_flight.await.unwrap();
    assert_eq!(
        finished.result.unwrap().output,
        Some(json!("hello from greeter v1"))
    );
}

#[tokio::test]
async fn a_corrupt_file_keeps_the_old_version_serving() {
    let (host, _dir, path) = greeter_v1().await;
    let _watching = host.watch().unwrap();

    install(&path, b"\0asm\x0d\0\x01\0this is not a component");
    until(&host, "the broken file reported", |h| {
        !h.problems().is_empty()
    })
    .await;
    let problems = host.problems();
    assert_eq!(problems[0].path, path);
    assert!(
        problems[0].error.contains("cannot compile bundle"),
        "{}",
        problems[0].error
    );
    assert!(serves(&host, "1.0.0"));
    assert_eq!(greet(&host).await, json!("hello from greeter v1"));

    install(
        &path,
        &std::fs::read(bundle("testkit/greeter-v2.wasm")).unwrap(),
    );
    until(&host, "the fixed file serving", |h| serves(h, "2.0.0")).await;
    assert!(host.problems().is_empty());
    assert_eq!(greet(&host).await, json!("hello from greeter v2"));
}

#[tokio::test]
async fn a_removed_bundle_stops_serving_but_pinned_runs_keep_it() {
    let (host, _dir, path) = greeter_v1().await;
    let _watching = host.watch().unwrap();
    let v1 = host.bundles()[0].digest.clone();

    std::fs::remove_file(&path).unwrap();
    until(&host, "no bundles", |h| h.bundles().is_empty()).await;
    assert!(!host.implements("greet"));
    let gone = failure(&host, call("greet")).await;
    assert_eq!(gone.kind, FailureKind::Fatal);
    assert_eq!(gone.message, "Implementation for 'greet' not found.");

    let pinned = NodeCall {
        pin: Some(v1),
        ..call("greet")
    };
    assert_eq!(
        output(&host, pinned).await,
        Some(json!("hello from greeter v1"))
    );
}

#[tokio::test]
async fn a_new_bundle_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::load(config(dir.path())).await.unwrap();
    assert!(host.bundles().is_empty());
    let _watching = host.watch().unwrap();
    install(
        &dir.path().join("trivial.wasm"),
        &std::fs::read(bundle("testkit/trivial.wasm")).unwrap(),
    );
    until(&host, "trivial serving", |h| h.implements("noop")).await;
    assert_eq!(
        output(&host, with_input("noop", json!([1]))).await,
        Some(json!([1]))
    );
}

/// `component` with a custom section appended whose payload is `tag`: the same
/// component with new content, so its digest (and compile cache entry) is new.
fn with_custom_section(mut component: Vec<u8>, tag: &str) -> Vec<u8> {
    let name = "flowcraft-test";
    let body_len = 1 + name.len() + tag.len();
    assert!(body_len < 128, "one-byte LEB128 sizes keep this simple");
    component.extend([0, body_len as u8, name.len() as u8]);
    component.extend(name.bytes().chain(tag.bytes()));
    component
}

/// On this single-threaded runtime calls only run if compiling a new bundle
/// happens elsewhere: a JavaScript bundle takes seconds to compile, and the
/// serving bundle must answer throughout.
#[tokio::test(flavor = "current_thread")]
async fn calls_are_served_while_a_new_javascript_bundle_compiles() {
    let (host, dir, _) = greeter_v1().await;
    let _watching = host.watch().unwrap();
    let fresh = with_custom_section(
        std::fs::read(bundle("testkit/js/hostile-js.wasm")).unwrap(),
        &format!("{:?}", std::time::SystemTime::now()),
    );
    install(&dir.path().join("hostile-js.wasm"), &fresh);
    let swapped = |h: &PluginHost| h.bundles().iter().any(|b| b.name == "hostile-js");
    let mut served_meanwhile = 0;
    let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
    while !swapped(&host) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hostile-js never loaded: {:?}",
            host.problems()
        );
        assert_eq!(greet(&host).await, json!("hello from greeter v1"));
        served_meanwhile += 1;
    }
    assert!(
        served_meanwhile >= 20,
        "only {served_meanwhile} calls were served while the new bundle compiled"
    );
    assert_eq!(greet(&host).await, json!("hello from greeter v1"));
}

#[tokio::test]
async fn reload_can_be_requested_without_a_watcher() {
    let (host, _dir, path) = greeter_v1().await;
    let generation = *host.reloads().borrow();
    std::fs::copy(bundle("testkit/greeter-v2.wasm"), &path).unwrap();
    host.reload().await.unwrap();
    assert!(*host.reloads().borrow() > generation);
    assert_eq!(greet(&host).await, json!("hello from greeter v2"));
}

/// Compile-time check: the engine can spawn calls on a multi-threaded runtime.
#[allow(dead_code)]
fn run_futures_are_send(host: &PluginHost) -> impl Future<Output = NodeOutcome> + Send + '_ {
    host.run(call("greet"))
}
