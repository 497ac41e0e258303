//! Nodes that return fixed or passed-through values, actions and dynamic nodes.

use flowcraft_sdk::{Context, DynamicNode, Ignore, NodeError, Output};
use serde::Deserialize;
use serde_json::{Value, json};

/// `params.value`; absent means no output.
#[derive(Deserialize)]
pub struct ValueParams {
    value: Option<Value>,
}

#[derive(Deserialize)]
pub struct ActParams {
    value: Option<Value>,
    action: String,
}

pub fn const_node(
    _: &mut Context,
    _: Ignore,
    params: ValueParams,
) -> Result<Output<Value>, NodeError> {
    Ok(Output::maybe(params.value))
}

pub fn echo(_: &mut Context, input: Option<Value>, _: Ignore) -> Result<Output<Value>, NodeError> {
    Ok(Output::maybe(input))
}

pub fn act(_: &mut Context, _: Ignore, params: ActParams) -> Result<Output<Value>, NodeError> {
    Ok(Output::maybe(params.value).with_action(params.action))
}

pub fn no_output(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    Ok(Output::none())
}

/// Upstream's node also returned an `error` field that the engine ignores;
/// the WIT result has no such field, so only the output remains.
pub fn with_error_field(
    _: &mut Context,
    _: Ignore,
    _: Ignore,
) -> Result<Output<&'static str>, NodeError> {
    Ok(Output::new("x"))
}

pub fn spawn(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<&'static str>, NodeError> {
    Ok(Output::new("spawned")
        .with_dynamic_node(DynamicNode::new("d1", "const").with_params(json!({"value": "x"})))
        .with_dynamic_node(DynamicNode::new("d2", "const").with_params(json!({"value": "y"}))))
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use crate::BUNDLE;

    #[test]
    fn const_outputs_params_value_or_nothing() {
        let host = TestHost::new();
        let call = Call::new("const").params(json!({"value": {"id": 5}}));
        assert_eq!(
            host.execute(&BUNDLE, call).unwrap().output,
            Some(json!({"id": 5}))
        );
        assert_eq!(
            host.execute(&BUNDLE, Call::new("const")).unwrap().output,
            None
        );
    }

    #[test]
    fn echo_passes_its_input_through() {
        let host = TestHost::new();
        let call = Call::new("echo").input(json!({"theId": 5, "ctx": "U"}));
        assert_eq!(
            host.execute(&BUNDLE, call).unwrap().output,
            Some(json!({"theId": 5, "ctx": "U"}))
        );
        assert_eq!(
            host.execute(&BUNDLE, Call::new("echo")).unwrap().output,
            None
        );
    }

    #[test]
    fn act_routes_by_params_action() {
        let call = Call::new("act").params(json!({"value": 1, "action": "high"}));
        let result = TestHost::new().execute(&BUNDLE, call).unwrap();
        assert_eq!(
            (result.output, result.action.as_deref()),
            (Some(json!(1)), Some("high"))
        );
    }

    #[test]
    fn spawn_adds_two_const_nodes() {
        let result = TestHost::new()
            .execute(&BUNDLE, Call::new("spawn"))
            .unwrap();
        assert_eq!(result.output, Some(json!("spawned")));
        assert_eq!(
            result.dynamic_nodes,
            [
                json!({"id": "d1", "uses": "const", "params": {"value": "x"}}),
                json!({"id": "d2", "uses": "const", "params": {"value": "y"}}),
            ]
        );
    }

    #[test]
    fn no_output_and_with_error_field() {
        let host = TestHost::new();
        assert_eq!(
            host.execute(&BUNDLE, Call::new("noOutput")).unwrap().output,
            None
        );
        assert_eq!(
            host.execute(&BUNDLE, Call::new("withErrorField"))
                .unwrap()
                .output,
            Some(json!("x"))
        );
    }
}
