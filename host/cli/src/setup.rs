//! Building the engine's parts from what the user configured: the plugin
//! runtime over a bundle directory or list, the validated, prepared blueprints, a
//! worker's engine settings, and the process's log.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flowcraft_azure::credential::CredentialKind;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::engine::EngineSettings;
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::validate::{Catalog, validate};
use flowcraft_plugins::{Grants, PluginConfig, PluginHost};

use crate::PluginArgs;
use crate::inputs::read_blueprint_dir;
use crate::plugin_source::{BundleUpdates, PluginSource};
use flowcraft_core::telemetry::TRACE_TARGET;
use flowcraft_telemetry::Traces;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Loads the bundles `--plugins` names (a directory or a bundle list) with the
/// given capability grants; `calls` is how many node calls may run at once
/// (default: the plugin runtime's own).
pub async fn load_plugins(
    plugins: &PluginArgs,
    grants: BTreeMap<String, Grants>,
    calls: Option<usize>,
) -> Result<PluginHost> {
    let cache_dir = plugins.cache_dir.clone();
    let source = PluginSource::open(
        plugins.dir()?,
        cache_dir.as_deref(),
        plugins.registry_credential,
    )?;
    Ok(source
        .load(plugin_config(cache_dir, grants, calls))
        .await?
        .host)
}

/// The plugin runtime's settings (its bundle directory is the source's).
pub fn plugin_config(
    cache_dir: Option<PathBuf>,
    grants: BTreeMap<String, Grants>,
    calls: Option<usize>,
) -> PluginConfig {
    let mut config = PluginConfig::new(".");
    config.cache_dir = cache_dir;
    config.grants = grants;
    if let Some(calls) = calls {
        // Each instance slot keeps some memory resident once used: as many
        // slots as calls can run (and two for hot-swap checks), not more.
        config.max_instances = u32::try_from(calls.saturating_add(2)).unwrap_or(u32::MAX);
    }
    config
}

/// Validates every blueprint and prepares it; all problems are reported at once.
/// `implements` says whether a non-built-in node type is available.
pub fn plan_all(
    blueprints: &[Blueprint],
    implements: &dyn Fn(&str) -> bool,
    evaluator: EvaluatorMode,
) -> Result<Arc<PlanRegistry>> {
    let ids: Vec<&str> = blueprints.iter().map(|b| b.id.as_str()).collect();
    let knows = |id: &str| ids.contains(&id);
    let catalog = Catalog {
        implements,
        knows_blueprint: Some(&knows),
        evaluator,
    };
    let mut report = Vec::new();
    for blueprint in blueprints {
        for problem in validate(blueprint, &catalog) {
            report.push(format!("blueprint '{}': {problem}", blueprint.id));
        }
    }
    if !report.is_empty() {
        bail!("invalid blueprint:\n  {}", report.join("\n  "));
    }
    let plans = blueprints
        .iter()
        .map(|blueprint| {
            Plan::new(blueprint.clone(), evaluator)
                .with_context(|| format!("blueprint '{}'", blueprint.id))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(PlanRegistry::new(plans)))
}

/// Log lines waiting for stderr at most; more are dropped (see [`init_logging`]).
/// A line is usually a few hundred bytes; a guest's record at most about 10 KiB.
const LOG_QUEUE_LINES: usize = 8_192;

/// The log writer's thread, kept until [`flush_logs`] drops it.
static LOG_WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Logs to stderr: `info` (per-node progress) or, with `quiet`, warnings
/// only; `FLOWCRAFT_LOG` overrides the filter. Colours only on a terminal.
///
/// Records go through a queue of [`LOG_QUEUE_LINES`] lines that a thread of
/// its own writes to stderr, so that logging never waits for stderr: when
/// stderr is slow or blocked and the queue is full, new lines are dropped
/// instead (a node's log call must never hold it past its time limit).
///
/// When the `OTEL_EXPORTER_OTLP_*` environment names an endpoint, the runs'
/// traces are exported too ([`Traces`]); the trace spans stay out of the log.
/// Call [`finish_traces`] and [`flush_logs`] before the process exits.
pub fn init_logging(quiet: bool) {
    let level = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWCRAFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let (writer, guard) = log_queue(std::io::stderr());
    *LOG_WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    // Colours only for a person at a terminal, and never with NO_COLOR.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // A static filter (not a closure), so that each call site's interest is
    // decided once: the log's filter is consulted on every job's hot path.
    let not_a_trace_span = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target(TRACE_TARGET, LevelFilter::OFF);
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(writer)
        .with_target(false)
        .without_time()
        .compact()
        .with_filter(filter.and(not_a_trace_span));
    let (traces, problem) = match Traces::from_environment() {
        Ok(traces) => (traces, None),
        Err(problem) => (None, Some(problem)),
    };
    let export = traces.as_ref().map(|traces| traces.layer());
    tracing_subscriber::registry().with(log).with(export).init();
    if let Some(problem) = problem {
        tracing::error!("runs are not traced: {problem}");
    }
    *TRACES.lock().unwrap_or_else(|e| e.into_inner()) = traces;
}

/// This process's trace export, kept until [`finish_traces`].
static TRACES: Mutex<Option<Traces>> = Mutex::new(None);

/// Exports the trace spans still queued and stops the export, driving
/// `runtime` meanwhile (a gRPC export needs it). A no-op without traces.
pub fn finish_traces(runtime: &tokio::runtime::Runtime) {
    let Some(traces) = TRACES.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let shutdown = async move { tokio::task::spawn_blocking(move || traces.shutdown()).await };
    let _ = runtime.block_on(shutdown);
}

/// A writer that queues lines for `sink`, dropping them when the queue is full.
fn log_queue<W: Write + Send + 'static>(sink: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("flowcraft-log")
        .finish(sink)
}

/// Writes the queued log lines to stderr (waiting at most about a second)
/// and stops the log writer; later records are dropped. A no-op without
/// [`init_logging`].
pub fn flush_logs() {
    drop(LOG_WRITER.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// Runs whose latest context a worker remembers, per job it runs at once: a
/// remembered context serves the job that follows on the same worker (a
/// continuation, or a join whose other arrivals came here), so a few per
/// slot are enough, and large contexts do not pile up.
const CONTEXTS_PER_JOB: usize = 2;

/// What a worker runs with besides its backend: the plugin runtime (kept
/// current for hot swap) and the blueprints' plans.
pub struct WorkerRuntime {
    pub host: Arc<PluginHost>,
    pub updates: BundleUpdates,
    pub plans: Arc<PlanRegistry>,
}

/// Where a worker's bundles come from and how it follows their changes.
pub struct WorkerPlugins {
    /// `--plugins`: a directory or a bundle list.
    pub source: PathBuf,
    /// `--cache-dir`: pulled and compiled bundles.
    pub cache_dir: Option<PathBuf>,
    /// `--plugins-poll`.
    pub poll: Duration,
    /// The Entra ID credential for Azure Container Registries.
    pub entra: Option<CredentialKind>,
    pub grants: BTreeMap<String, Grants>,
}

impl WorkerRuntime {
    /// Loads the bundles of `plugins` (sized for `concurrency` jobs at once,
    /// followed for changes) and plans the blueprints of `blueprints`.
    pub async fn load(
        plugins: WorkerPlugins,
        blueprints: &Path,
        concurrency: usize,
    ) -> Result<Self> {
        let source =
            PluginSource::open(&plugins.source, plugins.cache_dir.as_deref(), plugins.entra)?;
        let config = plugin_config(plugins.cache_dir, plugins.grants, Some(concurrency));
        let loaded = source.load(config).await?;
        let updates = source.follow(&loaded, plugins.poll)?;
        let host = loaded.host;
        let blueprints = read_blueprint_dir(blueprints)?;
        let plans = plan_all(
            &blueprints,
            &|uses| host.implements(uses),
            EvaluatorMode::Safe,
        )?;
        Ok(Self {
            host: Arc::new(host),
            updates,
            plans,
        })
    }

    /// The engine settings of a worker running `concurrency` jobs at once;
    /// `mixed_fleet` when TypeScript workers share the runs.
    pub fn engine_settings(&self, concurrency: usize, mixed_fleet: bool) -> EngineSettings {
        EngineSettings {
            // TypeScript workers write contexts without the settlement count the
            // cache is checked against, and schedule jobs the record never saw.
            context_cache: if mixed_fleet {
                0
            } else {
                concurrency * CONTEXTS_PER_JOB
            },
            shared_with_upstream: mixed_fleet,
            default_node_timeout: self.host.config().default_timeout,
            ..EngineSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::mpsc;

    use super::*;

    /// A sink that blocks its first write until released, as a full pipe
    /// nobody reads would; then counts lines.
    struct BlockedPipe {
        release: Option<mpsc::Receiver<()>>,
        lines: mpsc::Sender<()>,
    }

    impl Write for BlockedPipe {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if let Some(release) = self.release.take() {
                release.recv().ok();
            }
            self.lines.send(()).ok();
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logging_never_waits_for_a_blocked_stderr() {
        let (release, released) = mpsc::channel();
        let (line, lines) = mpsc::channel();
        let sink = BlockedPipe {
            release: Some(released),
            lines: line,
        };
        let (mut writer, guard) = log_queue(sink);
        let sent = LOG_QUEUE_LINES + 100;
        // Every write returns while the sink is blocked: the queue fills,
        // then lines are dropped.
        for n in 0..sent {
            writer.write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        let dropped = writer.error_counter().dropped_lines();
        assert!((99..=100).contains(&dropped), "{dropped} lines dropped");

        release.send(()).unwrap();
        drop(guard);
        assert_eq!(
            lines.try_iter().count(),
            sent - dropped,
            "the rest is written"
        );
    }
}
