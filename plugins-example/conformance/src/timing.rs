//! A node that takes time, for timeout and in-flight tests.

use std::thread;
use std::time::Duration;

use flowcraft_sdk::{Context, Ignore, NodeError, Output};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct SlowParams {
    ms: u64,
}

/// Sleeps (WASI monotonic clock) rather than spinning, so it costs no CPU.
pub fn slow(
    _: &mut Context,
    _: Ignore,
    params: SlowParams,
) -> Result<Output<&'static str>, NodeError> {
    thread::sleep(Duration::from_millis(params.ms));
    Ok(Output::new("slow-done"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use crate::BUNDLE;

    #[test]
    fn slow_waits_then_finishes() {
        let started = Instant::now();
        let result = TestHost::new().execute(&BUNDLE, Call::new("slow").params(json!({"ms": 20})));
        assert_eq!(result.unwrap().output, Some(json!("slow-done")));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
