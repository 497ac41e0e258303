//! One registry host: publishing a component, resolving a reference to its
//! digests, fetching a component by digest.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::artifact::{
    CONFIG_MEDIA_TYPE, ComponentInterfaces, LAYER_MEDIA_TYPE, WasmConfig, component_layer,
};
use crate::credentials::Credentials;
use crate::digest::Digest;
use crate::error::OciError;
use crate::store::BundleStore;

/// What [`Registry::push`] published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The manifest's digest: `<repository>@<manifest>` names this version.
    pub manifest: Digest,
    /// The component's digest: what runs are pinned to.
    pub component: Digest,
}

/// What a reference names now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub manifest: Digest,
    pub component: Digest,
    /// The component's size in bytes, as the manifest states it.
    pub size: u64,
}

/// A client of one registry host.
pub struct Registry {
    host: String,
    client: Client,
    credentials: Credentials,
}

impl Registry {
    /// A client of the registry `reference` lives in. Loopback hosts
    /// (`localhost`, `127.0.0.1`, `[::1]`, any port) are reached over plain
    /// HTTP, others over HTTPS unless `insecure`.
    pub fn for_reference(reference: &Reference, credentials: &Credentials, insecure: bool) -> Self {
        let host = reference.resolve_registry().to_owned();
        let protocol = if insecure || is_loopback(&host) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            ..ClientConfig::default()
        });
        Self {
            host,
            client,
            credentials: credentials.clone(),
        }
    }

    /// How to authenticate for `actions` on `reference`'s repository.
    async fn auth(&self, reference: &Reference, actions: &str) -> Result<RegistryAuth, OciError> {
        self.credentials
            .auth(&self.host, reference.repository(), actions)
            .await
    }

    /// Publishes `component` at `reference` as a WebAssembly artifact, with
    /// `annotations` on its manifest.
    pub async fn push(
        &self,
        reference: &Reference,
        component: Vec<u8>,
        interfaces: Option<ComponentInterfaces>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Published, OciError> {
        let digest = Digest::of(&component);
        let config = WasmConfig::for_component(&digest, interfaces);
        let config = Config::new(
            serde_json::to_vec(&config).expect("the config serialises"),
            CONFIG_MEDIA_TYPE.to_owned(),
            None,
        );
        let layers = [ImageLayer::new(
            component,
            LAYER_MEDIA_TYPE.to_owned(),
            None,
        )];
        let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations));
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_owned());
        let auth = self.auth(reference, "pull,push").await?;
        self.client
            .push(reference, &layers, config, &auth, Some(manifest))
            .await
            .map_err(|error| self.classify(reference, "push", error))?;
        // The manifest's digest is that of the bytes the registry keeps,
        // which it answers for the reference just written.
        let manifest = self
            .client
            .fetch_manifest_digest(reference, &auth)
            .await
            .map_err(|error| self.classify(reference, "push", error))?;
        Ok(Published {
            manifest: manifest.parse()?,
            component: digest,
        })
    }

    /// The manifest `reference` names now, checked to be a bundle.
    pub async fn resolve(&self, reference: &Reference) -> Result<Resolved, OciError> {
        let auth = self.auth(reference, "pull").await?;
        let (manifest, digest) = self
            .client
            .pull_image_manifest(reference, &auth)
            .await
            .map_err(|error| self.classify(reference, "pull", error))?;
        let layer = component_layer(&reference.whole(), &manifest)?;
        Ok(Resolved {
            manifest: digest.parse()?,
            component: layer.digest.parse()?,
            size: u64::try_from(layer.size).unwrap_or_default(),
        })
    }

    /// Resolves `reference` and answers the file of its component in
    /// `store`, fetching the component unless the store has it.
    pub async fn pull_into(
        &self,
        reference: &Reference,
        store: &BundleStore,
    ) -> Result<(Resolved, PathBuf), OciError> {
        let resolved = self.resolve(reference).await?;
        let path = match store.get(&resolved.component) {
            Some(path) => path,
            None => {
                let component = self.fetch(reference, &resolved.component).await?;
                store.put(&component).await?.1
            }
        };
        Ok((resolved, path))
    }

    /// The component with digest `component` from `reference`'s repository,
    /// checked against the digest.
    pub async fn fetch(
        &self,
        reference: &Reference,
        component: &Digest,
    ) -> Result<Vec<u8>, OciError> {
        let layer = OciDescriptor {
            media_type: LAYER_MEDIA_TYPE.to_owned(),
            digest: component.to_string(),
            ..OciDescriptor::default()
        };
        let auth = self.auth(reference, "pull").await?;
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        let mut bytes = Vec::new();
        self.client
            .pull_blob(reference, &layer, &mut bytes)
            .await
            .map_err(|error| self.classify(reference, "pull", error))?;
        let actual = Digest::of(&bytes);
        if &actual != component {
            return Err(OciError::DigestMismatch {
                reference: reference.whole(),
                expected: component.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Turns a client error into one that says what to do.
    fn classify(
        &self,
        reference: &Reference,
        operation: &'static str,
        error: OciDistributionError,
    ) -> OciError {
        let reference_text = reference.whole();
        if let OciDistributionError::DigestError(DigestError::VerificationError {
            expected,
            actual,
        }) = error
        {
            return OciError::DigestMismatch {
                reference: reference_text,
                expected,
                actual,
            };
        }
        match error_kind(&error) {
            ErrorKind::NotFound => OciError::NotFound {
                reference: reference_text,
            },
            ErrorKind::Unauthorized => OciError::Unauthorized {
                reference: reference_text,
                registry: self.host.clone(),
                operation,
                detail: error.to_string(),
            },
            ErrorKind::Other => OciError::Registry {
                reference: reference_text,
                operation,
                detail: error.to_string(),
            },
        }
    }
}

enum ErrorKind {
    NotFound,
    Unauthorized,
    Other,
}

fn error_kind(error: &OciDistributionError) -> ErrorKind {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => ErrorKind::NotFound,
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ErrorKind::Unauthorized,
        OciDistributionError::ServerError { code: 404, .. } => ErrorKind::NotFound,
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ErrorKind::Unauthorized,
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes = envelope.errors.iter().map(|error| &error.code);
            let mut kind = ErrorKind::Other;
            for code in codes {
                match code {
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound => kind = ErrorKind::NotFound,
                    OciErrorCode::Unauthorized | OciErrorCode::Denied => {
                        return ErrorKind::Unauthorized;
                    }
                    _ => {}
                }
            }
            kind
        }
        _ => ErrorKind::Other,
    }
}

/// Whether `registry` (a host with an optional port) is this machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_this_machine_with_any_port() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "ghcr.io",
            "myacr.azurecr.io:443",
            "10.0.0.1:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
