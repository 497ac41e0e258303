//! Generators for property tests (feature `generate`): random blueprints as
//! JSON (valid and invalid: cycles, joins, actions, conditions, transforms,
//! retries, fallbacks, built-ins, extreme numbers, missing and duplicate
//! ids), resume commands, and [`GeneratedNodes`], the native node types they
//! use. The engine's generative suite and the one comparing the embedded and
//! the Azure stores share them.
//!
//! The number of cases comes from [`cases`]: a small default for the test
//! suite, more with `FLOWCRAFT_GENERATIVE_CASES`.

use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

use crate::blueprint::{Blueprint, NodeDefinition};
use crate::builtin::Builtin;
use crate::runner::{NodeCall, NodeFailure, NodeOutcome, NodeRunner, NodeSuccess, PinError, Pins};

/// Environment variable setting how many cases each generative property runs.
pub const CASES_VARIABLE: &str = "FLOWCRAFT_GENERATIVE_CASES";

/// Cases per property: `FLOWCRAFT_GENERATIVE_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var(CASES_VARIABLE)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// Environment variable repeating a generative run: the seed it printed.
pub const SEED_VARIABLE: &str = "FLOWCRAFT_GENERATIVE_SEED";

/// A test runner for `default_cases` cases ([`cases`]) from a seed that is
/// printed (`FLOWCRAFT_GENERATIVE_SEED` sets it), so a failing run can be
/// repeated exactly.
pub fn runner(property: &str, default_cases: u32) -> TestRunner {
    let seed = std::env::var(SEED_VARIABLE)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as u64)
        });
    let cases = cases(default_cases);
    report(&format!(
        "generative {property}: {cases} cases, seed {seed} ({SEED_VARIABLE}={seed} repeats them)"
    ));
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&seed.to_le_bytes());
    }
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        // A failing run case can take its whole time limit: shrink briefly.
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Prints `line` on stderr past the test harness's capture, so that the
/// suite's output shows every generative run's seed and counts.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Native node types for generated blueprints, deterministic given their
/// input, params and attempt:
///
/// | uses | does |
/// |---|---|
/// | `const` | outputs `params.value`, action `params.action` |
/// | `echo` | outputs its input (or `null`), action `params.action` |
/// | `fail` / `fatal` | fails retryably / fatally |
/// | `flaky` | fails its first attempt, then echoes |
/// | `write` | writes its input to context key `params.key`, outputs it |
/// | `spawn` | returns `params.nodes` as dynamic nodes |
pub struct GeneratedNodes;

/// The node types of [`GeneratedNodes`].
pub const NODE_TYPES: &[&str] = &["const", "echo", "fail", "fatal", "flaky", "write", "spawn"];

impl NodeRunner for GeneratedNodes {
    fn implements(&self, uses: &str) -> bool {
        NODE_TYPES.contains(&uses)
    }

    fn pin(&self, _: &Blueprint) -> Result<Pins, PinError> {
        Ok(Pins::new())
    }

    async fn run(&self, mut call: NodeCall) -> NodeOutcome {
        let input = call.input.as_ref().map(|value| value.to_value());
        let action = call
            .params
            .get("action")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let done = |output: Option<Value>, dynamic_nodes: Vec<NodeDefinition>| {
            Ok(NodeSuccess {
                output,
                action: action.clone(),
                dynamic_nodes,
            })
        };
        let result = match call.uses.as_str() {
            "const" => done(call.params.get("value").cloned(), vec![]),
            "echo" => done(input, vec![]),
            "flaky" if call.attempt < 2 => Err(NodeFailure::retryable("first attempts fail")),
            "flaky" => done(input, vec![]),
            "write" => {
                let key = call.params["key"].as_str().unwrap_or("k").to_owned();
                let value = input.clone().unwrap_or(Value::Null);
                match call.context.set(&key, value.into()) {
                    Ok(()) => done(input, vec![]),
                    Err(refused) => Err(NodeFailure::fatal(refused.to_string())),
                }
            }
            "spawn" => match serde_json::from_value(call.params["nodes"].clone()) {
                Ok(nodes) => done(Some(json!("spawned")), nodes),
                Err(error) => Err(NodeFailure::fatal(format!("params.nodes: {error}"))),
            },
            "fatal" => Err(NodeFailure::fatal("fatal on purpose")),
            _ => Err(NodeFailure::retryable("failing on purpose")),
        };
        NodeOutcome {
            context: call.context,
            result,
        }
    }
}

/// Node ids generated blueprints use (`zz` is never a node).
const IDS: &[&str] = &["n0", "n1", "n2", "n3", "n4", "n5", "zz"];

fn node_id() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => (0..IDS.len() - 1).prop_map(|i| IDS[i].to_owned()),
        1 => Just("zz".to_owned()),
        1 => Just(String::new()),
    ]
}

/// Small JSON values (node outputs, resume outputs, context values).
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[xyz]|ok", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Expressions of the safe language over node outputs, `result` and the context.
pub fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("n0".to_owned()),
        Just("n1.x".to_owned()),
        Just("n2.ok".to_owned()),
        Just("result.output".to_owned()),
        Just("result.action".to_owned()),
        Just("input".to_owned()),
        Just("context.k".to_owned()),
        (-2i32..3).prop_map(|n| n.to_string()),
        Just("'a'".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
    ];
    leaf.prop_recursive(3, 16, 2, |inner| {
        let op = prop_oneof![
            Just("==="),
            Just("!=="),
            Just("<"),
            Just("&&"),
            Just("||"),
            Just("+"),
            Just("??")
        ];
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            inner.clone().prop_map(|a| format!("!({a})")),
            (inner.clone(), inner.clone(), inner)
                .prop_map(|(c, a, b)| format!("({c}) ? ({a}) : ({b})")),
        ]
    })
}

/// A number from the edges of every range, or `None` for an absent field.
fn config_number(typical: &'static [f64]) -> impl Strategy<Value = Option<Value>> {
    let extreme = vec![-1.0, 0.0, 2.5, 1e6, 1e300, -1e308];
    prop_oneof![
        8 => Just(None),
        8 => prop::sample::select(typical).prop_map(|n| Some(json!(n))),
        1 => prop::sample::select(extreme).prop_map(|n| Some(json!(n))),
    ]
}

fn config() -> impl Strategy<Value = Option<Value>> {
    let fields = (
        config_number(&[1.0, 2.0, 3.0]),
        config_number(&[0.0, 1.0]),
        config_number(&[50.0, 1000.0]),
        prop::option::weighted(0.2, node_id()),
        prop::option::weighted(
            0.3,
            prop::sample::select(&["all", "any", "all", "any", "all", "any", "most"][..]),
        ),
    );
    prop::option::of(
        fields.prop_map(|(retries, delay, timeout, fallback, join)| {
            let mut config = serde_json::Map::new();
            let mut put = |key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    config.insert(key.to_owned(), value);
                }
            };
            put("maxRetries", retries);
            put("retryDelay", delay);
            put("timeout", timeout);
            put("fallback", fallback.map(Value::from));
            put("joinStrategy", join.map(Value::from));
            Value::Object(config)
        }),
    )
}

/// Dynamic node definitions a `spawn` node returns.
fn dynamic_nodes() -> impl Strategy<Value = Value> {
    let node = (
        prop::sample::select(&["d0", "d1", "d2", "n0"][..]),
        prop::sample::select(vec![
            "const",
            "echo",
            "fail",
            "flaky",
            Builtin::Wait.as_str(),
            "nope",
        ]),
        config(),
    )
        .prop_map(|(id, uses, config)| {
            let mut node = json!({"id": id, "uses": uses, "params": {"value": id}});
            if let Some(config) = config {
                node["config"] = config;
            }
            node
        });
    prop::collection::vec(node, 0..4).prop_map(Value::from)
}

fn params(uses: &str) -> BoxedStrategy<Option<Value>> {
    if let Some(builtin) = Builtin::parse(uses) {
        return match builtin {
            Builtin::Sleep => prop_oneof![
                12 => prop::sample::select(vec![json!(0), json!(2), json!("0s"), json!(1)]),
                1 => prop::sample::select(vec![json!(-1), json!(1e300), json!("99999999999d"), json!("soon")]),
            ]
                .prop_map(|duration| Some(json!({"duration": duration})))
                .boxed(),
            Builtin::LoopController => expression()
                .prop_map(|condition| Some(json!({"condition": condition})))
                .boxed(),
            Builtin::Subflow => prop::sample::select(&["self", "self", "self", "missing"][..])
                .prop_map(|child| Some(json!({"blueprintId": child})))
                .boxed(),
            _ => Just(None).boxed(),
        };
    }
    match uses {
        "const" | "echo" => (
            json_value(),
            prop::option::of(prop::sample::select(&["a", "b"][..])),
        )
            .prop_map(|(value, action)| Some(json!({"value": value, "action": action})))
            .boxed(),
        "write" => {
            prop::sample::select(&["k", "out", "_outputs.n0", "id", "blueprintId", "_batch.x"][..])
                .prop_map(|key| Some(json!({"key": key})))
                .boxed()
        }
        "spawn" => dynamic_nodes()
            .prop_map(|nodes| Some(json!({"nodes": nodes})))
            .boxed(),
        _ => Just(None).boxed(),
    }
}

/// A node; its id is `n<index>`, or now and then a repeated, empty or
/// dangling one.
fn node(index: usize) -> impl Strategy<Value = Value> {
    let uses = prop::sample::select(vec![
        "const",
        "const",
        "echo",
        "echo",
        "fail",
        "fatal",
        "flaky",
        "write",
        "spawn",
        Builtin::Wait.as_str(),
        Builtin::Sleep.as_str(),
        Builtin::LoopController.as_str(),
        Builtin::Subflow.as_str(),
        "const",
        "echo",
    ]);
    let id = prop_oneof![40 => Just(format!("n{index}")), 1 => node_id()];
    (
        id,
        uses,
        config(),
        prop::option::weighted(
            0.3,
            prop::sample::select(&["n0", "n1.x", "_raw", "k", "_outputs.n0"][..]),
        ),
    )
        .prop_flat_map(|(id, uses, config, inputs)| {
            params(uses).prop_map(move |params| {
                let mut node = json!({"id": id, "uses": uses});
                for (key, value) in [
                    ("params", params.clone()),
                    ("config", config.clone()),
                    ("inputs", inputs.map(Value::from)),
                ] {
                    if let Some(value) = value {
                        node[key] = value;
                    }
                }
                node
            })
        })
}

/// An edge between two of the first `count` nodes (now and then a dangling one).
fn edge(count: usize) -> impl Strategy<Value = Value> {
    let end = move || prop_oneof![60 => (0..count).prop_map(|i| format!("n{i}")), 1 => node_id()];
    (
        end(),
        end(),
        prop::option::weighted(
            0.4,
            prop::sample::select(&["a", "b", "continue", "break"][..]),
        ),
        prop::option::weighted(0.4, expression()),
        prop::option::weighted(0.2, expression()),
    )
        .prop_map(|(source, target, action, condition, transform)| {
            let mut edge = json!({"source": source, "target": target});
            for (key, value) in [
                ("action", action.map(Value::from)),
                ("condition", condition.map(Value::from)),
                ("transform", transform.map(Value::from)),
            ] {
                if let Some(value) = value {
                    edge[key] = value;
                }
            }
            edge
        })
}

fn metadata() -> impl Strategy<Value = Value> {
    (
        config_number(&[20.0, 60.0]),
        prop::option::weighted(
            0.2,
            prop::sample::select(vec![json!(1), json!(2), json!(1000)]),
        ),
        prop::option::weighted(
            0.2,
            prop::sample::select(&["safe", "property", "safe", "bogus"][..]),
        ),
    )
        .prop_map(|(step_limit, depth, evaluator)| {
            let mut metadata = json!({});
            if let Some(limit) = step_limit {
                metadata["stepLimit"] = limit;
            }
            if let Some(depth) = depth {
                metadata["maxSubflowDepth"] = depth;
            }
            if let Some(evaluator) = evaluator {
                metadata["evaluator"] = json!(evaluator);
            }
            metadata
        })
}

/// A blueprint with id `self` (valid or not): up to six nodes, random edges
/// (cycles and joins included), metadata with extreme numbers.
pub fn blueprint() -> impl Strategy<Value = Value> {
    (1..7usize)
        .prop_flat_map(|count| {
            (
                (0..count).map(node).collect::<Vec<_>>(),
                prop::collection::vec(edge(count), 0..2 * count),
                metadata(),
            )
        })
        .prop_map(|(nodes, edges, metadata)| {
            json!({"id": "self", "nodes": nodes, "edges": edges, "metadata": metadata})
        })
}

/// A blueprint whose result cannot depend on the order jobs run in: a tree
/// of `const`, `echo`, `flaky`, `write` and `wait` nodes `n0`…, each but the
/// first with one incoming edge from an earlier node (with an optional action
/// or condition), so no join sees arrivals in a varying order.
pub fn tree_blueprint() -> impl Strategy<Value = Value> {
    let uses = prop::sample::select(&["const", "echo", "flaky", "write", "fail"][..]);
    prop::collection::vec(
        (
            uses,
            any::<prop::sample::Index>(),
            prop::option::of(expression()),
        ),
        1..7,
    )
    .prop_flat_map(|shape| {
        let params: Vec<_> = shape.iter().map(|(uses, _, _)| params(uses)).collect();
        (Just(shape), params)
    })
    .prop_map(|(shape, params)| {
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        for (index, ((uses, parent, condition), params)) in
            shape.into_iter().zip(params).enumerate()
        {
            let id = format!("n{index}");
            let mut node = json!({"id": id, "uses": uses, "config": {"maxRetries": 2}});
            if let Some(params) = params {
                node["params"] = params;
            }
            nodes.push(node);
            if index > 0 {
                let mut edge = json!({"source": format!("n{}", parent.index(index)), "target": id});
                if let Some(condition) = condition {
                    edge["condition"] = json!(condition);
                }
                edges.push(edge);
            }
        }
        json!({"id": "tree", "nodes": nodes, "edges": edges})
    })
}

/// A resume command: a node id (maybe not awaiting), an action and an output.
pub fn resume_command() -> impl Strategy<Value = (Option<String>, Option<String>, Option<Value>)> {
    (
        prop::option::of(node_id()),
        prop::option::of(prop::sample::select(&["a", "b", "approve"][..]).prop_map(str::to_owned)),
        prop::option::of(json_value()),
    )
}
