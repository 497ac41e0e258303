//! Errors of the plugin runtime: loading, validating and watching bundles.
//!
//! Node failures during a call are not errors of this crate: they become
//! [`flowcraft_core::runner::NodeFailure`]s.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why the plugin runtime could not load a bundle or start.
#[derive(Debug, Error)]
pub enum PluginError {
    #[error("cannot read plugins directory {}: {source}; check --plugins", path.display())]
    PluginsDir { path: PathBuf, source: io::Error },

    #[error("cannot read bundle {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("{} is not a WebAssembly component: {reason}", path.display())]
    NotAComponent { path: PathBuf, reason: String },

    #[error(
        "{} does not implement the flowcraft:node@{} bundle world: {reason}",
        path.display(),
        crate::bindings::CONTRACT_VERSION
    )]
    WrongInterface { path: PathBuf, reason: String },

    #[error("cannot compile bundle {}: {reason}", path.display())]
    Compile { path: PathBuf, reason: String },

    #[error("bundle {}: describe() failed: {reason}", path.display())]
    Describe { path: PathBuf, reason: String },

    #[error("bundle {}: {reason}", path.display())]
    InvalidBundle { path: PathBuf, reason: String },

    #[error("invalid grant for bundle '{bundle}': {reason}")]
    Grant { bundle: String, reason: String },

    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),

    #[error("cannot watch plugins directory {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// A wasmtime error with its whole cause chain on one line.
pub(crate) fn chain(error: &wasmtime::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.is_empty() {
            if text.contains(&cause) {
                continue;
            }
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
