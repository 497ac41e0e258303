//! Configuration of the worker and the client commands: flags, environment
//! variables and an optional TOML file (`--config`). A flag wins over its
//! environment variable, which wins over the file, which wins over the
//! default. The environment names are the TypeScript adapter's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use flowcraft_azure::backend::{AccountSetting, AzureConfig};
use flowcraft_azure::credential::CredentialKind;
use flowcraft_azure::queue::DEFAULT_QUEUE_NAME;
use flowcraft_plugins::Grants;
use serde::Deserialize;

pub const DEFAULT_DATABASE: &str = "flowcraft";
pub const DEFAULT_CONTEXT_CONTAINER: &str = "workflow-contexts";
pub const DEFAULT_STATUS_CONTAINER: &str = "workflow-statuses";

/// Where the Azure services are (flags and environment).
#[derive(Args, Clone, Default)]
pub struct AzureArgs {
    /// TOML configuration file (see README "Configuration"); flags and environment override it.
    #[arg(long, value_name = "FILE", env = "FLOWCRAFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Azure Storage connection string (queue): account key, SAS, or only QueueEndpoint= for Entra ID.
    #[arg(
        long,
        value_name = "STRING",
        env = "AZURE_STORAGE_CONNECTION_STRING",
        hide_env_values = true
    )]
    pub storage_connection_string: Option<String>,
    /// Queue service endpoint for Entra ID auth, no key (https://ACCOUNT.queue.core.windows.net); needs --azure-credential.
    #[arg(long, value_name = "URL", env = "AZURE_STORAGE_QUEUE_ENDPOINT")]
    pub storage_queue_endpoint: Option<String>,
    /// Cosmos DB connection string `AccountEndpoint=…;AccountKey=…;`.
    #[arg(
        long,
        value_name = "STRING",
        env = "COSMOS_DB_CONNECTION_STRING",
        hide_env_values = true
    )]
    pub cosmos_connection_string: Option<String>,
    /// Cosmos DB endpoint for Entra ID auth, no key (https://ACCOUNT.documents.azure.com:443/); needs --azure-credential.
    #[arg(long, value_name = "URL", env = "COSMOS_DB_ENDPOINT")]
    pub cosmos_endpoint: Option<String>,
    /// Entra ID credential for the services given without a key (AZURE_CLIENT_ID, AZURE_TENANT_ID,
    /// AZURE_CLIENT_SECRET, AZURE_FEDERATED_TOKEN_FILE are read as Microsoft's tools read them).
    #[arg(
        long,
        value_name = "KIND",
        env = "FLOWCRAFT_AZURE_CREDENTIAL",
        value_parser = credential_parser()
    )]
    pub azure_credential: Option<CredentialKind>,
    /// Redis URL, e.g. redis://127.0.0.1:6379 (REDIS_CONNECTION_STRING is read too).
    #[arg(long, value_name = "URL", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Queue name [default: flowcraft-jobs].
    #[arg(long, env = "FLOWCRAFT_QUEUE")]
    pub queue: Option<String>,
    /// Cosmos database [default: flowcraft].
    #[arg(long, env = "FLOWCRAFT_DATABASE")]
    pub database: Option<String>,
    /// Cosmos container of run contexts [default: workflow-contexts].
    #[arg(long, env = "FLOWCRAFT_CONTEXT_CONTAINER")]
    pub context_container: Option<String>,
    /// Cosmos container of run statuses [default: workflow-statuses].
    #[arg(long, env = "FLOWCRAFT_STATUS_CONTAINER")]
    pub status_container: Option<String>,
    /// Create the queue, database and containers when they are missing.
    #[arg(long)]
    pub create_resources: bool,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub azure: AzureFile,
    #[serde(default)]
    pub worker: WorkerFile,
    /// Capabilities per bundle name: `[grants.orders] config = {…}`.
    #[serde(default)]
    pub grants: BTreeMap<String, Grants>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureFile {
    pub storage_connection_string: Option<String>,
    pub storage_queue_endpoint: Option<String>,
    pub cosmos_connection_string: Option<String>,
    pub cosmos_endpoint: Option<String>,
    /// An Entra ID credential kind (`managed-identity`, ...).
    pub credential: Option<String>,
    pub redis_url: Option<String>,
    pub queue: Option<String>,
    pub database: Option<String>,
    pub context_container: Option<String>,
    pub status_container: Option<String>,
    pub create_resources: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    pub plugins: Option<PathBuf>,
    pub blueprints: Option<PathBuf>,
    pub concurrency: Option<usize>,
    pub visibility_timeout_seconds: Option<u64>,
    pub max_dequeue_count: Option<u32>,
    pub reconcile_interval_seconds: Option<u64>,
    pub stalled_after_seconds: Option<u64>,
    pub idle_poll_ms: Option<u64>,
    pub plugins_poll_seconds: Option<u64>,
    pub cache_dir: Option<PathBuf>,
    pub reconciler: Option<bool>,
    pub mixed_fleet: Option<bool>,
}

impl ConfigFile {
    /// Reads `path`, or an empty configuration without one.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("configuration file {} is invalid", path.display()))
    }
}

/// `--azure-credential`: one of the kinds' names, listed in `--help`.
pub fn credential_parser() -> impl TypedValueParser<Value = CredentialKind> {
    PossibleValuesParser::new(CredentialKind::ALL.map(CredentialKind::name))
        .map(|name| name.parse().expect("a listed credential name"))
}

/// A service's account: its connection string or its endpoint, not both.
fn account(
    connection_string: Option<String>,
    endpoint: Option<String>,
    names: [&str; 2],
) -> Result<Option<AccountSetting>> {
    match (connection_string, endpoint) {
        (Some(_), Some(_)) => bail!(
            "{} and {} are both set; set one: the connection string for a key, the endpoint for Entra ID",
            names[0],
            names[1]
        ),
        (Some(text), None) => Ok(Some(AccountSetting::ConnectionString(text))),
        (None, Some(url)) => Ok(Some(AccountSetting::Endpoint(url))),
        (None, None) => Ok(None),
    }
}

impl AzureArgs {
    /// The Entra ID credential named by `--azure-credential` or `[azure] credential`.
    pub fn credential_kind(&self, file: &AzureFile) -> Result<Option<CredentialKind>> {
        Ok(match (self.azure_credential, &file.credential) {
            (Some(kind), _) => Some(kind),
            (None, Some(text)) => Some(text.parse::<CredentialKind>().map_err(|_| {
                anyhow!(
                    "[azure] credential = '{text}' in the configuration file is not a credential; use one of {}",
                    CredentialKind::ALL.map(CredentialKind::name).join(", ")
                )
            })?),
            (None, None) => None,
        })
    }

    /// The Azure settings, `None` when none of the three services is
    /// configured (embedded mode); an error when only some are.
    pub fn resolve(&self, file: &AzureFile) -> Result<Option<AzureConfig>> {
        let redis_fallback = std::env::var("REDIS_CONNECTION_STRING").ok();
        let storage = account(
            self.storage_connection_string
                .clone()
                .or(file.storage_connection_string.clone()),
            self.storage_queue_endpoint
                .clone()
                .or(file.storage_queue_endpoint.clone()),
            [
                "AZURE_STORAGE_CONNECTION_STRING",
                "AZURE_STORAGE_QUEUE_ENDPOINT",
            ],
        )?;
        let cosmos = account(
            self.cosmos_connection_string
                .clone()
                .or(file.cosmos_connection_string.clone()),
            self.cosmos_endpoint
                .clone()
                .or(file.cosmos_endpoint.clone()),
            ["COSMOS_DB_CONNECTION_STRING", "COSMOS_DB_ENDPOINT"],
        )?;
        let credential = self.credential_kind(file)?;
        let redis = self
            .redis_url
            .clone()
            .or(redis_fallback)
            .or(file.redis_url.clone());
        let (storage, cosmos, redis) = match (storage, cosmos, redis) {
            (None, None, None) if credential.is_none() => return Ok(None),
            (Some(storage), Some(cosmos), Some(redis)) => (storage, cosmos, redis),
            (storage, cosmos, redis) => {
                // Name exactly what is missing.
                let missing: Vec<&str> = [
                    (
                        storage.is_none(),
                        "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_QUEUE_ENDPOINT)",
                    ),
                    (
                        cosmos.is_none(),
                        "COSMOS_DB_CONNECTION_STRING (or COSMOS_DB_ENDPOINT)",
                    ),
                    (redis.is_none(), "REDIS_URL"),
                ]
                .into_iter()
                .filter_map(|(absent, name)| absent.then_some(name))
                .collect();
                bail!(
                    "Azure mode needs the queue, Cosmos DB and Redis settings; missing {} (set the variables, the flags or the [azure] section of --config)",
                    missing.join(", ")
                );
            }
        };
        let pick = |flag: &Option<String>, file: &Option<String>, default: &str| {
            flag.clone()
                .or(file.clone())
                .unwrap_or_else(|| default.to_owned())
        };
        Ok(Some(AzureConfig {
            storage,
            cosmos,
            credential,
            redis_url: redis,
            queue: pick(&self.queue, &file.queue, DEFAULT_QUEUE_NAME),
            database: pick(&self.database, &file.database, DEFAULT_DATABASE),
            context_container: pick(
                &self.context_container,
                &file.context_container,
                DEFAULT_CONTEXT_CONTAINER,
            ),
            status_container: pick(
                &self.status_container,
                &file.status_container,
                DEFAULT_STATUS_CONTAINER,
            ),
            create_resources: self.create_resources || file.create_resources.unwrap_or(false),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AzureArgs {
        AzureArgs::default()
    }

    #[test]
    fn no_settings_means_embedded_mode() {
        assert!(args().resolve(&AzureFile::default()).unwrap().is_none());
    }

    #[test]
    fn partial_settings_name_what_is_missing() {
        let mut partial = args();
        partial.storage_connection_string = Some("UseDevelopmentStorage=true".into());
        let error = partial
            .resolve(&AzureFile::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "missing COSMOS_DB_CONNECTION_STRING (or COSMOS_DB_ENDPOINT), REDIS_URL (set"
            ),
            "{error}"
        );
        // A credential alone is not embedded mode: it says Azure was meant.
        let mut credential_only = args();
        credential_only.azure_credential = Some(CredentialKind::ManagedIdentity);
        let error = credential_only
            .resolve(&AzureFile::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("missing AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_QUEUE_ENDPOINT), COSMOS_DB_CONNECTION_STRING"),
            "{error}"
        );
    }

    #[test]
    fn endpoints_and_the_credential_layer_like_every_setting() {
        let file: ConfigFile = toml::from_str(
            r#"[azure]
               storage_queue_endpoint = "https://file.queue.core.windows.net"
               cosmos_endpoint = "https://file.documents.azure.com:443/"
               credential = "workload-identity"
               redis_url = "redis://file""#,
        )
        .unwrap();
        let settings = args().resolve(&file.azure).unwrap().unwrap();
        assert!(
            matches!(&settings.storage, AccountSetting::Endpoint(url) if url == "https://file.queue.core.windows.net")
        );
        assert!(
            matches!(&settings.cosmos, AccountSetting::Endpoint(url) if url == "https://file.documents.azure.com:443/")
        );
        assert_eq!(settings.credential, Some(CredentialKind::WorkloadIdentity));

        let mut flags = args();
        flags.azure_credential = Some(CredentialKind::ManagedIdentity);
        flags.cosmos_endpoint = Some("https://flag.documents.azure.com:443/".into());
        let settings = flags.resolve(&file.azure).unwrap().unwrap();
        assert_eq!(settings.credential, Some(CredentialKind::ManagedIdentity));
        assert_eq!(
            settings.cosmos.text(),
            "https://flag.documents.azure.com:443/"
        );

        let bad: ConfigFile = toml::from_str("[azure]\ncredential = \"key\"").unwrap();
        let error = args().resolve(&bad.azure).unwrap_err().to_string();
        assert!(
            error.starts_with("[azure] credential = 'key' in the configuration file is not a credential; use one of default, managed-identity,"),
            "{error}"
        );
    }

    #[test]
    fn a_connection_string_and_an_endpoint_for_one_service_conflict() {
        let mut both = args();
        both.cosmos_connection_string = Some("AccountEndpoint=https://a/;AccountKey=a2V5".into());
        let file = AzureFile {
            cosmos_endpoint: Some("https://a.documents.azure.com:443/".into()),
            ..AzureFile::default()
        };
        let error = both.resolve(&file).unwrap_err().to_string();
        assert_eq!(
            error,
            "COSMOS_DB_CONNECTION_STRING and COSMOS_DB_ENDPOINT are both set; set one: the connection string for a key, the endpoint for Entra ID"
        );
        let mut both = args();
        both.storage_connection_string = Some("UseDevelopmentStorage=true".into());
        both.storage_queue_endpoint = Some("https://a.queue.core.windows.net".into());
        assert!(
            both.resolve(&AzureFile::default())
                .unwrap_err()
                .to_string()
                .starts_with(
                    "AZURE_STORAGE_CONNECTION_STRING and AZURE_STORAGE_QUEUE_ENDPOINT are both set"
                )
        );
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: ConfigFile = toml::from_str(
            r#"[azure]
               storage_connection_string = "file-storage"
               cosmos_connection_string = "file-cosmos"
               redis_url = "redis://file"
               queue = "file-queue"
               [grants.orders]
               config = { "notify-channel" = "email" }"#,
        )
        .unwrap();
        let mut flags = args();
        flags.queue = Some("flag-queue".into());
        flags.redis_url = Some("redis://flag".into());
        let settings = flags.resolve(&file.azure).unwrap().unwrap();
        assert_eq!(settings.queue, "flag-queue");
        assert_eq!(settings.redis_url, "redis://flag");
        assert!(
            matches!(&settings.storage, AccountSetting::ConnectionString(text) if text == "file-storage")
        );
        assert_eq!(settings.credential, None);
        assert_eq!(settings.database, DEFAULT_DATABASE);
        assert_eq!(file.grants["orders"].config["notify-channel"], "email");
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(toml::from_str::<ConfigFile>("[azure]\nqueu = \"x\"").is_err());
    }
}
