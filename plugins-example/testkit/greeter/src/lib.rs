//! The greeter bundle, built in two versions from this one crate for hot-swap
//! tests: without features it is `greeter` 1.0.0, with feature `v2` it is
//! `greeter` 2.0.0. Both implement the same `uses` keys and say which version
//! answered.

use std::thread;
use std::time::Duration;

use flowcraft_sdk::{Context, Ignore, NodeError, Output};
use serde::Deserialize;

const VERSION: &str = if cfg!(feature = "v2") {
    "2.0.0"
} else {
    "1.0.0"
};
const GREETING: &str = if cfg!(feature = "v2") {
    "hello from greeter v2"
} else {
    "hello from greeter v1"
};

#[derive(Deserialize)]
pub struct SlowParams {
    ms: u64,
}

pub fn greet(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<&'static str>, NodeError> {
    Ok(Output::new(GREETING))
}

/// Greets after `params.ms` milliseconds, so a call can still be running
/// while the host swaps the bundle.
pub fn greet_slow(
    _: &mut Context,
    _: Ignore,
    params: SlowParams,
) -> Result<Output<&'static str>, NodeError> {
    thread::sleep(Duration::from_millis(params.ms));
    Ok(Output::new(GREETING))
}

flowcraft_sdk::export_bundle! {
    version: VERSION,
    nodes: [
        ("greet", "Says which version of the greeter answered", greet),
        ("greet-slow", "Like greet, after sleeping params.ms milliseconds", greet_slow),
    ]
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use super::{BUNDLE, GREETING};

    #[test]
    fn name_and_version_follow_the_feature() {
        let expected = if cfg!(feature = "v2") {
            ("greeter", "2.0.0")
        } else {
            ("greeter", "1.0.0")
        };
        assert_eq!((BUNDLE.name, BUNDLE.version), expected);
        assert!(GREETING.ends_with(if cfg!(feature = "v2") { "v2" } else { "v1" }));
    }

    #[test]
    fn greet_and_greet_slow_say_the_same() {
        let host = TestHost::new();
        assert_eq!(
            host.execute(&BUNDLE, Call::new("greet")).unwrap().output,
            Some(json!(GREETING))
        );
        let slow = Call::new("greet-slow").params(json!({"ms": 5}));
        assert_eq!(
            host.execute(&BUNDLE, slow).unwrap().output,
            Some(json!(GREETING))
        );
    }
}
