//! The WebAssembly OCI artifact: media types, the config document, and the
//! shape a pulled manifest must have to be a bundle.

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::OciError;

/// The config media type of a WebAssembly artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of the layer that holds the component.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// `architecture` of every WebAssembly artifact.
pub const ARCHITECTURE: &str = "wasm";
/// `os` of a WASI 0.2 component.
pub const OS: &str = "wasip2";

/// The config document of a WebAssembly artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// When it was published (RFC 3339).
    pub created: String,
    pub architecture: String,
    pub os: String,
    /// The digests of the artifact's layers (here: the one component).
    pub layer_digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInterfaces>,
}

/// The interfaces a component imports and exports, and the world it targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInterfaces {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl WasmConfig {
    /// The config of a component with digest `layer`, published now.
    pub fn for_component(layer: &Digest, interfaces: Option<ComponentInterfaces>) -> Self {
        Self {
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            architecture: ARCHITECTURE.to_owned(),
            os: OS.to_owned(),
            layer_digests: vec![layer.to_string()],
            component: interfaces,
        }
    }
}

/// The one component layer of `manifest`, or why it is not a bundle.
pub(crate) fn component_layer<'m>(
    reference: &str,
    manifest: &'m OciImageManifest,
) -> Result<&'m OciDescriptor, OciError> {
    let not_a_component = |detail: String| OciError::NotAComponent {
        reference: reference.to_owned(),
        detail,
    };
    match manifest.layers.as_slice() {
        [layer] if layer.media_type == LAYER_MEDIA_TYPE => Ok(layer),
        [layer] => Err(not_a_component(format!(
            "its layer has media type {}, not {LAYER_MEDIA_TYPE}",
            layer.media_type
        ))),
        layers => Err(not_a_component(format!(
            "it has {} layers, a bundle has one ({LAYER_MEDIA_TYPE})",
            layers.len()
        ))),
    }
}
