//! Run contexts: the flat key → JSON map every run carries, and the view a
//! node gets of it while it executes.
//!
//! A job reads its run's context once ([`ContextMap`], shared behind an `Arc`)
//! and hands the node a [`NodeContext`]: reads see that snapshot plus the
//! node's own writes, and writes are recorded as an ordered list of
//! [`ContextChange`]s that the engine persists after the call, together with
//! the node's output, in one store write.
//!
//! Values are kept as JSON text ([`ContextValue`]) from the moment they are
//! read or written until something needs their structure: most of a context
//! only travels between the store, the cache and the plugins, and a parsed
//! `serde_json::Value` tree takes about four times the memory of its text
//! (see `bench/results/`). The text is shared, not copied, between the
//! contexts and jobs that hold the same value: a node's output is also its
//! successor's input, and a context is copied for every job that changes it.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use thiserror::Error;

/// A run's context: flat keys (names may contain dots) to JSON values.
pub type ContextMap = IndexMap<String, ContextValue>;

/// One context value: valid JSON text without surrounding whitespace, shared
/// by its clones.
#[derive(Clone)]
pub struct ContextValue(Arc<RawValue>);

impl ContextValue {
    /// The JSON text of `value`.
    pub fn from_value(value: &Value) -> Self {
        // Serializing a `Value` cannot fail: its map keys are strings.
        Self::serialize_from(value).unwrap_or_else(|_| Self::null())
    }

    /// The JSON text of anything serializable.
    pub fn serialize_from<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self::shared)
    }

    /// Checks that `json` is one JSON value and keeps its text (without
    /// surrounding whitespace), building no tree.
    pub fn parse(json: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(Self::shared)
    }

    /// JSON `null`.
    pub fn null() -> Self {
        Self::shared(RawValue::NULL.to_owned())
    }

    fn shared(text: Box<RawValue>) -> Self {
        Self(Arc::from(text))
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Whether this is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.json() == "null"
    }

    /// The parsed value (allocates a tree: for reads that need structure).
    pub fn to_value(&self) -> Value {
        // The text was checked when this value was made, and `Value` accepts
        // every JSON text within the same nesting limit.
        serde_json::from_str(self.json()).unwrap_or(Value::Null)
    }

    /// The value's text if it is a JSON string, unescaped.
    pub fn as_string(&self) -> Option<String> {
        self.json()
            .starts_with('"')
            .then(|| serde_json::from_str(self.json()).ok())
            .flatten()
    }
}

impl From<Value> for ContextValue {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

impl From<&Value> for ContextValue {
    fn from(value: &Value) -> Self {
        Self::from_value(value)
    }
}

/// Equal when the JSON texts are equal.
impl PartialEq for ContextValue {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

/// Equal when this text parses to `other` (parses: for checks, not hot paths).
impl PartialEq<Value> for ContextValue {
    fn eq(&self, other: &Value) -> bool {
        &self.to_value() == other
    }
}

impl fmt::Debug for ContextValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for ContextValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ContextValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::shared)
    }
}

/// A context from a JSON object (`None` for any other value).
pub fn context_from_value(value: Value) -> Option<ContextMap> {
    match value {
        Value::Object(object) => Some(context_from_object(object)),
        _ => None,
    }
}

/// A context from a JSON object's entries.
pub fn context_from_object(object: Map<String, Value>) -> ContextMap {
    object
        .into_iter()
        .map(|(key, value)| (key, ContextValue::from(value)))
        .collect()
}

/// A context as a JSON object (parses every value).
pub fn context_to_object(context: &ContextMap) -> Map<String, Value> {
    context
        .iter()
        .map(|(key, value)| (key.clone(), value.to_value()))
        .collect()
}

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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ContextChange {
    /// Store `value` under `key`.
    Set { key: String, value: ContextValue },
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

    /// Bytes of the change as JSON text: key and value.
    pub fn size(&self) -> usize {
        match self {
            ContextChange::Set { key, value } => key.len() + value.json().len(),
            ContextChange::Delete { key } => key.len(),
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
    changes: IndexMap<String, Option<ContextValue>>,
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
    pub fn get(&self, key: &str) -> Option<&ContextValue> {
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
    pub fn set(&mut self, key: &str, value: ContextValue) -> Result<(), ContextWriteError> {
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
        NodeContext::new(Arc::new(context_from_value(initial).unwrap()))
    }

    fn text(value: Value) -> ContextValue {
        ContextValue::from(value)
    }

    #[test]
    fn reads_see_own_writes_and_deletes() {
        let mut ctx = view(json!({"a": 1, "b": 2}));
        ctx.set("a", text(json!(10))).unwrap();
        assert!(ctx.delete("b").unwrap());
        ctx.set("c", text(json!(3))).unwrap();
        assert_eq!(ctx.get("a"), Some(&text(json!(10))));
        assert!(!ctx.has("b"));
        assert_eq!(ctx.keys(), vec!["a", "c"]);
    }

    #[test]
    fn changes_are_net_per_key_in_first_write_order() {
        let mut ctx = view(json!({"tmp": 1}));
        ctx.set("x", text(json!(1))).unwrap();
        ctx.delete("tmp").unwrap();
        ctx.set("x", text(json!(2))).unwrap();
        assert_eq!(
            ctx.into_changes(),
            vec![
                ContextChange::Set {
                    key: "x".into(),
                    value: text(json!(2))
                },
                ContextChange::Delete { key: "tmp".into() },
            ]
        );
    }

    #[test]
    fn reserved_keys_and_quota_are_enforced() {
        let mut ctx = NodeContext::with_quota(Arc::new(ContextMap::new()), 2);
        assert_eq!(
            ctx.set("id", text(json!(1))),
            Err(ContextWriteError::Reserved("id".into()))
        );
        ctx.set("a", text(json!(1))).unwrap();
        ctx.set("b", text(json!(1))).unwrap();
        assert_eq!(
            ctx.set("c", text(json!(1))),
            Err(ContextWriteError::QuotaExceeded(2))
        );
    }

    #[test]
    fn values_keep_their_text_and_parse_on_demand() {
        let value = ContextValue::parse("  {\"b\": [1, 2], \"a\": null} ".into()).unwrap();
        assert_eq!(value.json(), "{\"b\": [1, 2], \"a\": null}");
        assert_eq!(value.to_value(), json!({"b": [1, 2], "a": null}));
        assert!(ContextValue::parse("{\"a\": 1} trailing".into()).is_err());
        assert!(ContextValue::parse("".into()).is_err());
        assert!(ContextValue::null().is_null());
        assert_eq!(text(json!("a\"b")).as_string().as_deref(), Some("a\"b"));
        assert_eq!(text(json!(1)).as_string(), None);
    }

    #[test]
    fn a_context_serializes_its_values_verbatim() {
        let mut context = ContextMap::new();
        context.insert("x".into(), ContextValue::parse("[1,  2]".into()).unwrap());
        context.insert("y".into(), text(json!({"k": "v"})));
        assert_eq!(
            serde_json::to_string(&context).unwrap(),
            "{\"x\":[1,  2],\"y\":{\"k\":\"v\"}}"
        );
        let back: ContextMap = serde_json::from_str("{\"x\": [1,  2], \"y\" : true}").unwrap();
        assert_eq!(back["x"].json(), "[1,  2]");
        assert_eq!(back["y"].json(), "true");
        let from_tree: ContextMap = serde_json::from_value(json!({"z": [3]})).unwrap();
        assert_eq!(from_tree["z"].json(), "[3]");
    }
}
