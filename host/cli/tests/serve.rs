//! `flowcraft-host serve` as a user runs it: the README's walkthrough (its
//! `curl` lines run by `sh`), the refusal to listen publicly without a token,
//! a graceful stop that keeps an awaiting run for the next start, and `serve`
//! with Azure settings (the local stand-ins) sharing its runs with the CLI.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::{free_port, repo_root};

/// `flowcraft-host ARGS` in `dir`, without Azure settings.
fn host(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("COSMOS_DB_CONNECTION_STRING")
        .env_remove("REDIS_URL")
        .env("FLOWCRAFT_LOG", "warn");
    command
}

/// `serve` in `dir` on `127.0.0.1:<port>` with the example bundles, the
/// blueprints of `blueprints` and the `extra` flags.
fn serve(dir: &Path, port: u16, blueprints: &Path, extra: &[&str]) -> Command {
    let plugins = repo_root().join("plugins-example/dist");
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--plugins",
        plugins.to_str().unwrap(),
        "--blueprints",
        blueprints.to_str().unwrap(),
    ];
    args.extend(extra);
    host(dir, &args)
}

/// A running `serve`, killed when dropped.
struct Serving(Child);

impl Serving {
    fn start(mut command: Command, port: u16) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("serve starts");
        let mut serving = Self(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = serving.0.try_wait() {
                panic!("serve exited with {status}");
            }
            assert!(Instant::now() < deadline, "serve did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        serving
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.0.wait().unwrap()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of the README's "second way to try it" block.
fn walkthrough_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let (_, after) = readme
        .split_once("A second way to try it")
        .expect("the README has the serve walkthrough");
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(block, _)| block)
        .expect("a sh block");
    block
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Runs one `curl` line of the walkthrough in `dir` against `port`; answers
/// the JSON it printed.
fn curl(dir: &Path, line: &str, port: u16) -> Value {
    let line = line.replace("localhost:8080", &format!("localhost:{port}"));
    let Output { status, stdout, .. } = Command::new("sh")
        .args(["-c", &line])
        .current_dir(dir)
        .output()
        .expect("sh runs");
    assert!(status.success(), "{line}: {status}");
    serde_json::from_slice(&stdout)
        .unwrap_or_else(|_| panic!("{line}: not JSON: {}", String::from_utf8_lossy(&stdout)))
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let lines = walkthrough_lines();
    let serve_line = lines[0]
        .strip_prefix("cargo run -p flowcraft-host -- ")
        .expect("the walkthrough starts serve with cargo run");
    // The repository's example directories, seen from a directory of the
    // test's own (the database goes to ./.flowcraft there).
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        repo_root().join("plugins-example"),
        dir.path().join("plugins-example"),
    )
    .unwrap();
    let port = free_port();
    let args: Vec<&str> = serve_line.split_whitespace().collect();
    let mut command = host(dir.path(), &args);
    command.env("FLOWCRAFT_LISTEN", format!("127.0.0.1:{port}"));
    let serving = Serving::start(command, port);

    let started = curl(dir.path(), &lines[1], port);
    assert_eq!(started["runId"], "order-1001", "{started}");
    let awaiting = curl(dir.path(), &lines[2], port);
    assert_eq!(awaiting["status"], "awaiting", "{awaiting}");
    assert!(awaiting["awaiting"]["manager"].is_object(), "{awaiting}");
    let resumed = curl(dir.path(), &lines[3], port);
    assert_eq!(resumed["status"], "running", "{resumed}");
    let completed = curl(dir.path(), &lines[4], port);
    assert_eq!(completed["status"], "completed", "{completed}");
    assert_eq!(
        completed["context"]["_outputs.approve"]["message"],
        "Order ORD-1001 approved: total 1453.50 EUR"
    );
    assert!(dir.path().join(".flowcraft/flowcraft.db").exists());
    assert!(serving.terminate().success());
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = repo_root().join("plugins-example/dist");
    let blueprints = repo_root().join("plugins-example/orders/blueprints");
    let output = host(
        dir.path(),
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--plugins",
            plugins.to_str().unwrap(),
            "--blueprints",
            blueprints.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve the API on 0.0.0.0:0 without a token"),
        "{stderr}"
    );
    assert!(stderr.contains("--auth-token"), "{stderr}");
}

#[test]
fn a_stopped_server_keeps_an_awaiting_run_for_its_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let blueprints = repo_root().join("plugins-example/orders/blueprints");
    let port = free_port();
    let serve = || serve(dir.path(), port, &blueprints, &["--data-dir", "data"]);
    let context = std::fs::read_to_string(blueprints.join("order-approval.context.json")).unwrap();
    let start = format!(
        "curl -s localhost:{port}/api/v1/runs -d '{{\"blueprintId\": \"order-manager-approval\", \"runId\": \"kept\", \"context\": {context}}}'"
    );
    let read = format!("curl -s 'localhost:{port}/api/v1/runs/kept?wait=10'");

    let serving = Serving::start(serve(), port);
    curl(dir.path(), &start, port);
    assert_eq!(curl(dir.path(), &read, port)["status"], "awaiting");
    assert!(serving.terminate().success(), "serve exits 0 on SIGTERM");

    let serving = Serving::start(serve(), port);
    let resume =
        format!("curl -s localhost:{port}/api/v1/runs/kept/resume -d '{{\"action\": \"reject\"}}'");
    assert_eq!(curl(dir.path(), &resume, port)["status"], "running");
    let run = curl(dir.path(), &read, port);
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        run["context"]["_outputs.reject"]["message"],
        "Order ORD-1001 rejected: total 1453.50 EUR"
    );
    assert!(serving.terminate().success());
}

#[test]
fn with_azure_settings_serve_is_a_worker_whose_runs_the_cli_sees() {
    let dir = tempfile::tempdir().unwrap();
    let blueprints = repo_root().join("plugins-example/orders/blueprints");
    let port = free_port();
    let deployment = format!("serve-azure-{}", std::process::id());
    let azure = [
        "--queue",
        &deployment,
        "--database",
        &deployment,
        "--create-resources",
    ];
    let serving = Serving::start(on_azure(serve(dir.path(), port, &blueprints, &azure)), port);
    let run_id = format!("{deployment}-order");
    let context = std::fs::read_to_string(blueprints.join("order-approval.context.json")).unwrap();
    let start = format!(
        "curl -s localhost:{port}/api/v1/runs -d '{{\"blueprintId\": \"order-manager-approval\", \"runId\": \"{run_id}\", \"context\": {context}}}'"
    );
    curl(dir.path(), &start, port);
    let read = format!("curl -s 'localhost:{port}/api/v1/runs/{run_id}?wait=20'");
    assert_eq!(curl(dir.path(), &read, port)["status"], "awaiting");

    // The CLI client resumes it on Azure directly; the API sees the end.
    let mut resume = vec![
        "resume",
        &run_id,
        "--action",
        "approve",
        "--blueprints",
        blueprints.to_str().unwrap(),
    ];
    resume.extend(azure);
    let output = on_azure(host(dir.path(), &resume)).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let run = curl(dir.path(), &read, port);
    assert_eq!(run["status"], "completed", "{run}");
    let list = format!("curl -s 'localhost:{port}/api/v1/runs?blueprintId=order-manager-approval'");
    assert_eq!(
        curl(dir.path(), &list, port)["runs"][0]["runId"],
        run_id.as_str()
    );
    assert_eq!(
        curl(
            dir.path(),
            &format!("curl -s localhost:{port}/readyz"),
            port
        ),
        serde_json::json!({"status": "ready"})
    );
    assert!(serving.terminate().success());
}

/// `command` with the local stand-ins' settings (`scripts/azure-local.sh env`).
fn on_azure(mut command: Command) -> Command {
    for name in [
        "AZURE_STORAGE_CONNECTION_STRING",
        "COSMOS_DB_CONNECTION_STRING",
        "REDIS_URL",
    ] {
        let value = std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: scripts/azure-local.sh start; eval \"$(scripts/azure-local.sh env)\"")
        });
        command.env(name, value);
    }
    command
}

#[test]
fn client_commands_go_through_the_api_with_server() {
    let dir = tempfile::tempdir().unwrap();
    let blueprints = repo_root().join("plugins-example/orders/blueprints");
    let port = free_port();
    let flags = ["--data-dir", "data", "--auth-token", "secret"];
    let serving = Serving::start(serve(dir.path(), port, &blueprints, &flags), port);
    let server = format!("http://127.0.0.1:{port}");
    let client = |command: &[&str]| {
        let mut full = command.to_vec();
        full.extend(["--server", &server, "--token", "secret"]);
        host(dir.path(), &full).output().unwrap()
    };
    let context = format!(
        "@{}",
        blueprints.join("order-approval.context.json").display()
    );
    let started = client(&[
        "start",
        "order-manager-approval",
        "--run-id",
        "remote-1",
        "--context",
        &context,
        "--wait",
    ]);
    assert!(started.status.success(), "{started:?}");
    let stdout = String::from_utf8(started.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("remote-1"));
    let run: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(run["status"], "awaiting", "{run}");

    let resumed = client(&["resume", "remote-1", "--action", "approve"]);
    assert!(resumed.status.success(), "{resumed:?}");
    let waited = client(&["wait", "remote-1", "--timeout", "20"]);
    assert!(waited.status.success(), "{waited:?}");
    let run: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    let status = client(&["status", "remote-1"]);
    let run: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(run["context"]["_outputs.approve"].is_object(), "{run}");

    // A refused operation is the command's error, in the server's words.
    let again = client(&["resume", "remote-1"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("awaiting"),
        "{stderr}"
    );
    let poison = client(&["poison", "list"]);
    assert!(poison.status.success(), "{poison:?}");
    assert!(poison.stdout.is_empty());

    let untokened = host(dir.path(), &["status", "remote-1", "--server", &server])
        .env_remove("FLOWCRAFT_API_TOKEN")
        .output()
        .unwrap();
    assert!(!untokened.status.success());
    let stderr = String::from_utf8_lossy(&untokened.stderr);
    assert!(stderr.contains("--token"), "{stderr}");

    // The server's metrics count the run, behind the same token.
    let metrics_url = format!("{server}/metrics");
    let scrape = |auth: &str| {
        let output = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H", auth, &metrics_url])
            .output()
            .expect("curl runs");
        String::from_utf8(output.stdout).unwrap()
    };
    let metrics = scrape("Authorization: Bearer secret");
    assert!(metrics.ends_with("\n200"), "{metrics}");
    for series in [
        r#"flowcraft_runs_started_total{blueprint="order-manager-approval"} 1"#,
        r#"flowcraft_runs_finished_total{blueprint="order-manager-approval",status="completed"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|line| line == series),
            "no {series} in {metrics}"
        );
    }
    assert!(scrape("X-No-Token: 1").ends_with("\n401"));
    assert!(serving.terminate().success());
}

#[test]
fn a_blueprint_added_through_the_api_is_there_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let blueprints = dir.path().join("blueprints");
    std::fs::create_dir(&blueprints).unwrap();
    std::fs::copy(
        repo_root().join("plugins-example/orders/blueprints/order-approval.json"),
        blueprints.join("order-approval.json"),
    )
    .unwrap();
    let port = free_port();
    let serve = || serve(dir.path(), port, &blueprints, &["--data-dir", "data"]);
    let added = r#"{"id": "added", "metadata": {"version": "2"}, "nodes": [{"id": "A", "uses": "const", "params": {"value": 7}}], "edges": []}"#;
    let put = format!(
        "curl -s -X PUT localhost:{port}/api/v1/blueprints/added -H 'content-type: application/json' -d '{added}'"
    );
    let serving = Serving::start(serve(), port);
    assert_eq!(curl(dir.path(), &put, port)["version"], "2");
    assert!(serving.terminate().success());
    let files: Vec<String> = std::fs::read_dir(&blueprints)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("added.v-"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");

    let serving = Serving::start(serve(), port);
    let read = format!("curl -s localhost:{port}/api/v1/blueprints/added");
    assert_eq!(
        curl(dir.path(), &read, port)["versions"],
        serde_json::json!(["2"])
    );
    let start = format!(
        "curl -s localhost:{port}/api/v1/runs -d '{{\"blueprintId\": \"added\", \"runId\": \"after-restart\"}}'"
    );
    curl(dir.path(), &start, port);
    let run = curl(
        dir.path(),
        &format!("curl -s 'localhost:{port}/api/v1/runs/after-restart?wait=10'"),
        port,
    );
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["context"]["_outputs.A"], 7);
    assert!(serving.terminate().success());
}

/// Runs `curl ARGS` with the bearer token `secret`; answers the JSON it printed.
fn curl_with_token(args: &[&str]) -> Value {
    let output = Command::new("curl")
        .args(["-s", "-H", "Authorization: Bearer secret"])
        .args(args)
        .output()
        .expect("curl runs");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "curl {args:?}: not JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The dashboard in a real browser (`host/api/tests/browser/dashboard.mjs`,
/// headless Chromium): behind a token it asks for one, lists a completed, a
/// failed and two awaiting runs, colours an awaiting run's waiting node,
/// shows the API's refusal to resume a run cancelled meanwhile, and resumes
/// the other through its form until the page shows the run completed.
/// Screenshots land in `target/tmp/dashboard/`.
#[test]
fn the_dashboard_shows_runs_and_resumes_one_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let blueprints = dir.path().join("blueprints");
    std::fs::create_dir(&blueprints).unwrap();
    let orders = repo_root().join("plugins-example/orders/blueprints");
    for name in ["order-approval.json", "order-manager-approval.json"] {
        std::fs::copy(orders.join(name), blueprints.join(name)).unwrap();
    }
    let failing = serde_json::json!({
        "id": "always-fails",
        "nodes": [{"id": "start", "uses": "echo"}, {"id": "boom", "uses": "fail"}],
        "edges": [{"source": "start", "target": "boom"}]
    });
    std::fs::write(blueprints.join("always-fails.json"), failing.to_string()).unwrap();
    let port = free_port();
    let flags = ["--data-dir", "data", "--auth-token", "secret"];
    let serving = Serving::start(serve(dir.path(), port, &blueprints, &flags), port);
    let base = format!("http://127.0.0.1:{port}");

    let order = std::fs::read_to_string(orders.join("order-approval.context.json")).unwrap();
    let order: Value = serde_json::from_str(&order).unwrap();
    let runs = [
        ("order-done", "order-approval", order.clone(), "completed"),
        (
            "order-awaiting",
            "order-manager-approval",
            order.clone(),
            "awaiting",
        ),
        (
            "order-withdrawn",
            "order-manager-approval",
            order,
            "awaiting",
        ),
        (
            "fails-1",
            "always-fails",
            serde_json::json!({"_inputs.start": 1}),
            "failed",
        ),
    ];
    for (run, blueprint, context, state) in runs {
        let start = serde_json::json!({"runId": run, "blueprintId": blueprint, "context": context});
        let started = curl_with_token(&[&format!("{base}/api/v1/runs"), "-d", &start.to_string()]);
        assert_eq!(started["runId"], run, "{started}");
        let read = curl_with_token(&[&format!("{base}/api/v1/runs/{run}?wait=20")]);
        assert_eq!(read["status"], state, "{read}");
    }

    let screenshots = repo_root().join("target/tmp/dashboard");
    let browser = Command::new("node")
        .arg(repo_root().join("host/api/tests/browser/dashboard.mjs"))
        .args([&base, "secret", screenshots.to_str().unwrap()])
        .output()
        .expect("node runs (scripts/test-tools.sh installs the browser test's packages)");
    assert!(
        browser.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );
    assert!(screenshots.join("runs-list.png").exists());
    assert!(serving.terminate().success());
}
