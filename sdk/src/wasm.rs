//! The component side (wasm32 only): the bindings generated from
//! `wit/node.wit`, the [`Host`] that calls the component's imports, and the
//! conversions behind the exports that [`export_bundle!`](crate::export_bundle)
//! emits. Bundles never run `wit-bindgen` themselves.

use crate::bundle::Bundle;
use crate::context::{Context, RunInfo};
use crate::error::NodeError;
use crate::host::Host;
use crate::log::Level;
use crate::raw::{RawRequest, RawResult};

/// The generated bindings for the `bundle` world.
pub mod bindings {
    wit_bindgen::generate!({
        world: "bundle",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_component",
    });
}

use bindings::flowcraft::node::host as imports;
use bindings::flowcraft::node::types as wit;

pub use bindings::exports::flowcraft::node::node::Guest;
pub use wit::{BundleInfo, NodeError as WitNodeError, NodeResult, Request};

/// The host of the component, reached through its imports.
struct ComponentHost;

impl Host for ComponentHost {
    fn context_get(&self, key: &str) -> Option<String> {
        imports::context_get(key)
    }

    fn context_set(&self, key: &str, value: &str) -> Result<(), String> {
        imports::context_set(key, value)
    }

    fn context_has(&self, key: &str) -> bool {
        imports::context_has(key)
    }

    fn context_delete(&self, key: &str) -> bool {
        imports::context_delete(key)
    }

    fn context_keys(&self) -> Vec<String> {
        imports::context_keys()
    }

    fn log(&self, level: Level, message: &str, fields: &str) {
        imports::log(level.into(), message, fields);
    }

    fn now_ms(&self) -> u64 {
        imports::now_ms()
    }

    fn config_get(&self, name: &str) -> Option<String> {
        imports::config_get(name)
    }
}

/// The `describe` export.
pub fn describe(bundle: &Bundle) -> BundleInfo {
    BundleInfo {
        name: bundle.name.to_owned(),
        version: bundle.version.to_owned(),
        nodes: bundle
            .nodes
            .iter()
            .map(|node| wit::NodeInfo {
                uses: node.uses.to_owned(),
                description: node.description.to_owned(),
                params_schema: node.params_schema.map(str::to_owned),
            })
            .collect(),
    }
}

/// The `execute` export.
pub fn execute(bundle: &Bundle, request: Request) -> Result<NodeResult, WitNodeError> {
    let run = RunInfo {
        uses: request.uses,
        run_id: request.run_id,
        node_id: request.node_id,
        blueprint_id: request.blueprint_id,
        attempt: request.attempt,
    };
    let mut ctx = Context::new(Box::new(ComponentHost), run);
    let raw = RawRequest {
        input: request.input,
        params: request.params,
    };
    bundle
        .execute(&mut ctx, raw)
        .map(|result: RawResult| NodeResult {
            output: result.output,
            action: result.action,
            dynamic_nodes: result.dynamic_nodes,
        })
        .map_err(|error| match error {
            NodeError::Retryable(message) => WitNodeError::Retryable(message),
            NodeError::Fatal(message) => WitNodeError::Fatal(message),
            NodeError::InvalidInput(message) => WitNodeError::InvalidInput(message),
        })
}

impl From<Level> for wit::LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}
