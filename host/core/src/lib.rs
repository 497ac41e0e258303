//! The Flowcraft engine.
//!
//! `flowcraft-core` owns the meaning of a workflow: the blueprint model and its
//! validation, graph analysis, the expression languages, and the single
//! implementation of "execute one node of one run and schedule what follows"
//! (the job step). Storage and node execution plug in through traits, so the
//! embedded mode (in-memory stores, this crate) and the Azure mode run the same
//! code. This crate does no I/O of its own and knows nothing about WebAssembly.

pub mod analysis;
pub mod blueprint;
pub mod builtin;
pub mod clock;
pub mod context;
pub mod context_cache;
pub mod directory;
pub mod dynamic;
pub mod engine;
pub mod expression;
pub mod final_status;
#[cfg(feature = "generate")]
pub mod generate;
pub mod limits;
pub mod memory;
pub mod mermaid;
pub mod plan;
pub mod progress;
pub mod routing;
pub mod runner;
pub mod store;
pub mod telemetry;
pub mod validate;
