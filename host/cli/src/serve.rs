//! `flowcraft-host serve`: one process that runs the workers and answers the
//! HTTP API (`flowcraft_api`) on `--listen`, keeping runs durably in a SQLite
//! database in `--data-dir` (`flowcraft_sqlite`). On SIGINT or SIGTERM it
//! stops taking requests and jobs, finishes what is under way and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use flowcraft_api::{Api, Tokens};
use flowcraft_core::engine::Engine;
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_sqlite::SqliteBackend;
use tokio::sync::watch;
use tracing::info;

use crate::config::ConfigFile;
use crate::setup::WorkerRuntime;
use crate::worker::{WorkerArgs, shutdown_signal, worker_settings};

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
    /// Where the local backend keeps its database (created if missing).
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
    if args.worker.azure.resolve(&file.azure)?.is_some() {
        bail!(
            "`serve` keeps runs in its local database and does not run on Azure yet: unset the Azure settings (AZURE_STORAGE_CONNECTION_STRING, COSMOS_DB_CONNECTION_STRING, REDIS_URL or their --config keys), or run the Azure worker with `flowcraft-host --plugins DIR --blueprints DIR`"
        );
    }
    let tokens = Tokens::new(args.auth_tokens.iter().map(String::as_str));
    if !tokens.required() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to serve the API on {} without a token: pass --auth-token (or FLOWCRAFT_API_TOKEN), or listen on a loopback address such as 127.0.0.1",
            args.listen
        );
    }
    let plugins = args
        .worker
        .plugins
        .clone()
        .or(file.worker.plugins.clone())
        .context("--plugins DIR is required (or worker.plugins in --config)")?;
    let blueprints = args
        .worker
        .blueprints
        .clone()
        .or(file.worker.blueprints.clone())
        .context("--blueprints DIR is required (or worker.blueprints in --config)")?;
    let tunables = worker_settings(&args.worker, &file.worker, false);
    let runtime =
        WorkerRuntime::load(&plugins, &blueprints, file.grants, tunables.concurrency).await?;
    let backend = SqliteBackend::open(&args.data_dir)?;
    let database = backend.path().display().to_string();
    let settings = runtime.engine_settings(tunables.concurrency, false);
    let engine = Arc::new(Engine::new(
        Arc::new(backend),
        runtime.host.clone(),
        runtime.plans.clone(),
        settings,
    ));
    let (stop, stopping) = watch::channel(false);
    let api = Arc::new(Api {
        engine: engine.clone(),
        plugins: runtime.host.clone(),
        evaluator: EvaluatorMode::Safe,
        tokens,
        shutdown: stopping.clone(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another server running there? choose another --listen",
                args.listen
            )
        })?;
    let signal = shutdown_signal()?;
    let stopped = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let worker = tokio::spawn(flowcraft_worker::run(
        engine,
        tunables,
        stopped(stopping.clone()),
    ));
    let http = tokio::spawn(flowcraft_api::serve(
        listener,
        flowcraft_api::router(api),
        stopped(stopping),
    ));
    info!(listen = %args.listen, database = %database, "serving: the API on http://{}", args.listen);
    signal.await;
    info!("shutting down: no more requests or jobs; finishing those under way");
    let _ = stop.send(true);
    let served = http.await.context("the HTTP server stopped unexpectedly")?;
    served.context("the HTTP server failed")?;
    worker.await.context("the worker stopped unexpectedly")?;
    drop(runtime.watch);
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}
