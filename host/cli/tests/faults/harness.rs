//! What every fault scenario uses: a [`Stand`] (this scenario's queue and
//! database on the local services, its blueprints, a client engine, and the
//! fault-injection controls of the stand-in wrappers), a [`Fleet`] of worker
//! processes whose logs feed a [`Ledger`] of node executions, the expected
//! result of a run (the same blueprint run in embedded mode with the same
//! bundles), and the summary [`Row`] each scenario records.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowcraft_azure::backend::{AzureBackend, AzureConfig};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::{ContextMap, context_to_object};
use flowcraft_core::engine::{Engine, EngineSettings, RunReport};
use flowcraft_core::memory::{self, MemoryBackend, TimerPolicy};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::RunState;
use flowcraft_core::store::Job;
use flowcraft_plugins::{PluginConfig, PluginHost};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::support::azure::{NoRunner, azure_config, worker_command_with};

/// Runs of the soak scenarios (worker kills, outages): `FLOWCRAFT_FAULT_RUNS`,
/// else `default`.
pub fn soak_runs(default: usize) -> usize {
    std::env::var("FLOWCRAFT_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One scenario's line of the summary table (`scripts/fault-suite.sh`).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub scenario: String,
    pub runs: usize,
    pub faults_injected: u64,
    pub runs_completed: usize,
    pub runs_failed_as_designed: usize,
    pub runs_lost: usize,
    pub duplicate_effects: usize,
    pub notes: String,
}

impl Row {
    /// Writes the row where the summary script reads it, then checks the
    /// suite's two invariants.
    pub fn record(&self) {
        let dir = report_dir();
        std::fs::create_dir_all(&dir).expect("report dir");
        let file = dir.join(format!("{}.json", self.scenario.replace([' ', '/'], "-")));
        std::fs::write(&file, serde_json::to_string_pretty(self).unwrap()).expect("row written");
        eprintln!("fault suite: {}", serde_json::to_string(self).unwrap());
        assert_eq!(self.runs_lost, 0, "{}: runs lost", self.scenario);
        assert_eq!(
            self.duplicate_effects, 0,
            "{}: duplicate effects",
            self.scenario
        );
    }
}

/// `target/tmp/fault-suite` (or `FLOWCRAFT_FAULT_REPORT_DIR`).
fn report_dir() -> PathBuf {
    std::env::var_os("FLOWCRAFT_FAULT_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-suite"))
}

/// A suffix that makes run ids unique to this process.
pub fn unique() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{}-{millis}", std::process::id())
}

// ---------------------------------------------------------------------------
// The stand

/// One scenario's queue, database, blueprints and client.
pub struct Stand {
    pub config: AzureConfig,
    pub engine: Engine<AzureBackend, NoRunner>,
    pub control: Control,
    dir: tempfile::TempDir,
}

impl Stand {
    pub async fn new(tag: &str, blueprints: &[Value]) -> Self {
        let config = azure_config(tag);
        Self::with_config(config, blueprints).await
    }

    pub async fn with_config(config: AzureConfig, blueprints: &[Value]) -> Self {
        let backend = AzureBackend::connect(&config)
            .await
            .expect("local services reachable (scripts/azure-local.sh start)");
        let dir = tempfile::tempdir().unwrap();
        let mut plans = Vec::new();
        for value in blueprints {
            let blueprint: Blueprint = serde_json::from_value(value.clone()).unwrap();
            let version = blueprint
                .version()
                .map(|v| format!("-{v}"))
                .unwrap_or_default();
            let path = dir.path().join(format!("{}{version}.json", blueprint.id));
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
            control: Control::from_environment(),
            config,
            engine,
            dir,
        }
    }

    /// The directory of this stand's blueprint files (for `--blueprints`).
    pub fn blueprint_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn start(&self, blueprint: &str, run_id: &str, initial: &ContextMap) {
        self.engine
            .start_run(blueprint, Some(run_id.to_owned()), initial.clone())
            .await
            .unwrap_or_else(|e| panic!("run {run_id} starts: {e}"));
    }

    /// Polls until every run is terminal (or awaiting) or `limit` passes;
    /// answers the reports of the runs that ended, by run id.
    pub async fn wait_all(
        &self,
        runs: &[String],
        limit: Duration,
        fleet: Option<&Fleet>,
    ) -> BTreeMap<String, RunReport> {
        let deadline = Instant::now() + limit;
        let mut done = BTreeMap::new();
        while done.len() < runs.len() && Instant::now() < deadline {
            if let Some(fleet) = fleet {
                fleet.assert_running();
            }
            let open: Vec<&String> = runs.iter().filter(|r| !done.contains_key(*r)).collect();
            for run in open {
                match self.engine.report(run).await {
                    Ok(report)
                        if report.state.is_terminal() || report.state == RunState::Awaiting =>
                    {
                        done.insert(run.clone(), report);
                    }
                    _ => {}
                }
            }
            if done.len() < runs.len() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        done
    }

    /// Waits until the queue is empty and no injected duplicate is still to
    /// be stored: every delivery, duplicates included, has been handled.
    pub async fn drained(&self, limit: Duration, fleet: &Fleet) {
        let deadline = Instant::now() + limit;
        loop {
            fleet.assert_running();
            let queued = self
                .engine
                .backend()
                .queue()
                .approximate_count()
                .await
                .expect("queue answers");
            if queued == 0 && self.control.duplicates().await.0 == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue not drained after {limit:?} ({queued} messages)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A directory with copies of the conformance and hostile bundles, which a
/// scenario may replace or break. (Both export `echo`: blueprints run there
/// avoid it.)
pub fn hostile_plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dist = crate::support::dist();
    for (from, to) in [
        (dist.join("conformance.wasm"), "conformance.wasm"),
        (dist.join("testkit/hostile.wasm"), "hostile.wasm"),
    ] {
        std::fs::copy(&from, dir.path().join(to))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    dir
}

/// Compares each run's report (if it ended) with its expected report:
/// answers how many match and a line per run that does not.
pub fn compare_runs(
    runs: &[String],
    reports: &BTreeMap<String, RunReport>,
    expected: &[RunReport],
    blueprint: &Value,
) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut matching = 0;
    for (run, expected) in runs.iter().zip(expected) {
        let Some(report) = reports.get(run) else {
            continue;
        };
        let diff = differences(report, expected, blueprint);
        if diff.is_empty() {
            matching += 1;
        } else {
            problems.push(format!("run {run}: {}", diff.join("; ")));
        }
    }
    (matching, problems)
}

// ---------------------------------------------------------------------------
// Expected results

/// Runs a blueprint in embedded mode (in-memory stores, the same bundles):
/// the result a run on Azure must reproduce.
#[derive(Clone)]
pub struct Reference {
    host: Arc<PluginHost>,
}

impl Reference {
    /// With the example bundles (`plugins-example/dist`).
    pub async fn load() -> Self {
        Self::load_from(&crate::support::dist()).await
    }

    /// With the bundles of `plugins`.
    pub async fn load_from(plugins: &Path) -> Self {
        let mut config = PluginConfig::new(plugins);
        config.cache_dir = Some(std::env::temp_dir().join("flowcraft-conformance-cache"));
        let host = PluginHost::load(config).await.expect("bundles load");
        Self {
            host: Arc::new(host),
        }
    }

    /// The references of runs of `blueprint` from each of `seeds`, computed
    /// concurrently (retry delays make one run take a while).
    pub async fn run_each(&self, blueprint: &Value, seeds: Vec<ContextMap>) -> Vec<RunReport> {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, seed) in seeds.into_iter().enumerate() {
            let (reference, blueprint) = (self.clone(), blueprint.clone());
            tasks.spawn(async move {
                let id = blueprint["id"].as_str().unwrap().to_owned();
                (index, reference.run(&[blueprint], &id, &seed).await)
            });
        }
        let mut reports: Vec<(usize, RunReport)> = tasks.join_all().await;
        reports.sort_by_key(|(index, _)| *index);
        reports.into_iter().map(|(_, report)| report).collect()
    }

    pub async fn run(&self, blueprints: &[Value], id: &str, initial: &ContextMap) -> RunReport {
        let registry = PlanRegistry::new(blueprints.iter().map(|value| {
            let blueprint: Blueprint = serde_json::from_value(value.clone()).unwrap();
            Plan::new(blueprint, Default::default()).expect("plan")
        }));
        let (backend, mut receiver) = MemoryBackend::new();
        let engine = Engine::new(
            Arc::new(backend),
            self.host.clone(),
            Arc::new(registry),
            EngineSettings::default(),
        );
        let run = engine
            .start_run(id, Some("reference".into()), initial.clone())
            .await
            .expect("reference run starts");
        memory::drive(&engine, &mut receiver, &run, 8, TimerPolicy::Wait)
            .await
            .expect("in-memory stores do not fail")
    }
}

/// Keys that legitimately differ between two correct runs: a node with
/// several predecessors gets `_inputs.<id>` from each of them, the last
/// writer wins (upstream §2.5). Values are parsed: two stores may format the
/// same value differently.
pub fn comparable(context: &ContextMap, blueprint: &Value) -> Map<String, Value> {
    let mut context = context_to_object(context);
    let mut incoming: BTreeMap<&str, usize> = BTreeMap::new();
    for edge in blueprint["edges"].as_array().into_iter().flatten() {
        *incoming
            .entry(edge["target"].as_str().unwrap())
            .or_default() += 1;
    }
    for (node, count) in incoming {
        if count > 1 {
            context.shift_remove(&format!("_inputs.{node}"));
        }
    }
    context
}

/// What differs between an Azure run and its reference (empty: equal).
pub fn differences(actual: &RunReport, expected: &RunReport, blueprint: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if actual.state != expected.state {
        problems.push(format!(
            "state {:?}, expected {:?}",
            actual.state, expected.state
        ));
    }
    let a = comparable(&actual.context, blueprint);
    let e = comparable(&expected.context, blueprint);
    for key in a.keys().chain(e.keys()) {
        if a.get(key) != e.get(key) && !problems.iter().any(|p| p.starts_with(&format!("{key}:"))) {
            problems.push(format!(
                "{key}: {:?}, expected {:?}",
                a.get(key),
                e.get(key)
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Worker fleet and the execution ledger

/// Node executions seen in the workers' logs (`node started` lines, which the
/// engine writes just before a node body runs), by (run, node, attempt).
#[derive(Default)]
pub struct Ledger {
    /// The workers (fleet indexes) that started each attempt.
    executions: BTreeMap<(String, String, u32), Vec<usize>>,
    /// Every log line of each worker (ANSI colours removed).
    lines: BTreeMap<usize, Vec<String>>,
}

impl Ledger {
    /// Executions of one attempt of one node of `run`.
    pub fn executions(&self, run: &str, node: &str, attempt: u32) -> usize {
        self.workers_of(run, node, attempt).len()
    }

    /// The workers that started one attempt of one node, in order.
    pub fn workers_of(&self, run: &str, node: &str, attempt: u32) -> Vec<usize> {
        self.executions
            .get(&(run.to_owned(), node.to_owned(), attempt))
            .cloned()
            .unwrap_or_default()
    }

    /// Every (run, node, attempt) executed more than once, with its count.
    pub fn repeated(&self, runs: &[String]) -> Vec<((String, String, u32), usize)> {
        self.executions
            .iter()
            .filter(|((run, _, _), workers)| workers.len() > 1 && runs.contains(run))
            .map(|(key, workers)| (key.clone(), workers.len()))
            .collect()
    }

    /// Executions of every node of `run`.
    pub fn of_run(&self, run: &str) -> usize {
        self.executions
            .iter()
            .filter(|((r, _, _), _)| r == run)
            .map(|(_, workers)| workers.len())
            .sum()
    }

    fn observe(&mut self, worker: usize, line: &str) {
        let line = crate::support::strip_ansi(line);
        if let Some(key) = parse_started(&line) {
            self.executions.entry(key).or_default().push(worker);
        }
        self.lines.entry(worker).or_default().push(line);
    }
}

/// `… node started run=R node=N uses=U attempt=A` → (R, N, A).
fn parse_started(line: &str) -> Option<(String, String, u32)> {
    if !line.contains("node started") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(name).map(str::to_owned))
    };
    Some((
        field("run=")?,
        field("node=")?,
        field("attempt=")?.parse().ok()?,
    ))
}

/// Worker processes on a stand's queue; their stderr feeds the ledger.
/// Killed when dropped.
pub struct Fleet {
    config: AzureConfig,
    blueprints: PathBuf,
    plugins: PathBuf,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    workers: Mutex<Vec<Option<Child>>>,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl Fleet {
    pub fn spawn(stand: &Stand, count: usize, flags: &[&str]) -> Self {
        Self::spawn_with(stand, count, flags, &crate::support::dist(), &[])
    }

    /// Like [`spawn`](Self::spawn), with a bundle directory and environment
    /// variables of the caller's own.
    pub fn spawn_with(
        stand: &Stand,
        count: usize,
        flags: &[&str],
        plugins: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let fleet = Self {
            config: stand.config.clone(),
            blueprints: stand.blueprint_dir().to_owned(),
            plugins: plugins.to_owned(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workers: Mutex::new(Vec::new()),
            ledger: Arc::default(),
        };
        for _ in 0..count {
            let child = fleet.launch(fleet.workers.lock().unwrap().len());
            fleet.workers.lock().unwrap().push(Some(child));
        }
        fleet
    }

    fn launch(&self, index: usize) -> Child {
        let mut command: Command =
            worker_command_with(&self.config, &self.blueprints, &self.plugins);
        command
            .args(&self.flags)
            .env(
                "FLOWCRAFT_LOG",
                "warn,flowcraft_core::engine=info,flowcraft_host::worker=info",
            )
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("a worker starts");
        let stderr = child.stderr.take().unwrap();
        let ledger = self.ledger.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                ledger.lock().unwrap().observe(index, &line);
            }
        });
        child
    }

    pub fn len(&self) -> usize {
        self.workers.lock().unwrap().len()
    }

    /// `kill -9` worker `index` (SIGKILL: no shutdown, no release).
    pub fn kill(&self, index: usize) {
        if let Some(mut child) = self.workers.lock().unwrap()[index].take() {
            child.kill().expect("worker killed");
            child.wait().expect("worker reaped");
        }
    }

    /// Starts worker `index` again (after [`kill`](Self::kill)).
    pub fn restart(&self, index: usize) {
        let child = self.launch(index);
        self.workers.lock().unwrap()[index] = Some(child);
    }

    /// Panics if a worker exited on its own, with its last log lines.
    pub fn assert_running(&self) {
        for (index, slot) in self.workers.lock().unwrap().iter_mut().enumerate() {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                let lines = self.ledger.lock().unwrap().lines.get(&index).cloned();
                let lines = lines.unwrap_or_default();
                panic!(
                    "worker {index} exited with {status}; its last lines:\n{}",
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
    }

    /// Polls the ledger until `probe` answers `Some` (failing after `limit`).
    pub async fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        probe: impl Fn(&Ledger) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_running();
            if let Some(found) = probe(&self.ledger.lock().unwrap()) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The peak resident memory (VmHWM) of each running worker, in bytes.
    pub fn peak_rss(&self) -> Vec<u64> {
        self.workers
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|child| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                    .expect("the worker's /proc status");
                let kib = status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmHWM:"))
                    .and_then(|value| {
                        value
                            .trim()
                            .trim_end_matches(" kB")
                            .trim()
                            .parse::<u64>()
                            .ok()
                    })
                    .expect("VmHWM in /proc status");
                kib * 1024
            })
            .collect()
    }

    /// Lines of every worker's log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let ledger = self.ledger.lock().unwrap();
        ledger
            .lines
            .values()
            .flatten()
            .filter(|line| line.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self.workers.get_mut().unwrap().iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Fault controls of the stand-in wrappers

/// The stand-ins' fault-injection and journal endpoints
/// (`scripts/azure-local/faults.mjs`), scoped by the caller to this
/// scenario's queue or database with a rule's `path`.
pub struct Control {
    http: reqwest::Client,
    queue: String,
    cosmos: String,
}

/// Which stand-in.
#[derive(Clone, Copy, Debug)]
pub enum Service {
    Queue,
    Cosmos,
}

impl Control {
    /// The stand-ins named by the connection strings in the environment
    /// (`eval "$(scripts/azure-local.sh env)"`).
    fn from_environment() -> Self {
        let setting = |variable: &str, key: &str| {
            let text = std::env::var(variable).unwrap_or_else(|_| panic!("{variable} is not set"));
            text.split(';')
                .find_map(|part| part.trim().strip_prefix(key))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{key} missing in a connection string"))
        };
        let origin = |url: &str| {
            let parsed = url::Url::parse(url).expect("endpoint URL");
            format!(
                "{}://{}:{}",
                parsed.scheme(),
                parsed.host_str().unwrap(),
                parsed.port_or_known_default().unwrap()
            )
        };
        Self {
            http: reqwest::Client::new(),
            queue: origin(&setting(
                "AZURE_STORAGE_CONNECTION_STRING",
                "QueueEndpoint=",
            )),
            cosmos: origin(&setting("COSMOS_DB_CONNECTION_STRING", "AccountEndpoint=")),
        }
    }

    fn base(&self, service: Service) -> &str {
        match service {
            Service::Queue => &self.queue,
            Service::Cosmos => &self.cosmos,
        }
    }

    async fn call(&self, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        serde_json::from_slice(&response.bytes().await.unwrap()).expect("JSON answer")
    }

    /// Replaces the fault rules of `service`.
    pub async fn inject(&self, service: Service, rules: Value) {
        let url = format!("{}/_flowcraft/faults", self.base(service));
        self.call(reqwest::Method::POST, url, Some(json!({ "rules": rules })))
            .await;
    }

    /// Removes the rules of `service`; answers how many faults they injected.
    pub async fn clear(&self, service: Service) -> u64 {
        let url = format!("{}/_flowcraft/faults", self.base(service));
        let before = self.call(reqwest::Method::DELETE, url, None).await;
        before["total"].as_u64().unwrap_or(0)
    }

    /// Starts the journal of messages sent to queue `queue`.
    pub async fn journal_sends(&self, queue: &str) {
        let url = format!("{}/_flowcraft/journal", self.queue);
        self.call(reqwest::Method::POST, url, Some(json!({ "path": queue })))
            .await;
    }

    /// The jobs enqueued since [`journal_sends`](Self::journal_sends) (not
    /// counting injected duplicates), and how many messages were sent or
    /// rewritten with a new text (each such request gets its duplicate). A
    /// rewritten message's jobs count once per message holding them:
    /// rewriting it again lists the jobs it still stands for (as a group, or
    /// as a single job once the others ended), which does not enqueue them
    /// again.
    pub async fn sent_jobs(&self) -> (Vec<Job>, usize) {
        let url = format!("{}/_flowcraft/journal", self.queue);
        let journal = self.call(reqwest::Method::GET, url, None).await;
        let entries = journal["entries"].as_array().cloned().unwrap_or_default();
        let mut held = std::collections::HashSet::new();
        let mut jobs = Vec::new();
        for entry in &entries {
            let Some(Ok(group)) = entry["text"]
                .as_str()
                .map(flowcraft_azure::wire::decode_group)
            else {
                continue;
            };
            match entry["message"].as_str() {
                Some(message) => jobs.extend(
                    group
                        .jobs
                        .into_iter()
                        .filter(|job| held.insert((message.to_owned(), job_key(job)))),
                ),
                None => jobs.extend(group.jobs),
            }
        }
        (jobs, entries.len())
    }

    /// Injected duplicates: (still to be stored, stored, refused by the queue).
    pub async fn duplicates(&self) -> (u64, u64, u64) {
        let url = format!("{}/_flowcraft/journal", self.queue);
        let journal = self.call(reqwest::Method::GET, url, None).await;
        let count = |key: &str| journal[key].as_u64().unwrap_or(0);
        (
            count("pendingDuplicates"),
            count("duplicatesStored"),
            count("duplicatesFailed"),
        )
    }

    /// Starts the journal of `status` changes of the status documents.
    pub async fn journal_statuses(&self, container: &str) {
        let url = format!("{}/_flowcraft/journal", self.cosmos);
        let body = json!({ "container": container, "field": "status" });
        self.call(reqwest::Method::POST, url, Some(body)).await;
    }

    /// Status changes of database `db`'s status documents: (run, from, to).
    pub async fn status_changes(&self, db: &str) -> Vec<(String, Value, Value)> {
        let url = format!("{}/_flowcraft/journal", self.cosmos);
        let journal = self.call(reqwest::Method::GET, url, None).await;
        journal["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["db"] == json!(db))
            .map(|entry| {
                (
                    entry["id"].as_str().unwrap_or_default().to_owned(),
                    entry["from"].clone(),
                    entry["to"].clone(),
                )
            })
            .collect()
    }
}

/// What tells one enqueued job from another: run, node, attempt and
/// signal (a job's trace context is no part of it).
pub type JobKey = (String, String, Option<u32>, String);

/// `job`'s [`JobKey`].
pub fn job_key(job: &Job) -> JobKey {
    let signal = job.signal.map(|s| format!("{s:?}")).unwrap_or_default();
    (job.run_id.clone(), job.node_id.clone(), job.attempt, signal)
}

/// Number of terminal transitions per run in a status journal.
pub fn terminal_publications(changes: &[(String, Value, Value)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (run, _, to) in changes {
        if matches!(to.as_str(), Some("completed" | "failed" | "cancelled")) {
            *counts.entry(run.clone()).or_default() += 1;
        }
    }
    counts
}
