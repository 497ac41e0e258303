//! A loaded blueprint, ready to execute: the blueprint, its analysis and its
//! expressions parsed once, plus the registry of loaded plans.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::analysis::{Analysis, LOOP_CONTROLLER};
use crate::blueprint::Blueprint;
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
        for node in blueprint.nodes.iter().filter(|n| n.uses == LOOP_CONTROLLER) {
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

/// The blueprints this process can execute, by id.
#[derive(Debug, Default)]
pub struct PlanRegistry {
    plans: RwLock<HashMap<String, Arc<Plan>>>,
}

impl PlanRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a plan.
    pub fn insert(&self, plan: Plan) -> Arc<Plan> {
        let plan = Arc::new(plan);
        self.plans
            .write()
            .expect("plan registry lock")
            .insert(plan.blueprint.id.clone(), plan.clone());
        plan
    }

    pub fn get(&self, blueprint_id: &str) -> Option<Arc<Plan>> {
        self.plans
            .read()
            .expect("plan registry lock")
            .get(blueprint_id)
            .cloned()
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .plans
            .read()
            .expect("plan registry lock")
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}
