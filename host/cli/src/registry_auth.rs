//! Credentials for OCI registries, as `plugins push|pull` and bundle lists
//! use them: Docker's `config.json`, and for Azure Container Registry hosts
//! without a login there an Entra ID credential (`--registry-credential`,
//! else the Azure credential of `--azure-credential`).

use std::future::Future;
use std::pin::Pin;

use anyhow::Result;
use flowcraft_azure::credential::{AzureCredential, CredentialKind};
use flowcraft_oci::{ACR_SCOPE, Credentials, EntraTokens};

/// The registry credentials of this process: the Docker credential file, and
/// Entra ID tokens of `entra` for Azure Container Registries.
pub fn registry_credentials(entra: Option<CredentialKind>) -> Result<Credentials> {
    let credentials = Credentials::default().with_docker_config()?;
    Ok(match entra {
        Some(kind) => {
            let credential = AzureCredential::from_env(kind)?;
            credentials.with_entra(std::sync::Arc::new(EntraFromAzure(credential)))
        }
        None => credentials,
    })
}

/// Entra ID tokens for ACR from an Azure credential.
struct EntraFromAzure(AzureCredential);

impl EntraTokens for EntraFromAzure {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            self.0
                .token("Azure Container Registry", ACR_SCOPE)
                .await
                .map_err(|error| error.to_string())
        })
    }
}
