//! What a typed node returns: [`Output`] (the value, an optional routing action
//! and optional dynamic nodes) and [`DynamicNode`].

use serde::Serialize;
use serde_json::Value;

use crate::raw::RawResult;

/// A successful result of a typed node.
///
/// ```
/// use flowcraft_sdk::{DynamicNode, Output};
/// use serde_json::json;
///
/// let output = Output::new(42)
///     .with_action("large")
///     .with_dynamic_node(DynamicNode::new("audit", "audit-log").with_params(json!({"level": 2})));
/// assert_eq!(output.value, Some(42));
/// assert_eq!(output.action.as_deref(), Some("large"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Output<T> {
    /// The output value; `None` means "no output" (JavaScript `undefined`, stored as `null`).
    pub value: Option<T>,
    /// Routing action: edges whose `action` equals it are taken.
    pub action: Option<String>,
    /// Nodes to add to this run; they become successors of this node.
    pub dynamic_nodes: Vec<DynamicNode>,
}

impl<T> Output<T> {
    /// An output carrying `value`.
    pub fn new(value: T) -> Self {
        Self::maybe(Some(value))
    }

    /// A result without output.
    pub fn none() -> Self {
        Self::maybe(None)
    }

    /// An output carrying `value` when there is one.
    pub fn maybe(value: Option<T>) -> Self {
        Self {
            value,
            action: None,
            dynamic_nodes: Vec::new(),
        }
    }

    /// Route by `action`: edges whose `action` equals it are taken.
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// Add a node to the run as a successor of this node.
    pub fn with_dynamic_node(mut self, node: DynamicNode) -> Self {
        self.dynamic_nodes.push(node);
        self
    }
}

impl<T> From<T> for Output<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: Serialize> Output<T> {
    pub(crate) fn into_raw(self) -> Result<RawResult, serde_json::Error> {
        Ok(RawResult {
            output: self.value.as_ref().map(serde_json::to_string).transpose()?,
            action: self.action,
            dynamic_nodes: self
                .dynamic_nodes
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A node definition added to the run at runtime (a Flowcraft blueprint node).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicNode {
    /// Unique id within the run's blueprint.
    pub id: String,
    /// The node type to execute.
    pub uses: String,
    /// The node's `params` object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// The node's `inputs` mapping (a string or an object), as in a blueprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
    /// The node's `config` (`maxRetries`, `timeout`, ...), as in a blueprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

impl DynamicNode {
    /// A node with id `id` running node type `uses`, without params.
    pub fn new(id: impl Into<String>, uses: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            uses: uses.into(),
            params: None,
            inputs: None,
            config: None,
        }
    }

    /// Set the node's `params`.
    pub fn with_params(mut self, params: Value) -> Self {
        self.params = Some(params);
        self
    }
}
