//! `flowcraft-host`: runs Flowcraft workflows whose nodes are sandboxed
//! WebAssembly components.
//!
//! This binary only parses flags, builds the stores and the plugin runtime,
//! and starts the engine; all workflow logic lives in `flowcraft-core`.

mod embedded;
mod graph;
mod inputs;
mod plugins_cmd;
mod setup;
mod validate_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status for bad usage or invalid input.
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "flowcraft-host",
    version,
    about = "Runs Flowcraft workflows; every node is a sandboxed WebAssembly component",
    long_about = "Runs Flowcraft workflows (JSON blueprints) whose node implementations are WebAssembly \
components (wasm32-wasip2 bundles built with the flowcraft-sdk crate).\n\n\
Quick start:\n  scripts/build-plugins.sh\n  flowcraft-host run plugins-example/orders/blueprints/order-approval.json \\\n    --plugins plugins-example/dist --context @plugins-example/orders/blueprints/order-approval.context.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one workflow to its end in embedded mode and print {"runId","status","context","errors"}.
    Run(embedded::RunArgs),
    /// Continue a run saved with `run --state FILE` that ended awaiting.
    Resume(embedded::ResumeArgs),
    /// Check blueprint files and print every problem found.
    Validate(validate_cmd::ValidateArgs),
    /// Print a blueprint as a Mermaid flowchart (with node states from --state).
    Graph(graph::GraphArgs),
    /// Inspect plugin bundles.
    #[command(subcommand)]
    Plugins(plugins_cmd::PluginsCommand),
}

/// Where node bundles come from (shared by several commands).
#[derive(Args, Clone)]
struct PluginArgs {
    /// Directory of node bundles (*.wasm).
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_PLUGINS")]
    plugins: PathBuf,
    /// Where compiled bundles are cached [default: DIR/.cache].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flowcraft-host: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => embedded::run(args).await,
            Command::Resume(args) => embedded::resume(args).await,
            Command::Validate(args) => validate_cmd::validate(args).await,
            Command::Graph(args) => graph::graph(args),
            Command::Plugins(command) => plugins_cmd::plugins(command).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("flowcraft-host: {error:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
