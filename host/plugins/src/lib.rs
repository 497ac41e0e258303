//! The sandboxed WebAssembly plugin runtime of flowcraft-host.
//!
//! Node implementations ship as WebAssembly components (`wasm32-wasip2`)
//! implementing the `flowcraft:node@0.1.0` world (`wit/node.wit`).
//! [`PluginHost`] loads every bundle of a directory, implements the engine's
//! [`NodeRunner`](flowcraft_core::runner::NodeRunner) trait, and runs each
//! node attempt in a fresh, sandboxed instance:
//!
//! - **compile once**: bundles are compiled once per content digest and the
//!   native code is cached on disk (`<plugins dir>/.cache` by default), keyed
//!   by digest and engine compatibility; each bundle keeps an `InstancePre`;
//!   the pooling allocator keeps instance memory resident between calls;
//! - **deny by default**: no files, environment, arguments or sockets; a
//!   bundle reads only the config values granted to it ([`Grants`]) and only
//!   the context of the run it executes;
//! - **outbound HTTP only to allow-listed hosts**: every bundle may import
//!   `wasi:http` (so it always loads), but a request is sent only when its
//!   host (and port, and scheme if the entry names one) matches the bundle's
//!   [`Grants::http`] (`api.example.com`, `127.0.0.1:8080`, `*.example.org`,
//!   `https://secure.example.net`); anything else, and every request of a
//!   bundle without an `http` grant, fails with `HTTP-request-denied` and a
//!   host warning naming the bundle and host. The exchange counts against
//!   the call's time limit;
//! - **limits**: memory per instance, a time limit per call (the node's
//!   `config.timeout`, else [`PluginConfig::default_timeout`]) enforced by
//!   epoch interruption (a computing guest yields to tokio every 10 ms) and a
//!   timer, a maximum result size (output, action and dynamic nodes), at
//!   most `MAX_DYNAMIC_NODES_PER_CALL` dynamic nodes and `MAX_JSON_DEPTH`
//!   levels of nesting in every value a guest hands over (both from
//!   `flowcraft_core::limits`), and bounds on `describe()` ([`MAX_NODE_TYPES`],
//!   [`MAX_DESCRIBE_BYTES`], [`PluginConfig::describe_timeout`]). Traps,
//!   panics, limit hits and bad output become node failures naming the
//!   bundle, the node type and the cause (see the table in the `call`
//!   module); the host keeps running;
//! - **logs are data**: a guest's log records are escaped, their fields are
//!   a JSON object or an escaped string, and they are budgeted per call and
//!   per run ([`LOG_LINES_PER_CALL`] …); excess records are dropped with one
//!   warning per call;
//! - **coarse clocks**: every clock a guest reads steps in whole
//!   milliseconds ([`CLOCK_RESOLUTION`]);
//! - **dynamic nodes stay in their bundle**:
//!   [`NodeRunner::shares_bundle`](flowcraft_core::runner::NodeRunner::shares_bundle)
//!   tells the engine whether a node type comes from the bundle that serves
//!   the spawning node;
//! - **hot swap**: [`PluginHost::watch`] reloads the directory on changes;
//!   calls in flight finish on the version they started with, a broken file
//!   leaves the old version serving, and replaced versions stay loaded (a
//!   bounded number) for runs pinned to them;
//! - **pinning**: [`NodeRunner::pin`](flowcraft_core::runner::NodeRunner::pin)
//!   records a bundle digest per `uses` key when a run starts, honouring the
//!   blueprint's `metadata.plugins` bindings (bundle name → version, version
//!   requirement or `sha256:` digest); a run pinned to a bundle the host does
//!   not hold gets it from the [`BundleFetcher`] set with
//!   [`PluginHost::set_fetcher`] before its node runs;
//! - **bundle files without a directory**: [`PluginHost::load_files`] and
//!   [`PluginHost::replace_files`] serve files named one by one (a bundle
//!   list resolved to files by its owner), hot-swapped like a directory's.
//!
//! ```no_run
//! use flowcraft_core::runner::NodeRunner;
//! use flowcraft_plugins::{PluginConfig, PluginHost};
//!
//! # async fn example() -> Result<(), flowcraft_plugins::PluginError> {
//! let mut config = PluginConfig::new("./nodes");
//! let orders = config.grants.entry("orders".into()).or_default();
//! orders.config.insert("currency".into(), "EUR".into());
//! orders.http.push("api.example.com".into());
//! let host = PluginHost::load(config).await?;
//! let _watching = host.watch()?;
//! for bundle in host.bundles() {
//!     println!("{}@{} {}", bundle.name, bundle.version, bundle.digest);
//! }
//! assert!(host.implements("validate-order") || host.bundles().is_empty());
//! # Ok(()) }
//! ```

mod bindings;
mod bundle;
mod cache;
mod call;
mod capture;
mod clock;
mod config;
mod engine;
mod error;
mod guest_log;
mod host;
mod host_api;
mod http;
mod registry;
mod sandbox;
mod watch;

pub use bindings::bundle_world;
pub use bundle::{BundleInfo, NodeTypeInfo};
pub use clock::CLOCK_RESOLUTION;
pub use config::{
    DEFAULT_DESCRIBE_TIMEOUT, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MEMORY_LIMIT, DEFAULT_RETIRED_VERSIONS, DEFAULT_TIMEOUT, Grants, LOG_BYTES_PER_CALL,
    LOG_BYTES_PER_RUN, LOG_LINES_PER_CALL, LOG_LINES_PER_RUN, LOG_MESSAGE_BYTES, LOG_RUNS_TRACKED,
    MAX_DESCRIBE_BYTES, MAX_DESCRIPTION_BYTES, MAX_NODE_TYPES, PluginConfig, default_cache_dir,
};
pub use error::PluginError;
pub use host::{BundleFetcher, BundleProblem, PluginHost, check_bundle};
pub use watch::WatchGuard;
