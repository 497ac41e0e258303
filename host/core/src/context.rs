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

/// Context keys naming the document itself: set when a run starts, never
/// changed (an operator's retry patch may not name them either).
pub const IDENTITY_KEYS: &[&str] = &["id", "runId"];

/// Context keys only the engine writes: the document identity
/// ([`IDENTITY_KEYS`]) and the run's identity. A store adds its own (see [`ContextStore::reserved_keys`](crate::store::ContextStore::reserved_keys)).
pub const ENGINE_KEYS: &[&str] = &[
    "id",
    "runId",
    "blueprintId",
    "blueprintVersion",
    "_catch_error",
];

/// Prefixes of the context keys only the engine writes: node outputs,
/// edge inputs, actions, dynamic nodes, resume data, awaiting marks
/// (`_awaitingNodeIds`, `_awaitingDetails`) and batch items.
pub const ENGINE_KEY_PREFIXES: &[&str] = &[
    "_outputs.",
    "_inputs.",
    "_actions.",
    "_dynamicNodes.",
    "_resume.",
    "_awaiting",
    "_batch.",
];

/// Whether `key` is one of the engine's own keys ([`ENGINE_KEYS`],
/// [`ENGINE_KEY_PREFIXES`]).
pub fn is_engine_key(key: &str) -> bool {
    ENGINE_KEYS.contains(&key) || ENGINE_KEY_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// How many context writes (sets and deletes) one node call may make by default.
pub const DEFAULT_WRITE_QUOTA: usize = 1_000;

/// What one node call may write to its run's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    /// Writes (sets and deletes) per call.
    pub writes: usize,
    /// Bytes (keys and JSON values) per call.
    pub bytes: usize,
    /// Keys a store reserves besides the engine's.
    pub store_keys: &'static [&'static str],
}

impl Default for WriteLimits {
    fn default() -> Self {
        Self {
            writes: DEFAULT_WRITE_QUOTA,
            bytes: crate::limits::DEFAULT_WRITE_BYTES,
            store_keys: &[],
        }
    }
}

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
        "context key '{0}' is the engine's or the store's (node outputs, inputs, actions, run identity, awaiting marks, batch items, system properties); a node may write only keys of its own: choose another key"
    )]
    Reserved(String),
    #[error("context write quota of {0} writes per node call exceeded; write fewer, larger values")]
    QuotaExceeded(usize),
    #[error(
        "context key '{key}': the write would bring this call's context writes to {bytes} bytes, more than the limit of {limit} bytes per node call; keep large data outside the run context"
    )]
    TooLarge {
        key: String,
        bytes: usize,
        limit: usize,
    },
    #[error("context key '{key}': {error}")]
    TooDeep {
        key: String,
        error: crate::limits::LimitError,
    },
}

/// A node's view of its run's context during one call.
#[derive(Debug, Clone)]
pub struct NodeContext {
    snapshot: Arc<ContextMap>,
    /// Latest change per key, in first-write order; `None` marks a delete.
    changes: IndexMap<String, Option<ContextValue>>,
    writes: usize,
    /// Bytes of the changes kept in `changes`.
    bytes: usize,
    limits: WriteLimits,
    /// The engine's own built-in nodes may write engine keys (batch items).
    engine_keys_allowed: bool,
}

impl NodeContext {
    /// A view over `snapshot` with the default limits.
    pub fn new(snapshot: Arc<ContextMap>) -> Self {
        Self::with_limits(snapshot, WriteLimits::default())
    }

    /// A view over `snapshot` that refuses writes beyond `limits`.
    pub fn with_limits(snapshot: Arc<ContextMap>, limits: WriteLimits) -> Self {
        Self {
            snapshot,
            changes: IndexMap::new(),
            writes: 0,
            bytes: 0,
            limits,
            engine_keys_allowed: false,
        }
    }

    /// This view for one of the engine's built-in nodes, which may write
    /// the engine's keys (a batch's items); store keys stay refused.
    pub fn for_builtin(mut self) -> Self {
        self.engine_keys_allowed = true;
        self
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
        self.check_key(key)?;
        crate::limits::check_json_depth("the value", value.json()).map_err(|error| {
            ContextWriteError::TooDeep {
                key: key.to_owned(),
                error,
            }
        })?;
        let replaced = self.change_size(key);
        let bytes = self.bytes - replaced + key.len() + value.json().len();
        if bytes > self.limits.bytes {
            return Err(ContextWriteError::TooLarge {
                key: key.to_owned(),
                bytes,
                limit: self.limits.bytes,
            });
        }
        self.count_write()?;
        self.bytes = bytes;
        self.changes.insert(key.to_owned(), Some(value));
        Ok(())
    }

    /// Removes `key`; returns whether it existed. Deleting is quota-counted too.
    pub fn delete(&mut self, key: &str) -> Result<bool, ContextWriteError> {
        self.check_key(key)?;
        let existed = self.has(key);
        self.count_write()?;
        self.bytes = self.bytes - self.change_size(key) + key.len();
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

    fn check_key(&self, key: &str) -> Result<(), ContextWriteError> {
        let engine_key = is_engine_key(key) && !self.engine_keys_allowed;
        if engine_key || self.limits.store_keys.contains(&key) {
            return Err(ContextWriteError::Reserved(key.to_owned()));
        }
        Ok(())
    }

    fn count_write(&mut self) -> Result<(), ContextWriteError> {
        if self.writes >= self.limits.writes {
            return Err(ContextWriteError::QuotaExceeded(self.limits.writes));
        }
        self.writes += 1;
        Ok(())
    }

    /// Bytes the change kept for `key` counts (0 if none).
    fn change_size(&self, key: &str) -> usize {
        match self.changes.get(key) {
            Some(Some(value)) => key.len() + value.json().len(),
            Some(None) => key.len(),
            None => 0,
        }
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
        let limits = WriteLimits {
            writes: 2,
            store_keys: &["_etag"],
            ..WriteLimits::default()
        };
        let mut ctx = NodeContext::with_limits(Arc::new(ContextMap::new()), limits);
        for key in [
            "id",
            "runId",
            "blueprintId",
            "blueprintVersion",
            "_outputs.victim",
            "_inputs.victim",
            "_actions.victim",
            "_dynamicNodes.victim",
            "_catch_error",
            "_awaitingNodeIds",
            "_resume.action",
            "_batch.s_1_item_0",
            "_etag",
        ] {
            assert_eq!(
                ctx.set(key, text(json!(1))),
                Err(ContextWriteError::Reserved(key.into())),
                "{key}"
            );
            assert_eq!(
                ctx.delete(key),
                Err(ContextWriteError::Reserved(key.into())),
                "{key}"
            );
        }
        ctx.set("a", text(json!(1))).unwrap();
        ctx.set("_outputs", text(json!(1))).unwrap();
        assert_eq!(
            ctx.set("c", text(json!(1))),
            Err(ContextWriteError::QuotaExceeded(2))
        );
        assert_eq!(ctx.into_changes().len(), 2);
    }

    #[test]
    fn bytes_per_call_count_the_latest_value_per_key() {
        let limits = WriteLimits {
            bytes: 20,
            ..WriteLimits::default()
        };
        let mut ctx = NodeContext::with_limits(Arc::new(ContextMap::new()), limits);
        let ten = text(json!("12345678"));
        ctx.set("k", ten.clone()).unwrap();
        // Rewriting a key replaces its bytes instead of adding to them.
        ctx.set("k", ten.clone()).unwrap();
        ctx.set("k", ten.clone()).unwrap();
        assert_eq!(
            ctx.set("k2", ten),
            Err(ContextWriteError::TooLarge {
                key: "k2".into(),
                bytes: 23,
                limit: 20
            })
        );
    }

    #[test]
    fn values_nested_too_deeply_are_refused() {
        let mut ctx = NodeContext::new(Arc::new(ContextMap::new()));
        // Keeping the text checks it without recursing: any depth is safe to parse.
        let abyss = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        assert!(
            ctx.set("abyss", ContextValue::parse(abyss).unwrap())
                .is_err()
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let error = ctx
            .set("deep", ContextValue::parse(deep).unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("at most 64 levels"), "{error}");
        assert!(ctx.into_changes().is_empty());
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
