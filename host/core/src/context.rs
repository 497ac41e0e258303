//! Run contexts: the flat key → JSON map every run carries, and the view a
//! node gets of it while it executes.
//!
//! A job reads its run's context once ([`ContextMap`], shared behind an `Arc`)
//! and hands the node a [`NodeContext`]: reads see that snapshot plus the
//! node's own writes, and writes are recorded as an ordered list of
//! [`ContextChange`]s that the engine persists after the call, together with
//! the node's output, in one store write.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// A run's context: flat keys (names may contain dots) to JSON values.
pub type ContextMap = Map<String, Value>;

/// Keys a node may not write: the document identity and Cosmos system properties.
pub const RESERVED_KEYS: &[&str] = &[
    "id",
    "runId",
    "_rid",
    "_self",
    "_etag",
    "_ts",
    "_attachments",
];

/// How many context writes (sets and deletes) one node call may make by default.
pub const DEFAULT_WRITE_QUOTA: usize = 1_000;

/// One recorded change to a run's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ContextChange {
    /// Store `value` under `key`.
    Set { key: String, value: Value },
    /// Remove `key` (a no-op if it is absent).
    Delete { key: String },
}

impl ContextChange {
    /// The key this change touches.
    pub fn key(&self) -> &str {
        match self {
            ContextChange::Set { key, .. } | ContextChange::Delete { key } => key,
        }
    }

    /// Applies the change to an in-memory context, consuming it.
    pub fn apply(self, context: &mut ContextMap) {
        match self {
            ContextChange::Set { key, value } => {
                context.insert(key, value);
            }
            ContextChange::Delete { key } => {
                context.shift_remove(&key);
            }
        }
    }

    /// Applies a copy of the change to an in-memory context.
    pub fn apply_to(&self, context: &mut ContextMap) {
        self.clone().apply(context);
    }
}

/// Why a node's context write was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContextWriteError {
    #[error(
        "context key '{0}' is reserved (document identity or system property); choose another key"
    )]
    Reserved(String),
    #[error("context write quota of {0} writes per node call exceeded; write fewer, larger values")]
    QuotaExceeded(usize),
}

/// A node's view of its run's context during one call.
#[derive(Debug, Clone)]
pub struct NodeContext {
    snapshot: Arc<ContextMap>,
    /// Latest change per key, in first-write order; `None` marks a delete.
    changes: IndexMap<String, Option<Value>>,
    writes: usize,
    write_quota: usize,
}

impl NodeContext {
    /// A view over `snapshot` with the default write quota.
    pub fn new(snapshot: Arc<ContextMap>) -> Self {
        Self::with_quota(snapshot, DEFAULT_WRITE_QUOTA)
    }

    /// A view over `snapshot` that refuses writes beyond `write_quota`.
    pub fn with_quota(snapshot: Arc<ContextMap>, write_quota: usize) -> Self {
        Self {
            snapshot,
            changes: IndexMap::new(),
            writes: 0,
            write_quota,
        }
    }

    /// The value under `key`, seeing this node's own writes.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self.changes.get(key) {
            Some(change) => change.as_ref(),
            None => self.snapshot.get(key),
        }
    }

    /// Whether `key` exists.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Stores `value` under `key`.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), ContextWriteError> {
        self.count_write(key)?;
        self.changes.insert(key.to_owned(), Some(value));
        Ok(())
    }

    /// Removes `key`; returns whether it existed. Deleting is quota-counted too.
    pub fn delete(&mut self, key: &str) -> Result<bool, ContextWriteError> {
        let existed = self.has(key);
        self.count_write(key)?;
        self.changes.insert(key.to_owned(), None);
        Ok(existed)
    }

    /// Every key currently visible, snapshot order first.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .snapshot
            .keys()
            .filter(|key| !matches!(self.changes.get(*key), Some(None)))
            .cloned()
            .collect();
        for (key, change) in &self.changes {
            if change.is_some() && !self.snapshot.contains_key(key) {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// The node's net changes (one per key, last write wins), in first-write order.
    pub fn into_changes(self) -> Vec<ContextChange> {
        self.changes
            .into_iter()
            .map(|(key, change)| match change {
                Some(value) => ContextChange::Set { key, value },
                None => ContextChange::Delete { key },
            })
            .collect()
    }

    fn count_write(&mut self, key: &str) -> Result<(), ContextWriteError> {
        if RESERVED_KEYS.contains(&key) {
            return Err(ContextWriteError::Reserved(key.to_owned()));
        }
        if self.writes >= self.write_quota {
            return Err(ContextWriteError::QuotaExceeded(self.write_quota));
        }
        self.writes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(initial: Value) -> NodeContext {
        let Value::Object(map) = initial else {
            unreachable!()
        };
        NodeContext::new(Arc::new(map))
    }

    #[test]
    fn reads_see_own_writes_and_deletes() {
        let mut ctx = view(json!({"a": 1, "b": 2}));
        ctx.set("a", json!(10)).unwrap();
        assert!(ctx.delete("b").unwrap());
        ctx.set("c", json!(3)).unwrap();
        assert_eq!(ctx.get("a"), Some(&json!(10)));
        assert!(!ctx.has("b"));
        assert_eq!(ctx.keys(), vec!["a", "c"]);
    }

    #[test]
    fn changes_are_net_per_key_in_first_write_order() {
        let mut ctx = view(json!({"tmp": 1}));
        ctx.set("x", json!(1)).unwrap();
        ctx.delete("tmp").unwrap();
        ctx.set("x", json!(2)).unwrap();
        assert_eq!(
            ctx.into_changes(),
            vec![
                ContextChange::Set {
                    key: "x".into(),
                    value: json!(2)
                },
                ContextChange::Delete { key: "tmp".into() },
            ]
        );
    }

    #[test]
    fn reserved_keys_and_quota_are_enforced() {
        let mut ctx = NodeContext::with_quota(Arc::new(Map::new()), 2);
        assert_eq!(
            ctx.set("id", json!(1)),
            Err(ContextWriteError::Reserved("id".into()))
        );
        ctx.set("a", json!(1)).unwrap();
        ctx.set("b", json!(1)).unwrap();
        assert_eq!(
            ctx.set("c", json!(1)),
            Err(ContextWriteError::QuotaExceeded(2))
        );
    }
}
