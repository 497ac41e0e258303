//! Building the engine's parts from what the user configured: the plugin
//! runtime over a bundle directory, and the validated, prepared blueprints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::validate::{Catalog, validate};
use flowcraft_plugins::{Grants, PluginConfig, PluginHost};

/// Loads every bundle of `dir` with the given capability grants.
pub async fn load_plugins(
    dir: &Path,
    cache_dir: Option<PathBuf>,
    grants: BTreeMap<String, Grants>,
) -> Result<PluginHost> {
    let mut config = PluginConfig::new(dir);
    config.cache_dir = cache_dir;
    config.grants = grants;
    PluginHost::load(config)
        .await
        .with_context(|| format!("cannot load plugins from {}", dir.display()))
}

/// Validates every blueprint and prepares it; all problems are reported at once.
pub fn plan_all(
    blueprints: &[Blueprint],
    host: &PluginHost,
    evaluator: EvaluatorMode,
) -> Result<Arc<PlanRegistry>> {
    let implements = |uses: &str| host.implements(uses);
    let ids: Vec<&str> = blueprints.iter().map(|b| b.id.as_str()).collect();
    let knows = |id: &str| ids.contains(&id);
    let catalog = Catalog {
        implements: &implements,
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
