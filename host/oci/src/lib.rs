//! Node bundles in OCI registries: how flowcraft-host ships bundles to a
//! fleet that shares no directory.
//!
//! A bundle is published as the WebAssembly OCI artifact the component
//! ecosystem uses (Spin, wasmCloud, `wkg oci`): an image manifest whose
//! config has media type [`CONFIG_MEDIA_TYPE`] and whose one layer, of media
//! type [`LAYER_MEDIA_TYPE`], is the component itself. The layer's digest is
//! therefore the bundle's content digest, the `sha256:` a run is pinned to,
//! so a worker can fetch a pinned bundle by that digest alone.
//!
//! - [`Registry`]: one registry host: push a component, resolve a tag or
//!   digest reference to its manifest and component digests, fetch the
//!   component (verified against its digest). Loopback registries are
//!   reached over plain HTTP, others over HTTPS unless marked insecure.
//! - [`Credentials`]: anonymous, a username and password, the Docker
//!   credential file (`config.json`), chosen per registry host, or for Azure
//!   Container Registry an Entra ID token exchanged for a repository token
//!   ([`AcrTokens`]).
//! - [`BundleStore`]: the content-addressed directory of pulled components,
//!   `<root>/sha256/<hex>.wasm`, written atomically and checked on write.
//! - [`BundleList`] and [`ListResolver`]: the TOML list of bundles a worker
//!   serves (`--plugins bundles.toml`), resolved to files in the store, with
//!   the last resolution of each reference remembered for registry outages.
//!
//! The registry protocol itself is `oci-client`'s; this crate adds the
//! artifact format, the checks a pulled artifact must pass and error messages
//! that say what to do.

mod acr;
mod artifact;
mod bundle_list;
mod credentials;
mod digest;
mod error;
mod registry;
mod store;

pub use acr::{ACR_SCOPE, AcrTokens, EntraTokens, is_acr};
pub use artifact::{
    ARCHITECTURE, CONFIG_MEDIA_TYPE, ComponentInterfaces, LAYER_MEDIA_TYPE, OS, WasmConfig,
};
pub use bundle_list::{BundleEntry, BundleList, ListResolver, Origin, ResolvedBundle};
pub use credentials::{Credentials, DOCKER_CONFIG_VARIABLE};
pub use digest::Digest;
pub use error::OciError;
pub use oci_client::Reference;
pub use registry::{Published, Registry, Resolved, is_loopback};
pub use store::BundleStore;
