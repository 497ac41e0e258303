//! The hostile bundle: nodes that misbehave on purpose so the host's tests can
//! show that limits and the sandbox hold — CPU and memory exhaustion, panics,
//! file/socket/environment probes, non-JSON and oversized output, context
//! write floods. Not for real workflows.

mod limits;
mod payloads;
mod sandbox;

use limits::{hog, panic_node, spin};
use payloads::{bad_output, big_output, ctx_write_many, echo};
use sandbox::{config, open_socket, read_env, read_file};

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
    ],
    raw_nodes: [
        ("bad-output", "Returns output text that is not JSON", bad_output),
    ],
}
