//! [`Context`]: what a running node sees of its run — the run context (a map of
//! JSON values shared by the run's nodes), facts about the current attempt,
//! the clock and the bundle's configuration values.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::host::Host;

/// Facts about the attempt being executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The `uses` key being executed.
    pub uses: String,
    /// The run this node belongs to.
    pub run_id: String,
    /// The node's id inside its blueprint.
    pub node_id: String,
    /// The blueprint the run executes.
    pub blueprint_id: String,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
}

/// A context operation that failed.
#[derive(Debug, Error)]
pub enum ContextError {
    /// The stored value does not have the type the node asked for.
    #[error("context key `{key}` does not hold the expected type: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    /// The value cannot be represented as JSON (e.g. a map with non-string keys).
    #[error("the value for context key `{key}` cannot be encoded as JSON: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },
    /// The host refused the write (reserved key, or the per-call write quota is used up).
    #[error("the host refused to write context key `{key}`: {reason}")]
    Rejected { key: String, reason: String },
}

/// The node's handle on its run. Every call acts on the run the node executes
/// for, never on another run.
pub struct Context {
    host: Box<dyn Host>,
    run: RunInfo,
}

impl Context {
    pub(crate) fn new(host: Box<dyn Host>, run: RunInfo) -> Self {
        Self { host, run }
    }

    /// Which node, run and attempt is executing.
    pub fn run(&self) -> &RunInfo {
        &self.run
    }

    /// The value under `key` decoded as `T`, or `None` when the key is absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ContextError> {
        self.host
            .context_get(key)
            .map(|text| {
                serde_json::from_str(&text).map_err(|source| ContextError::Decode {
                    key: key.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Store `value` under `key`, replacing any previous value.
    pub fn set<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), ContextError> {
        let text = serde_json::to_string(value).map_err(|source| ContextError::Encode {
            key: key.to_owned(),
            source,
        })?;
        self.set_raw(key, &text)
    }

    /// Whether `key` exists.
    pub fn has(&self, key: &str) -> bool {
        self.host.context_has(key)
    }

    /// Remove `key`; returns whether it existed.
    pub fn delete(&mut self, key: &str) -> bool {
        self.host.context_delete(key)
    }

    /// All keys of the run's context.
    pub fn keys(&self) -> Vec<String> {
        self.host.context_keys()
    }

    /// Wall-clock time in milliseconds since the Unix epoch, as the host sees it.
    pub fn now_ms(&self) -> u64 {
        self.host.now_ms()
    }

    /// A configuration value or secret the host's configuration grants this
    /// bundle; `None` when there is no such grant.
    pub fn config(&self, name: &str) -> Option<String> {
        self.host.config_get(name)
    }

    pub(crate) fn host(&self) -> &dyn Host {
        self.host.as_ref()
    }
}
