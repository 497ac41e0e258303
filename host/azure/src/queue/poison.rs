//! The poison queue beside a job queue: `<name>-poison`, created on first
//! use, and its record format ([`PoisonRecord`]: the reason, the time, the
//! source queue and the original message text, as base64 of JSON; see the
//! `queue` module docs). [`AzureQueue`]'s poison operations store, look at,
//! take, replay and delete records; [`PoisonEntry::parse`] also reads
//! messages other tools put there unchanged.

use std::time::Duration;

use azure_core::time::OffsetDateTime;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{
    AzureQueue, MAX_MESSAGE_BYTES, MAX_MESSAGES_PER_RECEIVE, POISON_SUFFIX, PeekedMessage,
    QueueError, ReceivedMessage, validate_queue_name,
};

/// How long a replay holds the poison records it took.
const REPLAY_HOLD: Duration = Duration::from_secs(60);

impl AzureQueue {
    /// The `<name>-poison` queue, created on first use.
    pub async fn poison_queue(&self) -> Result<&AzureQueue, QueueError> {
        self.inner
            .poison
            .get_or_try_init(|| async {
                let name = format!("{}{POISON_SUFFIX}", self.inner.name);
                validate_queue_name(&name)?;
                let queue = Self::open(&self.inner.account, &name, self.inner.transport.clone())?;
                queue.create().await?;
                Ok(queue)
            })
            .await
    }

    /// Stores `original_text` (unchanged) and `reason` in the poison queue.
    pub async fn send_poison(&self, original_text: &str, reason: &str) -> Result<(), QueueError> {
        let poison = self.poison_queue().await?;
        let record = PoisonRecord {
            reason: reason.to_owned(),
            failed_at: now_rfc3339(),
            queue: self.inner.name.clone(),
            message: original_text.to_owned(),
        };
        let mut text = record.to_text();
        if text.len() > MAX_MESSAGE_BYTES {
            tracing::warn!(
                queue = %self.inner.name,
                reason,
                "poison message too large to wrap with its reason; stored unchanged"
            );
            text = original_text.to_owned();
        }
        // -1: poison records never expire.
        poison.send_text("send", &text, 0, Some(-1)).await.map(drop)
    }

    /// Looks at up to `max` poison records without taking them.
    pub async fn peek_poison(&self, max: u32) -> Result<Vec<Poisoned<PeekedMessage>>, QueueError> {
        let poison = self.poison_queue().await?;
        Ok(poison
            .peek(max)
            .await?
            .into_iter()
            .map(|message| Poisoned {
                entry: PoisonEntry::parse(&message.text),
                message,
            })
            .collect())
    }

    /// Takes up to `max` poison records for `visibility` (to replay or drop).
    pub async fn receive_poison(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<Poisoned<ReceivedMessage>>, QueueError> {
        let poison = self.poison_queue().await?;
        Ok(poison
            .receive(max, visibility)
            .await?
            .into_iter()
            .map(|message| Poisoned {
                entry: PoisonEntry::parse(&message.text),
                message,
            })
            .collect())
    }

    /// Sends a poison record's original text back to this queue (visible at
    /// once), then deletes the record: two requests. If the delete fails the
    /// record stays and a later replay sends the job again (jobs are
    /// idempotent).
    pub async fn replay_poison(
        &self,
        poisoned: &Poisoned<ReceivedMessage>,
    ) -> Result<String, QueueError> {
        let id = self.send(&poisoned.entry.original, Duration::ZERO).await?;
        self.delete_poison(&poisoned.message).await?;
        Ok(id)
    }

    /// Replays the poison records with `ids` (all when `None`) and answers
    /// the ids replayed. Records taken but not asked for are made visible
    /// again at the end, so each record is looked at once.
    pub async fn replay_poisoned(&self, ids: Option<&[String]>) -> Result<Vec<String>, QueueError> {
        let mut replayed = Vec::new();
        let mut passed_over = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            let batch = self
                .receive_poison(MAX_MESSAGES_PER_RECEIVE, REPLAY_HOLD)
                .await?;
            if batch.is_empty() || !batch.iter().any(|p| seen.insert(p.message.id.clone())) {
                break;
            }
            for poisoned in batch {
                if ids.is_none_or(|ids| ids.contains(&poisoned.message.id)) {
                    self.replay_poison(&poisoned).await?;
                    replayed.push(poisoned.message.id);
                } else {
                    passed_over.push(poisoned.message);
                }
            }
            if ids.is_some_and(|ids| replayed.len() == ids.len()) {
                break;
            }
        }
        let poison = self.poison_queue().await?;
        for message in &passed_over {
            poison.update_visibility(message, Duration::ZERO).await?;
        }
        Ok(replayed)
    }

    /// Deletes a received poison record.
    pub async fn delete_poison(&self, message: &ReceivedMessage) -> Result<(), QueueError> {
        self.poison_queue().await?.delete(message).await
    }
}

/// A poison queue message with its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poisoned<M> {
    pub message: M,
    pub entry: PoisonEntry,
}

/// What a poison queue message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonEntry {
    /// Why it was dead-lettered (`None` for messages stored unchanged).
    pub reason: Option<String>,
    /// When (RFC 3339), if recorded.
    pub failed_at: Option<String>,
    /// The queue it came from, if recorded.
    pub queue: Option<String>,
    /// The original message text, unchanged.
    pub original: String,
}

impl PoisonEntry {
    /// Reads a poison queue message text: our record (base64 or plain JSON),
    /// or anything else as an original stored unchanged.
    pub fn parse(text: &str) -> Self {
        PoisonRecord::from_text(text).map_or_else(
            || Self {
                reason: None,
                failed_at: None,
                queue: None,
                original: text.to_owned(),
            },
            |record| Self {
                reason: Some(record.reason),
                failed_at: Some(record.failed_at),
                queue: Some(record.queue),
                original: record.message,
            },
        )
    }
}

/// The poison record format (see the module docs). Field order is the
/// JSON order: reason first for the human, the original last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoisonRecord {
    pub reason: String,
    pub failed_at: String,
    pub queue: String,
    pub message: String,
}

impl PoisonRecord {
    /// Standard base64 of the record's JSON.
    pub fn to_text(&self) -> String {
        let json = serde_json::to_string(self).expect("a PoisonRecord always serializes");
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// The record in `text`, if it is one.
    pub fn from_text(text: &str) -> Option<Self> {
        let text = text.trim();
        let json = if text.starts_with('{') {
            text.to_owned()
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()?;
            String::from_utf8(bytes).ok()?
        };
        serde_json::from_str(&json).ok()
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
