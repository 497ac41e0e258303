//! Nodes that stress the data path: non-JSON output, large output, echoed
//! input and floods of context writes.

use flowcraft_sdk::{Context, Ignore, NodeError, Output, RawRequest, RawResult};
use serde::Deserialize;
use serde_json::Value;

/// What `bad-output` returns as its output.
pub const NOT_JSON: &str = "this is {not JSON";

#[derive(Deserialize)]
pub struct BytesParams {
    bytes: usize,
}

#[derive(Deserialize)]
pub struct CountParams {
    count: u32,
}

/// A raw node, because the typed API can only produce JSON.
pub fn bad_output(_: &mut Context, _: RawRequest) -> Result<RawResult, NodeError> {
    Ok(RawResult {
        output: Some(NOT_JSON.to_owned()),
        ..RawResult::default()
    })
}

pub fn big_output(
    _: &mut Context,
    _: Ignore,
    params: BytesParams,
) -> Result<Output<String>, NodeError> {
    Ok(Output::new("x".repeat(params.bytes)))
}

pub fn echo(_: &mut Context, input: Option<Value>, _: Ignore) -> Result<Output<Value>, NodeError> {
    Ok(Output::maybe(input))
}

/// Writes `k0` = 0 … `k<count-1>`; a write the host refuses fails the node
/// (fatal) with the host's reason.
pub fn ctx_write_many(
    ctx: &mut Context,
    _: Ignore,
    params: CountParams,
) -> Result<Output<u32>, NodeError> {
    for index in 0..params.count {
        ctx.set(&format!("k{index}"), &index)?;
    }
    Ok(Output::new(params.count))
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::RawRequest;
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use super::{NOT_JSON, bad_output};
    use crate::BUNDLE;

    #[test]
    fn bad_output_returns_text_that_is_not_json() {
        let request = RawRequest {
            input: None,
            params: "{}".to_owned(),
        };
        let result = bad_output(&mut TestHost::new().context(), request).unwrap();
        assert_eq!(result.output.as_deref(), Some(NOT_JSON));
        assert!(serde_json::from_str::<serde_json::Value>(NOT_JSON).is_err());
    }

    #[test]
    fn big_output_has_the_requested_length() {
        let call = Call::new("big-output").params(json!({"bytes": 1000}));
        let output = TestHost::new()
            .execute(&BUNDLE, call)
            .unwrap()
            .output
            .unwrap();
        assert_eq!(output.as_str().unwrap().len(), 1000);
    }

    #[test]
    fn ctx_write_many_writes_count_keys() {
        let host = TestHost::new();
        let call = Call::new("ctx-write-many").params(json!({"count": 25}));
        assert_eq!(host.execute(&BUNDLE, call).unwrap().output, Some(json!(25)));
        assert_eq!(host.keys().len(), 25);
        assert_eq!(host.get("k24"), Some(json!(24)));
    }

    #[test]
    fn echo_returns_its_input() {
        let call = Call::new("echo").input(json!({"a": [1, 2]}));
        assert_eq!(
            TestHost::new().execute(&BUNDLE, call).unwrap().output,
            Some(json!({"a": [1, 2]}))
        );
    }
}
