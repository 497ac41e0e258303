//! Entra ID (Azure AD) token credentials for the queue and Cosmos DB, the
//! alternative to account keys.
//!
//! A service configured with an endpoint and no key (the queue with
//! `AZURE_STORAGE_QUEUE_ENDPOINT` or a connection string holding only
//! `QueueEndpoint=`, Cosmos DB with `COSMOS_DB_ENDPOINT`) authenticates with the
//! credential chosen by `--azure-credential` / [`CREDENTIAL_VARIABLE`]
//! ([`CredentialKind`]). The credentials are the official `azure_identity`
//! ones; they read the environment variables Microsoft's tools read:
//!
//! | kind | reads |
//! |---|---|
//! | `managed-identity` | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service, Functions, Container Apps) or the VM metadata endpoint; `AZURE_CLIENT_ID` picks a user-assigned identity |
//! | `workload-identity` | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` (AKS) |
//! | `client-secret` | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` |
//! | `azure-cli` / `azure-developer-cli` | the signed-in `az` / `azd` |
//! | `default` | the first of the above that the environment configures (see [`CredentialKind::Default`]) |
//!
//! `azure_identity` 1.0 has no `DefaultAzureCredential`, so `default` is
//! assembled here from its parts. Every credential is wrapped in a token cache:
//! the Cosmos SDK asks its credential for a token on every request, and the
//! CLI credentials would start a process each time.
//!
//! [`AzureCredential::check`] fetches one token at start-up, so that a
//! credential that cannot get one fails with one line naming the setting and
//! what to do, not at the first job. Tokens and secrets never appear in
//! errors or `Debug` output.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use azure_identity::{
    AzureCliCredential, AzureDeveloperCliCredential, ClientSecretCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use thiserror::Error;

/// The environment variable choosing the credential (`--azure-credential`).
pub const CREDENTIAL_VARIABLE: &str = "FLOWCRAFT_AZURE_CREDENTIAL";
/// The scope `azure_storage_queue` requests its tokens for.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The scope `azure_data_cosmos` requests its tokens for.
pub const COSMOS_SCOPE: &str = "https://cosmos.azure.com/.default";

/// How long the start-up check waits for a token. The VM metadata endpoint
/// alone may retry for over a minute when it is busy.
const CHECK_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `default` waits for the VM metadata endpoint before trying the
/// developer tools (a machine outside Azure has no such endpoint, and the
/// connection may hang instead of failing).
const METADATA_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A cached token is renewed this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Which Entra ID credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// Chosen from the environment, in the order Microsoft's
    /// `DefaultAzureCredential` tries them: `client-secret` when
    /// `AZURE_CLIENT_SECRET` is set, `workload-identity` when
    /// `AZURE_FEDERATED_TOKEN_FILE` is set, `managed-identity` when
    /// `IDENTITY_ENDPOINT` or `MSI_ENDPOINT` is set; otherwise the VM's
    /// managed identity if its metadata endpoint answers, then the Azure CLI,
    /// then the Azure Developer CLI, keeping the first that gives a token.
    Default,
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
    AzureCli,
    AzureDeveloperCli,
}

impl CredentialKind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [CredentialKind; 6] = [
        Self::Default,
        Self::ManagedIdentity,
        Self::WorkloadIdentity,
        Self::ClientSecret,
        Self::AzureCli,
        Self::AzureDeveloperCli,
    ];

    /// The setting's spelling (`managed-identity`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::ManagedIdentity => "managed-identity",
            Self::WorkloadIdentity => "workload-identity",
            Self::ClientSecret => "client-secret",
            Self::AzureCli => "azure-cli",
            Self::AzureDeveloperCli => "azure-developer-cli",
        }
    }

    /// What to check when this kind cannot get a token.
    fn hint(self) -> &'static str {
        match self {
            Self::Default => {
                "set FLOWCRAFT_AZURE_CREDENTIAL (--azure-credential) to the credential this host should use, or configure one (see README \"Running on Azure\")"
            }
            Self::ManagedIdentity => {
                "check that this host has a managed identity (and that AZURE_CLIENT_ID, if set, is the client id of a user-assigned identity of this host)"
            }
            Self::WorkloadIdentity => {
                "check AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE and the federated credential of the identity"
            }
            Self::ClientSecret => {
                "check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (the secret may have expired)"
            }
            Self::AzureCli => "run `az login` (and `az account set` for the right tenant)",
            Self::AzureDeveloperCli => "run `azd auth login`",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CredentialKind {
    type Err = CredentialError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim();
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| CredentialError::UnknownKind(text.to_owned()))
    }
}

/// A credential that cannot be set up or cannot get a token; one line each.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialError {
    #[error(
        "{CREDENTIAL_VARIABLE}: '{0}' is not a credential; use one of default, managed-identity, workload-identity, client-secret, azure-cli, azure-developer-cli"
    )]
    UnknownKind(String),
    #[error(
        "{CREDENTIAL_VARIABLE}={kind} needs {missing} in the environment; set {them} (or choose another credential)",
        missing = missing.join(", "),
        them = if missing.len() == 1 { "it" } else { "them" }
    )]
    MissingVariables {
        kind: CredentialKind,
        missing: Vec<&'static str>,
    },
    #[error("{CREDENTIAL_VARIABLE}={kind}: the credential cannot be created: {detail}")]
    Unusable {
        kind: CredentialKind,
        detail: String,
    },
    #[error(
        "{CREDENTIAL_VARIABLE}={kind}: no Entra ID token for {service} ({scope}): {detail}; {hint}",
        hint = kind.hint()
    )]
    NoToken {
        kind: CredentialKind,
        service: String,
        scope: String,
        detail: String,
    },
}

/// An Entra ID credential, ready to hand to the SDK clients. Cheap to clone.
#[derive(Clone)]
pub struct AzureCredential {
    kind: CredentialKind,
    inner: Arc<dyn TokenCredential>,
}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureCredential")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl AzureCredential {
    /// Builds the credential of `kind` from the process environment.
    pub fn from_env(kind: CredentialKind) -> Result<Self, CredentialError> {
        Self::from_lookup(kind, &process_env)
    }

    /// Builds the credential of `kind`, reading variables through `lookup`
    /// (a set, non-empty value or `None`). The managed-identity credential
    /// reads `IDENTITY_ENDPOINT` and friends from the process environment
    /// itself.
    pub fn from_lookup(kind: CredentialKind, lookup: &Lookup<'_>) -> Result<Self, CredentialError> {
        let source = Source::choose(kind, lookup)?;
        let inner = source.build(kind)?;
        Ok(Self::wrap(kind, inner))
    }

    /// Uses `credential` as it is (tests, embedding), with the token cache.
    pub fn from_token_credential(
        kind: CredentialKind,
        credential: Arc<dyn TokenCredential>,
    ) -> Self {
        Self::wrap(kind, credential)
    }

    fn wrap(kind: CredentialKind, inner: Arc<dyn TokenCredential>) -> Self {
        Self {
            kind,
            inner: Arc::new(CachedCredential::new(inner)),
        }
    }

    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The credential for `QueueClient::new` / `AccountReference::with_credential`.
    pub fn token_credential(&self) -> Arc<dyn TokenCredential> {
        self.inner.clone()
    }

    /// Gets one token for `scope` (then cached for the clients), or says in
    /// one line why not. `service` names the service in the message.
    pub async fn check(&self, service: &str, scope: &str) -> Result<(), CredentialError> {
        self.token(service, scope).await.map(drop)
    }

    /// A token for `scope` (cached while it is valid), or why there is
    /// none, in one line naming `service`.
    pub async fn token(&self, service: &str, scope: &str) -> Result<String, CredentialError> {
        let failure = |detail: String| CredentialError::NoToken {
            kind: self.kind,
            service: service.to_owned(),
            scope: scope.to_owned(),
            detail,
        };
        match tokio::time::timeout(CHECK_TIMEOUT, self.inner.get_token(&[scope], None)).await {
            Ok(Ok(token)) => Ok(token.token.secret().to_owned()),
            Ok(Err(error)) => Err(failure(describe(&error))),
            Err(_) => Err(failure(format!(
                "no answer within {} s",
                CHECK_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Reads a variable: `Some` only when it is set and not blank.
pub type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The concrete credential `kind` resolves to, before it is built.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    ManagedIdentity {
        /// A user-assigned identity's client id (`AZURE_CLIENT_ID`).
        client_id: Option<String>,
    },
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: Secret,
    },
    AzureCli,
    AzureDeveloperCli,
    /// The VM metadata endpoint (probed briefly), then `az`, then `azd`.
    DeveloperFallback {
        client_id: Option<String>,
    },
}

impl Source {
    fn choose(kind: CredentialKind, lookup: &Lookup<'_>) -> Result<Self, CredentialError> {
        let require = |names: &[&'static str]| -> Result<Vec<String>, CredentialError> {
            let values: Vec<Option<String>> = names.iter().map(|name| lookup(name)).collect();
            let missing: Vec<&'static str> = names
                .iter()
                .zip(&values)
                .filter(|(_, value)| value.is_none())
                .map(|(name, _)| *name)
                .collect();
            if missing.is_empty() {
                Ok(values.into_iter().flatten().collect())
            } else {
                Err(CredentialError::MissingVariables { kind, missing })
            }
        };
        Ok(match kind {
            CredentialKind::ManagedIdentity => Self::ManagedIdentity {
                client_id: lookup("AZURE_CLIENT_ID"),
            },
            CredentialKind::WorkloadIdentity => {
                let values = require(&[
                    "AZURE_TENANT_ID",
                    "AZURE_CLIENT_ID",
                    "AZURE_FEDERATED_TOKEN_FILE",
                ])?;
                Self::WorkloadIdentity {
                    tenant_id: values[0].clone(),
                    client_id: values[1].clone(),
                    token_file: PathBuf::from(&values[2]),
                }
            }
            CredentialKind::ClientSecret => {
                let values =
                    require(&["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"])?;
                Self::ClientSecret {
                    tenant_id: values[0].clone(),
                    client_id: values[1].clone(),
                    secret: Secret::new(values[2].clone()),
                }
            }
            CredentialKind::AzureCli => Self::AzureCli,
            CredentialKind::AzureDeveloperCli => Self::AzureDeveloperCli,
            CredentialKind::Default => {
                // Each branch names the kind the environment configures, so
                // its missing variables are reported under that kind.
                let chosen = if lookup("AZURE_CLIENT_SECRET").is_some() {
                    Some(CredentialKind::ClientSecret)
                } else if lookup("AZURE_FEDERATED_TOKEN_FILE").is_some() {
                    Some(CredentialKind::WorkloadIdentity)
                } else if lookup("IDENTITY_ENDPOINT").is_some() || lookup("MSI_ENDPOINT").is_some()
                {
                    Some(CredentialKind::ManagedIdentity)
                } else {
                    None
                };
                match chosen {
                    Some(kind) => Self::choose(kind, lookup)?,
                    None => Self::DeveloperFallback {
                        client_id: lookup("AZURE_CLIENT_ID"),
                    },
                }
            }
        })
    }

    fn build(self, kind: CredentialKind) -> Result<Arc<dyn TokenCredential>, CredentialError> {
        let unusable = |error: azure_core::Error| CredentialError::Unusable {
            kind,
            detail: describe(&error),
        };
        Ok(match self {
            Self::ManagedIdentity { client_id } => managed_identity(client_id).map_err(unusable)?,
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                tenant_id: Some(tenant_id),
                client_id: Some(client_id),
                token_file_path: Some(token_file),
                ..Default::default()
            }))
            .map_err(unusable)?,
            Self::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => ClientSecretCredential::new(&tenant_id, client_id, secret, None)
                .map_err(unusable)?,
            Self::AzureCli => AzureCliCredential::new(None).map_err(unusable)?,
            Self::AzureDeveloperCli => AzureDeveloperCliCredential::new(None).map_err(unusable)?,
            Self::DeveloperFallback { client_id } => Arc::new(FirstThatWorks {
                sources: vec![
                    (
                        "managed identity",
                        managed_identity(client_id).map_err(unusable)?,
                        Some(METADATA_PROBE_TIMEOUT),
                    ),
                    (
                        "Azure CLI",
                        AzureCliCredential::new(None).map_err(unusable)?,
                        None,
                    ),
                    (
                        "Azure Developer CLI",
                        AzureDeveloperCliCredential::new(None).map_err(unusable)?,
                        None,
                    ),
                ],
                chosen: AtomicUsize::new(usize::MAX),
            }),
        })
    }
}

fn managed_identity(client_id: Option<String>) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(UserAssignedId::ClientId),
        ..Default::default()
    }))?;
    Ok(credential)
}

/// An SDK error as one line (the identity crate's messages span lines).
fn describe(error: &azure_core::Error) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tries its sources in order until one gives a token, then uses only that
/// one. A source with a probe timeout gets that long on its first try.
struct FirstThatWorks {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>, Option<Duration>)>,
    /// Index of the source that worked; `usize::MAX` until one did.
    chosen: AtomicUsize,
}

impl fmt::Debug for FirstThatWorks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|(name, ..)| *name).collect();
        f.debug_struct("FirstThatWorks")
            .field("sources", &names)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for FirstThatWorks {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some((_, source, _)) = self.sources.get(self.chosen.load(Ordering::Relaxed)) {
            return source.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (index, (name, source, probe)) in self.sources.iter().enumerate() {
            let attempt = source.get_token(scopes, options.clone());
            let outcome = match probe {
                Some(limit) => match tokio::time::timeout(*limit, attempt).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        failures.push(format!("{name}: no answer within {} s", limit.as_secs()));
                        continue;
                    }
                },
                None => attempt.await,
            };
            match outcome {
                Ok(token) => {
                    tracing::info!(credential = name, "Entra ID: using the {name} credential");
                    self.chosen.store(index, Ordering::Relaxed);
                    return Ok(token);
                }
                Err(error) => failures.push(format!("{name}: {}", describe(&error))),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no credential of the default chain gave a token ({})",
                failures.join("; ")
            ),
        ))
    }
}

/// Keeps each scope's token until [`REFRESH_MARGIN`] before it expires;
/// concurrent requests for an expired token wait for one renewal.
struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    tokens: Mutex<HashMap<String, AccessToken>>,
    renewal: tokio::sync::Mutex<()>,
}

impl CachedCredential {
    fn new(inner: Arc<dyn TokenCredential>) -> Self {
        Self {
            inner,
            tokens: Mutex::new(HashMap::new()),
            renewal: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, key: &str) -> Option<AccessToken> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(key)
            .filter(|token| token.expires_on - REFRESH_MARGIN > OffsetDateTime::now_utc())
            .cloned()
    }
}

impl fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCredential")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let key = scopes.join(" ");
        if let Some(token) = self.cached(&key) {
            return Ok(token);
        }
        let _renewing = self.renewal.lock().await;
        if let Some(token) = self.cached(&key) {
            return Ok(token);
        }
        let token = self.inner.get_token(scopes, options).await?;
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn kinds_parse_from_their_names_only() {
        for kind in CredentialKind::ALL {
            assert_eq!(kind.name().parse::<CredentialKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(
            " Managed-Identity ".parse::<CredentialKind>().unwrap(),
            CredentialKind::ManagedIdentity
        );
        let error = "key".parse::<CredentialKind>().unwrap_err().to_string();
        assert!(
            error.starts_with(
                "FLOWCRAFT_AZURE_CREDENTIAL: 'key' is not a credential; use one of default,"
            ),
            "{error}"
        );
    }

    #[test]
    fn default_follows_the_environment_in_microsofts_order() {
        let secret = env(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
        ]);
        assert_eq!(
            Source::choose(CredentialKind::Default, &secret).unwrap(),
            Source::ClientSecret {
                tenant_id: "t".into(),
                client_id: "c".into(),
                secret: Secret::new("s")
            }
        );
        let workload = env(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/token"),
        ]);
        assert_eq!(
            Source::choose(CredentialKind::Default, &workload).unwrap(),
            Source::WorkloadIdentity {
                tenant_id: "t".into(),
                client_id: "c".into(),
                token_file: PathBuf::from("/f")
            }
        );
        let app_service = env(&[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/token"),
            ("IDENTITY_HEADER", "h"),
            ("AZURE_CLIENT_ID", "user-assigned"),
        ]);
        assert_eq!(
            Source::choose(CredentialKind::Default, &app_service).unwrap(),
            Source::ManagedIdentity {
                client_id: Some("user-assigned".into())
            }
        );
        assert_eq!(
            Source::choose(CredentialKind::Default, &env(&[])).unwrap(),
            Source::DeveloperFallback { client_id: None }
        );
    }

    #[test]
    fn missing_variables_are_named_under_the_kind_that_needs_them() {
        let error = Source::choose(
            CredentialKind::WorkloadIdentity,
            &env(&[("AZURE_CLIENT_ID", "c")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "FLOWCRAFT_AZURE_CREDENTIAL=workload-identity needs AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE in the environment; set them (or choose another credential)"
        );
        // `default` picked client-secret because the secret is set.
        let error = Source::choose(
            CredentialKind::Default,
            &env(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_CLIENT_ID", "c")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("=client-secret needs AZURE_TENANT_ID in the environment; set it"),
            "{error}"
        );
        assert!(!error.contains("=s"), "{error}");
    }

    /// Counts calls and hands out tokens that expire after `lifetime`.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        lifetime: time::Duration,
        fail: bool,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "ManagedIdentityCredential authentication failed.\nTo troubleshoot, visit https://aka.ms/x",
                ));
            }
            Ok(AccessToken::new(
                format!("{}#{n}", scopes[0]),
                OffsetDateTime::now_utc() + self.lifetime,
            ))
        }
    }

    fn counting(lifetime: time::Duration, fail: bool) -> Arc<Counting> {
        Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime,
            fail,
        })
    }

    #[tokio::test]
    async fn tokens_are_cached_per_scope_until_shortly_before_expiry() {
        let source = counting(time::Duration::hours(1), false);
        let credential =
            AzureCredential::from_token_credential(CredentialKind::AzureCli, source.clone())
                .token_credential();
        for _ in 0..3 {
            let token = credential.get_token(&[COSMOS_SCOPE], None).await.unwrap();
            assert_eq!(token.token.secret(), format!("{COSMOS_SCOPE}#0"));
        }
        let storage = credential.get_token(&[STORAGE_SCOPE], None).await.unwrap();
        assert_eq!(storage.token.secret(), format!("{STORAGE_SCOPE}#1"));
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);

        // A token within the renewal margin is fetched again every time.
        let short = counting(time::Duration::minutes(4), false);
        let credential =
            AzureCredential::from_token_credential(CredentialKind::AzureCli, short.clone())
                .token_credential();
        credential.get_token(&[COSMOS_SCOPE], None).await.unwrap();
        credential.get_token(&[COSMOS_SCOPE], None).await.unwrap();
        assert_eq!(short.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_check_is_one_line_naming_the_setting_and_what_to_do() {
        let credential = AzureCredential::from_token_credential(
            CredentialKind::ManagedIdentity,
            counting(time::Duration::hours(1), true),
        );
        let error = credential
            .check("the queue", STORAGE_SCOPE)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "FLOWCRAFT_AZURE_CREDENTIAL=managed-identity: no Entra ID token for the queue (https://storage.azure.com/.default): ManagedIdentityCredential authentication failed. To troubleshoot"
            ),
            "{error}"
        );
        assert!(
            error.ends_with("user-assigned identity of this host)"),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }

    #[tokio::test]
    async fn the_fallback_chain_keeps_the_first_source_that_works() {
        let broken = counting(time::Duration::hours(1), true);
        let working = counting(time::Duration::hours(1), false);
        let chain = FirstThatWorks {
            sources: vec![
                ("broken", broken.clone(), None),
                ("working", working.clone(), None),
            ],
            chosen: AtomicUsize::new(usize::MAX),
        };
        chain.get_token(&[COSMOS_SCOPE], None).await.unwrap();
        chain.get_token(&[STORAGE_SCOPE], None).await.unwrap();
        assert_eq!(broken.calls.load(Ordering::SeqCst), 1);
        assert_eq!(working.calls.load(Ordering::SeqCst), 2);

        let all_broken = FirstThatWorks {
            sources: vec![("a", broken.clone(), None), ("b", broken, None)],
            chosen: AtomicUsize::new(usize::MAX),
        };
        let error = all_broken
            .get_token(&[COSMOS_SCOPE], None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("no credential of the default chain gave a token (a: ManagedIdentityCredential authentication failed."),
            "{error}"
        );
        assert!(error.contains("; b: "), "{error}");
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let credential = AzureCredential::from_token_credential(
            CredentialKind::ClientSecret,
            counting(time::Duration::hours(1), false),
        );
        assert_eq!(
            format!("{credential:?}"),
            "AzureCredential { kind: ClientSecret, .. }"
        );
    }
}
