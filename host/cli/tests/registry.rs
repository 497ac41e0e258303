//! `plugins push` and `plugins pull` against a real registry
//! (`docker-registry`), with the example bundle.

#[allow(dead_code)] // the registry's storage is for the crate's own tests
#[path = "../../oci/tests/support/mod.rs"]
mod registry;
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use registry::{LocalRegistry, PASSWORD, USERNAME};

fn flowcraft(args: &[&str], docker_config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(args)
        .env("FLOWCRAFT_LOG", "warn")
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("FLOWCRAFT_REGISTRY_USERNAME")
        .env_remove("FLOWCRAFT_REGISTRY_PASSWORD")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// Pushes the test bundle `file` (of `dist/testkit`) to `tagged` with the
/// CLI; answers the bundle's digest.
fn push_testkit(file: &str, tagged: &str, dir: &Path) -> String {
    let bundle = support::dist().join("testkit").join(file);
    let pushed = flowcraft(&["plugins", "push", bundle.to_str().unwrap(), tagged], dir);
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    flowcraft_oci::Digest::of(&std::fs::read(bundle).unwrap()).to_string()
}

#[test]
fn a_pushed_bundle_is_pulled_into_the_cache_by_tag_and_by_digest() {
    let local = LocalRegistry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let bundle = support::dist().join("orders.wasm");
    let tagged = format!("{}/nodes/orders:1.0.0", local.host());
    let pushed = flowcraft(
        &["plugins", "push", bundle.to_str().unwrap(), &tagged],
        dir.path(),
    );
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    let manifest = text(&pushed.stdout);
    assert!(
        manifest.starts_with("sha256:") && manifest.len() == 71,
        "{manifest}"
    );
    assert!(
        text(&pushed.stderr).contains("pushed orders@"),
        "{}",
        text(&pushed.stderr)
    );

    let cache = dir.path().join("cache");
    let by_digest = format!("{}/nodes/orders@{manifest}", local.host());
    for reference in [&tagged, &by_digest] {
        let pulled = flowcraft(
            &[
                "plugins",
                "pull",
                reference,
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert!(pulled.status.success(), "{}", text(&pulled.stderr));
        let stdout = text(&pulled.stdout);
        let (digest, path) = stdout.split_once("  ").expect("digest and path");
        assert!(path.starts_with(cache.to_str().unwrap()), "{path}");
        let original = std::fs::read(&bundle).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), original);
        assert_eq!(digest, flowcraft_oci::Digest::of(&original).to_string());
    }

    let list = dir.path().join("bundles.toml");
    std::fs::write(&list, format!("[[bundles]]\nreference = \"{tagged}\"\n")).unwrap();
    let listed = flowcraft(
        &[
            "plugins",
            "list",
            "--json",
            "--plugins",
            list.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "orders");
    assert_eq!(listed[0]["origin"]["reference"], tagged.as_str());
    assert_eq!(listed[0]["origin"]["manifest"], manifest.as_str());
}

#[test]
fn push_refuses_a_file_that_is_no_bundle_and_pull_names_a_missing_tag() {
    let local = LocalRegistry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let not_a_bundle = dir.path().join("notes.wasm");
    std::fs::write(&not_a_bundle, "not wasm").unwrap();
    let tagged = format!("{}/nodes/notes:1", local.host());
    let pushed = flowcraft(
        &["plugins", "push", not_a_bundle.to_str().unwrap(), &tagged],
        dir.path(),
    );
    assert!(!pushed.status.success());
    assert!(
        text(&pushed.stderr).contains("is not a valid bundle"),
        "{}",
        text(&pushed.stderr)
    );

    let pulled = flowcraft(
        &[
            "plugins",
            "pull",
            &tagged,
            "--cache-dir",
            dir.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!pulled.status.success());
    assert!(
        text(&pulled.stderr).contains("not found"),
        "{}",
        text(&pulled.stderr)
    );
}

#[test]
fn a_registry_with_logins_takes_the_login_from_the_environment() {
    let local = LocalRegistry::with_logins();
    let dir = tempfile::tempdir().unwrap();
    let bundle = support::dist().join("orders.wasm");
    let tagged = format!("{}/nodes/orders:1.0.0", local.host());
    let args = ["plugins", "push", bundle.to_str().unwrap(), tagged.as_str()];
    let refused = flowcraft(&args, dir.path());
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("FLOWCRAFT_REGISTRY_USERNAME"),
        "{}",
        text(&refused.stderr)
    );
    let accepted = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(args)
        .env("FLOWCRAFT_LOG", "warn")
        .env("DOCKER_CONFIG", dir.path())
        .env("FLOWCRAFT_REGISTRY_USERNAME", USERNAME)
        .env("FLOWCRAFT_REGISTRY_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
}

/// `serve` on SQLite (its data in `dir/data`) with the bundle list `list`,
/// pulled bundles in `dir/<cache>`, the blueprints of `dir/blueprints`, on
/// `port`, plus `extra` flags, its log in `dir/serve-<port>.log`; killed
/// when dropped.
fn serve_list(list: &Path, dir: &Path, cache: &str, port: u16, extra: &[&str]) -> support::Killed {
    let blueprints = dir.join("blueprints");
    std::fs::create_dir_all(&blueprints).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--plugins",
            list.to_str().unwrap(),
            "--blueprints",
            &path("blueprints"),
        ])
        .args(["--cache-dir", &path(cache), "--data-dir", &path("data")])
        .args(extra)
        .env("FLOWCRAFT_LOG", "warn")
        .env("DOCKER_CONFIG", dir)
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("COSMOS_DB_CONNECTION_STRING")
        .env_remove("REDIS_URL")
        .stderr(std::fs::File::create(dir.join(format!("serve-{port}.log"))).unwrap())
        .spawn()
        .expect("serve starts");
    support::Killed(child)
}

/// The bundles a `serve` on `port` serves: (name, version, digest).
async fn served_bundles(port: u16) -> Option<Vec<(String, String, String)>> {
    let answer: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/bundles"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let text =
        |bundle: &serde_json::Value, key: &str| bundle[key].as_str().unwrap_or_default().to_owned();
    Some(
        answer["bundles"]
            .as_array()?
            .iter()
            .map(|bundle| {
                (
                    text(bundle, "name"),
                    text(bundle, "version"),
                    text(bundle, "digest"),
                )
            })
            .collect(),
    )
}

#[tokio::test]
async fn serve_with_a_bundle_list_swaps_in_the_bundle_a_tag_moves_to() {
    let local = LocalRegistry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let tagged = format!("{}/nodes/greeter:stable", local.host());
    let first = push_testkit("greeter-v1.wasm", &tagged, dir.path());
    let list = dir.path().join("bundles.toml");
    std::fs::write(&list, format!("[[bundles]]\nreference = \"{tagged}\"\n")).unwrap();

    let port = support::free_port();
    let _serving = serve_list(&list, dir.path(), "cache", port, &["--plugins-poll", "1"]);
    let limit = Duration::from_secs(120);
    let served = support::eventually("serve to answer", limit, || served_bundles(port)).await;
    assert_eq!(served, vec![("greeter".into(), "1.0.0".into(), first)]);

    let second = push_testkit("greeter-v2.wasm", &tagged, dir.path());
    let swapped = support::eventually("the moved tag's bundle to serve", limit, || async {
        let served = served_bundles(port).await?;
        served
            .iter()
            .any(|(_, _, digest)| *digest == second)
            .then_some(served)
    })
    .await;
    assert_eq!(
        swapped,
        vec![("greeter".into(), "2.0.0".into(), second.clone())]
    );

    // A tag moved to something that is no bundle (a core module, pushed by a
    // tool that does not check): refused, and greeter 2 keeps serving.
    let reference: flowcraft_oci::Reference = tagged.parse().unwrap();
    flowcraft_oci::Registry::for_reference(&reference, &Default::default(), false)
        .push(
            &reference,
            b"\0asm\x01\0\0\0".to_vec(),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    let log = dir.path().join(format!("serve-{port}.log"));
    support::eventually("serve to refuse the broken bundle", limit, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("does not load").then_some(())
    })
    .await;
    let served = served_bundles(port).await.unwrap();
    assert_eq!(served, vec![("greeter".into(), "2.0.0".into(), second)]);
}

/// A blueprint whose `hello` node (a greeter's) runs after a `wait`: a run
/// started now is pinned to the greeter serving now and runs it on resume.
const PINNED_BLUEPRINT: &str = r#"{"id": "pinned", "nodes": [
    {"id": "gate", "uses": "wait"}, {"id": "hello", "uses": "greet"}],
  "edges": [{"source": "gate", "target": "hello"}]}"#;

async fn api(port: u16, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let request =
        reqwest::Client::new().request(method, format!("http://127.0.0.1:{port}/api/v1/{path}"));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap().json().await.unwrap()
}

/// Starts run `run` of `pinned` on a serve on `port` and waits until it awaits its gate.
async fn start_awaiting(port: u16, run: &str) {
    let limit = Duration::from_secs(120);
    support::eventually("serve to answer", limit, || served_bundles(port)).await;
    let started = api(
        port,
        reqwest::Method::POST,
        "runs",
        Some(json!({"blueprintId": "pinned", "runId": run})),
    )
    .await;
    assert_eq!(started["runId"], run, "{started}");
    let status = api(
        port,
        reqwest::Method::GET,
        &format!("runs/{run}?wait=20"),
        None,
    )
    .await;
    assert_eq!(status["status"], "awaiting", "{status}");
}

/// A registry with greeter 1.0.0 under `nodes/greeter:stable`, a bundle list
/// of that tag, the `pinned` blueprint, and run `run` started on a serve of
/// that list and left awaiting; then the tag moved to greeter 2.0.0. Answers
/// the registry and greeter 1.0.0's digest.
async fn run_pinned_to_a_moved_tag(dir: &Path, run: &str) -> (LocalRegistry, String) {
    let local = LocalRegistry::anonymous();
    let tagged = format!("{}/nodes/greeter:stable", local.host());
    let first = push_testkit("greeter-v1.wasm", &tagged, dir);
    let list = dir.join("bundles.toml");
    std::fs::write(&list, format!("[[bundles]]\nreference = \"{tagged}\"\n")).unwrap();
    std::fs::create_dir_all(dir.join("blueprints")).unwrap();
    std::fs::write(dir.join("blueprints/pinned.json"), PINNED_BLUEPRINT).unwrap();
    let port = support::free_port();
    {
        let _first_serve = serve_list(&list, dir, "cache-1", port, &[]);
        start_awaiting(port, run).await;
    }
    push_testkit("greeter-v2.wasm", &tagged, dir);
    (local, first)
}

/// Resumes run `run` on a serve on `port` and checks that it completes with
/// greeter 1's answer.
async fn resume_and_expect_greeter_1(port: u16, run: &str) {
    let resume = format!("runs/{run}/resume");
    api(port, reqwest::Method::POST, &resume, Some(json!({}))).await;
    let read = format!("runs/{run}?wait=30");
    let ended = api(port, reqwest::Method::GET, &read, None).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert!(
        ended.to_string().contains("hello from greeter v1"),
        "{ended}"
    );
}

#[tokio::test]
async fn a_run_pinned_to_a_replaced_bundle_finishes_on_it_after_a_restart_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_registry, first) = run_pinned_to_a_moved_tag(dir.path(), "kept").await;

    let port = support::free_port();
    let list = dir.path().join("bundles.toml");
    let _second_serve = serve_list(&list, dir.path(), "cache-2", port, &[]);
    let limit = Duration::from_secs(120);
    let served = support::eventually("serve to answer", limit, || served_bundles(port)).await;
    assert_eq!(served.len(), 1);
    assert_eq!(
        (served[0].1.as_str(), served[0].2 == first),
        ("2.0.0", false),
        "only greeter 2 is listed"
    );

    resume_and_expect_greeter_1(port, "kept").await;
}

#[tokio::test]
async fn a_job_whose_pinned_bundle_is_nowhere_is_returned_then_dead_lettered_naming_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, first) = run_pinned_to_a_moved_tag(dir.path(), "orphaned").await;
    let deleted = reqwest::Client::new()
        .delete(format!(
            "http://{}/v2/nodes/greeter/blobs/{first}",
            registry.host()
        ))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());

    let port = support::free_port();
    let list = dir.path().join("bundles.toml");
    let _second_serve = serve_list(
        &list,
        dir.path(),
        "cache-2",
        port,
        &["--visibility-timeout", "1", "--max-dequeue-count", "2"],
    );
    let limit = Duration::from_secs(120);
    support::eventually("serve to answer", limit, || served_bundles(port)).await;
    api(
        port,
        reqwest::Method::POST,
        "runs/orphaned/resume",
        Some(json!({})),
    )
    .await;
    let letters = support::eventually("the job to be dead-lettered", limit, || async {
        let answer = api(port, reqwest::Method::GET, "poison", None).await;
        let letters = answer["messages"].as_array()?.clone();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&first) && reason.contains("hello"),
        "{reason}"
    );
    let status = api(port, reqwest::Method::GET, "runs/orphaned", None).await;
    assert_ne!(
        status["status"], "failed",
        "the node did not fail: {status}"
    );
}

#[tokio::test]
async fn a_run_pinned_to_a_bundle_replaced_in_its_directory_finishes_on_it_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let testkit = support::dist().join("testkit");
    let nodes = dir.join("nodes");
    std::fs::create_dir(&nodes).unwrap();
    std::fs::copy(testkit.join("greeter-v1.wasm"), nodes.join("greeter.wasm")).unwrap();
    std::fs::create_dir_all(dir.join("blueprints")).unwrap();
    std::fs::write(dir.join("blueprints/pinned.json"), PINNED_BLUEPRINT).unwrap();
    let port = support::free_port();
    {
        let _first_serve = serve_list(&nodes, dir, "cache", port, &[]);
        start_awaiting(port, "kept").await;
    }
    std::fs::copy(testkit.join("greeter-v2.wasm"), nodes.join("greeter.wasm")).unwrap();

    let port = support::free_port();
    let _second_serve = serve_list(&nodes, dir, "cache", port, &[]);
    let limit = Duration::from_secs(120);
    let served = support::eventually("serve to answer", limit, || served_bundles(port)).await;
    assert_eq!(served[0].1, "2.0.0", "only greeter 2 is in the directory");
    resume_and_expect_greeter_1(port, "kept").await;
}
