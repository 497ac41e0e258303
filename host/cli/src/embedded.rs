//! `flowcraft-host run`, `resume` and `retry`: one workflow, embedded mode
//! (in-memory stores, in-process queue), real WebAssembly plugins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::builtin::is_builtin;
use flowcraft_core::context::{ContextMap, ContextValue};
use flowcraft_core::engine::{Engine, EngineSettings, RunReport};
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::memory::{self, JobReceiver, MemoryBackend, MemorySnapshot, TimerPolicy};
use flowcraft_core::plan::PlanRegistry;
use flowcraft_core::progress::{DEFAULT_STEP_LIMIT, RunError, RunState};
use flowcraft_core::runner::NodeRunner;
use flowcraft_plugins::PluginHost;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PluginArgs;
use crate::inputs::{context_argument, json_argument, read_blueprint, read_blueprint_dir};
use crate::setup::{init_logging, load_plugins, plan_all};

/// The expression language, as a flag.
#[derive(Clone, Copy, ValueEnum)]
enum Evaluator {
    /// Comparisons, logic, arithmetic, literals, paths (JavaScript semantics).
    Safe,
    /// Upstream's PropertyEvaluator: a dotted path only.
    Property,
}

/// Flags shared by `run` and `resume`.
#[derive(Args)]
struct ExecutionArgs {
    #[command(flatten)]
    plugins: PluginArgs,
    /// Nodes executed at the same time.
    #[arg(long, default_value_t = default_run_concurrency())]
    concurrency: usize,
    /// Print only warnings and errors on stderr (no per-node progress).
    #[arg(long)]
    quiet: bool,
    /// Return as soon as the run waits on a `sleep` timer instead of waiting for it.
    #[arg(long)]
    no_wait_timers: bool,
}

impl ExecutionArgs {
    /// Loads the bundles with the `[grants.BUNDLE]` sections of `config`.
    /// Without `--plugins`, blueprints of built-in nodes only run on no
    /// bundles at all.
    async fn plugin_host(
        &self,
        config: Option<&Path>,
        blueprints: &[Blueprint],
    ) -> Result<PluginHost> {
        let grants = crate::config::ConfigFile::load(config)?.grants;
        let mut plugins = self.plugins.clone();
        if plugins.plugins.is_none() && builtins_only(blueprints) {
            plugins.plugins = Some(no_bundles_dir()?);
        }
        load_plugins(&plugins, grants, None).await
    }
}

/// Whether every node of `blueprints` is a built-in (`wait`, `sleep`, ...).
fn builtins_only(blueprints: &[Blueprint]) -> bool {
    blueprints
        .iter()
        .flat_map(|blueprint| &blueprint.nodes)
        .all(|node| is_builtin(&node.uses))
}

/// An empty bundle directory, for runs that need no bundles.
fn no_bundles_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("flowcraft-host-no-bundles");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the empty bundle directory {}", dir.display()))?;
    Ok(dir)
}

#[derive(Args)]
pub struct RunArgs {
    /// The blueprint file to run.
    blueprint: PathBuf,
    #[command(flatten)]
    execution: ExecutionArgs,
    /// Directory of further blueprints (*.json), e.g. for subflows.
    #[arg(long, value_name = "DIR")]
    blueprints: Option<PathBuf>,
    /// Initial context: a JSON object, inline or as @FILE.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
    /// Save the run's state to FILE when it ends (continue an awaiting run with `resume`).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Run id to use [default: a new UUID].
    #[arg(long)]
    run_id: Option<String>,
    /// Expression language of blueprints that do not set metadata.evaluator.
    #[arg(long, value_enum, default_value = "safe")]
    evaluator: Evaluator,
    /// Node executions allowed per run (guards against endless loops).
    #[arg(long, default_value_t = DEFAULT_STEP_LIMIT)]
    step_limit: u64,
    /// TOML configuration; `run` uses its `[grants.BUNDLE]` sections (capabilities per bundle).
    #[arg(long, value_name = "FILE", env = "FLOWCRAFT_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// The run to resume on Azure (omit when resuming from --state).
    #[arg(required_unless_present = "state", conflicts_with = "state")]
    pub run_id: Option<String>,
    /// The state file written by `run --state` (embedded mode).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// The awaiting node to resume [default: the first awaiting node].
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,
    /// Action to route by (edges with this `action` are taken).
    #[arg(long, value_name = "A")]
    pub action: Option<String>,
    /// The node's output: JSON, inline or as @FILE.
    #[arg(long, value_name = "JSON")]
    pub output: Option<String>,
    #[command(flatten)]
    execution: ExecutionArgs,
    /// Directory of blueprints (*.json) (Azure mode).
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_BLUEPRINTS")]
    pub blueprints: Option<PathBuf>,
    #[command(flatten)]
    pub azure: crate::config::AzureArgs,
    #[command(flatten)]
    pub server: crate::remote::ServerArgs,
}

#[derive(Args)]
pub struct RetryArgs {
    /// The failed run to retry on Azure (omit when retrying from --state).
    #[arg(required_unless_present = "state", conflicts_with = "state")]
    pub run_id: Option<String>,
    /// The state file written by `run --state` (embedded mode).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Context keys to set before the failed nodes run again (a JSON object,
    /// inline or as @FILE), e.g. the corrected input a node failed on.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    #[command(flatten)]
    execution: ExecutionArgs,
    /// Directory of blueprints (*.json) (Azure mode).
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_BLUEPRINTS")]
    pub blueprints: Option<PathBuf>,
    #[command(flatten)]
    pub azure: crate::config::AzureArgs,
    #[command(flatten)]
    pub server: crate::remote::ServerArgs,
}

impl RetryArgs {
    /// Whether this retries a saved embedded run (`--state`).
    pub fn is_embedded(&self) -> bool {
        self.state.is_some()
    }
}

impl ResumeArgs {
    /// Whether this resumes a saved embedded run (`--state`).
    pub fn is_embedded(&self) -> bool {
        self.state.is_some()
    }

    /// `--output`, parsed.
    pub fn output_value(&self) -> Result<Option<Value>> {
        self.output
            .as_deref()
            .map(|text| json_argument("--output", text))
            .transpose()
    }
}

/// Jobs at once for `run` unless configured: 4 per core. The embedded
/// stores answer in microseconds, so a job rarely waits and a few per core
/// keep the cores busy (a worker on Azure needs far more in flight; see
/// `flowcraft_worker::default_concurrency`).
fn default_run_concurrency() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 4)
}

/// What `--state` files hold.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedRun {
    pub format: u32,
    pub run_id: String,
    pub evaluator: String,
    pub step_limit: u64,
    pub blueprints: Vec<Blueprint>,
    pub store: MemorySnapshot,
}

const STATE_FORMAT: u32 = 1;

impl SavedRun {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read state file {}", path.display()))?;
        let saved: SavedRun = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a flowcraft-host state file", path.display()))?;
        if saved.format != STATE_FORMAT {
            bail!(
                "{} has state format {}, this flowcraft-host reads format {STATE_FORMAT}",
                path.display(),
                saved.format
            );
        }
        Ok(saved)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write state file {}", path.display()))
    }
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    init_logging(args.execution.quiet);
    let main = read_blueprint(&args.blueprint)?;
    let mut blueprints = match &args.blueprints {
        Some(dir) => read_blueprint_dir(dir)?,
        None => Vec::new(),
    };
    blueprints.retain(|b| b.id != main.id);
    blueprints.insert(0, main);
    let initial = context_argument(args.context.as_deref())?;
    let evaluator = match args.evaluator {
        Evaluator::Safe => EvaluatorMode::Safe,
        Evaluator::Property => EvaluatorMode::Property,
    };
    let host = args
        .execution
        .plugin_host(args.config.as_deref(), &blueprints)
        .await?;
    let plans = plan_all(&blueprints, &|uses| host.implements(uses), evaluator)?;
    let (backend, mut receiver) = MemoryBackend::new();
    let engine = engine(backend, host, plans, evaluator, args.step_limit);
    let run_id = engine
        .start_run(&blueprints[0].id, args.run_id.clone(), initial)
        .await?;
    let report = drive(&engine, &mut receiver, &run_id, &args.execution).await?;
    if let Some(path) = &args.state {
        save_state(
            path,
            &engine,
            &run_id,
            evaluator,
            args.step_limit,
            blueprints,
        )?;
    }
    explain_awaiting(&report, args.state.as_deref());
    Ok(finish(&report))
}

pub async fn resume(args: ResumeArgs) -> Result<ExitCode> {
    init_logging(args.execution.quiet);
    let state = args
        .state
        .clone()
        .context("resume needs --state FILE or a run id")?;
    let output = args.output_value()?;
    let (node, action) = (args.node.clone(), args.action.clone());
    continue_saved(
        &state,
        &args.execution,
        args.azure.config.as_deref(),
        async |engine, run_id| engine.resume(run_id, node.as_deref(), action, output).await,
    )
    .await
}

pub async fn retry(args: RetryArgs) -> Result<ExitCode> {
    init_logging(args.execution.quiet);
    let state = args
        .state
        .clone()
        .context("retry needs --state FILE or a run id")?;
    let patch = context_argument(args.context.as_deref())?;
    continue_saved(
        &state,
        &args.execution,
        args.azure.config.as_deref(),
        async |engine, run_id| engine.retry(run_id, patch).await.map(drop),
    )
    .await
}

/// Loads the run saved in `state`, applies `step` to it (a resume or a
/// retry), drives it to its next stop and saves it again.
async fn continue_saved(
    state: &Path,
    execution: &ExecutionArgs,
    config: Option<&Path>,
    step: impl AsyncFnOnce(
        &Engine<MemoryBackend, PluginHost>,
        &str,
    ) -> Result<(), flowcraft_core::engine::EngineError>,
) -> Result<ExitCode> {
    let saved = SavedRun::load(state)?;
    let evaluator: EvaluatorMode = saved.evaluator.parse().unwrap_or_default();
    let host = execution.plugin_host(config, &saved.blueprints).await?;
    let plans = plan_all(&saved.blueprints, &|uses| host.implements(uses), evaluator)?;
    let (backend, mut receiver) = MemoryBackend::from_snapshot(saved.store);
    let engine = engine(backend, host, plans, evaluator, saved.step_limit);
    step(&engine, &saved.run_id).await?;
    let report = drive(&engine, &mut receiver, &saved.run_id, execution).await?;
    save_state(
        state,
        &engine,
        &saved.run_id,
        evaluator,
        saved.step_limit,
        saved.blueprints,
    )?;
    explain_awaiting(&report, Some(state));
    Ok(finish(&report))
}

fn engine(
    backend: MemoryBackend,
    host: PluginHost,
    plans: Arc<PlanRegistry>,
    evaluator: EvaluatorMode,
    step_limit: u64,
) -> Engine<MemoryBackend, PluginHost> {
    let settings = EngineSettings {
        evaluator,
        step_limit,
        default_node_timeout: host.config().default_timeout,
        ..EngineSettings::default()
    };
    Engine::new(Arc::new(backend), Arc::new(host), plans, settings)
}

async fn drive(
    engine: &Engine<MemoryBackend, PluginHost>,
    receiver: &mut JobReceiver,
    run_id: &str,
    execution: &ExecutionArgs,
) -> Result<RunReport> {
    let timers = if execution.no_wait_timers {
        TimerPolicy::Stop
    } else {
        TimerPolicy::Wait
    };
    Ok(memory::drive(engine, receiver, run_id, execution.concurrency, timers).await?)
}

fn save_state(
    path: &Path,
    engine: &Engine<MemoryBackend, PluginHost>,
    run_id: &str,
    evaluator: EvaluatorMode,
    step_limit: u64,
    blueprints: Vec<Blueprint>,
) -> Result<()> {
    SavedRun {
        format: STATE_FORMAT,
        run_id: run_id.to_owned(),
        evaluator: evaluator.as_str().to_owned(),
        step_limit,
        blueprints,
        store: engine.backend().snapshot(),
    }
    .save(path)
}

/// For an awaiting run, says on stderr which nodes wait and how to go on:
/// the `resume` command, or how to keep the state when none was saved.
fn explain_awaiting(report: &RunReport, state: Option<&Path>) {
    if report.state != RunState::Awaiting {
        return;
    }
    let nodes: Vec<String> = report
        .context
        .get(flowcraft_core::engine::AWAITING_IDS_KEY)
        .map(ContextValue::to_value)
        .and_then(|ids| serde_json::from_value(ids).ok())
        .unwrap_or_default();
    let first = nodes.first().map_or("NODE", String::as_str);
    let how = match state {
        Some(path) => format!(
            "continue with: flowcraft-host resume --state {} --node {first} [--action A] [--output JSON] --plugins DIR",
            path.display()
        ),
        None => format!(
            "its state was not saved: run again with --state FILE, then: flowcraft-host resume --state FILE --node {first}"
        ),
    };
    eprintln!(
        "run '{}' is awaiting (nodes: {}); {how}",
        report.run_id,
        nodes.join(", ")
    );
}

/// What `run`, `resume` and `retry` print: `{"runId","status","context","errors"}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunResult<'a> {
    run_id: &'a str,
    status: &'static str,
    /// Written as the JSON text each value is kept as (nothing is parsed).
    context: &'a ContextMap,
    errors: Vec<RunResultError<'a>>,
    /// Present when something went wrong without failing the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<RunResultError<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunResultError<'a> {
    node_id: &'a str,
    message: &'a str,
}

fn result_errors(errors: &[RunError]) -> Vec<RunResultError<'_>> {
    errors
        .iter()
        .map(|e| RunResultError {
            node_id: &e.node_id,
            message: &e.message,
        })
        .collect()
}

/// Prints the run's result and picks the exit status.
fn finish(report: &RunReport) -> ExitCode {
    let result = RunResult {
        run_id: &report.run_id,
        status: report.state.as_str(),
        context: &report.context,
        errors: result_errors(&report.errors),
        warnings: result_errors(&report.warnings),
    };
    let printed = serde_json::to_string(&result).map(|text| {
        // A closed stdout (`| head`) is the reader's choice, not an error.
        let _ = writeln!(std::io::stdout(), "{text}");
    });
    if let Err(error) = printed {
        eprintln!(
            "error: the result of run '{}' cannot be printed as JSON: {error}",
            report.run_id
        );
        return ExitCode::from(1);
    }
    match report.state {
        RunState::Completed | RunState::Awaiting => ExitCode::SUCCESS,
        RunState::Running | RunState::Failed | RunState::Cancelled => ExitCode::from(1),
    }
}
