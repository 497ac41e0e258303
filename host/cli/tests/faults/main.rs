//! The fault-injection suite: real `flowcraft-host` worker processes on the
//! local services (Azurite, the Cosmos stand-in, redis-server;
//! `scripts/azure-local.sh`), with faults injected by the test: duplicated and
//! reordered deliveries, killed workers, jobs outliving their visibility
//! timeout, unreachable and throttling services, hostile bundles, bad
//! messages and documents, blueprint versions missing on a worker; and
//! `serve` on its SQLite backend killed again and again.
//!
//! Every scenario checks its runs against the same blueprint run in embedded
//! mode, counts node executions from the workers' logs, and records one row
//! of the summary table (`scripts/fault-suite.sh` prints it) with runs lost
//! and duplicate effects, both of which must be 0. The scenarios run one at a
//! time (they measure timing-sensitive behaviour on a 2-core machine).
//! `FLOWCRAFT_FAULT_RUNS` sizes the soak scenarios.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod harness;
mod kill;
mod long_jobs;
mod outages;
mod plugins;
mod redelivery;
mod rollout;
mod serve_kill;

use flowcraft_core::context::ContextMap;
use serde_json::{Map, Value, json};

/// Scenarios take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The mixed blueprint of the soak scenarios: a chain (start → a1 → a2), an
/// 8-way fan-out with an `all` join, a branch on the data (even/odd) into an
/// `any` join, a node that succeeds on its second attempt, and a node whose
/// retries run out so that its fallback stands in.
pub fn mixed_blueprint() -> Value {
    let mut nodes = vec![
        json!({"id": "start", "uses": "echo"}),
        json!({"id": "a1", "uses": "double"}),
        json!({"id": "a2", "uses": "times10"}),
    ];
    let mut edges = vec![
        json!({"source": "start", "target": "a1"}),
        json!({"source": "a1", "target": "a2"}),
    ];
    let mut join_inputs = Map::new();
    for i in 0..8 {
        let id = format!("w{i}");
        nodes.push(json!({"id": id, "uses": "double"}));
        edges.push(json!({"source": "a2", "target": id, "transform": format!("input + {i}")}));
        edges.push(json!({"source": id, "target": "join"}));
        join_inputs.insert(id.clone(), json!(id));
    }
    nodes.extend([
        json!({"id": "join", "uses": "echo", "inputs": join_inputs, "config": {"joinStrategy": "all"}}),
        json!({"id": "even", "uses": "const", "params": {"value": "even"}}),
        json!({"id": "odd", "uses": "const", "params": {"value": "odd"}}),
        json!({"id": "branch-end", "uses": "echo", "config": {"joinStrategy": "any"}}),
        json!({"id": "flaky", "uses": "flaky", "params": {"succeedOn": 2},
               "config": {"maxRetries": 3, "retryDelay": 200}}),
        json!({"id": "risky", "uses": "fail", "config": {"maxRetries": 2, "retryDelay": 200, "fallback": "rescue"}}),
        json!({"id": "rescue", "uses": "const", "params": {"value": "rescued"}}),
        json!({"id": "end", "uses": "echo"}),
    ]);
    edges.extend([
        json!({"source": "join", "target": "even", "condition": "start % 2 === 0"}),
        json!({"source": "join", "target": "odd", "condition": "start % 2 !== 0"}),
        json!({"source": "even", "target": "branch-end"}),
        json!({"source": "odd", "target": "branch-end"}),
        json!({"source": "start", "target": "flaky"}),
        json!({"source": "start", "target": "risky"}),
        json!({"source": "risky", "target": "end"}),
    ]);
    json!({"id": "mixed", "nodes": nodes, "edges": edges})
}

/// The initial context of run number `i` of a scenario.
pub fn seed(i: usize) -> ContextMap {
    let mut initial = ContextMap::new();
    initial.insert("_inputs.start".into(), json!(i as i64 + 1).into());
    initial
}
