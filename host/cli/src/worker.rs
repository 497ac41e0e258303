//! The worker command: flags and `--config` resolved into the worker's
//! settings, the Azure engine wired up, and the worker loop of
//! [`flowcraft_worker`] run until SIGINT or SIGTERM (then it stops
//! receiving, lets running jobs finish and exits 0).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use flowcraft_telemetry::Metrics;
use flowcraft_worker::WorkerSettings;
use tracing::info;

use crate::config::{AzureArgs, ConfigFile, WorkerFile};
use crate::distributed;
use crate::plugin_source::DEFAULT_PLUGINS_POLL;
use crate::setup::WorkerPlugins;

/// Flags of the worker (the default command).
#[derive(Args, Clone, Default)]
pub struct WorkerArgs {
    /// Node bundles: a directory of *.wasm files (watched) or a bundle list (a .toml file of
    /// registry references and files); changes are hot-swapped.
    #[arg(long, value_name = "DIR|LIST", env = "FLOWCRAFT_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// Seconds between checks of --plugins for changes nothing announces: a bundle list's tags
    /// are resolved again, a directory is rescanned (network file systems send no change
    /// events) [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub plugins_poll: Option<u64>,
    /// Where pulled and compiled bundles are kept [default: flowcraft-host in the user's cache
    /// directory, $XDG_CACHE_HOME or ~/.cache].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Entra ID credential for Azure Container Registries a bundle list names (without a login
    /// in Docker's config.json); the identity needs AcrPull [default: --azure-credential].
    #[arg(long, value_name = "KIND", env = "FLOWCRAFT_REGISTRY_CREDENTIAL", value_parser = crate::config::credential_parser())]
    pub registry_credential: Option<flowcraft_azure::credential::CredentialKind>,
    /// Directory of blueprints (*.json) this worker runs.
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_BLUEPRINTS")]
    pub blueprints: Option<PathBuf>,
    /// Jobs run at the same time [default: 32 per core].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Seconds a received job stays invisible to other workers (renewed while it runs) [default: 30].
    #[arg(long)]
    pub visibility_timeout: Option<u64>,
    /// Deliveries after which a message goes to the poison queue [default: 5].
    #[arg(long)]
    pub max_dequeue_count: Option<u32>,
    /// Seconds between reconciler passes [default: 60].
    #[arg(long)]
    pub reconcile_interval: Option<u64>,
    /// Seconds without progress after which a running run counts as stalled [default: 300].
    #[arg(long)]
    pub stalled_after: Option<u64>,
    /// Longest wait between two receives while idle, in ms: the start delay of a run nobody
    /// announces (one started by a TypeScript client), and the idle cost, one receive per
    /// interval. Runs started by flowcraft-host wake an idle worker at once [default: 200].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub idle_poll_ms: Option<u64>,
    /// Do not run the reconciler in this worker.
    #[arg(long)]
    pub no_reconciler: bool,
    /// TypeScript workers (@flowcraft/azure-adapter) share the queue and the
    /// runs: read every job's context from Cosmos DB (no context cache) and
    /// run the jobs they schedule; every message stands for one job.
    #[arg(long, alias = "no-context-cache")]
    pub mixed_fleet: bool,
    /// The URL under which the API (`serve`) is reached, for the URLs `webhook` nodes give out
    /// [default: with `serve`, http://<--listen>; otherwise the path alone].
    #[arg(long, value_name = "URL", env = "FLOWCRAFT_PUBLIC_URL", value_parser = http_url)]
    pub public_url: Option<String>,
    /// Serve this process's metrics in the Prometheus text format at
    /// http://ADDR/metrics (`serve` answers them on its API as well).
    #[arg(long, value_name = "ADDR", env = "FLOWCRAFT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub azure: AzureArgs,
}

pub async fn serve(args: WorkerArgs) -> Result<ExitCode> {
    crate::setup::init_logging(false);
    let file = ConfigFile::load(args.azure.config.as_deref())?;
    let Some(settings) = args.azure.resolve(&file.azure)? else {
        bail!(
            "no Azure settings: set AZURE_STORAGE_CONNECTION_STRING, COSMOS_DB_CONNECTION_STRING and REDIS_URL (or --config) to run a worker; to run one workflow locally use `flowcraft-host run`"
        );
    };
    let (plugins, blueprints) = plugins_and_blueprints(&args, &file)?;
    let mixed_fleet = args.mixed_fleet || file.worker.mixed_fleet.unwrap_or(false);
    let tunables = worker_settings(&args, &file.worker, mixed_fleet);
    let (engine, _updates) = distributed::worker_engine(
        &settings,
        plugins,
        &blueprints,
        tunables.concurrency,
        mixed_fleet,
        args.public_url.clone(),
    )
    .await?;
    let metrics = match args.metrics_listen {
        Some(listen) => Some(MetricsListener::start(listen, Metrics::install()?).await?),
        None => None,
    };
    // Handlers first: a SIGTERM from the moment "worker started" is logged
    // shuts down gracefully instead of killing the process.
    let shutdown = shutdown_signal()?;
    info!(queue = %settings.queue, concurrency = tunables.concurrency, "worker started");
    flowcraft_worker::run(Arc::new(engine), tunables, shutdown).await;
    drop(metrics);
    info!("worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// The `--metrics-listen` endpoint, served until dropped.
pub(crate) struct MetricsListener(tokio::task::JoinHandle<()>);

impl MetricsListener {
    pub(crate) async fn start(listen: SocketAddr, metrics: Metrics) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
            format!("cannot listen on {listen} for metrics: is something else there? choose another --metrics-listen")
        })?;
        let bound = listener.local_addr().unwrap_or(listen);
        info!(listen = %bound, "metrics at http://{bound}/metrics");
        let served = flowcraft_telemetry::serve_metrics(listener, metrics, std::future::pending());
        Ok(Self(tokio::spawn(async move {
            if let Err(error) = served.await {
                tracing::error!(%error, "the metrics endpoint stopped");
            }
        })))
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An `http://` or `https://` URL (for `--public-url`).
fn http_url(text: &str) -> Result<String, String> {
    let scheme_ok = ["http://", "https://"]
        .iter()
        .any(|scheme| text.starts_with(scheme) && text.len() > scheme.len());
    if scheme_ok {
        Ok(text.trim_end_matches('/').to_owned())
    } else {
        Err("expected an http:// or https:// URL, such as https://flows.example.com".to_owned())
    }
}

/// The worker's tunables from flags, then `--config`, then the defaults.
pub(crate) fn worker_settings(
    args: &WorkerArgs,
    file: &WorkerFile,
    mixed_fleet: bool,
) -> WorkerSettings {
    let defaults = WorkerSettings::default();
    let seconds = Duration::from_secs;
    let reconciler = !args.no_reconciler && file.reconciler.unwrap_or(true);
    WorkerSettings {
        concurrency: args
            .concurrency
            .or(file.concurrency)
            .unwrap_or(defaults.concurrency),
        visibility: args
            .visibility_timeout
            .or(file.visibility_timeout_seconds)
            .map_or(defaults.visibility, |s| seconds(s.max(2))),
        max_dequeue: args
            .max_dequeue_count
            .or(file.max_dequeue_count)
            .map_or(defaults.max_dequeue, |n| n.max(1)),
        reconcile_every: reconciler
            .then(|| {
                args.reconcile_interval
                    .or(file.reconcile_interval_seconds)
                    .map(|s| seconds(s.max(1)))
                    .or(defaults.reconcile_every)
            })
            .flatten(),
        stalled_after: args
            .stalled_after
            .or(file.stalled_after_seconds)
            .map_or(defaults.stalled_after, seconds),
        groups: !mixed_fleet,
        idle_poll: args
            .idle_poll_ms
            .or(file.idle_poll_ms)
            .map_or(defaults.idle_poll, |ms| {
                Duration::from_millis(ms.clamp(10, 60_000))
            }),
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (not when the future is first polled).
pub(crate) fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Where the bundles come from (`--plugins`, `--cache-dir`, `--plugins-poll`,
/// `--registry-credential`, with the grants of `--config`) and the blueprint
/// directory, from flags or the configuration file.
pub fn plugins_and_blueprints(
    args: &WorkerArgs,
    file: &ConfigFile,
) -> Result<(WorkerPlugins, PathBuf)> {
    let source = args
        .plugins
        .clone()
        .or(file.worker.plugins.clone())
        .context("--plugins DIR|LIST is required (or worker.plugins in --config)")?;
    let blueprints = args
        .blueprints
        .clone()
        .or(file.worker.blueprints.clone())
        .context("--blueprints DIR is required (or worker.blueprints in --config)")?;
    let poll = args
        .plugins_poll
        .or(file.worker.plugins_poll_seconds)
        .map_or(DEFAULT_PLUGINS_POLL, Duration::from_secs);
    let plugins = WorkerPlugins {
        source,
        cache_dir: args.cache_dir.clone().or(file.worker.cache_dir.clone()),
        poll,
        entra: match args.registry_credential {
            Some(kind) => Some(kind),
            None => args.azure.credential_kind(&file.azure)?,
        },
        grants: file.grants.clone(),
    };
    Ok((plugins, blueprints))
}
