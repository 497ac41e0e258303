//! Metrics as an operator collects them: a real Prometheus server (Debian's
//! `prometheus`, installed by `.ci/run`) scrapes a `flowcraft-host` worker
//! on the local Azure stand-ins (`--metrics-listen`) while runs go through
//! it, and its HTTP query API answers `flowcraft_jobs_total` by outcome with
//! the counts those runs make.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flowcraft_azure::backend::AzureBackend;
use flowcraft_core::store::{Job, JobQueue};
use serde_json::{Value, json};

use support::azure::{azure_config, start_and_wait, worker_command};
use support::{Killed, eventually, free_port};

/// Prometheus scraping `target` every second, its data in `dir`; answers
/// the process and the address of its HTTP API.
fn prometheus(dir: &Path, target: &str) -> (Killed, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flowcraft-worker\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts (Debian package `prometheus`; .ci/run installs it)");
    (Killed(child), listen)
}

/// The result vector of the instant query `query`, once Prometheus answers.
async fn query(client: &reqwest::Client, prometheus: &str, query: &str) -> Option<Vec<Value>> {
    let url = format!("http://{prometheus}/api/v1/query");
    let url = url::Url::parse_with_params(&url, [("query", query)]).unwrap();
    let response = client.get(url).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"]["result"].as_array().cloned())?
}

/// `sum by (label) (metric)` as label value → count.
async fn counts_by(
    client: &reqwest::Client,
    prometheus: &str,
    label: &str,
    metric: &str,
) -> Option<Vec<(String, u64)>> {
    let series = query(client, prometheus, &format!("sum by ({label}) ({metric})")).await?;
    let mut counts: Vec<(String, u64)> = series
        .iter()
        .map(|sample| {
            let value = sample["value"][1].as_str().unwrap_or("0");
            let count = value.parse::<f64>().unwrap_or(0.0) as u64;
            (
                sample["metric"][label].as_str().unwrap_or("").to_owned(),
                count,
            )
        })
        .collect();
    counts.sort();
    Some(counts)
}

/// A worker with its metrics on a port of its own; answers the process and
/// the `host:port` its log names.
fn worker(config: &flowcraft_azure::backend::AzureConfig, blueprints: &Path) -> (Killed, String) {
    let mut child = worker_command(config, blueprints)
        .args(["--concurrency", "4", "--metrics-listen", "127.0.0.1:0"])
        .env("FLOWCRAFT_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("a worker starts");
    let stderr = child.stderr.take().unwrap();
    let (found, address) = mpsc::channel();
    std::thread::spawn(move || {
        let pattern = regex::Regex::new(r"metrics at http://([0-9.:]+)/metrics").unwrap();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(captures) = pattern.captures(&line) {
                let _ = found.send(captures[1].to_owned());
            }
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(60))
        .expect("the worker logs where its metrics are");
    (Killed(child), address)
}

/// Three runs of a two-node chain make six handled jobs; a job of a run
/// that does not exist is dead-lettered. Prometheus, scraping the worker,
/// answers exactly those counts by outcome, and the three completed runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_job_outcomes_from_a_worker() {
    let config = azure_config("metrics");
    let backend = AzureBackend::connect(&config)
        .await
        .expect("local services reachable (scripts/azure-local.sh start)");
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "id": "metrics-chain",
        "nodes": [{"id": "start", "uses": "echo"}, {"id": "end", "uses": "double"}],
        "edges": [{"source": "start", "target": "end"}]
    });
    std::fs::write(dir.path().join("metrics-chain.json"), chain.to_string()).unwrap();
    let (_worker, metrics_at) = worker(&config, dir.path());
    let (_prometheus, prometheus_at) = prometheus(dir.path(), &metrics_at);
    let client = reqwest::Client::new();
    eventually(
        "Prometheus to scrape the worker",
        Duration::from_secs(60),
        || async {
            let up = query(&client, &prometheus_at, "up").await?;
            (up.first()?["value"][1] == "1").then_some(())
        },
    )
    .await;

    for round in 0..3 {
        let run = format!("metrics-{}-{round}", std::process::id());
        let context = r#"{"_inputs.start": 4}"#;
        let output = start_and_wait(&config, dir.path(), "metrics-chain", &run, context);
        assert!(
            output.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let ghost = format!("metrics-ghost-{}", std::process::id());
    backend
        .enqueue(Job::new(&ghost, "metrics-chain", "start"), Duration::ZERO)
        .await
        .unwrap();

    let expected = vec![("dead_lettered".to_owned(), 1), ("handled".to_owned(), 6)];
    let jobs = eventually(
        "Prometheus to hold every job",
        Duration::from_secs(60),
        || async {
            let counts =
                counts_by(&client, &prometheus_at, "outcome", "flowcraft_jobs_total").await?;
            let total: u64 = counts.iter().map(|(_, count)| count).sum();
            (total >= 7).then_some(counts)
        },
    )
    .await;
    assert_eq!(jobs, expected);
    let finished = counts_by(
        &client,
        &prometheus_at,
        "status",
        "flowcraft_runs_finished_total",
    )
    .await;
    assert_eq!(finished, Some(vec![("completed".to_owned(), 3)]));
    let poisoned = counts_by(
        &client,
        &prometheus_at,
        "job",
        "flowcraft_poison_messages_total",
    )
    .await;
    assert_eq!(poisoned, Some(vec![("flowcraft-worker".to_owned(), 1)]));
}
