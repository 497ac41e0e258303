//! The hostile bundle: nodes that misbehave on purpose so the host's tests can
//! show that limits and the sandbox hold — CPU and memory exhaustion, panics,
//! file/socket/environment probes, non-JSON and oversized output, context
//! write floods, outbound HTTP. Not for real workflows.
//!
//! With feature `twin` the crate is the bundle `hostile-twin` instead, whose
//! only node `twin-fetch` is `fetch` under another bundle name (grants are
//! per bundle name).

// The twin exports only `fetch`; the other nodes are compiled but unused.
#![cfg_attr(feature = "twin", allow(dead_code, unused_imports))]

mod fetch;
mod limits;
mod payloads;
mod sandbox;

use fetch::fetch;
use limits::{hog, panic_node, spin};
use payloads::{bad_output, big_output, ctx_write_many, echo};
use sandbox::{config, open_socket, read_env, read_file};

#[cfg(not(feature = "twin"))]
flowcraft_sdk::export_bundle! {
    nodes: [
        ("spin", "Loops forever (CPU limit test)", spin),
        ("hog", "Allocates and touches memory without bound (memory limit test)", hog),
        ("panic", "Panics with a message", panic_node),
        ("read-file", "Tries to read /etc/passwd and reports {ok, content | error}", read_file),
        ("open-socket", "Tries a TCP connect to 127.0.0.1:80 and reports {ok, error}", open_socket),
        ("read-env", "Outputs the environment variables it can see", read_env),
        ("big-output", "Outputs a JSON string of params.bytes characters", big_output),
        ("echo", "Outputs its input", echo),
        ("ctx-write-many", "Writes params.count context keys k0, k1, ...", ctx_write_many),
        ("config", "Outputs the configuration value params.name (no output without a grant)", config),
        ("fetch", "HTTP GET of params.url; outputs {status, body} or {error} (denied unless granted)", fetch),
    ],
    raw_nodes: [
        ("bad-output", "Returns output text that is not JSON", bad_output),
    ],
}

#[cfg(feature = "twin")]
flowcraft_sdk::export_bundle! {
    name: "hostile-twin",
    nodes: [
        ("twin-fetch", "HTTP GET of params.url; outputs {status, body} or {error} (denied unless granted)", fetch),
    ],
}
