//! The engine's tunables, its errors and the report of a run.

use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::context::{ContextMap, DEFAULT_WRITE_QUOTA};
use crate::expression::EvaluatorMode;
use crate::limits;
use crate::progress::{DEFAULT_STEP_LIMIT, RunError, RunState};
use crate::store::StoreError;

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Expression language for blueprints that do not name one.
    pub evaluator: EvaluatorMode,
    /// Node executions allowed per run.
    pub step_limit: u64,
    /// Upper bound of a retry's back-off delay.
    pub max_retry_delay: Duration,
    /// Context writes allowed per node call.
    pub write_quota: usize,
    /// Bytes of context writes allowed per node call.
    pub write_bytes: usize,
    /// The node runner's time limit for a node without `config.timeout`:
    /// the most a dynamic node may ask for when its spawner names none.
    pub default_node_timeout: Duration,
    /// Runs whose latest context this process remembers (0: none); see
    /// [`crate::context_cache`]. Off for fleets with writers outside the engine.
    pub context_cache: usize,
    /// Runs are shared with workers that do not keep the progress record
    /// (upstream's TypeScript workers): a job for a node this record has not
    /// scheduled was sent by one of them, so the record catches up with the
    /// context (nodes with an output count as done) and the node runs.
    /// Otherwise such a job is stale and dropped.
    pub shared_with_upstream: bool,
    /// The base URL of the API (`serve`'s) that answers webhook calls, as
    /// `webhook` nodes give it out; `None`: they give the path alone.
    pub public_url: Option<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            evaluator: EvaluatorMode::Safe,
            step_limit: DEFAULT_STEP_LIMIT,
            max_retry_delay: Duration::from_secs(3_600),
            write_quota: DEFAULT_WRITE_QUOTA,
            write_bytes: limits::DEFAULT_WRITE_BYTES,
            default_node_timeout: Duration::from_secs(30),
            context_cache: 0,
            shared_with_upstream: false,
            public_url: None,
        }
    }
}

/// What can go wrong outside a node.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Blueprint with ID '{0}' not found in the worker's runtime registry.")]
    UnknownBlueprint(String),
    #[error(
        "blueprint '{blueprint}' version {version} is not loaded in this worker (loaded: {loaded}); the job belongs to a worker that has it"
    )]
    UnknownBlueprintVersion {
        blueprint: String,
        version: Value,
        loaded: String,
    },
    #[error("node '{node}' of run '{run}' cannot run here: {reason}")]
    ImplementationUnavailable {
        run: String,
        node: String,
        reason: String,
    },
    #[error("run '{0}' already exists; choose another run id")]
    RunExists(String),
    #[error("run '{0}' not found")]
    UnknownRun(String),
    #[error(
        "job for node '{node}' of run '{run}', but blueprint '{blueprint}' (the run's version) has no node '{node}' and the run added none by that name; the message does not belong to this run"
    )]
    UnknownNode {
        run: String,
        blueprint: String,
        node: String,
    },
    #[error("cannot start blueprint '{blueprint}': {message}")]
    Pin { blueprint: String, message: String },
    #[error(
        "Cannot resume: The provided context is not in an awaiting state. Run '{run}' is {}; only an awaiting run can be resumed",
        state.as_str()
    )]
    NotAwaiting { run: String, state: RunState },
    #[error("Cannot resume: Node '{node}' is not in an awaiting state. {hint}")]
    NodeNotAwaiting { node: String, hint: String },
    #[error("run '{run}' has no webhook node '{node}'")]
    NoWebhook { run: String, node: String },
    #[error(
        "cannot retry run '{run}': it is {}; only a failed run can be retried",
        state.as_str()
    )]
    NotRetryable { run: String, state: RunState },
    #[error(
        "cannot retry run '{run}' with context key '{key}': the document's identity cannot be changed"
    )]
    ReservedKey { run: String, key: String },
    #[error(
        "internal error: the job for node '{node}' of run '{run}' panicked and its node could not be failed: {message}; the job is delivered again and dead-lettered after the delivery limit (a bug in flowcraft-host: please report it with the log)"
    )]
    Panicked {
        run: String,
        node: String,
        message: String,
    },
}

impl EngineError {
    /// Whether the job should be delivered again (a backend problem that
    /// may pass; not a store's permanent refusal).
    pub fn is_transient(&self) -> bool {
        matches!(self, EngineError::Store(error) if !error.is_permanent())
    }
}

/// A run's externally visible result.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub run_id: String,
    pub state: RunState,
    pub context: ContextMap,
    pub errors: Vec<RunError>,
    /// What went wrong without failing the run.
    pub warnings: Vec<RunError>,
}
