//! The trivial bundle: one node that does as little as possible, for measuring
//! the host's per-call overhead.

use flowcraft_sdk::{Context, NodeError, RawRequest, RawResult};

/// Returns the input text unparsed (no input: no output), so a benchmark
/// measures the host, not JSON parsing in the guest.
pub fn noop(_: &mut Context, request: RawRequest) -> Result<RawResult, NodeError> {
    Ok(RawResult {
        output: request.input,
        ..RawResult::default()
    })
}

flowcraft_sdk::export_bundle! {
    nodes: [],
    raw_nodes: [
        ("noop", "Outputs its input unchanged", noop),
    ],
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use super::BUNDLE;

    #[test]
    fn noop_passes_the_input_through() {
        let host = TestHost::new();
        let call = Call::new("noop").input(json!({"n": 1}));
        assert_eq!(
            host.execute(&BUNDLE, call).unwrap().output,
            Some(json!({"n": 1}))
        );
        assert_eq!(
            host.execute(&BUNDLE, Call::new("noop")).unwrap().output,
            None
        );
    }
}
