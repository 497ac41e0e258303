//! Nodes that fail on purpose: a retryable error, a fatal one, and one that
//! succeeds only from a given attempt on.

use flowcraft_sdk::{Context, Ignore, NodeError, Output};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlakyParams {
    succeed_on: u32,
}

pub fn fail(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    Err(NodeError::retryable("boom"))
}

pub fn fatal(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    Err(NodeError::fatal("fatal!"))
}

/// Counts attempts with the host's attempt number, so the behaviour is the
/// same in every worker and after a redelivery.
pub fn flaky(
    ctx: &mut Context,
    _: Ignore,
    params: FlakyParams,
) -> Result<Output<String>, NodeError> {
    let attempt = ctx.run().attempt;
    if attempt < params.succeed_on {
        return Err(NodeError::retryable(format!(
            "flaky: attempt {attempt} fails (succeeds on attempt {})",
            params.succeed_on
        )));
    }
    Ok(Output::new(format!("ok@{attempt}")))
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::NodeError;
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use crate::BUNDLE;

    #[test]
    fn fail_is_retryable_and_fatal_is_fatal() {
        let host = TestHost::new();
        assert_eq!(
            host.execute(&BUNDLE, Call::new("fail")).unwrap_err(),
            NodeError::retryable("boom")
        );
        assert_eq!(
            host.execute(&BUNDLE, Call::new("fatal")).unwrap_err(),
            NodeError::fatal("fatal!")
        );
    }

    #[test]
    fn flaky_succeeds_from_the_given_attempt() {
        let host = TestHost::new();
        let call = |attempt| {
            Call::new("flaky")
                .params(json!({"succeedOn": 3}))
                .attempt(attempt)
        };
        assert!(host.execute(&BUNDLE, call(1)).unwrap_err().is_retryable());
        assert!(host.execute(&BUNDLE, call(2)).unwrap_err().is_retryable());
        assert_eq!(
            host.execute(&BUNDLE, call(3)).unwrap().output,
            Some(json!("ok@3"))
        );
    }
}
