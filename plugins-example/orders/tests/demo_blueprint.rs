//! The demo files in `blueprints/` match the nodes: walking the blueprint with
//! the example context takes the manager-review branch.

use flowcraft_sdk::testing::{Call, TestHost, TestResult};
use orders::BUNDLE;
use serde_json::{Value, json};

fn load(name: &str) -> Value {
    let path = format!("{}/blueprints/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Executes blueprint node `id` on `input` with the node's `uses` and `params`.
fn run_node(host: &TestHost, blueprint: &Value, id: &str, input: Value) -> TestResult {
    let node = blueprint["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["id"] == id)
        .unwrap_or_else(|| panic!("the blueprint has no node `{id}`"));
    let call = Call::new(node["uses"].as_str().unwrap())
        .input(input)
        .params(node["params"].clone());
    host.execute(&BUNDLE, call)
        .unwrap_or_else(|error| panic!("node `{id}`: {error}"))
}

/// The target of the edge leaving `source` for `action`.
fn next(blueprint: &Value, source: &str, action: Option<&str>) -> String {
    let edge = blueprint["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|edge| edge["source"] == source && edge["action"].as_str() == action)
        .unwrap_or_else(|| panic!("no edge from `{source}` for action {action:?}"));
    edge["target"].as_str().unwrap().to_owned()
}

#[test]
fn the_example_order_goes_to_manager_review() {
    let blueprint = load("order-approval.json");
    let context = load("order-approval.context.json");
    let host = TestHost::new().with_now_ms(1_750_000_000_000);

    let validated = run_node(
        &host,
        &blueprint,
        "validate",
        context["_inputs.validate"].clone(),
    );
    assert_eq!(next(&blueprint, "validate", None), "price");
    let priced = run_node(&host, &blueprint, "price", validated.output.unwrap());
    assert_eq!(next(&blueprint, "price", None), "route");
    let routed = run_node(&host, &blueprint, "route", priced.output.unwrap());
    let target = next(&blueprint, "route", routed.action.as_deref());
    assert_eq!(target, "review");
    let notified = run_node(&host, &blueprint, &target, routed.output.unwrap());

    assert_eq!(
        notified.output.unwrap()["message"],
        "Order ORD-1001 awaiting manager review: total 1453.50 EUR"
    );
    assert_eq!(
        host.get("orderStatus"),
        Some(
            json!({"orderId": "ORD-1001", "status": "awaiting manager review", "updatedAtMs": 1_750_000_000_000u64})
        )
    );
}

#[test]
fn the_bundle_implements_every_uses_key_of_the_blueprint() {
    let blueprint = load("order-approval.json");
    for node in blueprint["nodes"].as_array().unwrap() {
        let uses = node["uses"].as_str().unwrap();
        assert!(BUNDLE.node(uses).is_some(), "no node type `{uses}`");
    }
}
