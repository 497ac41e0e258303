//! The host side of the `flowcraft:node@0.1.0` contract, generated from
//! `wit/node.wit` by wasmtime's `bindgen!`.
//!
//! This is the only place bindings are generated. The host interface is
//! synchronous (every host function works on in-memory state held in the
//! store) while the `node` exports are called asynchronously, so that epoch
//! deadlines can yield to tokio and wall-clock limits can cancel a call.

wasmtime::component::bindgen!({
    world: "bundle",
    path: "../../wit",
    imports: {
        // Deleting a key can break a host rule (reserved key, write quota);
        // `context-delete` has no error channel in the WIT, so that traps the call.
        "flowcraft:node/host.context-delete": trappable,
    },
    exports: { default: async },
});

pub(crate) use flowcraft::node::host::Host;
pub(crate) use flowcraft::node::types::{
    BundleInfo as GuestBundleInfo, Host as TypesHost, LogLevel, NodeError as GuestNodeError,
    NodeResult as GuestNodeResult, Request as GuestRequest,
};

/// The interface a bundle must export, without its version.
pub(crate) const NODE_INTERFACE: &str = "flowcraft:node/node";
/// The interfaces a bundle may import from the host, without their version.
pub(crate) const HOST_INTERFACES: &[&str] = &["flowcraft:node/host", "flowcraft:node/types"];
/// The contract version this host implements; bundles built against any
/// semver-compatible version (0.1.x) load.
pub(crate) const CONTRACT_VERSION: &str = "0.1.0";

/// The WIT world a bundle targets, with the contract version.
pub fn bundle_world() -> String {
    format!("flowcraft:node/bundle@{CONTRACT_VERSION}")
}
