//! Running against the local Azure stand-ins: settings from the environment
//! (`eval "$(scripts/azure-local.sh env)"`) with a queue and database of the
//! test's own, and `flowcraft-host` worker processes.

use std::process::{Child, Command, Stdio};

use flowcraft_azure::backend::AzureConfig;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::runner::{NodeCall, NodeFailure, NodeOutcome, NodeRunner, PinError, Pins};

/// The local services' settings, with a queue and database of this test's own.
pub fn azure_config(tag: &str) -> AzureConfig {
    let pid = std::process::id();
    AzureConfig::from_environment(&format!("{tag}-{pid}"), &format!("flowcraft-{tag}-{pid}"))
        .unwrap_or_else(|problem| panic!("{problem}"))
}

/// Worker processes, killed when dropped.
pub struct Workers(std::sync::Mutex<Vec<Child>>);

impl Workers {
    /// Panics if a worker has exited (its stderr is in the test output).
    pub fn assert_running(&self) {
        for child in self.0.lock().unwrap().iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("a worker exited with {status}");
            }
        }
    }

    /// Worker processes started by the caller.
    pub fn from_children(children: Vec<Child>) -> Self {
        Self(std::sync::Mutex::new(children))
    }

    pub fn spawn(count: usize, config: &AzureConfig, blueprints: &std::path::Path) -> Self {
        Self::spawn_with(count, config, blueprints, &["--concurrency", "8"])
    }

    /// Like [`spawn`](Self::spawn), with worker flags of the caller's own
    /// (`--concurrency` included: it is not set otherwise).
    pub fn spawn_with(
        count: usize,
        config: &AzureConfig,
        blueprints: &std::path::Path,
        flags: &[&str],
    ) -> Self {
        Self::spawn_with_env(count, config, blueprints, flags, &[])
    }

    /// Like [`spawn_with`](Self::spawn_with), with environment variables of
    /// the caller's own.
    pub fn spawn_with_env(
        count: usize,
        config: &AzureConfig,
        blueprints: &std::path::Path,
        flags: &[&str],
        environment: &[(&str, &str)],
    ) -> Self {
        let children = (0..count)
            .map(|_| {
                worker_command(config, blueprints)
                    .args(flags)
                    .envs(environment.iter().copied())
                    .spawn()
                    .expect("a worker starts")
            })
            .collect();
        Self::from_children(children)
    }
}

/// The command line of one worker on `config`'s queue and database with the
/// example bundles (stdout discarded, stderr inherited, log level warn).
pub fn worker_command(config: &AzureConfig, blueprints: &std::path::Path) -> Command {
    worker_command_with(config, blueprints, &super::dist())
}

/// Like [`worker_command`], with the bundles of `plugins`.
pub fn worker_command_with(
    config: &AzureConfig,
    blueprints: &std::path::Path,
    plugins: &std::path::Path,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"));
    command
        .args(["--plugins", plugins.to_str().unwrap()])
        .args(["--blueprints", blueprints.to_str().unwrap()])
        .arg("--create-resources")
        .env("FLOWCRAFT_QUEUE", &config.queue)
        .env("FLOWCRAFT_DATABASE", &config.database)
        .env("FLOWCRAFT_LOG", "warn")
        .stdout(Stdio::null());
    command
}

/// `flowcraft-host start BLUEPRINT --run-id RUN --context CONTEXT --wait`
/// (60 s at most) on `config`'s queue and database, with the blueprints of
/// `blueprints`; the client exports no traces of its own. Answers its output.
pub fn start_and_wait(
    config: &AzureConfig,
    blueprints: &std::path::Path,
    blueprint: &str,
    run: &str,
    context: &str,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args([
            "start",
            blueprint,
            "--run-id",
            run,
            "--wait",
            "--timeout",
            "60",
        ])
        .args(["--context", context])
        .args(["--blueprints", blueprints.to_str().unwrap()])
        .env("FLOWCRAFT_QUEUE", &config.queue)
        .env("FLOWCRAFT_DATABASE", &config.database)
        .env("FLOWCRAFT_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap()
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in self.0.get_mut().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The node runner of a test's client engine, which starts, resumes and
/// inspects runs but never runs nodes (like `flowcraft-host start` without
/// `--plugins`): node types stay unpinned, workers use what they loaded.
pub struct NoRunner;

impl NodeRunner for NoRunner {
    fn implements(&self, _: &str) -> bool {
        true
    }

    fn pin(&self, _: &Blueprint) -> Result<Pins, PinError> {
        Ok(Pins::new())
    }

    async fn run(&self, call: NodeCall) -> NodeOutcome {
        NodeOutcome {
            context: call.context,
            result: Err(NodeFailure::fatal("the test process runs no nodes")),
        }
    }
}
