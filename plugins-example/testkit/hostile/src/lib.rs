//! The hostile bundle: nodes that misbehave on purpose so the host's tests can
//! show that limits and the sandbox hold — CPU and memory exhaustion, panics,
//! file/socket/environment probes, coarse clocks, non-JSON and oversized
//! output, context write floods, outbound HTTP, every attack on the host API
//! of issue 14's table (`attacks`), and a driver of the host interface for
//! property tests (`api-fuzz`). Not for real workflows.
//!
//! Features build other bundles from the same crate:
//! - `twin`: the bundle `hostile-twin`, whose only node `twin-fetch` is
//!   `fetch` under another bundle name (grants are per bundle name);
//! - `describe-bomb` / `describe-spin`: bundles whose `describe()` lists far
//!   too many node types / never returns (see `describe`).

// The other bundles export few or no nodes of the table; the rest are
// compiled but unused.
#![cfg_attr(
    any(feature = "twin", feature = "describe-bomb", feature = "describe-spin"),
    allow(dead_code, unused_imports)
)]

mod api_fuzz;
mod attacks;
#[cfg(all(
    target_arch = "wasm32",
    any(feature = "describe-bomb", feature = "describe-spin")
))]
mod describe;
mod fetch;
mod limits;
mod payloads;
mod sandbox;

use api_fuzz::api_fuzz;
use attacks::{
    big_writes, deep_dynamic, deep_output, deep_write, forge, huge_action, log_flood, log_forge,
    spawn_flood, spawn_foreign, spawn_retry, spawn_spin,
};
use fetch::fetch;
use limits::{fail, hog, panic_node, spin};
use payloads::{bad_output, big_output, ctx_write_many, echo};
use sandbox::{clocks, config, open_socket, read_env, read_file};

#[cfg(not(any(feature = "twin", feature = "describe-bomb", feature = "describe-spin")))]
flowcraft_sdk::export_bundle! {
    nodes: [
        ("spin", "Loops forever (CPU limit test)", spin),
        ("hog", "Allocates and touches memory without bound (memory limit test)", hog),
        ("panic", "Panics with a message", panic_node),
        ("fail", "Fails with a retryable error, every time", fail),
        ("read-file", "Tries to read /etc/passwd and reports {ok, content | error}", read_file),
        ("open-socket", "Tries a TCP connect to 127.0.0.1:80 and reports {ok, error}", open_socket),
        ("read-env", "Outputs the environment variables it can see", read_env),
        ("clocks", "Outputs what its clocks show (sub-millisecond wall time, monotonic step, resolutions)", clocks),
        ("big-output", "Outputs a JSON string of params.bytes characters", big_output),
        ("echo", "Outputs its input", echo),
        ("ctx-write-many", "Writes params.count context keys k0, k1, ...", ctx_write_many),
        ("config", "Outputs the configuration value params.name (no output without a grant)", config),
        ("fetch", "HTTP GET of params.url; outputs {status, body} or {error} (denied unless granted)", fetch),
        ("forge", "Writes params.value (default \"forged\") under context key params.key, e.g. _outputs.victim", forge),
        ("deep-write", "Writes arrays nested params.depth deep (default 200) under context key deep", deep_write),
        ("big-writes", "Writes params.count strings of params.bytes characters under big0, big1, ...", big_writes),
        ("huge-action", "Returns an action of params.bytes characters", huge_action),
        ("spawn-spin", "Adds a dynamic node running spin with config.timeout 3600000", spawn_spin),
        ("spawn-retry", "Adds a dynamic node running fail with maxRetries 1000000 and retryDelay 0", spawn_retry),
        ("spawn-foreign", "Adds a dynamic node of node type params.uses (default twin-fetch, another bundle's)", spawn_foreign),
        ("spawn-flood", "Returns params.count dynamic nodes", spawn_flood),
        ("log-flood", "Logs params.lines records of params.bytes characters", log_flood),
        ("log-forge", "Logs a forged host log line with escape sequences and non-JSON fields", log_forge),
        ("api-fuzz", "Performs the host calls params.calls lists and outputs which succeeded", api_fuzz),
    ],
    raw_nodes: [
        ("bad-output", "Returns output text that is not JSON", bad_output),
        ("deep-output", "Returns output nested params.depth arrays deep", deep_output),
        ("deep-dynamic", "Returns a dynamic node whose params nest params.depth arrays deep", deep_dynamic),
    ],
}

#[cfg(feature = "twin")]
flowcraft_sdk::export_bundle! {
    name: "hostile-twin",
    nodes: [
        ("twin-fetch", "HTTP GET of params.url; outputs {status, body} or {error} (denied unless granted)", fetch),
    ],
}
