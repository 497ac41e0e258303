//! The JSON-text level of the contract, as it crosses the WIT boundary.
//!
//! Typed nodes never see these types. A *raw node* (listed under `raw_nodes`
//! in [`export_bundle!`](crate::export_bundle)) receives the input and params
//! as unparsed JSON text and returns text, e.g. a passthrough that should not
//! pay for parsing. Nothing here checks that returned text is JSON: the host
//! validates it and fails the node when it is not. [`Context::get_raw`] and
//! [`Context::set_raw`] read and write context values as JSON text.

use crate::context::{Context, ContextError};
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

impl Context {
    /// The JSON text stored under `key`, unparsed; `None` when absent.
    pub fn get_raw(&self, key: &str) -> Option<String> {
        self.host().context_get(key)
    }

    /// Store the JSON text `json` under `key` as it is. The host checks it:
    /// text that is not JSON is refused like a reserved key or a write over
    /// the call's budget ([`ContextError::Rejected`]).
    pub fn set_raw(&mut self, key: &str, json: &str) -> Result<(), ContextError> {
        self.host()
            .context_set(key, json)
            .map_err(|reason| ContextError::Rejected {
                key: key.to_owned(),
                reason,
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::context::ContextError;
    use crate::testing::TestHost;

    #[test]
    fn raw_values_are_json_text() {
        let host = TestHost::new();
        let mut ctx = host.context();
        ctx.set_raw("a", r#"{"b": [1]}"#).unwrap();
        assert_eq!(host.get("a"), Some(json!({"b": [1]})));
        assert_eq!(ctx.get_raw("a").as_deref(), Some(r#"{"b":[1]}"#));
        assert_eq!(ctx.get_raw("missing"), None);
        let refused = ctx.set_raw("a", "{not JSON").unwrap_err();
        assert!(
            matches!(refused, ContextError::Rejected { .. }),
            "{refused}"
        );
    }
}
