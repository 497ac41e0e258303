//! `flowcraft-host`: runs Flowcraft workflows whose nodes are sandboxed
//! WebAssembly components.
//!
//! This binary only parses flags, builds the stores and the plugin runtime,
//! and starts the engine; all workflow logic lives in `flowcraft-core`.

mod config;
mod distributed;
mod embedded;
mod graph;
mod inputs;
mod plugin_source;
mod plugins_cmd;
mod registry_auth;
mod remote;
mod scaffold;
mod serve;
mod setup;
mod validate_cmd;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of the system allocator: JSON contexts are many small, short-lived
/// allocations made on every tokio thread, which glibc malloc serves slowly and keeps as
/// fragmented per-thread arenas (see the payload rows in `bench/results/`).
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors of the Azure SDK crates capture a backtrace when `RUST_BACKTRACE`
/// is set, and some are made (and dropped) on every request, so a busy
/// worker would spend a noticeable share of its CPU unwinding for
/// backtraces that are never shown. Unless `RUST_LIB_BACKTRACE` says
/// otherwise, library errors capture none; panics still print theirs under
/// `RUST_BACKTRACE`.
fn skip_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists, so nothing reads the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

/// Before its first request the Cosmos DB SDK asks the Azure instance
/// metadata service (169.254.169.254) for the VM's id, for its user agent,
/// through an HTTP client of its own: a client command that lives for one
/// request pays that at every start, and up to 2 s where that address drops
/// packets (outside Azure). Unless `COSMOS_DISABLE_IMDS` says otherwise,
/// client commands skip it; a worker asks once when it starts.
fn skip_vm_metadata_probe() {
    if std::env::var_os("COSMOS_DISABLE_IMDS").is_none() {
        // SAFETY: called in `main` before the runtime starts, while this is
        // the only thread, so nothing reads the environment concurrently.
        unsafe { std::env::set_var("COSMOS_DISABLE_IMDS", "1") };
    }
}

/// `mi_option_purge_delay` in mimalloc's option enum (the bindings leave
/// most options out "for stability"; its value is the same in v2 and v3).
const MIMALLOC_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc keeps memory it no longer uses for a second (`purge_delay`)
/// before giving it back to the kernel. In a worker, large short-lived
/// buffers (request bodies of big contexts) then stay resident long after
/// they are freed, which raises the worker's peak RSS on large payloads
/// without saving CPU per node-job (see the payload rows in
/// `bench/results/`). A short embedded run keeps the delay, since returning
/// memory at once only adds to its run time. The `MIMALLOC_PURGE_DELAY`
/// environment variable still decides when set.
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option, which mimalloc reads whenever it
        // considers a purge; called before the worker's threads start.
        unsafe { libmimalloc_sys::mi_option_set(MIMALLOC_PURGE_DELAY, 0) };
    }
}

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
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command: run a worker that takes jobs from the Azure queue.
    #[command(flatten)]
    worker: worker::WorkerArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run one workflow to its end in embedded mode and print {"runId","status","context","errors"} (and "warnings" when there are any).
    Run(embedded::RunArgs),
    /// Run workers and the HTTP API in one process: on Azure given the Azure settings, else
    /// keeping runs durably in a local SQLite database (--data-dir); see README "serve".
    Serve(serve::ServeArgs),
    /// Resume an awaiting run: on Azure (RUN_ID) or saved by `run --state FILE`.
    Resume(embedded::ResumeArgs),
    /// Start a run on Azure: write its documents the upstream way, enqueue its start nodes, print its id.
    Start(distributed::StartArgs),
    /// Print a run's status document (and progress) as JSON.
    Status(distributed::RunArgs),
    /// Block until a run is over (or awaiting) and print its status document.
    Wait(distributed::WaitArgs),
    /// Re-start stalled runs; prints {stalledRuns, reconciledRuns, failedRuns}.
    Reconcile(distributed::ReconcileArgs),
    /// Cancel a run: its queued jobs are dropped, workers interrupt its running nodes (their
    /// results are dropped), its status becomes cancelled.
    Cancel(distributed::RunArgs),
    /// Re-run a failed run from its failed nodes (completed nodes keep their outputs): on Azure
    /// (RUN_ID) or saved by `run --state FILE`.
    ///
    /// The failed nodes, and those that were scheduled when the run failed, run again with
    /// attempts counting from 1; the run's errors move to `retriedErrors`; its status goes back
    /// to running and is published again when it ends. `--context` sets keys before the nodes
    /// run (e.g. the corrected input a node failed on). Only a failed run can be retried; of two
    /// retries at once, one wins. Prints the status like `status` (Azure) or `run` (--state).
    Retry(embedded::RetryArgs),
    /// Inspect or replay the poison queue (`<queue>-poison`).
    #[command(subcommand)]
    Poison(distributed::PoisonCommand),
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
    /// Node bundles: a directory of *.wasm files or a bundle list (a .toml file of registry
    /// references and files).
    #[arg(long, value_name = "DIR|LIST", env = "FLOWCRAFT_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Where pulled and compiled bundles are kept [default: flowcraft-host in the user's cache directory, $XDG_CACHE_HOME or ~/.cache].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Entra ID credential for Azure Container Registries a bundle list names (without a
    /// login in Docker's config.json); the identity needs AcrPull.
    #[arg(long, value_name = "KIND", env = "FLOWCRAFT_REGISTRY_CREDENTIAL", value_parser = config::credential_parser())]
    registry_credential: Option<flowcraft_azure::credential::CredentialKind>,
}

impl PluginArgs {
    /// The bundle directory, which this command needs.
    fn dir(&self) -> anyhow::Result<&std::path::Path> {
        self.plugins.as_deref().ok_or_else(|| {
            anyhow::anyhow!("--plugins DIR|LIST is required (or set FLOWCRAFT_PLUGINS)")
        })
    }
}

fn main() -> ExitCode {
    skip_library_backtraces();
    let cli = Cli::parse();
    // The worker (alone or in `serve`) runs many jobs at once on every core. Everything else —
    // above all an embedded run, whose jobs mostly follow one another — runs
    // on this thread: handing each job to another thread cost more than the
    // job (a 1000-node chain took twice as long on two threads).
    let mut builder = if matches!(cli.command, None | Some(Command::Serve(_))) {
        return_freed_memory_promptly();
        tokio::runtime::Builder::new_multi_thread()
    } else {
        skip_vm_metadata_probe();
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flowcraft-host: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            None => worker::serve(cli.worker).await,
            Some(Command::Serve(args)) => serve::serve(args).await,
            Some(Command::Run(args)) => embedded::run(args).await,
            Some(Command::Resume(args)) if args.is_embedded() => embedded::resume(args).await,
            Some(Command::Resume(args)) => distributed::resume(args).await,
            Some(Command::Start(args)) => distributed::start(args).await,
            Some(Command::Status(args)) => distributed::status(args).await,
            Some(Command::Wait(args)) => distributed::wait(args).await,
            Some(Command::Reconcile(args)) => distributed::reconcile(args).await,
            Some(Command::Cancel(args)) => distributed::cancel(args).await,
            Some(Command::Retry(args)) if args.is_embedded() => embedded::retry(args).await,
            Some(Command::Retry(args)) => distributed::retry(args).await,
            Some(Command::Poison(command)) => distributed::poison(command).await,
            Some(Command::Validate(args)) => validate_cmd::validate(args).await,
            Some(Command::Graph(args)) => graph::graph(args),
            Some(Command::Plugins(command)) => plugins_cmd::plugins(command).await,
        }
    });
    setup::finish_traces(&runtime);
    setup::flush_logs();
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("flowcraft-host: {}", error_line(&error));
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `error` and its causes on one line, each fact once: a cause whose text
/// an outer message already quotes is left out.
pub(crate) fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn an_error_line_says_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let error = anyhow::Error::new(io)
            .context(format!(
                "cannot read plugins directory x: {}; check --plugins",
                std::io::Error::from(std::io::ErrorKind::NotFound)
            ))
            .context("cannot load plugins from x");
        assert_eq!(
            super::error_line(&error),
            "cannot load plugins from x: cannot read plugins directory x: entity not found; check --plugins"
        );
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The option index names the purge delay: its default (1000 ms in
    /// mimalloc v3) is the only option default of that value, and setting it
    /// to 0 reads back as 0.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        use libmimalloc_sys::{mi_option_get, mi_option_set};
        let option = super::MIMALLOC_PURGE_DELAY;
        // SAFETY: reads and writes one integer option of this test process.
        unsafe {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(mi_option_get(option), 1000);
            }
            mi_option_set(option, 0);
            assert_eq!(mi_option_get(option), 0);
        }
    }
}
