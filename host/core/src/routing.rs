//! Data flow between nodes: how a node's input is resolved from the context
//! (upstream §2.3), which outgoing edges a result takes (upstream
//! `determineNextNodes`, §2.4, with unmatched actions taking nothing), and what
//! each taken edge writes as its target's `_inputs.<target>` (§2.5, without
//! mutating the blueprint).

use std::cell::OnceCell;
use std::collections::BTreeSet;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::blueprint::{NodeDefinition, NodeInputs};
use crate::builtin::Builtin;
use crate::context::{ContextMap, ContextValue, context_to_object};
use crate::expression::{ConditionScope, PlainOutputs, TransformScope};
use crate::plan::Plan;

/// What a context key of a node's output starts with.
pub const OUTPUT_KEY_PREFIX: &str = "_outputs.";

/// Context key of a node's output.
pub fn output_key(node: &str) -> String {
    format!("{OUTPUT_KEY_PREFIX}{node}")
}

/// Context key of a node's edge-delivered input.
pub fn input_key(node: &str) -> String {
    format!("_inputs.{node}")
}

/// Context key of a node's routing action (new; upstream ignores it).
pub fn action_key(node: &str) -> String {
    format!("_actions.{node}")
}

/// Resolves `node`'s input from `context`; `None` is "no input". A whole
/// context value is passed on as its text, without parsing it.
pub fn resolve_input(
    plan: &Plan,
    node: &NodeDefinition,
    context: &ContextMap,
) -> Option<ContextValue> {
    let reads_edge_input = reads_edge_input(plan, node);
    match &node.inputs {
        _ if reads_edge_input => context.get(&input_key(&node.id)).cloned(),
        Some(NodeInputs::Single(reference)) => resolve_reference(reference, context),
        Some(NodeInputs::Map(references)) => {
            let object: IndexMap<&str, ContextValue> = references
                .iter()
                .filter_map(|(name, reference)| {
                    Some((name.as_str(), resolve_reference(reference, context)?))
                })
                .collect();
            ContextValue::serialize_from(&object).ok()
        }
        None => None,
    }
}

/// Whether `node` gets its input from its incoming edges (`_inputs.<id>`):
/// it names no `inputs`, or an edge into it has a transform.
fn reads_edge_input(plan: &Plan, node: &NodeDefinition) -> bool {
    node.inputs.is_none()
        || plan
            .analysis
            .predecessors
            .get(&node.id)
            .into_iter()
            .flatten()
            .flat_map(|source| plan.analysis.edges_from(&plan.blueprint, source))
            .any(|(index, edge)| edge.target == node.id && plan.transforms[index].is_some())
}

/// Where [`resolve_input`] reads `node`'s input, in words (for error
/// messages that should lead to the data to fix).
pub fn input_source(plan: &Plan, node: &NodeDefinition) -> String {
    let describe = |reference: &str| {
        if reference.starts_with('_') {
            format!("context key '{reference}'")
        } else if let Some((base, path)) = reference.split_once('.') {
            format!("'{path}' of context key '{}'", output_key(base))
        } else {
            format!(
                "context key '{}', else '{reference}'",
                output_key(reference)
            )
        }
    };
    match &node.inputs {
        Some(NodeInputs::Single(reference)) if !reads_edge_input(plan, node) => describe(reference),
        Some(NodeInputs::Map(references)) if !reads_edge_input(plan, node) => references
            .iter()
            .map(|(name, reference)| format!("{name}: {}", describe(reference)))
            .collect::<Vec<_>>()
            .join("; "),
        _ => format!("context key '{}'", input_key(&node.id)),
    }
}

/// One `inputs` reference: `_raw.key`, `node.path.to.value`, `node` or `contextKey`.
pub fn resolve_reference(reference: &str, context: &ContextMap) -> Option<ContextValue> {
    if reference.starts_with('_') {
        return context.get(reference).cloned();
    }
    if let Some((base, path)) = reference.split_once('.') {
        let base = context.get(&output_key(base)).filter(|v| !v.is_null())?;
        let base = base.to_value();
        let mut current = &base;
        for segment in path.split('.') {
            current = step_into(current, segment)?;
        }
        return Some(ContextValue::from_value(current));
    }
    context
        .get(&output_key(reference))
        .or_else(|| context.get(reference))
        .cloned()
}

fn step_into<'a>(value: &'a Value, segment: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

/// A node result as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct RoutedResult<'a> {
    pub output: Option<&'a Value>,
    /// `output` as JSON text, which edges without a transform deliver.
    pub output_json: Option<&'a ContextValue>,
    pub action: Option<&'a str>,
}

impl RoutedResult<'_> {
    fn as_value(&self) -> Value {
        let mut object = Map::new();
        if let Some(output) = self.output {
            object.insert("output".into(), output.clone());
        }
        if let Some(action) = self.action {
            object.insert("action".into(), Value::String(action.to_owned()));
        }
        Value::Object(object)
    }
}

/// The outcome of routing one result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    /// Chosen edges as (source, target).
    pub taken: BTreeSet<(String, String)>,
    /// `_inputs.<target>` values to write, in edge order.
    pub inputs: Vec<(String, ContextValue)>,
}

/// Routes the result of `node` (or of a fallback standing in for `stands_in_for`).
pub fn route(
    plan: &Plan,
    node: &NodeDefinition,
    stands_in_for: Option<&str>,
    result: RoutedResult<'_>,
    context: &ContextMap,
) -> Routing {
    let candidates = candidate_edges(plan, &node.id, stands_in_for);
    // Expressions see parsed values; both are made once, and only if an
    // expression is evaluated.
    let parsed = ParsedOnce::new(context);
    let result_value = OnceCell::new();
    // The routed node's own output is not in the context yet: its plain id
    // (and the plain id of the node a fallback stands in for) is its result's output.
    let own_output = |name: &str| -> Option<&Value> {
        if name == node.id || stands_in_for == Some(name) {
            return result.output;
        }
        parsed.get().get(&output_key(name))
    };
    let passes = |index: usize| -> bool {
        match &plan.conditions[index] {
            None => true,
            Some(condition) => condition.evaluate_truthy(
                &ConditionScope::new(
                    parsed.get(),
                    Some(result_value.get_or_init(|| result.as_value())),
                )
                .with_outputs(PlainOutputs::Lookup(&own_output)),
            ),
        }
    };
    let mut chosen: Vec<usize> = Vec::new();
    if node.uses == Builtin::LoopController.as_str() {
        chosen = candidates
            .iter()
            .copied()
            .filter(|&i| plan.conditions[i].is_some() && passes(i))
            .collect();
    }
    if chosen.is_empty()
        && let Some(action) = result.action.filter(|a| !a.is_empty())
    {
        chosen = candidates
            .iter()
            .copied()
            .filter(|&i| plan.blueprint.edges[i].action.as_deref() == Some(action) && passes(i))
            .collect();
    }
    if chosen.is_empty() {
        chosen = candidates
            .iter()
            .copied()
            .filter(|&i| {
                plan.blueprint.edges[i]
                    .action
                    .as_deref()
                    .is_none_or(str::is_empty)
                    && passes(i)
            })
            .collect();
    }
    let mut routing = Routing::default();
    for index in chosen {
        let edge = &plan.blueprint.edges[index];
        if plan.node(&edge.target).is_none() {
            continue;
        }
        routing
            .taken
            .insert((edge.source.clone(), edge.target.clone()));
        if let Some(value) = edge_input(plan, index, result, &parsed) {
            routing.inputs.push((input_key(&edge.target), value));
        }
    }
    routing
}

/// The actions `node`'s out-edges expect, when `action` matches none of them
/// and no default edge leaves `node` either: the result takes nothing, and
/// a typo in the action (or in an edge's) ends the path silently.
pub fn unmatched_action<'a>(plan: &'a Plan, node: &str, action: &str) -> Option<Vec<&'a str>> {
    let mut expected = Vec::new();
    for (_, edge) in plan.analysis.edges_from(&plan.blueprint, node) {
        match edge.action.as_deref().filter(|a| !a.is_empty()) {
            None => return None,
            Some(wanted) if wanted == action => return None,
            Some(wanted) if !expected.contains(&wanted) => expected.push(wanted),
            Some(_) => {}
        }
    }
    (!expected.is_empty()).then_some(expected)
}

/// Edges leaving `node` (and the failed node a fallback stands in for),
/// de-duplicated on (source, target, action, condition), in declaration order.
fn candidate_edges(plan: &Plan, node: &str, stands_in_for: Option<&str>) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut indices = Vec::new();
    for source in std::iter::once(node).chain(stands_in_for) {
        for (index, edge) in plan.analysis.edges_from(&plan.blueprint, source) {
            let key = (
                edge.source.as_str(),
                edge.target.as_str(),
                edge.action.as_deref(),
                edge.condition.as_deref(),
            );
            if seen.insert(key) {
                indices.push(index);
            }
        }
    }
    indices
}

/// The value edge `index` delivers to its target (upstream `applyEdgeTransform`).
fn edge_input(
    plan: &Plan,
    index: usize,
    result: RoutedResult<'_>,
    parsed: &ParsedOnce<'_>,
) -> Option<ContextValue> {
    let edge = &plan.blueprint.edges[index];
    let Some(transform) = &plan.transforms[index] else {
        return result.output_json.cloned();
    };
    let context = parsed.get();
    let mut source = result.output;
    if let Some(NodeInputs::Single(inputs)) = plan
        .blueprint
        .node(&edge.target)
        .and_then(|target| target.inputs.as_ref())
    {
        let key = if inputs.starts_with('_') {
            inputs.clone()
        } else {
            output_key(inputs)
        };
        if inputs != &edge.source
            && let Some(value) = context.get(&key)
        {
            source = Some(value);
        }
    }
    transform
        .evaluate(&TransformScope::new(source, context))
        .map(ContextValue::from)
}

/// A context parsed for expressions when one first needs it, then shared:
/// expressions compare objects by identity, so every name must reach the
/// same parsed node.
pub struct ParsedOnce<'a> {
    context: &'a ContextMap,
    parsed: OnceCell<Map<String, Value>>,
}

impl<'a> ParsedOnce<'a> {
    pub fn new(context: &'a ContextMap) -> Self {
        Self {
            context,
            parsed: OnceCell::new(),
        }
    }

    /// The parsed context.
    pub fn get(&self) -> &Map<String, Value> {
        self.parsed.get_or_init(|| context_to_object(self.context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint::Blueprint;
    use serde_json::json;

    fn plan(edges: Value) -> Plan {
        let blueprint: Blueprint = serde_json::from_value(json!({"id": "b", "nodes": [
            {"id": "A", "uses": "x"}, {"id": "B", "uses": "x"}, {"id": "C", "uses": "x"}],
            "edges": edges}))
        .unwrap();
        Plan::new(blueprint, Default::default()).unwrap()
    }

    #[test]
    fn an_action_matching_no_edge_and_no_default_edge_is_told_apart() {
        let actions = plan(json!([
            {"source": "A", "target": "B", "action": "large"},
            {"source": "A", "target": "C", "action": "small"}]));
        assert_eq!(
            unmatched_action(&actions, "A", "lage"),
            Some(vec!["large", "small"])
        );
        assert_eq!(unmatched_action(&actions, "A", "large"), None);
        assert_eq!(
            unmatched_action(&actions, "B", "large"),
            None,
            "no out-edges"
        );
        let with_default = plan(json!([
            {"source": "A", "target": "B", "action": "large"},
            {"source": "A", "target": "C"}]));
        assert_eq!(unmatched_action(&with_default, "A", "lage"), None);
    }
}
