//! A fleet fed from a registry, on the local Azure stand-ins: three workers
//! with a bundle list naming a tag, runs pinned to the tag's first bundle in
//! flight while the tag moves and every worker is restarted without its
//! cache. Pinned runs finish on the bundle they started with, a job running
//! during the hot swap too, new runs take the new bundle, and nothing is
//! lost or dead-lettered.

#[allow(dead_code)] // the registry's storage is for the crate's own tests
#[path = "../../oci/tests/support/mod.rs"]
mod registry;
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flowcraft_azure::backend::AzureConfig;
use registry::LocalRegistry;
use support::azure::{Workers, azure_config, worker_command_with};

const BLUEPRINTS: [(&str, &str); 3] = [
    (
        "quick",
        r#"{"id": "quick", "nodes": [{"id": "hello", "uses": "greet"}], "edges": []}"#,
    ),
    (
        "pinned",
        r#"{"id": "pinned", "nodes": [{"id": "gate", "uses": "wait"}, {"id": "hello", "uses": "greet"}],
            "edges": [{"source": "gate", "target": "hello"}]}"#,
    ),
    (
        "slow",
        r#"{"id": "slow", "nodes": [{"id": "hello", "uses": "greet-slow", "params": {"ms": 20000}}], "edges": []}"#,
    ),
];

/// `flowcraft-host ARGS` on `config`'s queue and database, with the test's
/// Docker credential directory (none).
fn host(config: &AzureConfig, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(args)
        .env("FLOWCRAFT_QUEUE", &config.queue)
        .env("FLOWCRAFT_DATABASE", &config.database)
        .env("FLOWCRAFT_LOG", "warn")
        .env("DOCKER_CONFIG", dir)
        .output()
        .unwrap()
}

fn succeeded(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Three workers with the bundle list, each with an empty cache of its own
/// (`generation` names them), checking the list every second.
fn workers(config: &AzureConfig, dir: &Path, generation: &str) -> Workers {
    let children = (0..3)
        .map(|index| {
            let cache = dir.join(format!("cache-{generation}-{index}"));
            worker_command_with(config, &dir.join("blueprints"), &dir.join("bundles.toml"))
                .args(["--concurrency", "4", "--plugins-poll", "1"])
                .args(["--cache-dir", cache.to_str().unwrap()])
                .env("DOCKER_CONFIG", dir)
                .spawn()
                .expect("a worker starts")
        })
        .collect();
    Workers::from_children(children)
}

#[test]
fn pinned_runs_finish_on_their_bundle_while_the_tag_moves_and_the_fleet_restarts() {
    let config = azure_config("registry-fleet");
    let local = LocalRegistry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::create_dir(dir.join("blueprints")).unwrap();
    for (id, text) in BLUEPRINTS {
        std::fs::write(dir.join(format!("blueprints/{id}.json")), text).unwrap();
    }
    let testkit = support::dist().join("testkit");
    let tagged = format!("{}/nodes/greeter:stable", local.host());
    let push = |file: &str| {
        let bundle = testkit.join(file);
        succeeded(host(
            &config,
            dir,
            &["plugins", "push", bundle.to_str().unwrap(), &tagged],
        ));
    };
    push("greeter-v1.wasm");
    std::fs::write(
        dir.join("bundles.toml"),
        format!("[[bundles]]\nreference = \"{tagged}\"\n"),
    )
    .unwrap();
    let list = dir.join("bundles.toml");
    let client_cache = dir.join("cache-client");
    let blueprints = dir.join("blueprints");
    let blueprints = blueprints.to_str().unwrap();
    let start = |blueprint: &str, run: &str| {
        succeeded(host(
            &config,
            dir,
            &[
                "start",
                blueprint,
                "--run-id",
                run,
                "--create-resources",
                "--blueprints",
                blueprints,
                "--plugins",
                list.to_str().unwrap(),
                "--cache-dir",
                client_cache.to_str().unwrap(),
            ],
        ));
    };
    let wait = |run: &str| succeeded(host(&config, dir, &["wait", run, "--timeout", "90"]));

    let first_fleet = workers(&config, dir, "first");
    let pinned: Vec<String> = (0..6)
        .map(|n| format!("pinned-{n}-{}", std::process::id()))
        .collect();
    for run in &pinned {
        start("pinned", run);
    }
    for run in &pinned {
        assert!(wait(run).contains("\"awaiting\""), "{run} awaits its gate");
    }
    let slow = format!("slow-{}", std::process::id());
    start("slow", &slow);

    push("greeter-v2.wasm");
    let pushed = Instant::now();
    // Runs started now without pins take whatever the workers serve: the
    // first that says v2 shows the hot swap.
    let mut attempt = 0;
    let swapped_after = loop {
        attempt += 1;
        let run = format!("unpinned-{attempt}-{}", std::process::id());
        succeeded(host(
            &config,
            dir,
            &[
                "start",
                "quick",
                "--run-id",
                &run,
                "--blueprints",
                blueprints,
            ],
        ));
        if wait(&run).contains("greeter v2") {
            break pushed.elapsed();
        }
        assert!(
            pushed.elapsed() < Duration::from_secs(90),
            "no worker swapped in greeter 2"
        );
    };
    eprintln!("hot swap seen {swapped_after:?} after the push (--plugins-poll 1)");
    let during = succeeded(host(&config, dir, &["status", &slow]));
    assert!(
        during.contains("\"running\""),
        "the slow job was running during the swap: {during}"
    );
    assert!(
        wait(&slow).contains("greeter v1"),
        "the job running during the swap ran on greeter 1"
    );
    first_fleet.assert_running();
    drop(first_fleet);

    let second_fleet = workers(&config, dir, "second");
    for run in &pinned {
        succeeded(host(
            &config,
            dir,
            &["resume", run, "--blueprints", blueprints],
        ));
    }
    for run in &pinned {
        let ended = wait(run);
        assert!(
            ended.contains("\"completed\"") && ended.contains("greeter v1"),
            "{run}: {ended}"
        );
    }
    let fresh = format!("fresh-{}", std::process::id());
    start("pinned", &fresh);
    succeeded(host(
        &config,
        dir,
        &["resume", &fresh, "--blueprints", blueprints],
    ));
    assert!(
        wait(&fresh).contains("greeter v2"),
        "a new run takes the new bundle"
    );
    let poisoned = succeeded(host(&config, dir, &["poison", "list"]));
    assert!(
        poisoned.trim().is_empty(),
        "nothing dead-lettered: {poisoned}"
    );
    second_fleet.assert_running();
}
