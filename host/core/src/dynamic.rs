//! Admitting dynamic nodes: what a node may add to its own run.
//!
//! A node's result may carry node definitions that join the run as its
//! successors. They come from node code, so they get no more than the node
//! that made them has:
//!
//! - at most [`MAX_DYNAMIC_NODES_PER_CALL`] per call, each id unique in the
//!   call and not one of the blueprint's node ids;
//! - node types of the spawning node's own bundle, the built-ins, or those
//!   the blueprint lists in `metadata.dynamicNodeTypes` (`"*"` for any):
//!   another bundle's code, and the grants that come with it, stay out of
//!   reach;
//! - `config` numbers within the engine's bounds ([`crate::limits`]), then
//!   clamped to the spawner's: no longer time limit, no more attempts, no
//!   longer retry delays.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::blueprint::{Blueprint, NodeDefinition};
use crate::builtin::is_builtin;
use crate::limits::{MAX_DYNAMIC_NODES_PER_CALL, NodeLimits};
use crate::runner::NodeRunner;

/// `metadata.dynamicNodeTypes`: node types any node of the blueprint may
/// add as dynamic nodes, besides its own bundle's (`["*"]`: all).
pub const ALLOWED_TYPES_KEY: &str = "dynamicNodeTypes";

/// The node adding dynamic nodes, and what it is allowed.
pub struct Spawner<'a> {
    pub node: &'a NodeDefinition,
    /// The implementation its type is pinned to in this run.
    pub pin: Option<&'a str>,
    /// Its checked `config` numbers.
    pub limits: NodeLimits,
    /// The runner's time limit for nodes without `config.timeout`.
    pub default_timeout: Duration,
}

/// Checks `nodes` against what `spawner` may add and clamps their config;
/// the error says which node broke which rule.
pub fn admit<R: NodeRunner>(
    runner: &R,
    blueprint: &Blueprint,
    spawner: &Spawner<'_>,
    nodes: &mut [NodeDefinition],
) -> Result<(), String> {
    let here = format!("Node '{}'", spawner.node.id);
    if nodes.len() > MAX_DYNAMIC_NODES_PER_CALL {
        return Err(format!(
            "{here} returned {} dynamic nodes, more than the limit of {MAX_DYNAMIC_NODES_PER_CALL} per call; add them in rounds (a batch with chunkSize) instead",
            nodes.len()
        ));
    }
    let allowed = allowed_types(blueprint);
    let mut ids = HashSet::new();
    for node in nodes.iter_mut() {
        let id = &node.id;
        if id.is_empty() || blueprint.node(id).is_some() || !ids.insert(id.clone()) {
            return Err(format!(
                "{here} returned dynamic node '{id}', whose id is empty, a node of blueprint '{}' or repeated; give each dynamic node an id of its own",
                blueprint.id
            ));
        }
        let uses = node.uses.as_str();
        let permitted = is_builtin(uses)
            || allowed
                .as_ref()
                .is_some_and(|types| types.contains(&"*") || types.contains(&uses))
            || runner.shares_bundle(&spawner.node.uses, spawner.pin, uses);
        if !permitted {
            return Err(format!(
                "{here} returned dynamic node '{id}' of type '{uses}', which the bundle of '{}' does not implement; a node may add its own bundle's node types and built-ins only, unless blueprint '{}' lists the type in metadata.{ALLOWED_TYPES_KEY}",
                spawner.node.uses, blueprint.id
            ));
        }
        let asked = NodeLimits::of(node.config.as_ref())
            .map_err(|error| format!("{here} returned dynamic node '{id}': {error}"))?;
        let granted = asked.within(&spawner.limits, spawner.default_timeout);
        granted.write_to(node.config.get_or_insert_with(Default::default));
    }
    Ok(())
}

/// `metadata.dynamicNodeTypes` as a list of node types.
fn allowed_types(blueprint: &Blueprint) -> Option<Vec<&str>> {
    let listed = blueprint.metadata.as_ref()?.get(ALLOWED_TYPES_KEY)?;
    Some(
        listed
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{NodeCall, NodeOutcome, PinError, Pins};
    use serde_json::json;

    /// Two bundles: `a` implements `a1`, `a2`; `b` implements `b1`.
    struct TwoBundles;

    impl NodeRunner for TwoBundles {
        fn implements(&self, uses: &str) -> bool {
            ["a1", "a2", "b1"].contains(&uses)
        }
        fn pin(&self, _: &Blueprint) -> Result<Pins, PinError> {
            Ok(Pins::new())
        }
        async fn run(&self, call: NodeCall) -> NodeOutcome {
            NodeOutcome {
                context: call.context,
                result: Ok(Default::default()),
            }
        }
        fn shares_bundle(&self, spawner: &str, _: Option<&str>, uses: &str) -> bool {
            spawner.chars().next() == uses.chars().next()
        }
    }

    fn node(value: Value) -> NodeDefinition {
        serde_json::from_value(value).unwrap()
    }

    fn admit_all(
        metadata: Value,
        spawner_config: Value,
        nodes: Vec<Value>,
    ) -> Result<Vec<NodeDefinition>, String> {
        let blueprint: Blueprint = serde_json::from_value(json!({
            "id": "bp", "nodes": [{"id": "S", "uses": "a1"}], "metadata": metadata
        }))
        .unwrap();
        let spawner_node = node(json!({"id": "S", "uses": "a1", "config": spawner_config}));
        let spawner = Spawner {
            node: &spawner_node,
            pin: None,
            limits: NodeLimits::of(spawner_node.config.as_ref()).unwrap(),
            default_timeout: Duration::from_secs(30),
        };
        let mut nodes: Vec<NodeDefinition> = nodes.into_iter().map(node).collect();
        admit(&TwoBundles, &blueprint, &spawner, &mut nodes)?;
        Ok(nodes)
    }

    #[test]
    fn own_bundle_and_builtins_are_admitted_other_bundles_are_not() {
        let admitted = admit_all(
            json!({}),
            json!({}),
            vec![
                json!({"id": "d1", "uses": "a2"}),
                json!({"id": "d2", "uses": "wait"}),
            ],
        );
        assert!(admitted.is_ok(), "{admitted:?}");
        let refused = admit_all(
            json!({}),
            json!({}),
            vec![json!({"id": "d1", "uses": "b1"})],
        )
        .unwrap_err();
        assert!(
            refused.contains("type 'b1'") && refused.contains("dynamicNodeTypes"),
            "{refused}"
        );
        let listed = admit_all(
            json!({"dynamicNodeTypes": ["b1"]}),
            json!({}),
            vec![json!({"id": "d1", "uses": "b1"})],
        );
        assert!(listed.is_ok());
        let any = admit_all(
            json!({"dynamicNodeTypes": ["*"]}),
            json!({}),
            vec![json!({"id": "d1", "uses": "b1"})],
        );
        assert!(any.is_ok());
    }

    #[test]
    fn config_is_clamped_to_the_spawners() {
        let admitted = admit_all(
            json!({}),
            json!({"timeout": 5000, "maxRetries": 2, "retryDelay": 10}),
            vec![json!({"id": "d", "uses": "a2", "config": {"timeout": 3600000, "maxRetries": 1000, "retryDelay": 0}})],
        )
        .unwrap();
        let limits = NodeLimits::of(admitted[0].config.as_ref()).unwrap();
        assert_eq!(limits.timeout, Some(Duration::from_secs(5)));
        assert_eq!(limits.attempts, 2);
        assert_eq!(limits.retry_delay, Duration::ZERO);
        let default = admit_all(
            json!({}),
            json!({}),
            vec![json!({"id": "d", "uses": "a2", "config": {"timeout": 3600000}})],
        )
        .unwrap();
        let limits = NodeLimits::of(default[0].config.as_ref()).unwrap();
        assert_eq!(limits.timeout, Some(Duration::from_secs(30)));
        assert_eq!(limits.attempts, 1);
    }

    #[test]
    fn out_of_range_config_ids_and_counts_are_refused() {
        let huge = admit_all(
            json!({}),
            json!({}),
            vec![json!({"id": "d", "uses": "a2", "config": {"maxRetries": 1000000}})],
        )
        .unwrap_err();
        assert!(
            huge.contains("config.maxRetries 1000000 is out of range"),
            "{huge}"
        );
        let clash =
            admit_all(json!({}), json!({}), vec![json!({"id": "S", "uses": "a2"})]).unwrap_err();
        assert!(clash.contains("dynamic node 'S'"), "{clash}");
        let twice = admit_all(
            json!({}),
            json!({}),
            vec![
                json!({"id": "d", "uses": "a2"}),
                json!({"id": "d", "uses": "a2"}),
            ],
        )
        .unwrap_err();
        assert!(twice.contains("repeated"), "{twice}");
        let many: Vec<Value> = (0..=MAX_DYNAMIC_NODES_PER_CALL)
            .map(|i| json!({"id": format!("d{i}"), "uses": "a2"}))
            .collect();
        let flood = admit_all(json!({}), json!({}), many).unwrap_err();
        assert!(flood.contains("more than the limit of 1000"), "{flood}");
    }
}
