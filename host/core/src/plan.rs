//! A loaded blueprint, ready to execute: the blueprint, its analysis and its
//! expressions parsed once, plus the registry of loaded plans.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::analysis::Analysis;
use crate::blueprint::{Blueprint, NodeDefinition};
use crate::builtin::Builtin;
use crate::expression::{EvaluatorMode, Expression, ExpressionError};

/// A blueprint prepared for execution.
#[derive(Debug)]
pub struct Plan {
    pub blueprint: Blueprint,
    pub analysis: Analysis,
    pub mode: EvaluatorMode,
    /// Per edge (same index as `blueprint.edges`).
    pub conditions: Vec<Option<Expression>>,
    pub transforms: Vec<Option<Expression>>,
    /// `params.condition` of each loop controller.
    pub loop_conditions: HashMap<String, Expression>,
}

/// The evaluator a blueprint asks for in `metadata.evaluator`, if any.
pub fn requested_mode(blueprint: &Blueprint) -> Option<EvaluatorMode> {
    match blueprint.metadata.as_ref()?.get("evaluator")?.as_str()? {
        "property" => Some(EvaluatorMode::Property),
        "safe" => Some(EvaluatorMode::Safe),
        _ => None,
    }
}

impl Plan {
    /// The blueprint's node with this id, if any (found by index).
    pub fn node(&self, id: &str) -> Option<&NodeDefinition> {
        self.analysis.node(&self.blueprint, id)
    }

    /// Prepares `blueprint`; `default_mode` applies unless `metadata.evaluator`
    /// names one. In `property` mode an expression the PropertyEvaluator would
    /// reject evaluates to `undefined`, as upstream; in `safe` mode it is an error.
    pub fn new(blueprint: Blueprint, default_mode: EvaluatorMode) -> Result<Self, ExpressionError> {
        let mode = requested_mode(&blueprint).unwrap_or(default_mode);
        let parse = |source: &Option<String>| -> Result<Option<Expression>, ExpressionError> {
            source
                .as_deref()
                .map(|text| parse_in(text, mode))
                .transpose()
        };
        let mut conditions = Vec::with_capacity(blueprint.edges.len());
        let mut transforms = Vec::with_capacity(blueprint.edges.len());
        for edge in &blueprint.edges {
            conditions.push(parse(&edge.condition)?);
            transforms.push(parse(&edge.transform)?);
        }
        let mut loop_conditions = HashMap::new();
        for node in blueprint
            .nodes
            .iter()
            .filter(|n| n.uses == Builtin::LoopController.as_str())
        {
            let source = node
                .params
                .as_ref()
                .and_then(|p| p.get("condition"))
                .and_then(|c| c.as_str())
                .unwrap_or("");
            loop_conditions.insert(node.id.clone(), parse_in(source, mode)?);
        }
        let analysis = Analysis::of(&blueprint);
        Ok(Self {
            blueprint,
            analysis,
            mode,
            conditions,
            transforms,
            loop_conditions,
        })
    }
}

fn parse_in(source: &str, mode: EvaluatorMode) -> Result<Expression, ExpressionError> {
    match mode {
        EvaluatorMode::Safe => Expression::parse(source, mode),
        EvaluatorMode::Property => Ok(Expression::parse_lenient(source, mode)),
    }
}

/// The blueprints this process can execute, by id and version. Several
/// versions of one blueprint may be loaded at once: a run keeps executing
/// the version it started with. Blueprints can be added while runs execute
/// ([`Self::add`]); readers see each addition whole.
#[derive(Debug)]
pub struct PlanRegistry {
    plans: ArcSwap<HashMap<String, Vec<Arc<Plan>>>>,
}

/// What [`PlanRegistry::add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// A new blueprint or a new version: new runs start with it.
    New,
    /// The same version was loaded with the same definition: nothing changed.
    Unchanged,
    /// The same version was loaded with another definition: refused, since
    /// runs of that version may be under way.
    Conflict,
}

impl PlanRegistry {
    /// A registry of `plans`. A plan replaces an earlier one of the same id
    /// and version; of each id, the last plan is the version new runs start
    /// with.
    pub fn new(plans: impl IntoIterator<Item = Plan>) -> Self {
        let mut registry: HashMap<String, Vec<Arc<Plan>>> = HashMap::new();
        for plan in plans {
            let versions = registry.entry(plan.blueprint.id.clone()).or_default();
            let version = plan.blueprint.version_value();
            versions.retain(|loaded| loaded.blueprint.version_value() != version);
            versions.push(Arc::new(plan));
        }
        Self {
            plans: ArcSwap::from_pointee(registry),
        }
    }

    /// Adds `plan` as the version new runs of its blueprint start with,
    /// unless that version is loaded already.
    pub fn add(&self, plan: Plan) -> Added {
        let plan = Arc::new(plan);
        let mut added = Added::New;
        self.plans.rcu(|current| {
            let mut next = HashMap::clone(current);
            let versions = next.entry(plan.blueprint.id.clone()).or_default();
            let version = plan.blueprint.version_value();
            added = match versions
                .iter()
                .find(|loaded| loaded.blueprint.version_value() == version)
            {
                Some(loaded) if loaded.blueprint == plan.blueprint => Added::Unchanged,
                Some(_) => Added::Conflict,
                None => {
                    versions.push(plan.clone());
                    Added::New
                }
            };
            next
        });
        added
    }

    /// The version new runs of `blueprint_id` start with.
    pub fn get(&self, blueprint_id: &str) -> Option<Arc<Plan>> {
        self.plans.load().get(blueprint_id)?.last().cloned()
    }

    /// The loaded plan of `blueprint_id` whose `blueprintVersion` is `version`.
    pub fn get_version(
        &self,
        blueprint_id: &str,
        version: &serde_json::Value,
    ) -> Option<Arc<Plan>> {
        self.plans
            .load()
            .get(blueprint_id)?
            .iter()
            .find(|plan| plan.blueprint.version_value() == *version)
            .cloned()
    }

    /// The loaded versions of `blueprint_id`, oldest first.
    pub fn versions(&self, blueprint_id: &str) -> Vec<serde_json::Value> {
        self.plans
            .load()
            .get(blueprint_id)
            .map(|versions| {
                versions
                    .iter()
                    .map(|p| p.blueprint.version_value())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The version new runs start with of every blueprint, by id.
    pub fn latest(&self) -> Vec<Arc<Plan>> {
        let plans = self.plans.load();
        let mut latest: Vec<Arc<Plan>> = plans.values().filter_map(|v| v.last().cloned()).collect();
        latest.sort_by(|a, b| a.blueprint.id.cmp(&b.blueprint.id));
        latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(version: &str) -> Plan {
        let text =
            format!(r#"{{"id":"b","metadata":{{"version":"{version}"}},"nodes":[],"edges":[]}}"#);
        Plan::new(Blueprint::from_json(&text).unwrap(), EvaluatorMode::Safe).unwrap()
    }

    #[test]
    fn several_versions_stay_loaded_and_the_last_starts_runs() {
        let registry = PlanRegistry::new([plan("1"), plan("2"), plan("1")]);
        assert_eq!(registry.get("b").unwrap().blueprint.version(), Some("1"));
        assert!(registry.get_version("b", &serde_json::json!("2")).is_some());
        assert!(registry.get_version("b", &serde_json::json!("3")).is_none());
        assert_eq!(registry.versions("b").len(), 2);
    }

    #[test]
    fn an_added_version_starts_new_runs_and_a_changed_one_is_refused() {
        let registry = PlanRegistry::new([plan("1")]);
        assert_eq!(registry.add(plan("2")), Added::New);
        assert_eq!(registry.get("b").unwrap().blueprint.version(), Some("2"));
        assert_eq!(registry.add(plan("1")), Added::Unchanged);
        let mut changed = plan("1");
        changed.blueprint.nodes.push(
            Blueprint::from_json(r#"{"id":"x","nodes":[{"id":"n","uses":"echo"}],"edges":[]}"#)
                .unwrap()
                .nodes
                .remove(0),
        );
        assert_eq!(registry.add(changed), Added::Conflict);
        assert_eq!(registry.versions("b").len(), 2);
        assert_eq!(registry.latest().len(), 1);
    }
}
