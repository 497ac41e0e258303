//! Bundles whose `describe()` misbehaves, for the host's load-time limits:
//! with feature `describe-bomb` it lists 100,000 node types, with feature
//! `describe-spin` (alone) it never returns. They implement the
//! component exports themselves (what `export_bundle!` expands to), because
//! the SDK describes only the fixed table a bundle declares.

#[cfg(feature = "describe-bomb")]
use flowcraft_sdk::__private::bindings::flowcraft::node::types::NodeInfo;
use flowcraft_sdk::__private::{BundleInfo, Guest, NodeResult, Request, WitNodeError, bindings};

/// Node types the bomb lists: a hundred times what a host accepts.
#[cfg(feature = "describe-bomb")]
pub const BOMB_NODE_TYPES: usize = 100_000;

struct Component;

impl Guest for Component {
    #[cfg(feature = "describe-bomb")]
    fn describe() -> BundleInfo {
        BundleInfo {
            name: "describe-bomb".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            nodes: (0..BOMB_NODE_TYPES)
                .map(|n| NodeInfo {
                    uses: format!("bomb-{n}"),
                    description: "one of very many".to_owned(),
                    params_schema: None,
                })
                .collect(),
        }
    }

    #[cfg(not(feature = "describe-bomb"))]
    fn describe() -> BundleInfo {
        let mut spins: u64 = 0;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn execute(_: Request) -> Result<NodeResult, WitNodeError> {
        Err(WitNodeError::Fatal(
            "this bundle only exists to misbehave in describe()".to_owned(),
        ))
    }
}

bindings::__export_component!(Component with_types_in bindings);
