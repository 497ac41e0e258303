//! Blueprint validation: every problem found, one message each, naming the
//! node or edge and what is wrong. Run before a blueprint is accepted, so that
//! mistakes surface at load time instead of as stalled or failed runs.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::blueprint::{Blueprint, NodeDefinition};
use crate::builtin::{Builtin, is_builtin};
use crate::context::is_engine_key;
use crate::dynamic::ALLOWED_TYPES_KEY;
use crate::expression::{EvaluatorMode, Expression, MAX_SOURCE_LEN};
use crate::limits::{self, MAX_EDGES, MAX_NODES, NodeLimits, check_json_depth};
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
    let ids = check_unique_ids(blueprint, &mut report);
    check_sizes(blueprint, &mut report);
    check_metadata(blueprint, &mut report);
    let mode = requested_mode(blueprint).unwrap_or(catalog.evaluator);
    for node in &blueprint.nodes {
        check_node(blueprint, node, catalog, &ids, mode, &mut report);
    }
    check_edges(blueprint, &ids, mode, &mut report);
    check_bindings_and_strictness(blueprint, &mut report);
    problems
}

/// Where a problem of node `id` is reported.
fn node_location(id: &str) -> String {
    format!("node '{id}'")
}

/// Whether node type `uses` is a built-in or implemented by a loaded bundle.
fn knows(catalog: &Catalog<'_>, uses: &str) -> bool {
    is_builtin(uses) || (catalog.implements)(uses)
}

/// The ids of the blueprint's nodes, reporting each duplicate.
fn check_unique_ids<'a>(
    blueprint: &'a Blueprint,
    report: &mut impl FnMut(String, String),
) -> HashSet<&'a str> {
    let mut ids = HashSet::new();
    for node in &blueprint.nodes {
        if !ids.insert(node.id.as_str()) {
            report(
                node_location(&node.id),
                "duplicate node id; node ids must be unique".into(),
            );
        }
    }
    ids
}

/// A node's type, limits, params depth and config, then its built-in params.
fn check_node(
    blueprint: &Blueprint,
    node: &NodeDefinition,
    catalog: &Catalog<'_>,
    ids: &HashSet<&str>,
    mode: EvaluatorMode,
    report: &mut impl FnMut(String, String),
) {
    let here = node_location(&node.id);
    if !knows(catalog, &node.uses) {
        report(
            here.clone(),
            format!(
                "unknown node type (uses) '{}': no loaded bundle implements it and it is not a built-in; add a bundle to --plugins or fix the key",
                node.uses
            ),
        );
    }
    if let Err(error) = NodeLimits::of(node.config.as_ref()) {
        report(here.clone(), error.to_string());
    }
    if let Some(params) = &node.params
        && let Err(error) = check_json_depth("params", &params.to_string())
    {
        report(here.clone(), error.to_string());
    }
    check_node_config(node, ids, &here, report);
    check_builtin_params(blueprint, node, catalog, mode, &here, report);
}

/// A node's `config.fallback` and `config.joinStrategy`.
fn check_node_config(
    node: &NodeDefinition,
    ids: &HashSet<&str>,
    here: &str,
    report: &mut impl FnMut(String, String),
) {
    let Some(config) = &node.config else {
        return;
    };
    if let Some(fallback) = &config.fallback {
        if !ids.contains(fallback.as_str()) {
            report(
                here.to_owned(),
                format!("fallback '{fallback}' is not a node of this blueprint"),
            );
        } else if fallback == &node.id {
            report(
                here.to_owned(),
                "a node cannot be its own fallback; use config.maxRetries to run it again".into(),
            );
        }
    }
    if let Some(strategy) = &config.join_strategy
        && strategy != "all"
        && strategy != "any"
    {
        report(
            here.to_owned(),
            format!("joinStrategy '{strategy}' is invalid; use \"all\" or \"any\""),
        );
    }
}

/// The params (and, for a loop controller, the edges) each built-in node type needs.
fn check_builtin_params(
    blueprint: &Blueprint,
    node: &NodeDefinition,
    catalog: &Catalog<'_>,
    mode: EvaluatorMode,
    here: &str,
    report: &mut impl FnMut(String, String),
) {
    let params = node.params_or_empty();
    match Builtin::parse(&node.uses) {
        Some(Builtin::LoopController) => {
            let has_continue = blueprint
                .edges
                .iter()
                .any(|e| e.source == node.id && e.action.as_deref() == Some("continue"));
            if !has_continue {
                report(
                    here.to_owned(),
                    "loop controller has no outgoing edge with action \"continue\"".into(),
                );
            }
            let condition = params.get("condition").and_then(|c| c.as_str());
            match condition {
                None => report(
                    here.to_owned(),
                    "loop controller needs params.condition (an expression)".into(),
                ),
                Some(source) => check_expression(source, mode, here, "params.condition", report),
            }
        }
        Some(Builtin::Sleep) => {
            if let Err(error) = limits::sleep_duration(params.get("duration")) {
                report(here.to_owned(), error.to_string());
            }
        }
        Some(Builtin::BatchGather) => {
            if let Some(key) = params.get("outputKey").and_then(|k| k.as_str())
                && is_engine_key(key)
            {
                report(
                    here.to_owned(),
                    format!(
                        "params.outputKey '{key}' is one of the engine's context keys; choose another key"
                    ),
                );
            }
        }
        Some(Builtin::BatchScatter) => {
            if let Some(size) = params.get("chunkSize").filter(|size| !size.is_null())
                && let Err(error) = limits::chunk_size(size)
            {
                report(here.to_owned(), error.to_string());
            }
            if let Some(worker) = params.get("workerUsesKey").and_then(|w| w.as_str())
                && !knows(catalog, worker)
            {
                report(
                    here.to_owned(),
                    format!("params.workerUsesKey '{worker}' is not an implemented node type"),
                );
            }
        }
        Some(Builtin::Subflow) => {
            if let (Some(known), Some(child)) = (
                catalog.knows_blueprint,
                params.get("blueprintId").and_then(|b| b.as_str()),
            ) && !known(child)
            {
                report(
                    here.to_owned(),
                    format!(
                        "params.blueprintId '{child}' is not a loaded blueprint; pass it with --blueprints"
                    ),
                );
            }
        }
        _ => {}
    }
}

/// Each edge's endpoints exist and its condition and transform parse.
fn check_edges(
    blueprint: &Blueprint,
    ids: &HashSet<&str>,
    mode: EvaluatorMode,
    report: &mut impl FnMut(String, String),
) {
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
            check_expression(condition, mode, &here, "condition", report);
        }
        if let Some(transform) = &edge.transform {
            check_expression(transform, mode, &here, "transform", report);
        }
    }
}

/// The `metadata.plugins` bindings, and no cycles when `metadata.strict` is set.
fn check_bindings_and_strictness(blueprint: &Blueprint, report: &mut impl FnMut(String, String)) {
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
}

/// Cycles through `subflow` references among `blueprints` (a blueprint
/// that runs itself, directly or through others), one message per cycle.
/// They are warnings: a condition may end the recursion, and the subflow
/// depth limit ends it otherwise.
pub fn subflow_cycles(blueprints: &[Blueprint]) -> Vec<String> {
    let children: HashMap<&str, Vec<&str>> = blueprints
        .iter()
        .map(|blueprint| (blueprint.id.as_str(), subflow_targets(blueprint)))
        .collect();
    let mut cycles = Vec::new();
    for start in children.keys().copied() {
        if let Some(path) = path_back(&children, start)
            && path.iter().all(|id| start <= *id)
        {
            cycles.push(format!(
                "blueprint '{start}' runs itself through subflows ({}); make sure a condition ends the recursion (runs nest at most metadata.maxSubflowDepth deep, default {})",
                path.join(" → "),
                limits::DEFAULT_SUBFLOW_DEPTH
            ));
        }
    }
    cycles.sort();
    cycles
}

/// The blueprint ids `blueprint`'s subflow nodes run.
fn subflow_targets(blueprint: &Blueprint) -> Vec<&str> {
    blueprint
        .nodes
        .iter()
        .filter(|node| node.uses == Builtin::Subflow.as_str())
        .filter_map(|node| node.params.as_ref()?.get("blueprintId")?.as_str())
        .collect()
}

/// A path of subflow references from `start` back to `start`, if any.
fn path_back<'a>(
    children: &HashMap<&'a str, Vec<&'a str>>,
    start: &'a str,
) -> Option<Vec<&'a str>> {
    let mut visited = HashSet::new();
    let mut stack = vec![(start, vec![start])];
    while let Some((id, path)) = stack.pop() {
        for &child in children.get(id).into_iter().flatten() {
            if child == start {
                return Some([path.as_slice(), &[start]].concat());
            }
            if visited.insert(child) {
                stack.push((child, [path.as_slice(), &[child]].concat()));
            }
        }
    }
    None
}

/// Counts and lengths within the documented limits (README, "Limits").
fn check_sizes(blueprint: &Blueprint, report: &mut impl FnMut(String, String)) {
    for (what, count, limit) in [
        ("nodes", blueprint.nodes.len(), MAX_NODES),
        ("edges", blueprint.edges.len(), MAX_EDGES),
    ] {
        if count > limit {
            report(
                "blueprint".into(),
                format!(
                    "{count} {what}, more than the limit of {limit}; split the workflow into subflows"
                ),
            );
        }
    }
}

/// The numbers and lists `metadata` may carry.
fn check_metadata(blueprint: &Blueprint, report: &mut impl FnMut(String, String)) {
    let Some(metadata) = &blueprint.metadata else {
        return;
    };
    if let Some(limit) = metadata.get("stepLimit")
        && let Err(error) = limits::step_limit(limit)
    {
        report("metadata".into(), error.to_string());
    }
    for checked in [blueprint.subflow_depth(), blueprint.subflow_runs()] {
        if let Err(error) = checked {
            report("metadata".into(), error.to_string());
        }
    }
    if let Some(types) = metadata.get(ALLOWED_TYPES_KEY)
        && !types
            .as_array()
            .is_some_and(|types| types.iter().all(|t| t.is_string()))
    {
        report(
            "metadata".into(),
            format!(
                "{ALLOWED_TYPES_KEY} must be a list of node types (strings), or [\"*\"] for any"
            ),
        );
    }
}

fn check_expression(
    source: &str,
    mode: EvaluatorMode,
    location: &str,
    role: &str,
    report: &mut impl FnMut(String, String),
) {
    // Checked for both languages: a property path is not parsed below.
    if source.len() > MAX_SOURCE_LEN {
        report(
            location.to_owned(),
            format!(
                "{role} is {} bytes long, more than the limit of {MAX_SOURCE_LEN}",
                source.len()
            ),
        );
        return;
    }
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

    /// `found` holds one problem starting with each of `expected`, and no other.
    fn assert_reported_once_each(found: &[String], expected: &[&str]) {
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for prefix in expected {
            assert!(
                found.iter().any(|p| p.starts_with(prefix)),
                "missing {prefix}: {found:#?}"
            );
        }
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
        assert_reported_once_each(&found, &expected);
    }

    #[test]
    fn out_of_range_numbers_are_reported_with_field_value_and_range() {
        let found = problems(
            r#"{"id":"b","metadata":{"stepLimit":0,"maxSubflowDepth":1000},"nodes":[
               {"id":"A","uses":"const","config":{"timeout":1e300}},
               {"id":"B","uses":"const","config":{"maxRetries":3,"retryDelay":1e308}},
               {"id":"C","uses":"sleep","params":{"duration":"99999999999d"}},
               {"id":"D","uses":"batch-scatter","params":{"workerUsesKey":"const","gatherNodeId":"E","chunkSize":0}},
               {"id":"E","uses":"batch-gather","params":{"outputKey":"_outputs.A"}}]}"#,
        );
        let expected = [
            "metadata: metadata.stepLimit 0 is out of range",
            "metadata: metadata.maxSubflowDepth 1000 is out of range",
            "node 'A': config.timeout 1e+300 is out of range; allowed:",
            "node 'B': config.retryDelay 1e+308 is out of range",
            "node 'C': params.duration \"99999999999d\" is out of range",
            "node 'D': params.chunkSize 0 is out of range",
            "node 'E': params.outputKey '_outputs.A' is one of the engine's",
        ];
        assert_reported_once_each(&found, &expected);
    }

    #[test]
    fn subflow_cycles_are_found_once_each() {
        let blueprint = |id: &str, child: &str| {
            Blueprint::from_json(&format!(
                r#"{{"id":"{id}","nodes":[{{"id":"s","uses":"subflow","params":{{"blueprintId":"{child}"}}}}]}}"#
            ))
            .unwrap()
        };
        let cycles = subflow_cycles(&[
            blueprint("self", "self"),
            blueprint("a", "b"),
            blueprint("b", "a"),
            blueprint("c", "a"),
        ]);
        assert_eq!(cycles.len(), 2, "{cycles:#?}");
        assert!(
            cycles[0].starts_with("blueprint 'a' runs itself through subflows (a → b → a)"),
            "{cycles:#?}"
        );
        assert!(
            cycles[1].starts_with("blueprint 'self' runs itself through subflows (self → self)")
        );
    }
}
