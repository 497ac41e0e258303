//! Building the engine's parts from what the user configured: the plugin
//! runtime over a bundle directory, and the validated, prepared blueprints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::validate::{Catalog, validate};
use flowcraft_plugins::{Grants, PluginConfig, PluginHost};

/// Loads every bundle of `dir` with the given capability grants; `calls` is
/// how many node calls may run at once (default: the plugin runtime's own).
pub async fn load_plugins(
    dir: &Path,
    cache_dir: Option<PathBuf>,
    grants: BTreeMap<String, Grants>,
    calls: Option<usize>,
) -> Result<PluginHost> {
    let mut config = PluginConfig::new(dir);
    config.cache_dir = cache_dir;
    config.grants = grants;
    if let Some(calls) = calls {
        // Each instance slot keeps some memory resident once used: as many
        // slots as calls can run (and two for hot-swap checks), not more.
        config.max_instances = u32::try_from(calls.saturating_add(2)).unwrap_or(u32::MAX);
    }
    PluginHost::load(config)
        .await
        .with_context(|| format!("cannot load plugins from {}", dir.display()))
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
    let registry = PlanRegistry::new();
    for blueprint in blueprints {
        let plan = Plan::new(blueprint.clone(), evaluator)
            .with_context(|| format!("blueprint '{}'", blueprint.id))?;
        registry.insert(plan);
    }
    Ok(Arc::new(registry))
}

/// Logs to stderr: `info` (per-node progress) or, with `quiet`, warnings
/// only; `FLOWCRAFT_LOG` overrides the filter.
pub fn init_logging(quiet: bool) {
    let level = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWCRAFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .compact()
        .init();
}
