//! Nodes that exhaust a resource or crash: the host must turn each into a node
//! failure and stay healthy.

use std::hint::black_box;

use flowcraft_sdk::{Context, Ignore, NodeError, Output};

/// Bytes allocated per step by [`hog`].
const HOG_CHUNK_BYTES: usize = 1 << 20;

pub fn spin(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    let mut spins: u64 = 0;
    loop {
        spins = black_box(spins.wrapping_add(1));
    }
}

/// Every chunk is filled with a non-zero byte, so its pages are really
/// committed, and kept alive until the allocator fails.
pub fn hog(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    let mut chunks = Vec::new();
    loop {
        chunks.push(vec![0xA5_u8; HOG_CHUNK_BYTES]);
        black_box(&chunks);
    }
}

pub fn panic_node(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    panic!("hostile bundle: panicking on purpose");
}

/// What `fail` fails with.
pub const FAILURE: &str = "hostile bundle: failing on purpose";

pub fn fail(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<()>, NodeError> {
    Err(NodeError::retryable(FAILURE))
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};

    use crate::BUNDLE;

    #[test]
    fn fail_always_fails_retryably() {
        let error = TestHost::new()
            .execute(&BUNDLE, Call::new("fail"))
            .unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(error.message(), super::FAILURE);
    }

    #[test]
    #[should_panic(expected = "hostile bundle: panicking on purpose")]
    fn panic_panics_with_its_message() {
        let _ = TestHost::new().execute(&BUNDLE, Call::new("panic"));
    }
}
