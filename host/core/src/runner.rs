//! The node-runner contract: how the engine asks for one attempt of one node.
//!
//! The engine handles the built-in node types itself (`wait`, `sleep`,
//! `subflow`, ...) and hands every other `uses` key to a [`NodeRunner`]: in
//! production the WebAssembly plugin runtime (`flowcraft-plugins`), in tests
//! possibly native closures. A runner turns a [`NodeCall`] into a
//! [`NodeOutcome`]; it never touches stores or queues.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::blueprint::{Blueprint, NodeDefinition};
use crate::context::{ContextValue, NodeContext};

/// The implementation chosen for each `uses` key of a run, recorded when the
/// run starts so that every attempt of every node of that run executes the
/// same code (for plugins: the bundle's content digest).
pub type Pins = BTreeMap<String, String>;

/// One attempt of one node.
#[derive(Debug)]
pub struct NodeCall {
    pub uses: String,
    pub run_id: String,
    pub node_id: String,
    pub blueprint_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The resolved input as JSON text; `None` is "no input" (JavaScript `undefined`).
    pub input: Option<ContextValue>,
    /// The node's `params` (`{}` when absent).
    pub params: Value,
    /// The implementation pinned for this `uses` key when the run started, if any.
    pub pin: Option<String>,
    /// Wall-clock limit for this attempt; the runner should stop the node by then.
    pub timeout: Option<Duration>,
    /// The run's context as this node sees it; returned in the outcome.
    pub context: NodeContext,
}

/// A successful attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSuccess {
    /// The output; `None` is stored as `null`.
    pub output: Option<Value>,
    /// Routing action.
    pub action: Option<String>,
    /// Nodes to add to the run as successors of this one.
    pub dynamic_nodes: Vec<NodeDefinition>,
}

/// How an attempt failed, which decides retries and fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Transient: retried while attempts remain, then the fallback runs.
    Retryable,
    /// Permanent: no more attempts, no fallback.
    Fatal,
    /// Unusable input or params: handled like `Fatal`.
    InvalidInput,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct NodeFailure {
    pub kind: FailureKind,
    /// What went wrong, naming the node type and (for plugins) the bundle.
    pub message: String,
}

impl NodeFailure {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Retryable,
            message: message.into(),
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Fatal,
            message: message.into(),
        }
    }

    /// Whether retries and fallback apply.
    pub fn is_fatal(&self) -> bool {
        !matches!(self.kind, FailureKind::Retryable)
    }
}

/// What a runner hands back: the context (with the node's writes) and the result.
#[derive(Debug)]
pub struct NodeOutcome {
    pub context: NodeContext,
    pub result: Result<NodeSuccess, NodeFailure>,
}

/// Why a runner cannot pin implementations for a blueprint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct PinError(pub String);

/// Executes node types that are not built into the engine.
pub trait NodeRunner: Send + Sync + 'static {
    /// Whether this runner implements `uses` (for validation).
    fn implements(&self, uses: &str) -> bool;

    /// Chooses the implementation of every non-built-in `uses` key of
    /// `blueprint`, honouring its `metadata.plugins` bindings. Called when a
    /// run starts; the result is stored with the run and each call carries its
    /// entry back in [`NodeCall::pin`].
    fn pin(&self, blueprint: &Blueprint) -> Result<Pins, PinError>;

    /// Runs one attempt.
    fn run(&self, call: NodeCall) -> impl Future<Output = NodeOutcome> + Send;

    /// Makes the implementation a run is pinned to (`pin`) ready to run
    /// `uses`, fetching it if the runner can. `Err` says why it is not
    /// here: the job then goes back to its queue for later (or for another
    /// worker) instead of failing the node. A runner that holds everything
    /// it pins has nothing to do.
    fn prepare(&self, uses: &str, pin: &str) -> impl Future<Output = Result<(), String>> + Send {
        let _ = (uses, pin);
        std::future::ready(Ok(()))
    }

    /// Whether node type `uses` comes from the same implementation (for
    /// plugins: the same bundle) as node type `spawner` pinned to `pin`. A
    /// node may add dynamic nodes of its own bundle's types only (and
    /// built-ins, and what its blueprint allows), so that it never borrows
    /// another bundle's code or grants. A runner without bundles has one
    /// implementation for everything.
    fn shares_bundle(&self, spawner: &str, pin: Option<&str>, uses: &str) -> bool {
        let _ = (spawner, pin, uses);
        true
    }
}
