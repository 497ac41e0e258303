//! Host configuration of the plugin runtime: where bundles live, the sandbox
//! limits, and the capabilities granted to each bundle.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::PluginError;
use crate::http::HttpAllowList;

/// Default per-call time limit when the node has no `config.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default linear-memory limit per instance.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;
/// Default limit on the size of a node's result (output, action and dynamic
/// nodes together).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Default number of instances that may run at the same time.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;
/// Default number of replaced bundle versions kept loaded for pinned runs.
pub const DEFAULT_RETIRED_VERSIONS: usize = 8;
/// Default time limit of a bundle's `describe()` when it loads: describing
/// is a table lookup, so a bundle that needs longer is refused.
pub const DEFAULT_DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

// What `describe()` may return; a bundle over a limit is refused at load
// (the version loaded before, if any, keeps serving).

/// Node types one bundle may declare.
pub const MAX_NODE_TYPES: usize = 1_000;
/// Bytes of one node type's description.
pub const MAX_DESCRIPTION_BYTES: usize = 4 << 10;
/// Bytes of everything `describe()` returns: name, version, and every node
/// type's `uses` key, description and params schema.
pub const MAX_DESCRIBE_BYTES: usize = 1 << 20;

// Guest log budgets (see the `guest_log` module). A record over a budget is
// dropped; one warning at the end of the call says how many were dropped.

/// Log records one node call may emit.
pub const LOG_LINES_PER_CALL: usize = 1_000;
/// Bytes of log records (escaped message plus fields) one node call may emit.
pub const LOG_BYTES_PER_CALL: usize = 64 << 10;
/// Log records all calls of one run may emit in this process.
pub const LOG_LINES_PER_RUN: usize = 10_000;
/// Bytes of log records all calls of one run may emit in this process.
pub const LOG_BYTES_PER_RUN: usize = 1 << 20;
/// Bytes of one record's escaped message, and of its fields: longer ones are
/// cut, with a note saying how much was cut.
pub const LOG_MESSAGE_BYTES: usize = 4 << 10;
/// Runs whose log usage is remembered for the per-run budget; beyond it the
/// run that logged first is forgotten (and starts a fresh budget if it logs
/// again).
pub const LOG_RUNS_TRACKED: usize = 4_096;

/// Configuration of a [`crate::PluginHost`].
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The directory holding the bundles (`*.wasm`); watched for hot swap.
    pub plugins_dir: PathBuf,
    /// Where precompiled artifacts are cached; `None` means `<plugins_dir>/.cache`.
    pub cache_dir: Option<PathBuf>,
    /// Time limit of a call whose node has no `config.timeout`.
    pub default_timeout: Duration,
    /// Time limit of a bundle's `describe()` when it loads.
    pub describe_timeout: Duration,
    /// Linear-memory limit per instance, in bytes.
    pub memory_limit: usize,
    /// Largest accepted node result (output JSON, action and dynamic nodes
    /// together), in bytes.
    pub max_output_bytes: usize,
    /// Instances that may exist at once (the pooling allocator's size); calls
    /// beyond it wait for a free slot.
    pub max_instances: u32,
    /// Replaced or removed bundle versions kept loaded so that runs pinned to
    /// them keep working; the oldest are dropped first.
    pub retired_versions: usize,
    /// Capabilities per bundle name; a bundle without an entry has none
    /// (no config values, no outbound HTTP). Checked by
    /// [`PluginHost::load`](crate::PluginHost::load): an invalid `http` entry
    /// is an error ([`crate::PluginError::Grant`]).
    pub grants: BTreeMap<String, Grants>,
}

impl PluginConfig {
    /// A configuration with the defaults and no grants.
    pub fn new(plugins_dir: impl Into<PathBuf>) -> Self {
        Self {
            plugins_dir: plugins_dir.into(),
            cache_dir: None,
            default_timeout: DEFAULT_TIMEOUT,
            describe_timeout: DEFAULT_DESCRIBE_TIMEOUT,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_instances: DEFAULT_MAX_INSTANCES,
            retired_versions: DEFAULT_RETIRED_VERSIONS,
            grants: BTreeMap::new(),
        }
    }

    /// The cache directory in effect: `cache_dir`, else `flowcraft-host` in
    /// the user's cache directory (`$XDG_CACHE_HOME`, `~/.cache` on Linux),
    /// not the plugins directory, which is what users ship. Without a user
    /// cache directory: `.cache` in the plugins directory.
    pub fn effective_cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .or_else(default_cache_dir)
            .unwrap_or_else(|| self.plugins_dir.join(".cache"))
    }

    /// The grants of bundle `name` (empty when it has none).
    pub(crate) fn grants_for(&self, name: &str) -> Grants {
        self.grants.get(name).cloned().unwrap_or_default()
    }
}

/// What one bundle may use beyond the sandbox defaults.
///
/// In a configuration file (deserialized with serde; unknown fields are
/// rejected):
///
/// ```
/// # let json = r#"
/// {
///   "config": { "currency": "EUR" },
///   "http": ["api.example.com", "127.0.0.1:8080", "*.example.org", "https://secure.example.net"]
/// }
/// # "#;
/// # let grants: flowcraft_plugins::Grants = serde_json::from_str(json).unwrap();
/// # assert_eq!(grants.http.len(), 4);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Named values (settings, secrets) the bundle reads with `config-get`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Hosts the bundle may send HTTP requests to (`wasi:http`), as
    /// `[scheme://]host[:port]` entries; empty means no outbound HTTP (a
    /// request is denied with `HTTP-request-denied`). Matching:
    ///
    /// - `api.example.com`: that host, ASCII case-insensitive, exactly (no
    ///   subdomains, no DNS: `localhost` does not match `127.0.0.1`);
    /// - `*.example.org`: any subdomain of `example.org`, not `example.org`
    ///   itself;
    /// - `127.0.0.1:8080`, `[::1]:8080`: with a port, only that port;
    ///   without one, only the scheme's default port (80 / 443);
    /// - `https://…` or `http://…`: only that scheme; without a scheme both
    ///   `http` and `https` (no other scheme is ever allowed).
    ///
    /// Entries with a path, query, user info or a `*` other than a leading
    /// `*.` are rejected when the host loads.
    #[serde(default)]
    pub http: Vec<String>,
}

impl Grants {
    /// The parsed `http` grant of bundle `bundle`; an unusable entry is a
    /// [`PluginError::Grant`] naming the bundle.
    pub(crate) fn http_allow_list(&self, bundle: &str) -> Result<HttpAllowList, PluginError> {
        HttpAllowList::parse(&self.http).map_err(|e| PluginError::Grant {
            bundle: bundle.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// `flowcraft-host` in the user's cache directory (`$XDG_CACHE_HOME` or
/// `~/.cache` on Linux), if the system names one.
pub fn default_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|dir| dir.join("flowcraft-host"))
}
