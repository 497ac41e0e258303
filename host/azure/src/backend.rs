//! The engine's backend on Azure: jobs on Queue Storage, contexts and
//! statuses on Cosmos DB, progress records on Redis, behind core's four store
//! traits. Connecting checks every service once, so a wrong setting fails at
//! start-up with one line instead of at the first job.

use std::sync::Arc;
use std::time::Duration;

use flowcraft_core::context::{ContextChange, ContextMap};
use flowcraft_core::progress::{RunProgress, RunState};
use flowcraft_core::store::{
    ContextStore, CoordinationStore, Job, JobQueue, RunStatusRecord, StatusStore, StoreError,
    StoredContext,
};
use serde_json::Value;
use thiserror::Error;

use crate::cosmos::{CosmosConnection, CosmosSetupError, CosmosStores};
use crate::queue::{AzureQueue, QueueError};
use crate::redis_store::RedisCoordination;
use crate::storage_account::{ConnectionStringError, StorageAccount};

/// Where the three services are and what the resources are called.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    pub storage_connection_string: String,
    pub cosmos_connection_string: String,
    pub redis_url: String,
    pub queue: String,
    pub database: String,
    pub context_container: String,
    pub status_container: String,
    /// Create the queue, database and containers when missing.
    pub create_resources: bool,
}

/// Why the backend could not start; each names the setting to fix.
#[derive(Debug, Error)]
pub enum AzureSetupError {
    /// Names the setting: "AccountKey is not valid base64" alone does not
    /// say which of the two connection strings is wrong.
    #[error("AZURE_STORAGE_CONNECTION_STRING: {0}")]
    StorageConnectionString(#[from] ConnectionStringError),
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
}

impl AzureBackend {
    /// Connects to (and with `create_resources` creates) everything.
    pub async fn connect(config: &AzureConfig) -> Result<Self, AzureSetupError> {
        let account = StorageAccount::parse(&config.storage_connection_string)?;
        let queue = AzureQueue::connect(&account, &config.queue, config.create_resources).await?;
        let cosmos = CosmosStores::connect(
            &CosmosConnection::parse(&config.cosmos_connection_string)?,
            &config.database,
            &config.context_container,
            &config.status_container,
            config.create_resources,
        )
        .await?;
        let redis = RedisCoordination::connect(&config.redis_url)
            .await
            .map_err(AzureSetupError::Redis)?;
        Ok(Self {
            queue,
            cosmos,
            redis,
        })
    }

    /// The job queue, for the worker's receive loop and poison handling.
    pub fn queue(&self) -> &AzureQueue {
        &self.queue
    }

    /// Runs whose status is `running` and that made no progress for `threshold`.
    pub async fn stalled_runs(&self, threshold: Duration) -> Result<Vec<String>, StoreError> {
        self.cosmos.status.stalled_runs(threshold.as_secs()).await
    }
}

impl JobQueue for AzureBackend {
    async fn enqueue(&self, job: Job, delay: Duration) -> Result<(), StoreError> {
        self.queue.enqueue(job, delay).await
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

    async fn apply_changes_returning(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<Arc<ContextMap>, StoreError> {
        self.cosmos
            .context
            .apply_changes_returning(run_id, changes)
            .await
    }
}

impl StatusStore for AzureBackend {
    async fn write_status(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<Value>,
    ) -> Result<bool, StoreError> {
        self.cosmos
            .status
            .write_status(run_id, status, final_status)
            .await
    }

    async fn read_status(&self, run_id: &str) -> Result<Option<RunStatusRecord>, StoreError> {
        self.cosmos.status.read_status(run_id).await
    }

    async fn publish_terminal(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Value,
    ) -> Result<(), StoreError> {
        self.cosmos
            .status
            .publish_terminal(run_id, status, final_status)
            .await
    }

    async fn touch(&self, run_id: &str) -> Result<(), StoreError> {
        self.cosmos.status.touch(run_id).await
    }
}

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

    async fn update_progress<T, F>(&self, run_id: &str, change: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        self.redis.update_progress(run_id, change).await
    }
}
