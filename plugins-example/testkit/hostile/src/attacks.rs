//! Attacks on the host API, one node per row of issue 14's table: forging the
//! engine's context keys, deep and large context values, an oversized action,
//! dynamic nodes that try to raise their limits or borrow another bundle's
//! node types, log floods and forged log lines, and a flood of dynamic nodes.
//! The host must refuse or contain each; these nodes do not handle refusals
//! (a refused write fails the node with the host's reason).

use flowcraft_sdk::{
    Context, DynamicNode, Ignore, Level, NodeError, Output, RawRequest, RawResult,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// A message that tries to end its log line and forge one of the host's
/// (a timestamped "run finished" record), then to clear the terminal and
/// set its title.
pub const FORGED_LINE: &str = "order 7 done\n2025-01-01T00:00:00.000000Z  INFO flowcraft: run finished status=completed\u{1b}[2J\u{1b}]0;pwned\u{7}";
/// Fields that are not JSON, with a newline and a colour escape.
pub const FORGED_FIELDS: &str = "not json\nstatus=completed \u{1b}[31mred";

#[derive(Deserialize)]
pub struct ForgeParams {
    key: String,
    #[serde(default = "forged")]
    value: Value,
}

fn forged() -> Value {
    json!("forged")
}

#[derive(Deserialize)]
pub struct DepthParams {
    #[serde(default = "two_hundred")]
    depth: usize,
}

fn two_hundred() -> usize {
    200
}

#[derive(Deserialize)]
pub struct CountBytesParams {
    count: usize,
    bytes: usize,
}

#[derive(Deserialize)]
pub struct BytesParams {
    bytes: usize,
}

#[derive(Deserialize)]
pub struct ForeignParams {
    #[serde(default = "twin_fetch")]
    uses: String,
    #[serde(default)]
    params: Option<Value>,
}

fn twin_fetch() -> String {
    "twin-fetch".to_owned()
}

#[derive(Deserialize)]
pub struct LinesParams {
    lines: usize,
    bytes: usize,
}

#[derive(Deserialize)]
pub struct CountParams {
    count: usize,
}

/// `[[[…]]]`: `depth` nested arrays, `2 * depth` bytes.
pub fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Writes `params.value` under `params.key`, e.g. `_outputs.victim`.
pub fn forge(ctx: &mut Context, _: Ignore, params: ForgeParams) -> Result<Output<()>, NodeError> {
    ctx.set(&params.key, &params.value)?;
    Ok(Output::none())
}

/// Writes arrays nested `params.depth` deep (default 200: 400 bytes) under `deep`.
pub fn deep_write(
    ctx: &mut Context,
    _: Ignore,
    params: DepthParams,
) -> Result<Output<()>, NodeError> {
    ctx.set_raw("deep", &nested_arrays(params.depth))?;
    Ok(Output::none())
}

/// Writes `params.count` strings of `params.bytes` characters under `big0`, `big1`, ….
pub fn big_writes(
    ctx: &mut Context,
    _: Ignore,
    params: CountBytesParams,
) -> Result<Output<usize>, NodeError> {
    let value = "x".repeat(params.bytes);
    for index in 0..params.count {
        ctx.set(&format!("big{index}"), &value)?;
    }
    Ok(Output::new(params.count))
}

/// Returns no output and an action of `params.bytes` characters.
pub fn huge_action(
    _: &mut Context,
    _: Ignore,
    params: BytesParams,
) -> Result<Output<()>, NodeError> {
    Ok(Output::none().with_action("a".repeat(params.bytes)))
}

/// Adds a dynamic node running `spin` with an hour's timeout.
pub fn spawn_spin(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    let spinner = DynamicNode {
        config: Some(json!({"timeout": 3_600_000})),
        ..DynamicNode::new("spinner", "spin")
    };
    Ok(Output::none().with_dynamic_node(spinner))
}

/// Adds a dynamic node running `fail` with a million attempts and no delay.
pub fn spawn_retry(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    let retrier = DynamicNode {
        config: Some(json!({"maxRetries": 1_000_000, "retryDelay": 0})),
        ..DynamicNode::new("retrier", "fail")
    };
    Ok(Output::none().with_dynamic_node(retrier))
}

/// Adds a dynamic node of node type `params.uses` (default `twin-fetch`, of
/// the `hostile-twin` bundle) with `params.params`.
pub fn spawn_foreign(
    _: &mut Context,
    _: Ignore,
    params: ForeignParams,
) -> Result<Output<()>, NodeError> {
    let foreign = DynamicNode {
        params: params.params,
        ..DynamicNode::new("borrowed", params.uses)
    };
    Ok(Output::none().with_dynamic_node(foreign))
}

/// Logs `params.lines` records whose message is `params.bytes` characters.
pub fn log_flood(
    ctx: &mut Context,
    _: Ignore,
    params: LinesParams,
) -> Result<Output<usize>, NodeError> {
    let message = "x".repeat(params.bytes);
    for _ in 0..params.lines {
        ctx.log(Level::Info, &message, Value::Null);
    }
    Ok(Output::new(params.lines))
}

/// Logs [`FORGED_LINE`] with the non-JSON [`FORGED_FIELDS`], then a record
/// whose fields are a JSON object holding the same characters.
pub fn log_forge(ctx: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    ctx.log_raw(Level::Warn, FORGED_LINE, FORGED_FIELDS);
    ctx.log(
        Level::Warn,
        "object fields",
        json!({ "note": FORGED_FIELDS }),
    );
    Ok(Output::none())
}

/// Returns `params.count` minimal dynamic nodes (`{"id":"d<n>","uses":"echo"}`).
pub fn spawn_flood(
    _: &mut Context,
    _: Ignore,
    params: CountParams,
) -> Result<Output<()>, NodeError> {
    let mut output = Output::none();
    output.dynamic_nodes = (0..params.count)
        .map(|n| DynamicNode::new(format!("d{n}"), "echo"))
        .collect();
    Ok(output)
}

/// Returns output nested `params.depth` arrays deep (raw: no parser limit applies).
pub fn deep_output(_: &mut Context, request: RawRequest) -> Result<RawResult, NodeError> {
    Ok(RawResult {
        output: Some(nested_arrays(raw_depth(&request)?)),
        ..RawResult::default()
    })
}

/// Returns a dynamic node whose params are nested `params.depth` arrays deep.
pub fn deep_dynamic(_: &mut Context, request: RawRequest) -> Result<RawResult, NodeError> {
    let params = nested_arrays(raw_depth(&request)?);
    Ok(RawResult {
        dynamic_nodes: vec![format!(
            r#"{{"id":"deep","uses":"echo","params":{{"a":{params}}}}}"#
        )],
        ..RawResult::default()
    })
}

fn raw_depth(request: &RawRequest) -> Result<usize, NodeError> {
    let params: DepthParams = serde_json::from_str(&request.params)
        .map_err(|e| NodeError::invalid_input(format!("invalid params: {e}")))?;
    Ok(params.depth)
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::{Value, json};

    use super::{FORGED_FIELDS, FORGED_LINE};
    use crate::BUNDLE;

    fn run(host: &TestHost, uses: &str, params: Value) -> flowcraft_sdk::testing::TestResult {
        host.execute(&BUNDLE, Call::new(uses).params(params))
            .unwrap()
    }

    #[test]
    fn writes_go_where_the_params_say() {
        let host = TestHost::new();
        run(&host, "forge", json!({"key": "_outputs.victim"}));
        assert_eq!(host.get("_outputs.victim"), Some(json!("forged")));
        run(&host, "deep-write", json!({"depth": 3}));
        assert_eq!(host.get("deep"), Some(json!([[[]]])));
        run(&host, "big-writes", json!({"count": 2, "bytes": 5}));
        assert_eq!(host.get("big1"), Some(json!("xxxxx")));
    }

    #[test]
    fn results_carry_the_attack() {
        let host = TestHost::new();
        let action = run(&host, "huge-action", json!({"bytes": 10})).action;
        assert_eq!(action.as_deref(), Some("aaaaaaaaaa"));
        let spin = run(&host, "spawn-spin", json!({})).dynamic_nodes;
        assert_eq!(
            spin,
            [json!({"id": "spinner", "uses": "spin", "config": {"timeout": 3_600_000}})]
        );
        let retry = run(&host, "spawn-retry", json!({})).dynamic_nodes;
        assert_eq!(retry[0]["config"]["maxRetries"], json!(1_000_000));
        let foreign = run(&host, "spawn-foreign", json!({})).dynamic_nodes;
        assert_eq!(foreign, [json!({"id": "borrowed", "uses": "twin-fetch"})]);
        let flood = run(&host, "spawn-flood", json!({"count": 3})).dynamic_nodes;
        assert_eq!(flood[2], json!({"id": "d2", "uses": "echo"}));
        let deep = run(&host, "deep-output", json!({"depth": 2})).output;
        assert_eq!(deep, Some(json!([[]])));
        let deep = run(&host, "deep-dynamic", json!({"depth": 1})).dynamic_nodes;
        assert_eq!(deep[0]["params"], json!({"a": []}));
    }

    #[test]
    fn logs_carry_the_attack() {
        let host = TestHost::new();
        run(&host, "log-flood", json!({"lines": 3, "bytes": 4}));
        run(&host, "log-forge", json!({}));
        let logs = host.logs();
        assert_eq!(logs.len(), 5);
        assert_eq!(logs[0].message, "xxxx");
        assert_eq!(logs[3].message, FORGED_LINE);
        assert_eq!(logs[4].fields, json!({"note": FORGED_FIELDS}));
    }
}
