//! The operator's view of an Azure deployment ([`RunDirectory`]): runs from
//! the Redis run index (`redis_store::index`) with the times of their status
//! documents, status announcements over Redis pub/sub, a check of the three
//! services, and the poison queue.

use std::time::Duration;

use flowcraft_core::directory::{
    DeadLetterView, ListError, RunDirectory, RunPage, RunQuery, RunSummary, StatusWatch,
};
use flowcraft_core::store::{StatusStore, StoreError};
use futures_util::{StreamExt, TryStreamExt};

use crate::backend::AzureBackend;
use crate::queue::{PeekedMessage, Poisoned};
use crate::wakeups::StatusChanges;

/// How many status documents a listing reads at once.
const STATUS_READS_IN_FLIGHT: usize = 16;

/// The poison queue service shows at most this many messages without
/// taking them.
const PEEK_LIMIT: u32 = 32;

/// The status document the readiness check reads (a missing document is
/// an answer too).
const NO_SUCH_RUN: &str = "flowcraft-readiness-check";

/// A subscription to a run's announcements; without one (Redis could not
/// be subscribed to) the caller is told to look again after `within`.
pub struct AzureWatch {
    changes: Option<StatusChanges>,
}

impl StatusWatch for AzureWatch {
    async fn changed(&mut self, within: Duration) {
        match &mut self.changes {
            Some(changes) => {
                let _ = tokio::time::timeout(within, changes.next()).await;
            }
            None => tokio::time::sleep(within).await,
        }
    }
}

impl RunDirectory for AzureBackend {
    type Watch = AzureWatch;

    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, ListError> {
        let page = self.coordination().list_runs(query).await?;
        let runs = futures_util::stream::iter(page.runs)
            .map(|run| async move {
                let status = self.read_status(&run.run_id).await?;
                Ok::<_, StoreError>(RunSummary {
                    // A run whose status document is not written yet was
                    // last updated when it started.
                    last_updated: status.map_or(run.started_at / 1000, |s| s.last_updated),
                    run_id: run.run_id,
                    blueprint_id: run.blueprint_id,
                    status: run.status,
                    started_at: run.started_at,
                })
            })
            .buffered(STATUS_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(RunPage {
            runs,
            next_cursor: page.next.map(|cursor| cursor.to_string()),
        })
    }

    async fn watch_status(&self, run_id: &str) -> AzureWatch {
        AzureWatch {
            changes: self.wakeups().status_changes(run_id).await,
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.coordination().ping().await?;
        self.queue().approximate_count().await?;
        self.read_status(NO_SUCH_RUN).await.map(drop)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetterView>, StoreError> {
        let peeked = self.queue().peek_poison(PEEK_LIMIT).await?;
        Ok(peeked.into_iter().map(dead_letter_view).collect())
    }

    async fn replay_dead_letters(
        &self,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.queue().replay_poisoned(ids.as_deref()).await?)
    }
}

fn dead_letter_view(poisoned: Poisoned<PeekedMessage>) -> DeadLetterView {
    let at = poisoned.entry.failed_at.as_deref().and_then(|text| {
        let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339);
        i64::try_from(at.ok()?.unix_timestamp_nanos() / 1_000_000).ok()
    });
    DeadLetterView {
        id: poisoned.message.id,
        body: poisoned.entry.original,
        reason: poisoned
            .entry
            .reason
            .unwrap_or_else(|| "stored without a reason by another tool".to_owned()),
        at,
    }
}
