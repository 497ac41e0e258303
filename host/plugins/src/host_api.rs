//! The `flowcraft:node/host` interface: what a running node may ask the host.
//!
//! Every function acts on the [`CallState`] of the call in progress: the run
//! context view handed to this node (never another run's), the bundle's
//! grants, and the call's labels and budgets for logging. Everything the
//! guest passes is untrusted: a value is kept as checked text and refused
//! when nested too deeply, and log records are escaped and budgeted (see
//! [`crate::guest_log`]).

use flowcraft_core::context::{ContextValue, ContextWriteError};

use crate::bindings::{Host, LogLevel, TypesHost};
use crate::call::MAX_GUEST_MESSAGE_BYTES;
use crate::config::LOG_MESSAGE_BYTES;
use crate::guest_log::{GUEST_TARGET, escape, render_fields};
use crate::sandbox::{CallState, HostRuleBroken};

impl TypesHost for CallState {}

impl Host for CallState {
    fn context_get(&mut self, key: String) -> Option<String> {
        self.context.get(&key).map(|value| value.json().to_owned())
    }

    /// A refused write is answered to the guest and also fails the call
    /// (see [`CallState::fault`]): a node cannot ignore it and finish.
    fn context_set(&mut self, key: String, value: String) -> Result<(), String> {
        // Keeping the text checks it without building a tree, at any depth;
        // the context refuses a value nested too deeply.
        let written = ContextValue::parse(value)
            .map_err(|e| format!("context-set '{key}': the value is not valid JSON ({e})"))
            .and_then(|value| {
                self.context
                    .set(&key, value)
                    .map_err(|refused| match refused {
                        ContextWriteError::TooDeep { error, .. } => {
                            format!("context-set '{key}': {error}")
                        }
                        other => format!("context-set '{key}': {other}"),
                    })
            });
        if let Err(refusal) = &written {
            self.fault
                .get_or_insert_with(|| escape(refusal, MAX_GUEST_MESSAGE_BYTES));
        }
        written
    }

    fn context_has(&mut self, key: String) -> bool {
        self.context.has(&key)
    }

    fn context_delete(&mut self, key: String) -> wasmtime::Result<bool> {
        self.context.delete(&key).map_err(|error| {
            // It becomes the node's failure message: guest text, escaped.
            let message = escape(
                &format!("context-delete '{key}': {error}"),
                MAX_GUEST_MESSAGE_BYTES,
            );
            self.fault = Some(message.clone());
            wasmtime::Error::new(HostRuleBroken(message))
        })
    }

    fn context_keys(&mut self) -> Vec<String> {
        self.context.keys()
    }

    fn log(&mut self, level: LogLevel, message: String, fields: String) {
        let size = message.len() + fields.len();
        if self.log.drop_if_exhausted(size) {
            return;
        }
        let message = escape(&message, LOG_MESSAGE_BYTES);
        let fields = render_fields(&fields);
        if !self.log.admit(message.len() + fields.len(), size) {
            return;
        }
        let labels = &self.labels;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: GUEST_TARGET,
                    $level,
                    bundle = %labels.bundle,
                    node_type = %labels.uses,
                    run_id = %labels.run_id,
                    node_id = %labels.node_id,
                    fields = %fields,
                    "{message}"
                )
            };
        }
        match level {
            LogLevel::Trace => emit!(tracing::Level::TRACE),
            LogLevel::Debug => emit!(tracing::Level::DEBUG),
            LogLevel::Info => emit!(tracing::Level::INFO),
            LogLevel::Warn => emit!(tracing::Level::WARN),
            LogLevel::Error => emit!(tracing::Level::ERROR),
        }
    }

    fn now_ms(&mut self) -> u64 {
        u64::try_from(crate::clock::unix_time().as_millis()).unwrap_or(u64::MAX)
    }

    fn config_get(&mut self, name: String) -> Option<String> {
        self.grants.config.get(&name).cloned()
    }
}
