//! Structured logging from a node: records go to the host's log with the run
//! and node attached by the host.

use serde_json::Value;

use crate::context::Context;

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Context {
    /// Emit a record with structured `fields`, which should be a JSON object
    /// (e.g. `json!({"orderId": id})`); any other value is logged under the
    /// field `value`, and `Value::Null` means "no fields".
    pub fn log(&self, level: Level, message: &str, fields: Value) {
        let fields = match fields {
            Value::Object(_) => fields,
            Value::Null => Value::Object(Default::default()),
            other => serde_json::json!({ "value": other }),
        };
        self.log_raw(level, message, &fields.to_string());
    }

    /// Emit a record whose `fields` are JSON text, passed to the host as they
    /// are; the host prints anything but a JSON object as an escaped string.
    pub fn log_raw(&self, level: Level, message: &str, fields: &str) {
        self.host().log(level, message, fields);
    }

    /// Emit a trace record without fields.
    pub fn trace(&self, message: &str) {
        self.log(Level::Trace, message, Value::Null);
    }

    /// Emit a debug record without fields.
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message, Value::Null);
    }

    /// Emit an info record without fields.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message, Value::Null);
    }

    /// Emit a warning record without fields.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message, Value::Null);
    }

    /// Emit an error record without fields.
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message, Value::Null);
    }
}
