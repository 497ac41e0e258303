//! Blueprint validation: every problem found, one message each, naming the
//! node or edge and what is wrong. Run before a blueprint is accepted, so that
//! mistakes surface at load time instead of as stalled or failed runs.

use std::collections::HashSet;
use std::fmt;

use crate::analysis::LOOP_CONTROLLER;
use crate::blueprint::Blueprint;
use crate::builtin::is_builtin;
use crate::expression::{EvaluatorMode, Expression};
use crate::plan::requested_mode;

/// One thing wrong with a blueprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `node 'A'`, `edge #2 (A -> B)`, `metadata`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// What the validator may consult besides the blueprint.
pub struct Catalog<'a> {
    /// Whether a non-built-in `uses` key has an implementation.
    pub implements: &'a dyn Fn(&str) -> bool,
    /// Whether a blueprint id is known (for subflows); `None` skips the check.
    pub knows_blueprint: Option<&'a dyn Fn(&str) -> bool>,
    /// The expression language used when the blueprint does not name one.
    pub evaluator: EvaluatorMode,
}

/// All problems of `blueprint`; empty when it is valid.
pub fn validate(blueprint: &Blueprint, catalog: &Catalog<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut report =
        |location: String, message: String| problems.push(Problem { location, message });
    let node_location = |id: &str| format!("node '{id}'");
    let mut ids = HashSet::new();
    for node in &blueprint.nodes {
        if !ids.insert(node.id.as_str()) {
            report(
                node_location(&node.id),
                "duplicate node id; node ids must be unique".into(),
            );
        }
    }
    let knows = |uses: &str| is_builtin(uses) || (catalog.implements)(uses);
    let mode = requested_mode(blueprint).unwrap_or(catalog.evaluator);
    for node in &blueprint.nodes {
        let here = node_location(&node.id);
        if !knows(&node.uses) {
            report(
                here.clone(),
                format!(
                    "unknown node type (uses) '{}': no loaded bundle implements it and it is not a built-in; add a bundle to --plugins or fix the key",
                    node.uses
                ),
            );
        }
        if let Some(config) = &node.config {
            if let Some(fallback) = &config.fallback
                && !ids.contains(fallback.as_str())
            {
                report(
                    here.clone(),
                    format!("fallback '{fallback}' is not a node of this blueprint"),
                );
            }
            if let Some(strategy) = &config.join_strategy
                && strategy != "all"
                && strategy != "any"
            {
                report(
                    here.clone(),
                    format!("joinStrategy '{strategy}' is invalid; use \"all\" or \"any\""),
                );
            }
        }
        let params = node.params_or_empty();
        match node.uses.as_str() {
            LOOP_CONTROLLER => {
                let has_continue = blueprint
                    .edges
                    .iter()
                    .any(|e| e.source == node.id && e.action.as_deref() == Some("continue"));
                if !has_continue {
                    report(
                        here.clone(),
                        "loop controller has no outgoing edge with action \"continue\"".into(),
                    );
                }
                let condition = params.get("condition").and_then(|c| c.as_str());
                match condition {
                    None => report(
                        here.clone(),
                        "loop controller needs params.condition (an expression)".into(),
                    ),
                    Some(source) => {
                        check_expression(source, mode, &here, "params.condition", &mut report)
                    }
                }
            }
            "batch-scatter" => {
                if let Some(worker) = params.get("workerUsesKey").and_then(|w| w.as_str())
                    && !knows(worker)
                {
                    report(
                        here.clone(),
                        format!("params.workerUsesKey '{worker}' is not an implemented node type"),
                    );
                }
            }
            "subflow" => {
                if let (Some(known), Some(child)) = (
                    catalog.knows_blueprint,
                    params.get("blueprintId").and_then(|b| b.as_str()),
                ) && !known(child)
                {
                    report(
                        here.clone(),
                        format!(
                            "params.blueprintId '{child}' is not a loaded blueprint; pass it with --blueprints"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    for (index, edge) in blueprint.edges.iter().enumerate() {
        let here = format!("edge #{index} ({} -> {})", edge.source, edge.target);
        for (role, id) in [("source", &edge.source), ("target", &edge.target)] {
            if !ids.contains(id.as_str()) {
                report(
                    here.clone(),
                    format!("{role} '{id}' is not a node of this blueprint"),
                );
            }
        }
        if let Some(condition) = &edge.condition {
            check_expression(condition, mode, &here, "condition", &mut report);
        }
        if let Some(transform) = &edge.transform {
            check_expression(transform, mode, &here, "transform", &mut report);
        }
    }
    if let Err(message) = blueprint.plugin_bindings() {
        report("metadata".into(), message);
    }
    let strict = blueprint
        .metadata
        .as_ref()
        .and_then(|m| m.get("strict"))
        .and_then(|s| s.as_bool())
        .unwrap_or(false);
    if strict && !crate::analysis::Analysis::of(blueprint).is_dag() {
        report(
            "metadata".into(),
            format!(
                "Workflow '{}' failed strictness check: Cycles are not allowed. (metadata.strict is true)",
                blueprint.id
            ),
        );
    }
    problems
}

fn check_expression(
    source: &str,
    mode: EvaluatorMode,
    location: &str,
    role: &str,
    report: &mut impl FnMut(String, String),
) {
    // Property mode keeps upstream's behaviour: an invalid path evaluates to
    // undefined at run time, so it is not a load-time error.
    if mode == EvaluatorMode::Safe
        && let Err(error) = Expression::parse(source, mode)
    {
        report(
            location.to_owned(),
            format!("{role} does not parse: {error}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let blueprint = Blueprint::from_json(text).unwrap();
        let implements = |uses: &str| uses == "const";
        let catalog = Catalog {
            implements: &implements,
            knows_blueprint: None,
            evaluator: EvaluatorMode::Safe,
        };
        validate(&blueprint, &catalog)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_blueprint_has_no_problems() {
        assert!(problems(r#"{"id":"b","nodes":[{"id":"A","uses":"const"},{"id":"B","uses":"wait"}],"edges":[{"source":"A","target":"B","condition":"result.output > 1"}]}"#).is_empty());
    }

    #[test]
    fn every_problem_is_reported_once_with_its_location() {
        let found = problems(
            r#"{"id":"b","nodes":[{"id":"A","uses":"const","config":{"fallback":"Z","joinStrategy":"most"}},
               {"id":"A","uses":"nope"},{"id":"L","uses":"loop-controller","params":{"condition":"x >"}}],
               "edges":[{"source":"A","target":"Q","transform":"input *"}]}"#,
        );
        let expected = [
            "node 'A': duplicate node id",
            "node 'A': unknown node type (uses) 'nope'",
            "node 'A': fallback 'Z' is not a node",
            "node 'A': joinStrategy 'most' is invalid",
            "node 'L': loop controller has no outgoing edge",
            "node 'L': params.condition does not parse",
            "edge #0 (A -> Q): target 'Q' is not a node",
            "edge #0 (A -> Q): transform does not parse",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for prefix in expected {
            assert!(
                found.iter().any(|p| p.starts_with(prefix)),
                "missing {prefix}: {found:#?}"
            );
        }
    }
}
