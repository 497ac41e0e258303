//! The engine's backend on Azure: jobs on Queue Storage, contexts and
//! statuses on Cosmos DB, progress records on Redis, behind core's four store
//! traits. Connecting checks every service once, so a wrong setting fails at
//! start-up with one line instead of at the first job.
//!
//! The queue and Cosmos DB each authenticate with a key (connection string)
//! or, given as an endpoint alone, with an Entra ID token credential
//! ([`crate::credential`]). A service without a key and no credential, or a
//! credential that no service uses, is a configuration error; a credential
//! that cannot get a token fails here, before any service is contacted.

use std::sync::Arc;
use std::time::Duration;

use flowcraft_core::context::{ContextChange, ContextMap};
use flowcraft_core::final_status::FinalOutcome;
use flowcraft_core::progress::{RunProgress, RunState};
use flowcraft_core::store::{
    Backend, ContextStore, CoordinationStore, Job, JobQueue, RunStatusRecord, StatusStore,
    StoreError, StoredContext,
};
use flowcraft_worker::WorkerBackend;
use serde_json::Value;
use thiserror::Error;

use crate::cosmos::{CosmosConnection, CosmosSetupError, CosmosStores};
use crate::credential::{
    AzureCredential, COSMOS_SCOPE, CREDENTIAL_VARIABLE, CredentialError, CredentialKind,
    STORAGE_SCOPE,
};
use crate::queue::{AzureQueue, QueueError};
use crate::redis_store::{RedisCoordination, RedisOptions, run_index_key};
use crate::storage_account::{ConnectionStringError, StorageAccount};
use crate::wakeups::Wakeups;

/// How a service's account is given.
#[derive(Clone)]
pub enum AccountSetting {
    /// A connection string: `AZURE_STORAGE_CONNECTION_STRING` (a key, a SAS,
    /// or only `QueueEndpoint=` for Entra ID) or `COSMOS_DB_CONNECTION_STRING`
    /// (`AccountEndpoint=…;AccountKey=…;`).
    ConnectionString(String),
    /// An endpoint URL without a key, for Entra ID:
    /// `AZURE_STORAGE_QUEUE_ENDPOINT` or `COSMOS_DB_ENDPOINT`.
    Endpoint(String),
}

impl AccountSetting {
    /// The text as given (a connection string may hold a key).
    pub fn text(&self) -> &str {
        match self {
            Self::ConnectionString(text) | Self::Endpoint(text) => text,
        }
    }
}

impl std::fmt::Debug for AccountSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // May hold a key.
            Self::ConnectionString(_) => f.write_str("ConnectionString(<redacted>)"),
            Self::Endpoint(url) => f.debug_tuple("Endpoint").field(url).finish(),
        }
    }
}

/// Where the three services are and what the resources are called.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// The storage account of the queue.
    pub storage: AccountSetting,
    /// The Cosmos DB account.
    pub cosmos: AccountSetting,
    /// The Entra ID credential for the services given without a key; `None`
    /// when both have keys.
    pub credential: Option<CredentialKind>,
    pub redis_url: String,
    pub queue: String,
    pub database: String,
    pub context_container: String,
    pub status_container: String,
    /// Create the queue, database and containers when missing.
    pub create_resources: bool,
}

impl AzureConfig {
    /// Keyed services from the environment's `AZURE_STORAGE_CONNECTION_STRING`,
    /// `COSMOS_DB_CONNECTION_STRING` and `REDIS_URL` (as
    /// `scripts/azure-local.sh env` exports them for the local stand-ins),
    /// with `queue` and `database` of the caller's own, default container
    /// names, and resources created when missing. The error names the
    /// variable that is not set.
    pub fn from_environment(queue: &str, database: &str) -> Result<Self, String> {
        let variable = |name: &str| {
            std::env::var(name).map_err(|_| {
                format!("{name} is not set: start the local services: scripts/azure-local.sh start; eval \"$(scripts/azure-local.sh env)\"")
            })
        };
        Ok(Self {
            storage: AccountSetting::ConnectionString(variable("AZURE_STORAGE_CONNECTION_STRING")?),
            cosmos: AccountSetting::ConnectionString(variable("COSMOS_DB_CONNECTION_STRING")?),
            credential: None,
            redis_url: variable("REDIS_URL")?,
            queue: queue.to_owned(),
            database: database.to_owned(),
            context_container: "workflow-contexts".into(),
            status_container: "workflow-statuses".into(),
            create_resources: true,
        })
    }
}

/// Why the backend could not start; each names the setting to fix.
#[derive(Debug, Error)]
pub enum AzureSetupError {
    /// Names the setting: "AccountKey is not valid base64" alone does not
    /// say which of the two connection strings is wrong.
    #[error("AZURE_STORAGE_CONNECTION_STRING: {0}")]
    StorageConnectionString(#[from] ConnectionStringError),
    #[error("AZURE_STORAGE_QUEUE_ENDPOINT: {0}")]
    StorageQueueEndpoint(ConnectionStringError),
    /// Services given without a key, and no credential to use instead.
    #[error(
        "{settings} {verb} no key; choose an Entra ID credential with --azure-credential ({CREDENTIAL_VARIABLE}): default, managed-identity, workload-identity, client-secret, azure-cli or azure-developer-cli",
        settings = settings.join(" and "),
        verb = if settings.len() == 1 { "gives" } else { "give" }
    )]
    NoCredential { settings: Vec<&'static str> },
    /// A credential chosen while both services use keys: almost surely a
    /// half-done switch to Entra ID.
    #[error(
        "{CREDENTIAL_VARIABLE}={kind} (--azure-credential) is set, but the queue and Cosmos DB are both configured with keys; remove the credential setting, or replace the connection strings by AZURE_STORAGE_QUEUE_ENDPOINT / COSMOS_DB_ENDPOINT"
    )]
    UnusedCredential { kind: CredentialKind },
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Cosmos(#[from] CosmosSetupError),
    #[error(transparent)]
    Redis(StoreError),
}

/// The four stores on Azure services.
#[derive(Clone)]
pub struct AzureBackend {
    queue: AzureQueue,
    cosmos: CosmosStores,
    redis: RedisCoordination,
    wakeups: Arc<Wakeups>,
}

impl AzureBackend {
    /// Connects to (and with `create_resources` creates) everything; the
    /// three services at once, so that a short-lived client command waits
    /// for the slowest of them rather than for all three in turn.
    pub async fn connect(config: &AzureConfig) -> Result<Self, AzureSetupError> {
        let (account, connection) = accounts(config, AzureCredential::from_env).await?;
        let queue = async {
            Ok(AzureQueue::connect(&account, &config.queue, config.create_resources).await?)
        };
        let cosmos = async {
            Ok(CosmosStores::connect(
                &connection,
                &config.database,
                &config.context_container,
                &config.status_container,
                config.create_resources,
            )
            .await?)
        };
        let redis = async {
            let options = RedisOptions {
                run_index: run_index_key(&config.database, &config.status_container),
                ..RedisOptions::default()
            };
            RedisCoordination::connect_with(&config.redis_url, options)
                .await
                .map_err(AzureSetupError::Redis)
        };
        let (queue, cosmos, redis) = tokio::try_join!(queue, cosmos, redis)?;
        // The URL opened for the coordination store above.
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|error| AzureSetupError::Redis(StoreError::new("redis", error.to_string())))?;
        let wakeups = Arc::new(Wakeups::new(client, &config.queue));
        Ok(Self {
            queue,
            cosmos,
            redis,
            wakeups,
        })
    }

    /// The job queue, for the worker's receive loop and poison handling.
    pub fn queue(&self) -> &AzureQueue {
        &self.queue
    }

    /// The announcements of sent messages and written statuses.
    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// The progress records and the run index on Redis.
    pub fn coordination(&self) -> &RedisCoordination {
        &self.redis
    }
}

/// The queue's account and the Cosmos connection of `config`, with the
/// credential (made by `credential`) attached where there is no key and
/// checked to give a token for each service that uses it.
pub async fn accounts(
    config: &AzureConfig,
    credential: impl FnOnce(CredentialKind) -> Result<AzureCredential, CredentialError>,
) -> Result<(StorageAccount, CosmosConnection), AzureSetupError> {
    let mut account = match &config.storage {
        AccountSetting::ConnectionString(text) => StorageAccount::parse(text)?,
        AccountSetting::Endpoint(url) => StorageAccount::from_queue_endpoint(url)
            .map_err(AzureSetupError::StorageQueueEndpoint)?,
    };
    let mut connection = match &config.cosmos {
        AccountSetting::ConnectionString(text) => CosmosConnection::parse(text)?,
        AccountSetting::Endpoint(url) => CosmosConnection::from_endpoint(url)?,
    };
    let keyless: Vec<&'static str> = [
        (account.needs_credential(), account.setting()),
        (connection.needs_credential(), connection.setting()),
    ]
    .into_iter()
    .filter_map(|(keyless, setting)| keyless.then_some(setting))
    .collect();
    let kind = match (config.credential, keyless.is_empty()) {
        (None, true) => return Ok((account, connection)),
        (Some(kind), true) => return Err(AzureSetupError::UnusedCredential { kind }),
        (None, false) => return Err(AzureSetupError::NoCredential { settings: keyless }),
        (Some(kind), false) => kind,
    };
    let credential = credential(kind)?;
    if account.needs_credential() {
        credential.check("the queue", STORAGE_SCOPE).await?;
        account = account.with_credential(credential.clone());
    }
    if connection.needs_credential() {
        credential.check("Cosmos DB", COSMOS_SCOPE).await?;
        connection = connection.with_credential(credential);
    }
    Ok((account, connection))
}

impl WorkerBackend for AzureBackend {
    type Queue = AzureQueue;

    fn lease_queue(&self) -> &AzureQueue {
        &self.queue
    }

    async fn stalled_runs(&self, threshold: Duration) -> Result<Vec<String>, StoreError> {
        self.cosmos.status.stalled_runs(threshold.as_secs()).await
    }

    async fn wait_for_work(&self, poll: Duration) {
        self.wakeups.wait(poll).await
    }
}

impl JobQueue for AzureBackend {
    async fn enqueue(&self, job: Job, delay: Duration) -> Result<(), StoreError> {
        self.queue.enqueue(job, delay).await?;
        self.wakeups.message_sent(delay);
        Ok(())
    }
}

impl ContextStore for AzureBackend {
    async fn create_context(&self, run_id: &str, initial: ContextMap) -> Result<(), StoreError> {
        self.cosmos.context.create_context(run_id, initial).await
    }

    async fn load_context(&self, run_id: &str) -> Result<Option<StoredContext>, StoreError> {
        self.cosmos.context.load_context(run_id).await
    }

    async fn apply_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), StoreError> {
        self.cosmos.context.apply_changes(run_id, changes).await
    }

    fn reserved_keys(&self) -> &'static [&'static str] {
        crate::cosmos::SYSTEM_PROPERTIES
    }
}

impl StatusStore for AzureBackend {
    async fn write_status(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<Value>,
    ) -> Result<bool, StoreError> {
        let written = self
            .cosmos
            .status
            .write_status(run_id, status, final_status)
            .await?;
        // What `wait` waits for: a run that ended or awaits.
        if written && status != RunState::Running {
            self.wakeups.status_written(run_id, status.as_str());
        }
        Ok(written)
    }

    async fn read_status(&self, run_id: &str) -> Result<Option<RunStatusRecord>, StoreError> {
        self.cosmos.status.read_status(run_id).await
    }

    async fn publish_terminal(
        &self,
        run_id: &str,
        outcome: &FinalOutcome<'_>,
    ) -> Result<(), StoreError> {
        self.cosmos.status.publish_terminal(run_id, outcome).await?;
        self.wakeups
            .status_written(run_id, outcome.state().as_str());
        Ok(())
    }

    async fn touch(&self, run_id: &str) -> Result<(), StoreError> {
        self.cosmos.status.touch(run_id).await
    }

    async fn reopen_failed(&self, run_id: &str) -> Result<bool, StoreError> {
        self.cosmos.status.reopen_failed(run_id).await
    }
}

impl Backend for AzureBackend {}

impl CoordinationStore for AzureBackend {
    async fn create_progress(&self, progress: &RunProgress) -> Result<bool, StoreError> {
        self.redis.create_progress(progress).await
    }

    async fn load_progress(&self, run_id: &str) -> Result<Option<RunProgress>, StoreError> {
        self.redis.load_progress(run_id).await
    }

    async fn read_progress<T, F>(&self, run_id: &str, read: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        self.redis.read_progress(run_id, read).await
    }

    async fn read_progress_remembered<T, F>(
        &self,
        run_id: &str,
        read: F,
    ) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        self.redis.read_progress_remembered(run_id, read).await
    }

    async fn update_progress<T, F>(&self, run_id: &str, change: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        self.redis.update_progress(run_id, change).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
    use azure_core::time::OffsetDateTime;

    use super::*;

    const COSMOS_KEY: &str =
        "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

    /// Records the scopes asked for; refuses them all when `refuse`.
    #[derive(Debug, Default)]
    struct Recording {
        scopes: Mutex<Vec<String>>,
        refuse: bool,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Recording {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.scopes.lock().unwrap().push(scopes.join(" "));
            if self.refuse {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "AzureCliCredential authentication failed. Please run 'az login'",
                ));
            }
            Ok(AccessToken::new(
                "t",
                OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
    }

    fn config(
        storage: AccountSetting,
        cosmos: AccountSetting,
        credential: Option<CredentialKind>,
    ) -> AzureConfig {
        AzureConfig {
            storage,
            cosmos,
            credential,
            redis_url: "redis://127.0.0.1:6379".into(),
            queue: "flowcraft-jobs".into(),
            database: "flowcraft".into(),
            context_container: "workflow-contexts".into(),
            status_container: "workflow-statuses".into(),
            create_resources: false,
        }
    }

    fn storage_key() -> AccountSetting {
        AccountSetting::ConnectionString("UseDevelopmentStorage=true".into())
    }

    fn cosmos_key() -> AccountSetting {
        AccountSetting::ConnectionString(format!(
            "AccountEndpoint=https://acct.documents.azure.com:443/;AccountKey={COSMOS_KEY};"
        ))
    }

    fn storage_endpoint() -> AccountSetting {
        AccountSetting::Endpoint("https://acct.queue.core.windows.net".into())
    }

    fn cosmos_endpoint() -> AccountSetting {
        AccountSetting::Endpoint("https://acct.documents.azure.com:443/".into())
    }

    async fn resolve(
        config: &AzureConfig,
        source: &Arc<Recording>,
    ) -> Result<(StorageAccount, CosmosConnection), AzureSetupError> {
        let source = source.clone();
        accounts(config, move |kind| {
            Ok(AzureCredential::from_token_credential(kind, source))
        })
        .await
    }

    #[tokio::test]
    async fn keys_alone_need_no_credential() {
        let source = Arc::new(Recording::default());
        let (account, connection) = resolve(&config(storage_key(), cosmos_key(), None), &source)
            .await
            .unwrap();
        assert!(!account.needs_credential() && !connection.needs_credential());
        assert!(source.scopes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn each_service_without_a_key_gets_the_credential_checked_for_its_scope() {
        let source = Arc::new(Recording::default());
        let kind = Some(CredentialKind::ManagedIdentity);
        let (account, _) = resolve(&config(storage_endpoint(), cosmos_key(), kind), &source)
            .await
            .unwrap();
        assert!(account.token_credential().is_some());
        assert_eq!(*source.scopes.lock().unwrap(), [STORAGE_SCOPE]);

        let source = Arc::new(Recording::default());
        let (account, connection) = resolve(
            &config(storage_endpoint(), cosmos_endpoint(), kind),
            &source,
        )
        .await
        .unwrap();
        assert!(account.token_credential().is_some());
        assert!(connection.needs_credential());
        assert_eq!(
            *source.scopes.lock().unwrap(),
            [STORAGE_SCOPE, COSMOS_SCOPE]
        );
    }

    #[tokio::test]
    async fn conflicting_or_incomplete_settings_are_one_line_each() {
        let source = Arc::new(Recording::default());
        let message = |result: Result<_, AzureSetupError>| result.err().unwrap().to_string();

        let unused = config(storage_key(), cosmos_key(), Some(CredentialKind::AzureCli));
        assert_eq!(
            message(resolve(&unused, &source).await),
            "FLOWCRAFT_AZURE_CREDENTIAL=azure-cli (--azure-credential) is set, but the queue and Cosmos DB are both configured with keys; remove the credential setting, or replace the connection strings by AZURE_STORAGE_QUEUE_ENDPOINT / COSMOS_DB_ENDPOINT"
        );

        let missing = config(storage_endpoint(), cosmos_endpoint(), None);
        assert!(
            message(resolve(&missing, &source).await).starts_with(
                "AZURE_STORAGE_QUEUE_ENDPOINT and COSMOS_DB_ENDPOINT give no key; choose an Entra ID credential with --azure-credential (FLOWCRAFT_AZURE_CREDENTIAL): default,"
            )
        );
        let missing = config(
            AccountSetting::ConnectionString(
                "QueueEndpoint=https://acct.queue.core.windows.net".into(),
            ),
            cosmos_key(),
            None,
        );
        assert!(message(resolve(&missing, &source).await).starts_with(
            "AZURE_STORAGE_CONNECTION_STRING gives no key; choose an Entra ID credential"
        ));

        let plain = config(
            AccountSetting::Endpoint("http://127.0.0.1:10001/devstoreaccount1".into()),
            cosmos_key(),
            Some(CredentialKind::Default),
        );
        assert!(
            message(resolve(&plain, &source).await).starts_with(
                "AZURE_STORAGE_QUEUE_ENDPOINT: the endpoint 'http://127.0.0.1:10001/devstoreaccount1' must be https:// for Entra ID auth"
            )
        );
        assert!(
            source.scopes.lock().unwrap().is_empty(),
            "no token was asked for"
        );

        let refusing = Arc::new(Recording {
            refuse: true,
            ..Default::default()
        });
        let error = message(
            resolve(
                &config(
                    storage_key(),
                    cosmos_endpoint(),
                    Some(CredentialKind::AzureCli),
                ),
                &refusing,
            )
            .await,
        );
        assert_eq!(
            error,
            "FLOWCRAFT_AZURE_CREDENTIAL=azure-cli: no Entra ID token for Cosmos DB (https://cosmos.azure.com/.default): AzureCliCredential authentication failed. Please run 'az login'; run `az login` (and `az account set` for the right tenant)"
        );
    }

    #[test]
    fn debug_output_hides_connection_strings() {
        let debug = format!("{:?}", config(storage_key(), cosmos_key(), None));
        assert!(!debug.contains(COSMOS_KEY) && !debug.contains("UseDevelopmentStorage"));
    }
}
