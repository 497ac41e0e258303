//! The job queue on Azure Queue Storage, with a poison queue beside it.
//!
//! [`AzureQueue`] wraps one queue (default [`DEFAULT_QUEUE_NAME`]) of a
//! [`StorageAccount`] (signed with its key, its SAS, or an Entra ID token from
//! its credential): `send` (with an initial invisibility), `receive` (up to
//! 32 messages with a visibility timeout), `delete`, `update_visibility`
//! (lease renewal; returns the new pop receipt, which the service sends only in
//! the `x-ms-popreceipt` header) and `peek`. Every operation is exactly one
//! HTTP request. It implements [`JobQueue`]: `enqueue` sends
//! [`wire::encode`]`(job)` with the delay as initial visibility.
//!
//! Limits of the service, checked here with clear errors: at most 32 messages
//! per receive (larger requests are clamped), message text at most 64 KiB,
//! visibility at most 7 days. A delayed message is sent with a time-to-live
//! of its delay plus 7 days, so that a 7-day delay does not outlive the
//! service's default 7-day expiry.
//!
//! Retries: the SDK's retry policy is off (it retries for a minute without
//! saying so). Instead every operation rides out throttling and short
//! outages in place with [`crate::retry`]: a `429` or `503` (`ServerBusy`)
//! is repeated after the wait the service advises (`Retry-After`, or
//! `x-ms-retry-after-ms`), and a transport error (connection refused or
//! reset, timeout) after a short back-off, within a bounded number of
//! attempts and total wait; then the error surfaces. A delete whose retry
//! finds the message gone counts as done. Sends are repeated too, although a
//! reset connection may have stored the message already: a duplicate job is
//! harmless (the engine handles redeliveries), whereas failing the send
//! fails the whole job, which then sends its successors again after the
//! visibility timeout. For plain-`http` endpoints (the local emulator) idle
//! pooled connections are dropped after 4 s, before Node's 5 s keep-alive
//! timeout closes them under us.
//!
//! **Poison queue.** `<name>-poison`, created on first use. [`AzureQueue::send_poison`]
//! stores a record a human can read and a tool can replay: the message text
//! is standard base64 of the UTF-8 JSON
//! `{"reason":"…","failedAt":"<RFC 3339>","queue":"<source queue>","message":"<original text>"}`
//! where `message` is the original message text, unchanged (so replay sends
//! exactly what upstream or we sent). Poison records never expire
//! (`messagettl=-1`). An original too large to wrap within 64 KiB is stored
//! as is and the reason only logged; [`PoisonEntry::parse`] reads both forms,
//! and messages other tools put there (Azure Functions moves poison messages
//! to `<queue>-poison` unchanged).
//!
//! Errors are [`QueueError`]s (a kind plus one line naming the operation,
//! queue and endpoint); they convert to the engine's `StoreError` with
//! service `"queue"`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::headers::HeaderName;
use azure_core::http::{
    ClientOptions, RequestContent, RetryOptions, StatusCode, Transport, XmlFormat,
};
use azure_core::time::OffsetDateTime;
use azure_storage_queue::models::{
    QueueClientPeekMessagesOptions, QueueClientReceiveMessagesOptions,
    QueueClientSendMessageOptions, QueueClientUpdateMessageOptions, QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::Engine as _;
use flowcraft_core::store::{Job, JobQueue, MAX_JOB_DELAY, StoreError};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::OnceCell;

use crate::retry::{self, RetryPolicy, Transient};
use crate::storage_account::StorageAccount;
use crate::wire;

/// The queue upstream's adapter and this worker use unless configured.
pub const DEFAULT_QUEUE_NAME: &str = "flowcraft-jobs";
/// Appended to a queue's name to name its poison queue.
pub const POISON_SUFFIX: &str = "-poison";
/// The most messages one receive returns.
pub const MAX_MESSAGES_PER_RECEIVE: u32 = 32;
/// The largest message text the service accepts (UTF-8 bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The longest visibility timeout the service accepts.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(7 * 24 * 3_600);
/// The storage API version we speak. Pinned (rather than the crate's newest)
/// so that stock Azurite 3.35 accepts our requests without
/// `--skipApiVersionCheck`; the queue API has not changed since.
pub const API_VERSION: &str = "2025-11-05";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Below Node's 5 s keep-alive timeout (Azurite closes idle connections then).
const EMULATOR_POOL_IDLE: Duration = Duration::from_secs(4);
/// The operation name of the existence check (its "not found" is the
/// expected answer, so its message is the plain one).
const EXISTS_CHECK: &str = "existence check";
const POP_RECEIPT: HeaderName = HeaderName::from_static("x-ms-popreceipt");
const TIME_NEXT_VISIBLE: HeaderName = HeaderName::from_static("x-ms-time-next-visible");
const APPROXIMATE_COUNT: HeaderName = HeaderName::from_static("x-ms-approximate-messages-count");

/// What went wrong, for callers that react differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueErrorKind {
    /// The queue does not exist.
    QueueNotFound,
    /// The message is gone (deleted, or expired).
    MessageNotFound,
    /// The pop receipt is stale: the message was received again or its
    /// visibility was renewed with a newer receipt.
    PopReceiptMismatch,
    /// The credentials were refused.
    Auth,
    /// The service could not be reached.
    Unreachable,
    /// The request was refused before sending (size, duration, name).
    InvalidRequest,
    /// Any other refusal or malformed answer.
    Service,
}

/// A queue operation that failed: the kind and one line saying what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct QueueError {
    pub kind: QueueErrorKind,
    pub message: String,
}

impl QueueError {
    fn new(kind: QueueErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<QueueError> for StoreError {
    fn from(error: QueueError) -> Self {
        StoreError::new("queue", error.message)
    }
}

/// A message taken from the queue; invisible to others until its
/// visibility timeout, and deletable with its (latest) pop receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub id: String,
    pub pop_receipt: String,
    /// How often the message has been received, this time included.
    pub dequeue_count: u32,
    pub text: String,
    pub inserted_on: Option<OffsetDateTime>,
    pub next_visible_on: Option<OffsetDateTime>,
}

/// A message looked at without taking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedMessage {
    pub id: String,
    pub dequeue_count: u32,
    pub text: String,
    pub inserted_on: Option<OffsetDateTime>,
}

/// What a visibility renewal returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// The receipt to use from now on; the previous one no longer works.
    pub pop_receipt: String,
    pub next_visible_on: Option<OffsetDateTime>,
}

/// One queue of a storage account. Cheap to clone.
#[derive(Clone)]
pub struct AzureQueue {
    inner: Arc<Inner>,
}

struct Inner {
    client: QueueClient,
    name: String,
    /// The queue endpoint for messages (never with a SAS).
    endpoint: String,
    account: StorageAccount,
    transport: Transport,
    poison: OnceCell<AzureQueue>,
}

impl std::fmt::Debug for AzureQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureQueue")
            .field("name", &self.inner.name)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl AzureQueue {
    /// Opens queue `name`: checks it exists (one request), or creates it if
    /// `create` (one request; an existing queue is fine).
    pub async fn connect(
        account: &StorageAccount,
        name: &str,
        create: bool,
    ) -> Result<Self, QueueError> {
        validate_queue_name(name)?;
        let transport = http_transport(account)?;
        let queue = Self::open(account, name, transport)?;
        if create {
            queue.create().await?;
        } else {
            queue.check_exists().await?;
        }
        Ok(queue)
    }

    fn open(
        account: &StorageAccount,
        name: &str,
        transport: Transport,
    ) -> Result<Self, QueueError> {
        let client_options = ClientOptions {
            retry: RetryOptions::none(),
            transport: Some(transport.clone()),
            per_try_policies: account.signing_policy().into_iter().collect(),
            ..Default::default()
        };
        let options = QueueClientOptions {
            client_options,
            version: API_VERSION.to_owned(),
        };
        let endpoint = account
            .queue_endpoint()
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let credential = account.token_credential();
        if account.needs_credential() && credential.is_none() {
            return Err(QueueError::new(
                QueueErrorKind::Auth,
                format!(
                    "queue '{name}' at {endpoint}: {} gives no key; choose an Entra ID credential with --azure-credential ({})",
                    account.setting(),
                    crate::credential::CREDENTIAL_VARIABLE
                ),
            ));
        }
        let client =
            QueueClient::new(account.queue_url(name), credential, Some(options)).map_err(|e| {
                QueueError::new(
                    QueueErrorKind::InvalidRequest,
                    format!("queue '{name}' at {endpoint}: {e}"),
                )
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                name: name.to_owned(),
                endpoint,
                account: account.clone(),
                transport,
                poison: OnceCell::new(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The queue service endpoint (without credentials), for messages.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Creates the queue (at start-up, or the poison queue on first use):
    /// one quick retry only ([`RetryPolicy::SETUP`]).
    async fn create(&self) -> Result<(), QueueError> {
        let client = &self.inner.client;
        match self
            .attempt_with(RetryPolicy::SETUP, "create", || client.create(None))
            .await
        {
            Ok(_) => Ok(()),
            // Exists with other metadata: still the queue we want.
            Err((e, _)) if error_code(&e).as_deref() == Some("QueueAlreadyExists") => Ok(()),
            Err((e, _)) => Err(self.error("create", e)),
        }
    }

    async fn check_exists(&self) -> Result<(), QueueError> {
        let client = &self.inner.client;
        self.attempt_with(RetryPolicy::SETUP, EXISTS_CHECK, || {
            client.get_properties(None)
        })
        .await
        .map(drop)
        .map_err(|(e, _)| self.error(EXISTS_CHECK, e))
    }

    /// The service's approximate message count (one request).
    pub async fn approximate_count(&self) -> Result<u64, QueueError> {
        let client = &self.inner.client;
        let response = self
            .attempt("count messages", || client.get_properties(None))
            .await
            .map_err(|(e, _)| self.error("count messages", e))?;
        Ok(response
            .headers()
            .get_optional_str(&APPROXIMATE_COUNT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Sends `text`, invisible for `initial_visibility` (whole seconds,
    /// rounded up; at most 7 days). Returns the message id.
    pub async fn send(
        &self,
        text: &str,
        initial_visibility: Duration,
    ) -> Result<String, QueueError> {
        if initial_visibility > MAX_VISIBILITY {
            return Err(self.invalid(
                "send",
                format!(
                    "initial visibility {}s exceeds the service's 7-day limit ({}s)",
                    initial_visibility.as_secs(),
                    MAX_VISIBILITY.as_secs()
                ),
            ));
        }
        let delay = ceil_secs(initial_visibility);
        let ttl = (delay > 0).then(|| delay + MAX_VISIBILITY.as_secs() as i32);
        self.send_text("send", text, delay, ttl).await
    }

    async fn send_text(
        &self,
        op: &str,
        text: &str,
        visibility: i32,
        ttl: Option<i32>,
    ) -> Result<String, QueueError> {
        let content = self.message_content(op, text)?;
        let options = QueueClientSendMessageOptions {
            visibility_timeout: (visibility > 0).then_some(visibility),
            message_time_to_live: ttl,
            ..Default::default()
        };
        let client = &self.inner.client;
        let response = self
            .attempt(op, || {
                client.send_message(content.clone(), Some(options.clone()))
            })
            .await
            .map_err(|(e, _)| self.error(op, e))?;
        let sent = response
            .into_model()
            .and_then(|list| list.into_message())
            .map_err(|e| self.error(op, e))?;
        sent.message_id
            .ok_or_else(|| self.malformed(op, "the response has no MessageId"))
    }

    /// Takes up to `max` messages (clamped to 1..=32), each invisible to
    /// others for `visibility` (clamped to 1 s..=7 days, rounded up).
    pub async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(max.clamp(1, MAX_MESSAGES_PER_RECEIVE) as i32),
            visibility_timeout: Some(ceil_secs(visibility.min(MAX_VISIBILITY)).max(1)),
            ..Default::default()
        };
        let op = "receive";
        let client = &self.inner.client;
        let response = self
            .attempt(op, || client.receive_messages(Some(options.clone())))
            .await
            .map_err(|(e, _)| self.error(op, e))?;
        let list = response.into_model().map_err(|e| self.error(op, e))?;
        list.items
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                Ok(ReceivedMessage {
                    id: m
                        .message_id
                        .ok_or_else(|| self.malformed(op, "a message has no MessageId"))?,
                    pop_receipt: m
                        .pop_receipt
                        .ok_or_else(|| self.malformed(op, "a message has no PopReceipt"))?,
                    dequeue_count: count(m.dequeue_count),
                    text: m.message_text.unwrap_or_default(),
                    inserted_on: m.insertion_time,
                    next_visible_on: m.time_next_visible,
                })
            })
            .collect()
    }

    /// Looks at up to `max` visible messages (clamped to 1..=32) without
    /// taking them.
    pub async fn peek(&self, max: u32) -> Result<Vec<PeekedMessage>, QueueError> {
        let options = QueueClientPeekMessagesOptions {
            number_of_messages: Some(max.clamp(1, MAX_MESSAGES_PER_RECEIVE) as i32),
            ..Default::default()
        };
        let op = "peek";
        let client = &self.inner.client;
        let response = self
            .attempt(op, || client.peek_messages(Some(options.clone())))
            .await
            .map_err(|(e, _)| self.error(op, e))?;
        let list = response.into_model().map_err(|e| self.error(op, e))?;
        list.items
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                Ok(PeekedMessage {
                    id: m
                        .message_id
                        .ok_or_else(|| self.malformed(op, "a message has no MessageId"))?,
                    dequeue_count: count(m.dequeue_count),
                    text: m.message_text.unwrap_or_default(),
                    inserted_on: m.insertion_time,
                })
            })
            .collect()
    }

    /// Deletes `message` (acknowledges it). Fails with
    /// [`QueueErrorKind::PopReceiptMismatch`] if its pop receipt is stale.
    pub async fn delete(&self, message: &ReceivedMessage) -> Result<(), QueueError> {
        let client = &self.inner.client;
        match self
            .attempt("delete message", || {
                client.delete_message(&message.id, &message.pop_receipt, None)
            })
            .await
        {
            Ok(_) => Ok(()),
            // The first try went through before the connection broke.
            Err((e, true)) if error_code(&e).as_deref() == Some("MessageNotFound") => Ok(()),
            Err((e, _)) => Err(self.error(&format!("delete message {}", message.id), e)),
        }
    }

    /// Makes `message` invisible for `timeout` from now (clamped to 0..=7
    /// days, rounded up) and returns its new pop receipt; the old one stops
    /// working.
    pub async fn update_visibility(
        &self,
        message: &ReceivedMessage,
        timeout: Duration,
    ) -> Result<Renewed, QueueError> {
        let op = format!("update visibility of message {}", message.id);
        self.update(&op, message, None, timeout).await
    }

    /// Replaces the text of a received `message` with `text` and makes it
    /// invisible for `timeout` from now, in one request: the message now
    /// stands for other work (it reappears with the new text if its holder
    /// dies). Returns its new pop receipt; the old one stops working.
    pub async fn replace_text(
        &self,
        message: &ReceivedMessage,
        text: &str,
        timeout: Duration,
    ) -> Result<Renewed, QueueError> {
        let op = format!("replace the text of message {}", message.id);
        let content = self.message_content(&op, text)?;
        self.update(&op, message, Some(content), timeout).await
    }

    /// A message body for `text`, or an error if the service would refuse it.
    fn message_content(
        &self,
        op: &str,
        text: &str,
    ) -> Result<RequestContent<QueueMessage, XmlFormat>, QueueError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(self.invalid(
                op,
                format!(
                    "message text is {} bytes; the service accepts at most {MAX_MESSAGE_BYTES} (64 KiB)",
                    text.len()
                ),
            ));
        }
        QueueMessage {
            message_text: Some(text.to_owned()),
        }
        .try_into()
        .map_err(|e| self.invalid(op, format!("message text cannot be sent as XML: {e}")))
    }

    async fn update(
        &self,
        op: &str,
        message: &ReceivedMessage,
        content: Option<RequestContent<QueueMessage, XmlFormat>>,
        timeout: Duration,
    ) -> Result<Renewed, QueueError> {
        let seconds = ceil_secs(timeout.min(MAX_VISIBILITY));
        let options = QueueClientUpdateMessageOptions {
            queue_message: content,
            ..Default::default()
        };
        let client = &self.inner.client;
        let response = self
            .attempt(op, || {
                client.update_message(
                    &message.id,
                    &message.pop_receipt,
                    seconds,
                    Some(options.clone()),
                )
            })
            .await
            .map_err(|(e, _)| self.error(op, e))?;
        let headers = response.headers();
        let pop_receipt = headers
            .get_optional_str(&POP_RECEIPT)
            .ok_or_else(|| self.malformed(op, "the response has no x-ms-popreceipt header"))?
            .to_owned();
        let next_visible_on = headers
            .get_optional_str(&TIME_NEXT_VISIBLE)
            .and_then(|v| azure_core::time::parse_rfc7231(v).ok());
        Ok(Renewed {
            pop_receipt,
            next_visible_on,
        })
    }

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

    /// Deletes a received poison record.
    pub async fn delete_poison(&self, message: &ReceivedMessage) -> Result<(), QueueError> {
        self.poison_queue().await?.delete(message).await
    }

    /// Runs `request` (operation `op`), repeating it when throttled or on
    /// a transport error ([`crate::retry`]). The flag says whether it was
    /// repeated.
    async fn attempt<T, F, Fut>(&self, op: &str, request: F) -> Result<T, (azure_core::Error, bool)>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        self.attempt_with(RetryPolicy::DEFAULT, op, request).await
    }

    /// [`attempt`](Self::attempt) within `policy`.
    async fn attempt_with<T, F, Fut>(
        &self,
        policy: RetryPolicy,
        op: &str,
        request: F,
    ) -> Result<T, (azure_core::Error, bool)>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        let operation = format!("{op} (queue '{}')", self.inner.name);
        let (result, attempts) = retry::retrying(
            "queue service",
            &operation,
            policy,
            transient,
            root_cause,
            request,
        )
        .await;
        result.map_err(|e| (e, attempts > 1))
    }

    fn invalid(&self, op: &str, detail: String) -> QueueError {
        QueueError::new(
            QueueErrorKind::InvalidRequest,
            format!("queue '{}': {op}: {detail}", self.inner.name),
        )
    }

    fn malformed(&self, op: &str, detail: &str) -> QueueError {
        QueueError::new(
            QueueErrorKind::Service,
            format!(
                "queue '{}' at {}: {op}: unexpected response: {detail}",
                self.inner.name, self.inner.endpoint
            ),
        )
    }

    /// One line naming the operation, the queue and the endpoint.
    fn error(&self, op: &str, error: azure_core::Error) -> QueueError {
        let (name, endpoint) = (&self.inner.name, &self.inner.endpoint);
        match error.kind() {
            ErrorKind::Io | ErrorKind::Connection => QueueError::new(
                QueueErrorKind::Unreachable,
                format!(
                    "cannot reach the queue service at {endpoint} (queue '{name}', {op}): {}; \
                     check the endpoint in {} or start the local services",
                    root_cause(&error),
                    self.inner.account.setting()
                ),
            ),
            ErrorKind::HttpResponse { status, .. } => {
                let status = *status;
                let code = error_code(&error).unwrap_or_default();
                let detail = service_message(&error)
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                let (kind, hint) = match (status, code.as_str()) {
                    (_, "QueueNotFound") | (StatusCode::NotFound, "") => (
                        QueueErrorKind::QueueNotFound,
                        "; create it or pass --create-resources",
                    ),
                    (_, "MessageNotFound") => (
                        QueueErrorKind::MessageNotFound,
                        " (deleted or expired meanwhile)",
                    ),
                    (_, "PopReceiptMismatch") => (
                        QueueErrorKind::PopReceiptMismatch,
                        " (the message was received again or its visibility renewed; only the latest pop receipt works)",
                    ),
                    (StatusCode::Unauthorized | StatusCode::Forbidden, _)
                        if self.inner.account.needs_credential() =>
                    {
                        (
                            QueueErrorKind::Auth,
                            "; the Entra ID token was refused: give the identity a data role on the queue (e.g. Storage Queue Data Contributor)",
                        )
                    }
                    (StatusCode::Unauthorized | StatusCode::Forbidden, _) => (
                        QueueErrorKind::Auth,
                        "; check AccountName/AccountKey or SharedAccessSignature in AZURE_STORAGE_CONNECTION_STRING",
                    ),
                    _ => (QueueErrorKind::Service, ""),
                };
                if kind == QueueErrorKind::QueueNotFound {
                    return QueueError::new(
                        kind,
                        if op == EXISTS_CHECK {
                            format!("queue '{name}' does not exist at {endpoint}{hint}")
                        } else {
                            format!("queue '{name}' does not exist at {endpoint}{hint} ({op})")
                        },
                    );
                }
                let code = if code.is_empty() {
                    String::new()
                } else {
                    format!(" {code}")
                };
                QueueError::new(
                    kind,
                    format!(
                        "queue '{name}' at {endpoint}: {op} failed: {}{code}{detail}{hint}",
                        u16::from(status)
                    ),
                )
            }
            _ => QueueError::new(
                QueueErrorKind::Service,
                format!(
                    "queue '{name}' at {endpoint}: {op} failed: {}",
                    root_cause(&error)
                ),
            ),
        }
    }
}

impl JobQueue for AzureQueue {
    /// Sends [`wire::encode`]`(job)`; delays beyond 7 days are cut to 7 days
    /// (the engine re-enqueues a wake-up that arrives early).
    fn enqueue(
        &self,
        job: Job,
        delay: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let queue = self.clone();
        async move {
            queue
                .send(&wire::encode(&job), delay.min(MAX_JOB_DELAY))
                .await
                .map(drop)
                .map_err(StoreError::from)
        }
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

/// Whether a failed request may be repeated, and after what: throttling
/// (`429`, or `503 ServerBusy`: the service did not perform the request)
/// with the wait it advises, or a transport error.
fn transient(error: &azure_core::Error) -> Option<Transient> {
    match error.kind() {
        ErrorKind::Connection | ErrorKind::Io => Some(Transient::Unreachable),
        ErrorKind::HttpResponse {
            status: StatusCode::TooManyRequests | StatusCode::ServiceUnavailable,
            raw_response,
            ..
        } => Some(Transient::Throttled(raw_response.as_ref().and_then(
            |raw| {
                retry::advised_wait(|name| {
                    raw.headers()
                        .get_optional_str(&HeaderName::from(name.to_owned()))
                })
            },
        ))),
        _ => None,
    }
}

/// The service's error code (`x-ms-error-code`, or the XML `<Code>`).
fn error_code(error: &azure_core::Error) -> Option<String> {
    match error.kind() {
        ErrorKind::HttpResponse {
            error_code,
            raw_response,
            ..
        } => error_code
            .clone()
            .filter(|c| c.parse::<u16>().is_err() && !c.contains(' '))
            .or_else(|| {
                raw_response
                    .as_ref()
                    .and_then(|r| xml_element(r.body().as_ref(), "Code"))
            }),
        _ => None,
    }
}

/// The first line of the service's XML `<Message>`.
fn service_message(error: &azure_core::Error) -> Option<String> {
    match error.kind() {
        ErrorKind::HttpResponse {
            raw_response: Some(raw),
            ..
        } => xml_element(raw.body().as_ref(), "Message"),
        _ => None,
    }
}

fn xml_element(body: &[u8], name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + body[start..].find(&format!("</{name}>"))?;
    let text = body[start..end].lines().next()?.trim();
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    (!text.is_empty()).then_some(text)
}

/// The innermost cause (an OS error such as "Connection refused"); never
/// the outer reqwest message, which carries the URL and so a SAS.
fn root_cause(error: &azure_core::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn http_transport(account: &StorageAccount) -> Result<Transport, QueueError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if account.queue_endpoint().scheme() == "http" {
        builder = builder.pool_idle_timeout(EMULATOR_POOL_IDLE);
    }
    let client = builder.build().map_err(|e| {
        QueueError::new(
            QueueErrorKind::Service,
            format!("cannot create the HTTP client for the queue service: {e}"),
        )
    })?;
    Ok(Transport::new(Arc::new(client)))
}

/// Queue names: 3-63 lowercase letters, digits and single hyphens, starting
/// and ending with a letter or digit.
fn validate_queue_name(name: &str) -> Result<(), QueueError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(QueueError::new(
            QueueErrorKind::InvalidRequest,
            format!(
                "queue name '{name}' is invalid: use 3-63 lowercase letters, digits and single hyphens, \
                 starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Whole seconds, rounded up ("no earlier than"), saturating.
fn ceil_secs(duration: Duration) -> i32 {
    let secs = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn count(dequeue_count: Option<i64>) -> u32 {
    dequeue_count
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(0)
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the scripted server does with one connection's request.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Close the connection without answering (as Node does to an idle
        /// keep-alive connection, or a service that went away).
        Drop,
        /// Answer with these bytes.
        Send(&'static [u8]),
        /// Succeed: `200` with seven messages counted to a `GET`, [`SENT`]
        /// to a `POST`.
        Ok,
    }

    const OK: Answer = Answer::Ok;
    const COUNTED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\
        x-ms-approximate-messages-count: 7\r\n\r\n";
    /// The answer to a send: message `m-1` stored.
    const SENT: &[u8] =
        b"HTTP/1.1 201 Created\r\nconnection: close\r\ncontent-type: application/xml\r\n\
          x-ms-approximate-messages-count: 7\r\ncontent-length: 224\r\n\r\n\
          <?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage><MessageId>m-1</MessageId>\
          <PopReceipt>r-1</PopReceipt><TimeNextVisible>Mon, 01 Jan 2024 00:00:00 GMT</TimeNextVisible>\
          </QueueMessage></QueueMessagesList>";

    /// A loopback HTTP server answering its n-th connection's one request
    /// with `script[n]` (the last entry for all later ones). Returns the
    /// endpoint and the number of connections accepted.
    fn scripted_server(script: Vec<Answer>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/devstoreaccount1", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => request.extend_from_slice(&buf[..k]),
                    }
                }
                let bytes = match script[n.min(script.len() - 1)] {
                    Answer::Drop => continue,
                    Answer::Send(bytes) => bytes,
                    Answer::Ok if request.starts_with(b"POST") => SENT,
                    Answer::Ok => COUNTED,
                };
                let _ = stream.write_all(bytes);
            }
        });
        (endpoint, accepted)
    }

    fn queue_at(endpoint: &str) -> AzureQueue {
        let account = StorageAccount::parse(&format!(
            "AccountName=devstoreaccount1;AccountKey={};QueueEndpoint={endpoint}",
            crate::storage_account::DEV_ACCOUNT_KEY
        ))
        .unwrap();
        AzureQueue::open(&account, "jobs", http_transport(&account).unwrap()).unwrap()
    }

    fn connections(accepted: &std::sync::atomic::AtomicUsize) -> usize {
        accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn requests_are_repeated_on_a_dropped_connection() {
        let (endpoint, accepted) = scripted_server(vec![Answer::Drop, OK]);
        let queue = queue_at(&endpoint);
        assert_eq!(queue.approximate_count().await.unwrap(), 7);
        assert_eq!(connections(&accepted), 2);
        // Sends too: a duplicate job is harmless, a failed job costs a
        // visibility timeout.
        let (endpoint, accepted) = scripted_server(vec![Answer::Drop, Answer::Drop, OK]);
        let queue = queue_at(&endpoint);
        assert_eq!(queue.send("x", Duration::ZERO).await.unwrap(), "m-1");
        assert_eq!(connections(&accepted), 3);
    }

    #[tokio::test]
    async fn throttled_requests_wait_the_advised_time_then_repeat() {
        let busy = Answer::Send(
            b"HTTP/1.1 503 Server Busy\r\nconnection: close\r\nx-ms-error-code: ServerBusy\r\n\
              retry-after: 1\r\ncontent-length: 0\r\n\r\n",
        );
        let (endpoint, accepted) = scripted_server(vec![busy, OK]);
        let queue = queue_at(&endpoint);
        let started = std::time::Instant::now();
        assert_eq!(queue.approximate_count().await.unwrap(), 7);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(connections(&accepted), 2);
    }

    #[tokio::test]
    async fn a_service_that_stays_away_is_reported_after_the_retry_budget() {
        let (endpoint, accepted) = scripted_server(vec![Answer::Drop]);
        let queue = queue_at(&endpoint);
        let err = queue.send("x", Duration::ZERO).await.unwrap_err();
        assert_eq!(err.kind, QueueErrorKind::Unreachable, "{err}");
        assert!(
            err.message.starts_with(&format!(
                "cannot reach the queue service at {endpoint} (queue 'jobs', send)"
            )),
            "{err}"
        );
        assert_eq!(
            connections(&accepted),
            RetryPolicy::DEFAULT.max_attempts as usize
        );
    }

    #[test]
    fn queue_names_follow_the_service_rules() {
        for ok in ["flowcraft-jobs", "abc", "a1-b2", &"a".repeat(63)] {
            assert!(validate_queue_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Jobs",
            "-jobs",
            "jobs-",
            "a--b",
            "a_b",
            &"a".repeat(64),
        ] {
            let err = validate_queue_name(bad).unwrap_err();
            assert_eq!(err.kind, QueueErrorKind::InvalidRequest);
            assert!(err.message.contains(&format!("'{bad}'")));
        }
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(2_000)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2_001)), 3);
        assert_eq!(ceil_secs(Duration::MAX), i32::MAX);
    }

    #[test]
    fn poison_records_keep_the_original_and_read_back() {
        let record = PoisonRecord {
            reason: "undecodable: message text is neither JSON nor base64".into(),
            failed_at: "2025-01-01T00:00:00Z".into(),
            queue: "flowcraft-jobs".into(),
            message: "not <base64> & \"quoted\"".into(),
        };
        let text = record.to_text();
        let json = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&text)
                .unwrap(),
        )
        .unwrap();
        assert!(json.starts_with(r#"{"reason":"undecodable"#), "{json}");
        assert_eq!(PoisonRecord::from_text(&text), Some(record.clone()));
        let entry = PoisonEntry::parse(&text);
        assert_eq!(entry.original, record.message);
        assert_eq!(entry.reason.as_deref(), Some(record.reason.as_str()));
        // Plain-JSON records, and foreign messages stored unchanged.
        assert_eq!(PoisonEntry::parse(&json).original, record.message);
        let foreign = "eyJydW5JZCI6InIiLCJibHVlcHJpbnRJZCI6ImIiLCJub2RlSWQiOiJuIn0=";
        let entry = PoisonEntry::parse(foreign);
        assert_eq!((entry.reason, entry.original.as_str()), (None, foreign));
    }

    #[test]
    fn xml_error_bodies_give_code_and_first_message_line() {
        let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>PopReceiptMismatch</Code><Message>The specified pop receipt did not match the pop receipt for a dequeued message.\nRequestId:1\nTime:2025</Message></Error>";
        assert_eq!(
            xml_element(body, "Code").as_deref(),
            Some("PopReceiptMismatch")
        );
        assert_eq!(
            xml_element(body, "Message").as_deref(),
            Some("The specified pop receipt did not match the pop receipt for a dequeued message.")
        );
        assert_eq!(xml_element(b"", "Code"), None);
    }
}
