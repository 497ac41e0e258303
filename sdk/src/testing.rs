//! Native unit tests for nodes: an in-memory host standing in for
//! flowcraft-host, so `cargo test` runs nodes without building WebAssembly.
//!
//! Call a node function directly with [`TestHost::context`], or run it the way
//! the host does — by `uses` key, with JSON input and params, through the
//! bundle's table — with [`TestHost::execute`]:
//!
//! ```
//! use flowcraft_sdk::testing::{Call, TestHost};
//! use flowcraft_sdk::{Context, NodeError, Output};
//! use serde_json::json;
//!
//! fn remember(ctx: &mut Context, input: String, _: serde::de::IgnoredAny) -> Result<Output<usize>, NodeError> {
//!     ctx.set("last", &input)?;
//!     Ok(Output::new(input.len()))
//! }
//!
//! flowcraft_sdk::export_bundle! { nodes: [("remember", "Stores its input", remember)] }
//!
//! let host = TestHost::new();
//! let result = host.execute(&BUNDLE, Call::new("remember").input(json!("hi"))).unwrap();
//! assert_eq!(result.output, Some(json!(2)));
//! assert_eq!(host.get("last"), Some(json!("hi")));
//!
//! let error = host.execute(&BUNDLE, Call::new("remember").input(json!(7))).unwrap_err();
//! assert!(error.message().starts_with("node `remember`: invalid input"));
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::bundle::Bundle;
use crate::context::{Context, RunInfo};
use crate::error::NodeError;
use crate::host::Host;
use crate::log::Level;
use crate::raw::RawRequest;

/// An in-memory host: a run context, configuration values, a clock and a log.
/// Clones share the same state, so the test keeps a handle while nodes run.
#[derive(Clone, Default)]
pub struct TestHost {
    state: Rc<RefCell<State>>,
}

#[derive(Default)]
struct State {
    context: BTreeMap<String, Value>,
    config: BTreeMap<String, String>,
    logs: Vec<LogRecord>,
    pinned_now_ms: Option<u64>,
}

/// One record a node logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub level: Level,
    pub message: String,
    /// The record's fields (a JSON object).
    pub fields: Value,
}

/// One execution request for [`TestHost::execute`]: no input, `{}` params,
/// attempt 1 unless set.
#[derive(Debug, Clone)]
#[must_use]
pub struct Call {
    uses: String,
    input: Option<Value>,
    params: Value,
    attempt: u32,
}

/// A successful execution with its JSON parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// The output; `None` when the node returned no output.
    pub output: Option<Value>,
    /// The routing action.
    pub action: Option<String>,
    /// The dynamic node definitions.
    pub dynamic_nodes: Vec<Value>,
}

impl TestHost {
    /// An empty context, no configuration, the real clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seed the run context with `value` under `key`.
    ///
    /// # Panics
    /// When `value` cannot be represented as JSON.
    pub fn with_value(self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).expect("test context values must be JSON");
        self.state
            .borrow_mut()
            .context
            .insert(key.to_owned(), value);
        self
    }

    /// Grant the configuration value `name`.
    pub fn with_config(self, name: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .config
            .insert(name.to_owned(), value.to_owned());
        self
    }

    /// Pin the clock to `now_ms`.
    pub fn with_now_ms(self, now_ms: u64) -> Self {
        self.state.borrow_mut().pinned_now_ms = Some(now_ms);
        self
    }

    /// A context for calling a node function directly (attempt 1 of node
    /// `test-node` in run `test-run`).
    pub fn context(&self) -> Context {
        self.context_for("test-node", 1)
    }

    /// Run the node type `call.uses` of `bundle` as the host would: JSON in,
    /// JSON out, errors as the host would receive them.
    ///
    /// # Panics
    /// When the node returns output or dynamic nodes that are not JSON.
    pub fn execute(&self, bundle: &Bundle, call: Call) -> Result<TestResult, NodeError> {
        let mut ctx = self.context_for(&call.uses, call.attempt);
        let request = RawRequest {
            input: call.input.map(|input| input.to_string()),
            params: call.params.to_string(),
        };
        let result = bundle.execute(&mut ctx, request)?;
        Ok(TestResult {
            output: result.output.as_deref().map(parse_returned_json),
            action: result.action,
            dynamic_nodes: result
                .dynamic_nodes
                .iter()
                .map(|node| parse_returned_json(node))
                .collect(),
        })
    }

    /// The value under `key` in the run context.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.state.borrow().context.get(key).cloned()
    }

    /// All keys of the run context, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.state.borrow().context.keys().cloned().collect()
    }

    /// Every record logged so far, oldest first.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.state.borrow().logs.clone()
    }

    fn context_for(&self, uses: &str, attempt: u32) -> Context {
        let run = RunInfo {
            uses: uses.to_owned(),
            run_id: "test-run".to_owned(),
            node_id: uses.to_owned(),
            blueprint_id: "test-blueprint".to_owned(),
            attempt,
        };
        Context::new(Box::new(self.clone()), run)
    }
}

fn parse_returned_json(text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|error| panic!("the node returned text that is not JSON ({error}): {text}"))
}

impl Call {
    /// Execute node type `uses`.
    pub fn new(uses: &str) -> Self {
        Self {
            uses: uses.to_owned(),
            input: None,
            params: Value::Object(Default::default()),
            attempt: 1,
        }
    }

    /// The node's resolved input.
    pub fn input(mut self, input: Value) -> Self {
        self.input = Some(input);
        self
    }

    /// The node's `params` object.
    pub fn params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// The attempt number (1 for the first attempt).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }
}

impl Host for TestHost {
    fn context_get(&self, key: &str) -> Option<String> {
        self.get(key).map(|value| value.to_string())
    }

    fn context_set(&self, key: &str, value: &str) -> Result<(), String> {
        let value = serde_json::from_str(value).map_err(|error| format!("not JSON: {error}"))?;
        self.state
            .borrow_mut()
            .context
            .insert(key.to_owned(), value);
        Ok(())
    }

    fn context_has(&self, key: &str) -> bool {
        self.state.borrow().context.contains_key(key)
    }

    fn context_delete(&self, key: &str) -> bool {
        self.state.borrow_mut().context.remove(key).is_some()
    }

    fn context_keys(&self) -> Vec<String> {
        self.keys()
    }

    fn log(&self, level: Level, message: &str, fields: &str) {
        let fields = serde_json::from_str(fields).unwrap_or(Value::Null);
        self.state.borrow_mut().logs.push(LogRecord {
            level,
            message: message.to_owned(),
            fields,
        });
    }

    fn now_ms(&self) -> u64 {
        self.state.borrow().pinned_now_ms.unwrap_or_else(|| {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
        })
    }

    fn config_get(&self, name: &str) -> Option<String> {
        self.state.borrow().config.get(name).cloned()
    }
}
