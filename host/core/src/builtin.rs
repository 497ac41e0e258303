//! The node types the engine implements itself ([`Builtin`]): `wait`, `sleep`,
//! `webhook`, `loop-controller`, `batch-scatter`, `batch-gather` and
//! `subflow`. Each reads and writes the run context through the same
//! [`NodeContext`] view a plugin gets.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::blueprint::NodeDefinition;
use crate::context::{ContextMap, ContextValue, NodeContext, context_to_object};
use crate::expression::ConditionScope;
use crate::plan::{Plan, PlanRegistry};
use crate::routing::output_key;
use crate::runner::{NodeFailure, NodeSuccess};

/// What a built-in node did.
#[derive(Debug)]
pub enum BuiltinOutcome {
    /// Finished, like a plugin node.
    Done(NodeSuccess),
    /// Paused until resumed; `output` is recorded now (sleep passes its input through).
    Wait { output: Option<Value> },
    /// Paused until its webhook is called (the engine gives out the URL).
    Webhook,
    /// Paused until `wake_after` has passed.
    Sleep {
        output: Option<Value>,
        wake_after: Duration,
    },
    /// Not finished yet: `dynamic_nodes` are added and feed this node, which
    /// waits for them (keeping the arrivals it has) and then runs again.
    Reopen { dynamic_nodes: Vec<NodeDefinition> },
    /// Runs `blueprint_id` as a child run with `initial` context; the node
    /// finishes when the child does.
    Subflow {
        blueprint_id: String,
        initial: ContextMap,
    },
}

/// A node type the engine implements itself; a plugin may not claim its
/// `uses` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Wait,
    Sleep,
    Subflow,
    BatchScatter,
    BatchGather,
    LoopController,
    Webhook,
}

impl Builtin {
    const ALL: [Self; 7] = [
        Self::Wait,
        Self::Sleep,
        Self::Subflow,
        Self::BatchScatter,
        Self::BatchGather,
        Self::LoopController,
        Self::Webhook,
    ];

    /// The built-in whose `uses` key is `uses`, if any.
    pub fn parse(uses: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|builtin| builtin.as_str() == uses)
    }

    /// Its `uses` key.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Wait => "wait",
            Self::Sleep => "sleep",
            Self::Subflow => "subflow",
            Self::BatchScatter => "batch-scatter",
            Self::BatchGather => "batch-gather",
            Self::LoopController => "loop-controller",
            Self::Webhook => "webhook",
        }
    }
}

/// What a path segment escapes: all but RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path of the API route that calls `node_id`'s webhook in `run_id`.
pub fn webhook_path(run_id: &str, node_id: &str) -> String {
    format!(
        "/api/v1/webhooks/{}/{}",
        utf8_percent_encode(run_id, PATH_SEGMENT),
        utf8_percent_encode(node_id, PATH_SEGMENT)
    )
}

/// Whether `uses` names a built-in node type.
pub fn is_builtin(uses: &str) -> bool {
    Builtin::parse(uses).is_some()
}

/// Runs built-in `node` with `input`.
pub fn execute(
    plan: &Plan,
    plans: &PlanRegistry,
    node: &NodeDefinition,
    input: Option<Value>,
    context: &mut NodeContext,
    view: &ContextMap,
) -> Result<BuiltinOutcome, NodeFailure> {
    let params = node.params_or_empty();
    let Some(builtin) = Builtin::parse(&node.uses) else {
        return Err(NodeFailure::fatal(format!(
            "Implementation for '{}' not found.",
            node.uses
        )));
    };
    match builtin {
        Builtin::Wait => Ok(BuiltinOutcome::Wait { output: None }),
        Builtin::Sleep => {
            let wake_after =
                crate::limits::sleep_duration(params.get("duration")).map_err(|cause| {
                    NodeFailure::fatal(format!("Node '{}' execution failed: {cause}", node.id))
                })?;
            Ok(BuiltinOutcome::Sleep {
                output: input,
                wake_after,
            })
        }
        Builtin::LoopController => {
            let keep_going = plan
                .loop_conditions
                .get(&node.id)
                .map(|condition| {
                    let view = context_to_object(view);
                    condition.evaluate_truthy(&ConditionScope::for_loop_controller(&view))
                })
                .unwrap_or(false);
            Ok(BuiltinOutcome::Done(if keep_going {
                NodeSuccess {
                    output: None,
                    action: Some("continue".into()),
                    dynamic_nodes: vec![],
                }
            } else {
                NodeSuccess {
                    output: Some(Value::Null),
                    action: Some("break".into()),
                    dynamic_nodes: vec![],
                }
            }))
        }
        Builtin::BatchScatter => scatter(node, &params, input, context).map(BuiltinOutcome::Done),
        Builtin::BatchGather => gather(plan, node, &params, context),
        Builtin::Subflow => subflow(plans, node, &params, input, context),
        Builtin::Webhook => Ok(BuiltinOutcome::Webhook),
    }
}

fn required_str<'a>(params: &'a Value, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn write(context: &mut NodeContext, key: &str, value: Value) -> Result<(), NodeFailure> {
    context
        .set(key, ContextValue::from(value))
        .map_err(|error| NodeFailure::fatal(error.to_string()))
}

/// The parsed value under `key`.
fn read(context: &NodeContext, key: &str) -> Option<Value> {
    context.get(key).map(ContextValue::to_value)
}

fn scatter(
    node: &NodeDefinition,
    params: &Value,
    input: Option<Value>,
    context: &mut NodeContext,
) -> Result<NodeSuccess, NodeFailure> {
    let (Some(worker), Some(gather)) = (
        required_str(params, "workerUsesKey"),
        required_str(params, "gatherNodeId"),
    ) else {
        return Err(NodeFailure::fatal(
            "BatchScatterNode requires 'workerUsesKey' and 'gatherNodeId' parameters.",
        ));
    };
    let items = match input {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(NodeFailure::fatal(format!(
                "Input for batch-scatter node '{}' must be an array.",
                node.id
            )));
        }
    };
    // Follow-up rounds of a chunked batch run as dynamic scatter nodes that
    // carry the original scatter's id, whose keys they continue.
    let scatter_id = required_str(params, "scatterId").unwrap_or(&node.id);
    let index_key = format!("{scatter_id}_currentIndex");
    let start = read(context, &index_key)
        .and_then(|index| index.as_u64())
        .unwrap_or(0) as usize;
    let chunk = match params.get("chunkSize") {
        None | Some(Value::Null) => items.len(),
        Some(size) => crate::limits::chunk_size(size)
            .map_err(|cause| NodeFailure::fatal(format!("Node '{}': {cause}", node.id)))?
            as usize,
    };
    let end = items.len().min(start.saturating_add(chunk));
    let has_more = end < items.len();
    let batch_id = uuid::Uuid::new_v4().to_string();
    let mut workers = Vec::new();
    let mut worker_ids = Vec::new();
    for (index, item) in items.into_iter().enumerate().take(end).skip(start) {
        let item_key = format!("_batch.{scatter_id}_{batch_id}_item_{index}");
        write(context, &item_key, item)?;
        let id = format!("{worker}_{batch_id}_{index}");
        worker_ids.push(Value::String(id.clone()));
        workers.push(NodeDefinition {
            id,
            uses: worker.to_owned(),
            params: None,
            inputs: Some(crate::blueprint::NodeInputs::Single(item_key)),
            config: None,
            extra: Map::new(),
        });
    }
    write(context, &index_key, json!(end))?;
    write(context, &format!("{gather}_hasMore"), json!(has_more))?;
    let ids_key = format!("{gather}_allWorkerIds");
    let mut all_ids = match read(context, &ids_key) {
        Some(Value::Array(ids)) => ids,
        _ => Vec::new(),
    };
    all_ids.extend(worker_ids);
    write(context, &ids_key, Value::Array(all_ids))?;
    Ok(NodeSuccess {
        output: Some(json!({"gatherNodeId": gather, "hasMore": has_more})),
        action: None,
        dynamic_nodes: workers,
    })
}

fn gather(
    plan: &Plan,
    node: &NodeDefinition,
    params: &Value,
    context: &mut NodeContext,
) -> Result<BuiltinOutcome, NodeFailure> {
    let gather_id = required_str(params, "gatherNodeId").unwrap_or(&node.id);
    if read(context, &format!("{gather_id}_hasMore"))
        .is_some_and(|more| crate::expression::is_truthy(&more))
    {
        return next_round(plan, node, gather_id, context);
    }
    let output_key_name = required_str(params, "outputKey")
        .unwrap_or(&node.id)
        .to_owned();
    let results: Vec<Value> = read(context, &format!("{gather_id}_allWorkerIds"))
        .as_ref()
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .filter_map(|id| read(context, &output_key(id)))
                .collect()
        })
        .unwrap_or_default();
    write(context, &output_key_name, Value::Array(results.clone()))?;
    Ok(BuiltinOutcome::Done(NodeSuccess {
        output: Some(Value::Array(results)),
        action: None,
        dynamic_nodes: vec![],
    }))
}

/// A chunked batch has items left: add a scatter node for the next chunk
/// (continuing the original scatter's index) and wait for its workers too.
fn next_round(
    plan: &Plan,
    node: &NodeDefinition,
    gather_id: &str,
    context: &mut NodeContext,
) -> Result<BuiltinOutcome, NodeFailure> {
    let Some(scatter) = plan.blueprint.nodes.iter().find(|candidate| {
        candidate.uses == Builtin::BatchScatter.as_str()
            && candidate
                .params
                .as_ref()
                .and_then(|p| p.get("gatherNodeId"))
                .and_then(Value::as_str)
                == Some(gather_id)
    }) else {
        return Err(NodeFailure::fatal(format!(
            "Node '{}': the batch has more items but no batch-scatter node names '{gather_id}' as its gatherNodeId",
            node.id
        )));
    };
    let round = read(context, &format!("{}_currentIndex", scatter.id))
        .and_then(|index| index.as_u64())
        .unwrap_or(0);
    let mut params = scatter.params_or_empty();
    if let Value::Object(fields) = &mut params {
        fields.insert("scatterId".into(), Value::String(scatter.id.clone()));
    }
    write(context, &format!("{gather_id}_hasMore"), json!(false))?;
    Ok(BuiltinOutcome::Reopen {
        dynamic_nodes: vec![NodeDefinition {
            id: format!("{}_next_{round}", scatter.id),
            uses: Builtin::BatchScatter.as_str().into(),
            params: Some(params),
            inputs: scatter.inputs.clone(),
            config: None,
            extra: Map::new(),
        }],
    })
}

fn subflow(
    plans: &PlanRegistry,
    node: &NodeDefinition,
    params: &Value,
    input: Option<Value>,
    context: &NodeContext,
) -> Result<BuiltinOutcome, NodeFailure> {
    let Some(blueprint_id) = required_str(params, "blueprintId") else {
        return Err(NodeFailure::fatal(format!(
            "Subflow node '{}' is missing 'blueprintId' parameter.",
            node.id
        )));
    };
    let Some(child) = plans.get(blueprint_id) else {
        return Err(NodeFailure::fatal(format!(
            "Sub-blueprint '{blueprint_id}' not found in runtime registry."
        )));
    };
    let mut initial = ContextMap::new();
    match params.get("inputs").and_then(Value::as_object) {
        Some(mapping) => {
            for (child_key, parent_key) in mapping {
                let Some(parent_key) = parent_key.as_str() else {
                    continue;
                };
                let value = context
                    .get(parent_key)
                    .or_else(|| context.get(&output_key(parent_key)));
                if let Some(value) = value {
                    initial.insert(child_key.clone(), value.clone());
                }
            }
        }
        None => {
            if let Some(input) = input.map(ContextValue::from) {
                for start in &child.analysis.start_nodes {
                    initial.insert(crate::routing::input_key(start), input.clone());
                }
            }
        }
    }
    Ok(BuiltinOutcome::Subflow {
        blueprint_id: blueprint_id.to_owned(),
        initial,
    })
}

/// The subflow node's output and parent writes once its child completed
/// (upstream §4.5 step 4).
pub fn subflow_result(
    node: &NodeDefinition,
    child_plan: &Plan,
    child_context: &ContextMap,
) -> (Value, Vec<(String, ContextValue)>) {
    let params = node.params_or_empty();
    if let Some(outputs) = params.get("outputs").and_then(Value::as_object) {
        let writes = outputs
            .iter()
            .filter_map(|(parent_key, child_key)| {
                let child_key = child_key.as_str()?;
                let value = child_context
                    .get(&output_key(child_key))
                    .or_else(|| child_context.get(child_key))?;
                Some((parent_key.clone(), value.clone()))
            })
            .collect();
        return (Value::Object(context_to_object(child_context)), writes);
    }
    let terminals = &child_plan.analysis.terminal_nodes;
    let output_of = |id: &str| {
        child_context
            .get(&output_key(id))
            .map(ContextValue::to_value)
            .unwrap_or(Value::Null)
    };
    let output = match terminals.as_slice() {
        [single] => output_of(single),
        many => Value::Object(many.iter().map(|id| (id.clone(), output_of(id))).collect()),
    };
    (output, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_key_parses_back_to_it() {
        for builtin in Builtin::ALL {
            assert_eq!(Builtin::parse(builtin.as_str()), Some(builtin));
        }
        assert_eq!(Builtin::parse("const"), None);
        assert!(!is_builtin("Wait"));
    }
}
