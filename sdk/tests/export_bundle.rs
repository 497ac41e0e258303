//! The SDK as a bundle crate uses it: `export_bundle!` from outside the crate,
//! executed through the in-memory host.

use flowcraft_sdk::testing::{Call, LogRecord, TestHost};
use flowcraft_sdk::{
    Bundle, Context, DynamicNode, Ignore, Level, NodeError, NodeSpec, Output, RawRequest, RawResult,
};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Greeting {
    greeting: String,
}

fn greet(
    ctx: &mut Context,
    name: Option<String>,
    params: Greeting,
) -> Result<Output<String>, NodeError> {
    let name = name.unwrap_or_else(|| "nobody".to_owned());
    ctx.log(
        Level::Info,
        "greeting",
        json!({ "name": name, "attempt": ctx.run().attempt }),
    );
    Ok(Output::new(format!("{} {name}", params.greeting)))
}

fn square(_: &mut Context, input: i64, _: Ignore) -> Result<Output<i64>, NodeError> {
    Ok(Output::new(input * input))
}

fn counter(ctx: &mut Context, _: Ignore, _: Ignore) -> Result<Output<u64>, NodeError> {
    let count = ctx.get::<u64>("count")?.unwrap_or(0) + 1;
    ctx.set("count", &count)?;
    Ok(Output::new(count))
}

fn fan_out(ctx: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    ctx.warn("fanning out");
    Ok(Output::none()
        .with_action("spread")
        .with_dynamic_node(DynamicNode::new("w1", "square").with_params(json!({"n": 1}))))
}

fn clock_and_config(ctx: &mut Context, _: Ignore, _: Ignore) -> Result<Output<Value>, NodeError> {
    Ok(Output::new(
        json!({ "now": ctx.now_ms(), "region": ctx.config("region") }),
    ))
}

fn passthrough(_: &mut Context, request: RawRequest) -> Result<RawResult, NodeError> {
    Ok(RawResult {
        output: request.input,
        ..RawResult::default()
    })
}

flowcraft_sdk::export_bundle! {
    nodes: [
        ("greet", "Greets its input", greet, params_schema: r#"{"type":"object"}"#),
        ("square", "Squares an integer", square),
        ("counter", "Counts its calls in the context", counter),
        ("fan-out", "Adds a dynamic node", fan_out),
        ("clock", "Reports the clock and a config value", clock_and_config),
    ],
    raw_nodes: [
        ("passthrough", "Returns its input text", passthrough),
    ],
}

mod renamed {
    use super::square;

    flowcraft_sdk::export_bundle! {
        name: "maths",
        version: "2.0.0",
        nodes: [("square", "Squares an integer", square)],
    }
}

#[test]
fn name_and_version_default_to_the_crate_and_can_be_overridden() {
    assert_eq!(
        (BUNDLE.name, BUNDLE.version),
        ("flowcraft-sdk", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        (renamed::BUNDLE.name, renamed::BUNDLE.version),
        ("maths", "2.0.0")
    );
}

#[test]
fn the_table_lists_every_node_with_its_schema() {
    let uses: Vec<&str> = BUNDLE.nodes.iter().map(|node| node.uses).collect();
    assert_eq!(
        uses,
        [
            "greet",
            "square",
            "counter",
            "fan-out",
            "clock",
            "passthrough"
        ]
    );
    assert_eq!(
        BUNDLE.node("greet").unwrap().params_schema,
        Some(r#"{"type":"object"}"#)
    );
    assert_eq!(BUNDLE.node("square").unwrap().params_schema, None);
}

#[test]
fn duplicate_uses_keys_are_detected() {
    const NODE: NodeSpec = NodeSpec {
        uses: "a",
        description: "",
        params_schema: None,
        run: passthrough,
    };
    const DUPLICATED: Bundle = Bundle {
        name: "b",
        version: "1.0.0",
        nodes: &[NODE, NODE],
    };
    assert!(!DUPLICATED.has_unique_uses());
    assert!(BUNDLE.has_unique_uses());
}

#[test]
fn typed_nodes_decode_input_and_params() {
    let host = TestHost::new();
    let call = Call::new("greet")
        .input(json!("Ada"))
        .params(json!({"greeting": "hi"}))
        .attempt(3);
    let result = host.execute(&BUNDLE, call).unwrap();
    assert_eq!(result.output, Some(json!("hi Ada")));
    assert_eq!(
        host.logs(),
        [LogRecord {
            level: Level::Info,
            message: "greeting".into(),
            fields: json!({"name": "Ada", "attempt": 3})
        }]
    );
}

#[test]
fn a_missing_input_is_none_for_an_option_input() {
    let call = Call::new("greet").params(json!({"greeting": "hi"}));
    assert_eq!(
        TestHost::new().execute(&BUNDLE, call).unwrap().output,
        Some(json!("hi nobody"))
    );
}

#[test]
fn undecodable_input_or_params_are_invalid_input_naming_the_node() {
    let host = TestHost::new();
    let missing = host.execute(&BUNDLE, Call::new("square")).unwrap_err();
    assert!(
        matches!(&missing, NodeError::InvalidInput(m) if m.starts_with("node `square`: the node needs an input")),
        "{missing}"
    );
    let wrong = host
        .execute(&BUNDLE, Call::new("square").input(json!("seven")))
        .unwrap_err();
    assert!(
        matches!(&wrong, NodeError::InvalidInput(m) if m.starts_with("node `square`: invalid input: invalid type: string")),
        "{wrong}"
    );
    let params = host
        .execute(&BUNDLE, Call::new("greet").params(json!({})))
        .unwrap_err();
    assert!(
        matches!(&params, NodeError::InvalidInput(m) if m.starts_with("node `greet`: invalid params: missing field `greeting`")),
        "{params}"
    );
}

#[test]
fn an_unknown_uses_key_is_fatal_and_lists_the_known_ones() {
    let error = TestHost::new()
        .execute(&BUNDLE, Call::new("cube"))
        .unwrap_err();
    assert!(
        matches!(&error, NodeError::Fatal(m) if m.contains("has no node type `cube`") && m.contains("square, counter")),
        "{error}"
    );
}

#[test]
fn context_values_round_trip_and_type_mismatches_are_invalid_input() {
    let host = TestHost::new().with_value("count", 41);
    assert_eq!(
        host.execute(&BUNDLE, Call::new("counter")).unwrap().output,
        Some(json!(42))
    );
    assert_eq!(host.get("count"), Some(json!(42)));

    let host = TestHost::new().with_value("count", "many");
    let error = host.execute(&BUNDLE, Call::new("counter")).unwrap_err();
    assert!(
        matches!(&error, NodeError::InvalidInput(m) if m.starts_with("context key `count` does not hold the expected type")),
        "{error}"
    );
}

#[test]
fn direct_calls_use_the_context_api() {
    let host = TestHost::new().with_value("tmp", true);
    let mut ctx = host.context();
    assert!(ctx.has("tmp"));
    ctx.set("list", &[1, 2]).unwrap();
    assert_eq!(ctx.keys(), ["list", "tmp"]);
    assert!(ctx.delete("tmp"));
    assert!(!ctx.delete("tmp"));
    assert_eq!(ctx.get::<Vec<u8>>("list").unwrap(), Some(vec![1, 2]));
    assert_eq!(ctx.get::<Value>("absent").unwrap(), None);
    assert_eq!(
        counter(&mut ctx, Ignore::default(), Ignore::default())
            .unwrap()
            .value,
        Some(1)
    );
}

#[test]
fn actions_dynamic_nodes_and_no_output_are_encoded() {
    let host = TestHost::new();
    let result = host.execute(&BUNDLE, Call::new("fan-out")).unwrap();
    assert_eq!(result.output, None);
    assert_eq!(result.action.as_deref(), Some("spread"));
    assert_eq!(
        result.dynamic_nodes,
        [json!({"id": "w1", "uses": "square", "params": {"n": 1}})]
    );
    assert_eq!(host.logs()[0].fields, json!({}));
}

#[test]
fn clock_and_config_come_from_the_host() {
    let host = TestHost::new()
        .with_now_ms(1_700_000_000_000)
        .with_config("region", "eu");
    let output = host.execute(&BUNDLE, Call::new("clock")).unwrap().output;
    assert_eq!(
        output,
        Some(json!({"now": 1_700_000_000_000u64, "region": "eu"}))
    );
}

#[test]
fn raw_nodes_see_json_text() {
    let host = TestHost::new();
    let result = host
        .execute(&BUNDLE, Call::new("passthrough").input(json!({"a": [1]})))
        .unwrap();
    assert_eq!(result.output, Some(json!({"a": [1]})));
    assert_eq!(
        host.execute(&BUNDLE, Call::new("passthrough"))
            .unwrap()
            .output,
        None
    );
}

#[test]
fn non_object_log_fields_are_wrapped() {
    let host = TestHost::new();
    host.context().log(Level::Debug, "n", json!(5));
    assert_eq!(host.logs()[0].fields, json!({"value": 5}));
}
