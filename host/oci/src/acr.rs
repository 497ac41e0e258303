//! Azure Container Registry with Entra ID. An Entra access token for the
//! registry audience ([`ACR_SCOPE`]) is exchanged at the registry's
//! `/oauth2/exchange` for a refresh token, which `/oauth2/token` turns into an
//! access token for one repository and the actions an operation needs
//! (`pull`, or `pull,push`). The identity needs the `AcrPull` role on the
//! registry to pull and `AcrPush` to push.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::OciError;
use crate::registry::is_loopback;

/// The Entra scope of Azure Container Registry's data plane.
pub const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";

/// Entra access tokens for [`ACR_SCOPE`], from whatever credential the
/// process runs with.
pub trait EntraTokens: Send + Sync + 'static {
    /// A current token, or why there is none.
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// Whether `registry` is an Azure Container Registry host.
pub fn is_acr(registry: &str) -> bool {
    let host = registry
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    [".azurecr.io", ".azurecr.cn", ".azurecr.us"]
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

/// The token endpoints of one registry.
#[derive(Clone)]
pub struct AcrTokens {
    http: reqwest::Client,
    /// `https://<registry>` (plain HTTP for a loopback stand-in).
    base: String,
    registry: String,
    entra: Arc<dyn EntraTokens>,
}

#[derive(Deserialize)]
struct Refresh {
    refresh_token: String,
}

#[derive(Deserialize)]
struct Access {
    access_token: String,
}

impl AcrTokens {
    /// The endpoints of `registry` (host and port), with Entra tokens from `entra`.
    pub fn new(registry: &str, entra: Arc<dyn EntraTokens>) -> Self {
        let scheme = if is_loopback(registry) {
            "http"
        } else {
            "https"
        };
        Self {
            http: reqwest::Client::new(),
            base: format!("{scheme}://{registry}"),
            registry: registry.to_owned(),
            entra,
        }
    }

    /// An access token for `actions` (`pull` or `pull,push`) on `repository`.
    pub async fn access_token(&self, repository: &str, actions: &str) -> Result<String, OciError> {
        let entra = self.entra.token().await.map_err(|detail| OciError::Acr {
            registry: self.registry.clone(),
            step: "getting an Entra ID token",
            detail,
        })?;
        let refresh: Refresh = self
            .post(
                "exchange",
                "exchanging the Entra ID token",
                &[
                    ("grant_type", "access_token"),
                    ("service", &self.registry),
                    ("access_token", &entra),
                ],
                "AcrPull",
            )
            .await?;
        let scope = format!("repository:{repository}:{actions}");
        let role = if actions.contains("push") {
            "AcrPush"
        } else {
            "AcrPull"
        };
        let access: Access = self
            .post(
                "token",
                "getting a repository token",
                &[
                    ("grant_type", "refresh_token"),
                    ("service", &self.registry),
                    ("scope", &scope),
                    ("refresh_token", &refresh.refresh_token),
                ],
                role,
            )
            .await?;
        Ok(access.access_token)
    }

    /// POSTs `form` to `/oauth2/<endpoint>`; a refusal names the `role` the
    /// identity needs.
    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &str,
        step: &'static str,
        form: &[(&str, &str)],
        role: &str,
    ) -> Result<T, OciError> {
        let failed = |detail: String| OciError::Acr {
            registry: self.registry.clone(),
            step,
            detail,
        };
        let response = self
            .http
            .post(format!("{}/oauth2/{endpoint}", self.base))
            .form(form)
            .send()
            .await
            .map_err(|error| {
                failed(format!(
                    "no answer ({error}); check the registry name and the network"
                ))
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(failed(format!(
                "refused ({status}); the identity needs the {role} role on the registry (az role assignment create --role {role} --assignee <identity> --scope <registry id>)"
            )));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!(
                "{status}: {}",
                body.chars().take(200).collect::<String>()
            )));
        }
        response
            .json()
            .await
            .map_err(|error| failed(format!("an answer that is not a token ({error})")))
    }
}
