//! Bundles built with the JavaScript SDK in the host as users run them: the
//! order-approval demo gives the same result with `orders-ts` as with the Rust
//! `orders` bundle (alone, and bound by `metadata.plugins` next to it), and
//! `plugins compile` fills the compile cache that runs then start from.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A built bundle of `plugins-example/dist`.
fn built(relative: &str) -> PathBuf {
    let path = root().join("plugins-example/dist").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

fn flowcraft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(args)
        .current_dir(root())
        .env("FLOWCRAFT_LOG", "info")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The compile cache all runs of this test binary share (JavaScript bundles
/// take seconds to compile).
fn shared_cache() -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("sdk-bundles-cache")
        .display()
        .to_string()
}

/// Runs the demo blueprint `blueprint` with `plugins` and returns its context.
fn demo_context(blueprint: &Path, plugins: &Path) -> Value {
    let output = flowcraft(&[
        "run",
        blueprint.to_str().unwrap(),
        "--plugins",
        plugins.to_str().unwrap(),
        "--cache-dir",
        &shared_cache(),
        "--context",
        "@plugins-example/orders/blueprints/order-approval.context.json",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(result["status"], "completed", "{result}");
    comparable(result["context"].clone())
}

/// The context with what legitimately differs between the bundles taken
/// out: the clock (`updatedAtMs`) and how a whole number is written
/// (Rust's `10.0`, JavaScript's `10`).
fn comparable(value: Value) -> Value {
    match value {
        Value::Object(map) => map
            .into_iter()
            .filter(|(key, _)| key != "updatedAtMs")
            .map(|(key, value)| (key, comparable(value)))
            .collect(),
        Value::Array(items) => items.into_iter().map(comparable).collect(),
        Value::Number(number) => number.as_f64().map_or(Value::Null, Value::from),
        other => other,
    }
}

fn demo_blueprint() -> PathBuf {
    root().join("plugins-example/orders/blueprints/order-approval.json")
}

#[test]
fn the_order_demo_gives_the_same_result_with_the_typescript_bundle() {
    let rust = demo_context(&demo_blueprint(), built("orders.wasm").parent().unwrap());
    let typescript = demo_context(
        &demo_blueprint(),
        built("ts/orders-ts.wasm").parent().unwrap(),
    );
    assert_eq!(rust, typescript);
    assert_eq!(
        typescript["_outputs.review"]["message"],
        "Order ORD-1001 awaiting manager review: total 1453.50 EUR"
    );
}

#[test]
fn a_blueprint_bound_to_orders_ts_uses_it_next_to_the_rust_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("bundles.toml");
    std::fs::write(
        &list,
        format!(
            "[[bundles]]\npath = {:?}\n[[bundles]]\npath = {:?}\n",
            built("orders.wasm"),
            built("ts/orders-ts.wasm")
        ),
    )
    .unwrap();
    let mut blueprint: Value =
        serde_json::from_str(&std::fs::read_to_string(demo_blueprint()).unwrap()).unwrap();
    blueprint["metadata"] = serde_json::json!({"plugins": {"orders-ts": "0.1"}});
    let bound = dir.path().join("order-approval-ts.json");
    std::fs::write(&bound, blueprint.to_string()).unwrap();

    let typescript = demo_context(&bound, &list);
    let rust = demo_context(&demo_blueprint(), built("orders.wasm").parent().unwrap());
    assert_eq!(rust, typescript);
}

#[test]
fn plugins_compile_fills_the_cache_a_run_then_starts_from() {
    let plugins = tempfile::tempdir().unwrap();
    for bundle in ["orders.wasm", "conformance.wasm"] {
        std::fs::copy(built(bundle), plugins.path().join(bundle)).unwrap();
    }
    std::fs::write(plugins.path().join("broken.wasm"), b"\0asm not really").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let compile = || {
        flowcraft(&[
            "plugins",
            "compile",
            "--plugins",
            plugins.path().to_str().unwrap(),
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ])
    };

    let first = compile();
    assert_eq!(
        first.status.code(),
        Some(1),
        "a broken bundle fails the deploy step"
    );
    let (stdout, stderr) = (text(&first.stdout), text(&first.stderr));
    assert_eq!(stdout.matches("  compiled (").count(), 2, "{stdout}");
    assert!(stderr.contains("broken.wasm: "), "{stderr}");
    assert!(
        stderr.contains("2 bundles ready") && stderr.contains("1 failed to load"),
        "{stderr}"
    );

    std::fs::remove_file(plugins.path().join("broken.wasm")).unwrap();
    let second = compile();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout).matches("already compiled").count(), 2);

    let run = flowcraft(&[
        "run",
        demo_blueprint().to_str().unwrap(),
        "--plugins",
        plugins.path().to_str().unwrap(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--context",
        "@plugins-example/orders/blueprints/order-approval.context.json",
    ]);
    let log = text(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{log}");
    assert_eq!(log.matches("compiled=\"cached\"").count(), 2, "{log}");
}

#[test]
fn a_javascript_bundle_without_the_http_flag_imports_no_wasi_http() {
    let listed = flowcraft(&[
        "plugins",
        "list",
        "--plugins",
        built("ts/orders-ts.wasm")
            .parent()
            .unwrap()
            .to_str()
            .unwrap(),
        "--cache-dir",
        &shared_cache(),
        "--json",
    ]);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let bundles: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let orders = bundles
        .iter()
        .find(|bundle| bundle["name"] == "orders-ts")
        .expect("orders-ts is listed");
    let imports = orders["imports"].as_array().expect("imports are listed");
    assert!(
        imports
            .iter()
            .any(|import| import == "flowcraft:node/host@0.1.0"),
        "{imports:?}"
    );
    assert!(
        !imports.iter().any(|import| import
            .as_str()
            .is_some_and(|name| name.starts_with("wasi:http/"))),
        "{imports:?}"
    );
}
