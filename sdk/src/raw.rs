//! The JSON-text level of the contract, as it crosses the WIT boundary.
//!
//! Typed nodes never see these types. A *raw node* (listed under `raw_nodes`
//! in [`export_bundle!`](crate::export_bundle)) receives the input and params
//! as unparsed JSON text and returns text, e.g. a passthrough that should not
//! pay for parsing. Nothing here checks that returned text is JSON: the host
//! validates it and fails the node when it is not.

use crate::context::Context;
use crate::error::NodeError;

/// A raw node's view of its request (run facts are on the [`Context`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// The resolved input as JSON text; `None` when the node has no input.
    pub input: Option<String>,
    /// The node's `params` object as JSON text (`{}` when absent).
    pub params: String,
}

/// A successful execution in JSON text form (the WIT `node-result`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawResult {
    /// The output as JSON text; `None` means "no output" (stored as `null`).
    pub output: Option<String>,
    /// Routing action: edges whose `action` equals it are taken.
    pub action: Option<String>,
    /// Nodes to add to the run, each a Flowcraft node definition as JSON text.
    pub dynamic_nodes: Vec<String>,
}

/// The signature every exported node is reduced to.
pub type RawNode = fn(&mut Context, RawRequest) -> Result<RawResult, NodeError>;
