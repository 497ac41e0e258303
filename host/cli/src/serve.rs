//! `flowcraft-host serve`: one process that runs the workers and answers the
//! HTTP API (`flowcraft_api`) on `--listen`. Given Azure settings it is the
//! Azure worker (the same settings and behaviour) plus the API; otherwise it
//! keeps runs durably in a SQLite database in `--data-dir`
//! (`flowcraft_sqlite`). On SIGINT or SIGTERM it stops taking requests and
//! jobs, finishes what is under way and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use flowcraft_api::{Api, BlueprintFolder, Tokens};
use flowcraft_azure::backend::AzureBackend;
use flowcraft_core::directory::RunDirectory;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_sqlite::SqliteBackend;
use flowcraft_telemetry::Metrics;
use flowcraft_worker::{WorkerBackend, WorkerSettings};
use tokio::sync::watch;
use tracing::info;

use crate::config::ConfigFile;
use crate::setup::WorkerRuntime;
use crate::worker::{
    MetricsListener, WorkerArgs, plugins_and_blueprints, shutdown_signal, worker_settings,
};

#[derive(Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on. Without --auth-token only a loopback
    /// address is allowed.
    #[arg(
        long,
        value_name = "ADDR",
        env = "FLOWCRAFT_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Where the local backend keeps its database (created if missing); not
    /// used with Azure settings.
    #[arg(
        long,
        value_name = "DIR",
        env = "FLOWCRAFT_DATA_DIR",
        default_value = ".flowcraft"
    )]
    data_dir: PathBuf,
    /// Bearer token every API request must carry (all routes but /healthz);
    /// several comma-separated tokens are all accepted.
    #[arg(
        long = "auth-token",
        value_name = "TOKEN",
        env = "FLOWCRAFT_API_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    auth_tokens: Vec<String>,
    #[command(flatten)]
    worker: WorkerArgs,
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    crate::setup::init_logging(false);
    let file = ConfigFile::load(args.worker.azure.config.as_deref())?;
    let tokens = Tokens::new(args.auth_tokens.iter().map(String::as_str));
    if !tokens.required() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to serve the API on {} without a token: pass --auth-token (or FLOWCRAFT_API_TOKEN), or listen on a loopback address such as 127.0.0.1",
            args.listen
        );
    }
    let (plugins, blueprints) = plugins_and_blueprints(&args.worker, &file)?;
    let azure = args.worker.azure.resolve(&file.azure)?;
    let mixed_fleet =
        azure.is_some() && (args.worker.mixed_fleet || file.worker.mixed_fleet.unwrap_or(false));
    let tunables = worker_settings(&args.worker, &file.worker, mixed_fleet);
    let runtime = WorkerRuntime::load(plugins, &blueprints, tunables.concurrency).await?;
    let mut settings = runtime.engine_settings(tunables.concurrency, mixed_fleet);
    settings.public_url = Some(
        args.worker
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.listen)),
    );
    let server = Server {
        listen: args.listen,
        blueprints: blueprints.clone(),
        tokens,
        tunables,
        metrics_listen: args.worker.metrics_listen,
    };
    match azure {
        Some(config) => {
            let backend = AzureBackend::connect(&config).await?;
            let where_runs_are = format!("Azure (queue {})", config.queue);
            server
                .run(backend, runtime, settings, &where_runs_are)
                .await
        }
        None => {
            let backend = SqliteBackend::open(&args.data_dir)?;
            let where_runs_are = format!("the database {}", backend.path().display());
            server
                .run(backend, runtime, settings, &where_runs_are)
                .await
        }
    }
}

/// What `serve` runs, whichever the backend.
struct Server {
    listen: SocketAddr,
    /// The blueprint directory, where blueprints added through the API are
    /// saved.
    blueprints: PathBuf,
    tokens: Tokens,
    tunables: WorkerSettings,
    metrics_listen: Option<SocketAddr>,
}

impl Server {
    /// Runs the workers and the API over `backend` until SIGINT or SIGTERM.
    async fn run<B: WorkerBackend + RunDirectory>(
        self,
        backend: B,
        runtime: WorkerRuntime,
        settings: EngineSettings,
        where_runs_are: &str,
    ) -> Result<ExitCode> {
        let engine = Arc::new(Engine::new(
            Arc::new(backend),
            runtime.host.clone(),
            runtime.plans.clone(),
            settings,
        ));
        let metrics = Metrics::install()?;
        let _metrics_listener = match self.metrics_listen {
            Some(listen) => Some(MetricsListener::start(listen, metrics.clone()).await?),
            None => None,
        };
        let (stop, stopping) = watch::channel(false);
        let api = Arc::new(Api {
            engine: engine.clone(),
            plugins: runtime.host.clone(),
            evaluator: EvaluatorMode::Safe,
            tokens: self.tokens,
            shutdown: stopping.clone(),
            saved_blueprints: Some(BlueprintFolder::new(self.blueprints)),
            metrics: Some(metrics),
        });
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}: is another server running there? choose another --listen",
                    self.listen
                )
            })?;
        let signal = shutdown_signal()?;
        let stopped = |mut receiver: watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let worker = tokio::spawn(flowcraft_worker::run(
            engine,
            self.tunables,
            stopped(stopping.clone()),
        ));
        let http = tokio::spawn(flowcraft_api::serve(
            listener,
            flowcraft_api::router(api),
            stopped(stopping),
        ));
        info!(listen = %self.listen, runs = %where_runs_are, "serving: the API on http://{}", self.listen);
        signal.await;
        info!("shutting down: no more requests or jobs; finishing those under way");
        let _ = stop.send(true);
        let served = http.await.context("the HTTP server stopped unexpectedly")?;
        served.context("the HTTP server failed")?;
        worker.await.context("the worker stopped unexpectedly")?;
        drop(runtime.updates);
        info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}
