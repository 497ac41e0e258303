//! What can go wrong talking to a registry or the bundle store, each error
//! naming the reference or file and what to do.

use std::path::PathBuf;

/// A registry or bundle store failure.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "'{reference}' is not an OCI reference ({reason}); expected e.g. ghcr.io/acme/orders:1.2.0 or myacr.azurecr.io/nodes/orders@sha256:<digest>"
    )]
    InvalidReference { reference: String, reason: String },
    #[error("'{digest}' is not a content digest; expected sha256: and 64 lowercase hex digits")]
    InvalidDigest { digest: String },
    #[error("{reference}: not found in the registry; check the repository and tag (or digest)")]
    NotFound { reference: String },
    #[error(
        "{reference}: the registry refused {operation} ({detail}); give credentials for {registry} (FLOWCRAFT_REGISTRY_USERNAME and FLOWCRAFT_REGISTRY_PASSWORD, or a Docker config.json) with the rights to {operation}"
    )]
    Unauthorized {
        reference: String,
        registry: String,
        operation: &'static str,
        detail: String,
    },
    #[error("{reference}: {operation} failed: {detail}")]
    Registry {
        reference: String,
        operation: &'static str,
        detail: String,
    },
    #[error(
        "{reference} is not a WebAssembly component artifact: {detail}; publish bundles with `flowcraft-host plugins push`"
    )]
    NotAComponent { reference: String, detail: String },
    #[error(
        "{reference}: the component's bytes do not match its digest {expected} (got {actual}); the registry or a proxy altered it"
    )]
    DigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("Azure Container Registry {registry}: {step}: {detail}")]
    Acr {
        registry: String,
        step: &'static str,
        detail: String,
    },
    #[error("bundle list {path}: {detail}")]
    BundleList { path: PathBuf, detail: String },
    #[error("Docker credential file {path}: {detail}")]
    DockerConfig { path: PathBuf, detail: String },
    #[error("bundle store {path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
}
