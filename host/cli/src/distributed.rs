//! Client commands against the Azure services (`start`, `status`, `wait`,
//! `resume RUN_ID`, `reconcile`, `cancel`, `retry RUN_ID`) and the engine the
//! worker runs.
//! They talk to the same queue, containers and Redis as the workers, through
//! the same engine, so a run started here is executed by any worker.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use flowcraft_azure::backend::{AzureBackend, AzureConfig};
use flowcraft_azure::wakeups::StatusChanges;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::context_to_object;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::{NodeCall, NodeFailure, NodeOutcome, NodeRunner, PinError, Pins};
use flowcraft_core::store::{CoordinationStore, StatusStore};
use flowcraft_plugins::PluginHost;
use serde_json::{Value, json};

use crate::PluginArgs;
use crate::config::{AzureArgs, ConfigFile};
use crate::embedded::{ResumeArgs, RetryArgs};
use crate::inputs::{context_argument, read_blueprint_dir};
use crate::plugin_source::BundleUpdates;
use crate::remote::ServerArgs;
use crate::setup::{WorkerPlugins, WorkerRuntime, load_plugins, plan_all};

/// A command that names one run.
#[derive(Args)]
pub struct RunArgs {
    run_id: String,
    /// Directory of blueprints (*.json) (needed by `cancel` and `retry`).
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_BLUEPRINTS")]
    blueprints: Option<PathBuf>,
    #[command(flatten)]
    azure: AzureArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
pub struct StartArgs {
    /// The id of a blueprint in --blueprints DIR.
    blueprint_id: String,
    /// Initial context: a JSON object, inline or as @FILE.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
    /// Run id to use [default: a new UUID].
    #[arg(long)]
    run_id: Option<String>,
    /// Directory of blueprints (*.json).
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_BLUEPRINTS")]
    blueprints: Option<PathBuf>,
    /// Bundles to pin the run's node types to (workers then run exactly these versions).
    #[command(flatten)]
    plugins: PluginArgs,
    /// After printing the run id, wait as `wait` does: print the final status
    /// document and exit 0 when the run completed or awaits input, 1 otherwise.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds (exit status 1).
    #[arg(long, default_value_t = 300, requires = "wait")]
    timeout: u64,
    #[command(flatten)]
    azure: AzureArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
pub struct WaitArgs {
    run_id: String,
    /// Give up after this many seconds (exit status 1).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    #[command(flatten)]
    azure: AzureArgs,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
pub struct ReconcileArgs {
    /// Runs whose status did not change for this many seconds count as stalled.
    #[arg(long, default_value_t = 300)]
    stalled_after: u64,
    /// Directory of blueprints (*.json).
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_BLUEPRINTS")]
    blueprints: Option<PathBuf>,
    #[command(flatten)]
    azure: AzureArgs,
}

/// The node runner of processes that only coordinate: it runs no nodes,
/// and pins node types only when it was given bundles.
pub struct ClientRunner {
    plugins: Option<PluginHost>,
}

impl NodeRunner for ClientRunner {
    fn implements(&self, uses: &str) -> bool {
        self.plugins
            .as_ref()
            .is_none_or(|host| host.implements(uses))
    }

    fn pin(&self, blueprint: &Blueprint) -> Result<Pins, PinError> {
        match &self.plugins {
            Some(host) => host.pin(blueprint),
            None => Ok(Pins::new()),
        }
    }

    async fn run(&self, call: NodeCall) -> NodeOutcome {
        NodeOutcome {
            context: call.context,
            result: Err(NodeFailure::fatal(
                "this process runs no nodes; a worker does",
            )),
        }
    }
}

type ClientEngine = Engine<AzureBackend, ClientRunner>;

/// The worker's engine: Azure backend, the plugin runtime (watched for hot
/// swap) sized for `concurrency` jobs at once, and the blueprints of
/// `blueprints`; `mixed_fleet` when TypeScript workers share the runs.
pub async fn worker_engine(
    config: &AzureConfig,
    plugins: WorkerPlugins,
    blueprints: &Path,
    concurrency: usize,
    mixed_fleet: bool,
    public_url: Option<String>,
) -> Result<(Engine<AzureBackend, PluginHost>, BundleUpdates)> {
    let runtime = WorkerRuntime::load(plugins, blueprints, concurrency).await?;
    let backend = connect(config).await?;
    let mut settings = runtime.engine_settings(concurrency, mixed_fleet);
    settings.public_url = public_url;
    let engine = Engine::new(Arc::new(backend), runtime.host, runtime.plans, settings);
    Ok((engine, runtime.updates))
}

async fn connect(config: &AzureConfig) -> Result<AzureBackend> {
    Ok(AzureBackend::connect(config).await?)
}

/// The Azure backend from flags, environment and `--config`.
async fn backend(args: &AzureArgs) -> Result<AzureBackend> {
    let file = ConfigFile::load(args.config.as_deref())?;
    let Some(config) = args.resolve(&file.azure)? else {
        bail!(
            "no Azure settings: set AZURE_STORAGE_CONNECTION_STRING, COSMOS_DB_CONNECTION_STRING and REDIS_URL (or --config)"
        );
    };
    connect(&config).await
}

async fn client_engine(
    args: &AzureArgs,
    blueprints: Option<&Path>,
    plugins: Option<PluginHost>,
) -> Result<ClientEngine> {
    let dir = blueprints.context("--blueprints DIR is required (or set FLOWCRAFT_BLUEPRINTS)")?;
    let blueprints = read_blueprint_dir(dir)?;
    let runner = ClientRunner { plugins };
    let plans = plan_all(
        &blueprints,
        &|uses| runner.implements(uses),
        EvaluatorMode::Safe,
    )?;
    let backend = backend(args).await?;
    Ok(Engine::new(
        Arc::new(backend),
        Arc::new(runner),
        plans,
        EngineSettings::default(),
    ))
}

pub async fn start(args: StartArgs) -> Result<ExitCode> {
    let initial = context_argument(args.context.as_deref())?;
    if let Some(remote) = args.server.remote() {
        let context = Value::Object(context_to_object(&initial));
        let run_id = remote
            .start(&args.blueprint_id, args.run_id.as_deref(), context)
            .await?;
        println!("{run_id}");
        if !args.wait {
            return Ok(ExitCode::SUCCESS);
        }
        std::io::stdout().flush()?;
        return remote.wait(&run_id, args.timeout).await;
    }
    let plugins = match &args.plugins.plugins {
        Some(_) => Some(load_plugins(&args.plugins, Default::default(), None).await?),
        None => None,
    };
    let engine = client_engine(&args.azure, args.blueprints.as_deref(), plugins).await?;
    let requested = match (&args.run_id, args.wait) {
        (Some(run_id), _) => Some(run_id.clone()),
        // Known before the start, so that the subscription to the run's end
        // is in place while the run starts.
        (None, true) => Some(uuid::Uuid::new_v4().to_string()),
        (None, false) => None,
    };
    let subscription = async {
        match (&requested, args.wait) {
            (Some(run_id), true) => engine.backend().wakeups().status_changes(run_id).await,
            _ => None,
        }
    };
    let (run_id, changes) = tokio::join!(
        engine.start_run(&args.blueprint_id, requested.clone(), initial),
        subscription
    );
    let run_id = run_id?;
    announce(&engine).await;
    println!("{run_id}");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    std::io::stdout().flush()?;
    wait_for_end(engine.backend(), &run_id, args.timeout, changes).await
}

pub async fn status(args: RunArgs) -> Result<ExitCode> {
    if let Some(remote) = args.server.remote() {
        println!("{}", remote.status(&args.run_id).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let backend = backend(&args.azure).await?;
    println!("{}", run_status(&backend, &args.run_id).await?);
    Ok(ExitCode::SUCCESS)
}

/// The status document plus what the progress record says.
async fn run_status(backend: &AzureBackend, run_id: &str) -> Result<serde_json::Value> {
    let status = backend.read_status(run_id).await?;
    let progress = backend
        .read_progress(run_id, |p| {
            json!({
                "state": p.state.as_str(),
                "pending": p.pending,
                "awaiting": p.awaiting.keys().collect::<Vec<_>>(),
                "errors": p.errors,
                "warnings": p.warnings,
                "steps": p.steps,
                "retries": p.retries,
                "retriedErrors": p.retried_errors,
            })
        })
        .await?;
    if status.is_none() && progress.is_none() {
        bail!("run '{run_id}' not found (no status document and no progress record)");
    }
    Ok(json!({"runId": run_id, "status": status, "progress": progress}))
}

/// The longest `wait` goes without reading the status document: the
/// fallback for a lost announcement (see `flowcraft_azure::wakeups`).
const STATUS_FALLBACK: Duration = Duration::from_secs(1);

pub async fn wait(args: WaitArgs) -> Result<ExitCode> {
    if let Some(remote) = args.server.remote() {
        return remote.wait(&args.run_id, args.timeout).await;
    }
    let backend = backend(&args.azure).await?;
    // Subscribed before the first read, so that no announcement falls between.
    let changes = backend.wakeups().status_changes(&args.run_id).await;
    wait_for_end(&backend, &args.run_id, args.timeout, changes).await
}

/// Waits until the run ends or awaits input, prints its status document and
/// answers the exit status: 0 for completed or awaiting, 1 for failed or
/// cancelled, or for a run still going after `timeout_secs`. `changes` is
/// the subscription to the run's announcements, made before the status is
/// first read (`None`: poll the status).
async fn wait_for_end(
    backend: &AzureBackend,
    run_id: &str,
    timeout_secs: u64,
    mut changes: Option<StatusChanges>,
) -> Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut pause = Duration::from_millis(100);
    loop {
        if let Some(status) = backend.read_status(run_id).await?
            && (status.status.is_terminal() || status.status == RunState::Awaiting)
        {
            println!("{}", serde_json::to_string(&status)?);
            return Ok(match status.status {
                RunState::Completed | RunState::Awaiting => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("flowcraft-host: run '{run_id}' is still running after {timeout_secs} s");
            return Ok(ExitCode::from(1));
        }
        match &mut changes {
            Some(changes) => {
                let _ = tokio::time::timeout(STATUS_FALLBACK.min(left), changes.next()).await;
            }
            None => {
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(STATUS_FALLBACK);
            }
        }
    }
}

/// Publishes what the command announced (the runs it started or resumed,
/// for idle workers) before the process exits.
async fn announce<R: NodeRunner>(engine: &Engine<AzureBackend, R>) {
    engine.backend().wakeups().flush().await;
}

pub async fn resume(args: ResumeArgs) -> Result<ExitCode> {
    let run_id = args
        .run_id
        .clone()
        .context("resume needs a run id (or --state FILE)")?;
    refuse_file_as_run_id("resume", &run_id)?;
    let output = args.output_value()?;
    if let Some(remote) = args.server.remote() {
        let answer = remote
            .resume(
                &run_id,
                args.node.as_deref(),
                args.action.as_deref(),
                output,
            )
            .await?;
        println!("{answer}");
        return Ok(ExitCode::SUCCESS);
    }
    let engine = client_engine(&args.azure, args.blueprints.as_deref(), None).await?;
    engine
        .resume(&run_id, args.node.as_deref(), args.action.clone(), output)
        .await?;
    announce(&engine).await;
    println!("{}", run_status(engine.backend(), &run_id).await?);
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(args: RunArgs) -> Result<ExitCode> {
    if let Some(remote) = args.server.remote() {
        println!("{}", remote.cancel(&args.run_id).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let engine = client_engine(&args.azure, args.blueprints.as_deref(), None).await?;
    engine.cancel(&args.run_id).await?;
    println!("{}", run_status(engine.backend(), &args.run_id).await?);
    Ok(ExitCode::SUCCESS)
}

pub async fn retry(args: RetryArgs) -> Result<ExitCode> {
    let run_id = args
        .run_id
        .clone()
        .context("retry needs a run id (or --state FILE)")?;
    refuse_file_as_run_id("retry", &run_id)?;
    let patch = context_argument(args.context.as_deref())?;
    if let Some(remote) = args.server.remote() {
        let context = Value::Object(context_to_object(&patch));
        println!("{}", remote.retry(&run_id, context).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let engine = client_engine(&args.azure, args.blueprints.as_deref(), None).await?;
    engine.retry(&run_id, patch).await?;
    announce(&engine).await;
    println!("{}", run_status(engine.backend(), &run_id).await?);
    Ok(ExitCode::SUCCESS)
}

/// A run id that names a file is a state file given without `--state`.
fn refuse_file_as_run_id(command: &str, run_id: &str) -> Result<()> {
    if Path::new(run_id).is_file() {
        bail!(
            "{run_id} is a file: did you mean `{command} --state {run_id}`? (a run id names a run on Azure)"
        );
    }
    Ok(())
}

pub async fn reconcile(args: ReconcileArgs) -> Result<ExitCode> {
    let engine = client_engine(&args.azure, args.blueprints.as_deref(), None).await?;
    let summary =
        flowcraft_worker::reconcile_stalled(&engine, Duration::from_secs(args.stalled_after))
            .await?;
    announce(&engine).await;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}

/// Inspecting and re-enqueueing dead-lettered messages.
#[derive(clap::Subcommand)]
pub enum PoisonCommand {
    /// Print the messages of `<queue>-poison` with their reasons (without taking them).
    List {
        /// At most this many (the queue service peeks 32 at most).
        #[arg(long, default_value_t = 32)]
        max: u32,
        #[command(flatten)]
        azure: AzureArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Move poisoned messages back to the job queue, as they were.
    Replay {
        /// Only these message ids [default: all].
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
        #[command(flatten)]
        azure: AzureArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn poison(command: PoisonCommand) -> Result<ExitCode> {
    match command {
        PoisonCommand::List { server, .. } if server.server.is_some() => {
            let remote = server.remote().context("--server names the server")?;
            for letter in remote.dead_letters().await? {
                println!("{letter}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PoisonCommand::Replay { ids, server, .. } if server.server.is_some() => {
            let remote = server.remote().context("--server names the server")?;
            println!("{}", remote.replay(&ids).await?);
            Ok(ExitCode::SUCCESS)
        }
        PoisonCommand::List { max, azure, .. } => {
            let backend = backend(&azure).await?;
            for poisoned in backend.queue().peek_poison(max).await? {
                println!(
                    "{}",
                    json!({
                        "id": poisoned.message.id,
                        "dequeueCount": poisoned.message.dequeue_count,
                        "reason": poisoned.entry.reason,
                        "failedAt": poisoned.entry.failed_at,
                        "message": poisoned.entry.original,
                    })
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PoisonCommand::Replay { ids, azure, .. } => {
            let backend = backend(&azure).await?;
            let wanted = (!ids.is_empty()).then_some(ids.as_slice());
            let replayed = backend.queue().replay_poisoned(wanted).await?.len();
            println!("{}", json!({ "replayed": replayed }));
            Ok(ExitCode::SUCCESS)
        }
    }
}
