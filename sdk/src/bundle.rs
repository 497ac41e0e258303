//! A bundle's table of node types and the dispatch from a request to a node.
//! [`export_bundle!`](crate::export_bundle) builds the table; the component
//! exports (and [`testing`](crate::testing)) execute through it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::NodeError;
use crate::output::Output;
use crate::raw::{RawNode, RawRequest, RawResult};

/// What a bundle implements: its identity and its node types.
#[derive(Debug, Clone, Copy)]
pub struct Bundle {
    /// The bundle's name; blueprints bind node types to a bundle by it.
    pub name: &'static str,
    /// The bundle's semantic version.
    pub version: &'static str,
    /// The node types, each with a unique `uses` key.
    pub nodes: &'static [NodeSpec],
}

/// One node type of a bundle.
#[derive(Debug, Clone, Copy)]
pub struct NodeSpec {
    /// The key blueprints name the node type by.
    pub uses: &'static str,
    /// One line for humans: what the node does.
    pub description: &'static str,
    /// Optional JSON Schema (as JSON text) describing the node's `params`.
    pub params_schema: Option<&'static str>,
    /// The node, reduced to its JSON-text form.
    pub run: RawNode,
}

impl Bundle {
    /// The node type registered under `uses`.
    pub fn node(&self, uses: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|node| node.uses == uses)
    }

    /// Whether no two node types share a `uses` key (checked at compile time
    /// by [`export_bundle!`](crate::export_bundle)).
    pub const fn has_unique_uses(&self) -> bool {
        let mut i = 0;
        while i < self.nodes.len() {
            let mut j = i + 1;
            while j < self.nodes.len() {
                if bytes_equal(self.nodes[i].uses.as_bytes(), self.nodes[j].uses.as_bytes()) {
                    return false;
                }
                j += 1;
            }
            i += 1;
        }
        true
    }

    /// Run the node type named by `ctx.run().uses`.
    pub(crate) fn execute(
        &self,
        ctx: &mut Context,
        request: RawRequest,
    ) -> Result<RawResult, NodeError> {
        let uses = ctx.run().uses.as_str();
        let node = self.node(uses).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.iter().map(|node| node.uses).collect();
            NodeError::fatal(format!(
                "bundle `{}` {} has no node type `{uses}` (it implements: {})",
                self.name,
                self.version,
                known.join(", ")
            ))
        })?;
        (node.run)(ctx, request)
    }
}

const fn bytes_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let mut i = 0;
    while i < left.len() {
        if left[i] != right[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Decode the request for a typed node, call it and encode its output.
/// Undecodable input or params become [`NodeError::InvalidInput`] naming the
/// node type. Called by the code [`export_bundle!`](crate::export_bundle) generates.
pub fn run_typed<I, P, O>(
    node: impl FnOnce(&mut Context, I, P) -> Result<Output<O>, NodeError>,
    ctx: &mut Context,
    request: RawRequest,
) -> Result<RawResult, NodeError>
where
    I: DeserializeOwned,
    P: DeserializeOwned,
    O: Serialize,
{
    let uses = ctx.run().uses.clone();
    let input = decode_input(&uses, request.input.as_deref())?;
    let params = serde_json::from_str(&request.params).map_err(|error| {
        NodeError::invalid_input(format!("node `{uses}`: invalid params: {error}"))
    })?;
    node(ctx, input, params)?.into_raw().map_err(|error| {
        NodeError::fatal(format!(
            "node `{uses}`: the output cannot be encoded as JSON: {error}"
        ))
    })
}

/// No input decodes like JSON `null`, so an `Option` input reads it as `None`.
fn decode_input<I: DeserializeOwned>(uses: &str, input: Option<&str>) -> Result<I, NodeError> {
    match input {
        Some(text) => serde_json::from_str(text).map_err(|error| {
            NodeError::invalid_input(format!("node `{uses}`: invalid input: {error}"))
        }),
        None => I::deserialize(serde_json::Value::Null).map_err(|error| {
            NodeError::invalid_input(format!(
                "node `{uses}`: the node needs an input but received none ({error})"
            ))
        }),
    }
}
