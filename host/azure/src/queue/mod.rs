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
//! service `"queue"`. A message over the 64 KiB limit, whether caught before
//! sending or refused by the service (`413 RequestBodyTooLarge`,
//! `MessageTooLarge`), is [`QueueErrorKind::MessageTooLarge`] and converts to
//! a permanent `StoreError`: sending it again cannot succeed.

mod error;
mod poison;
#[cfg(test)]
mod tests;

pub use error::{QueueError, QueueErrorKind};
pub use poison::{PoisonEntry, PoisonRecord, Poisoned};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::headers::HeaderName;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions, Transport, XmlFormat};
use azure_core::time::OffsetDateTime;
use azure_storage_queue::models::{
    QueueClientPeekMessagesOptions, QueueClientReceiveMessagesOptions,
    QueueClientSendMessageOptions, QueueClientUpdateMessageOptions, QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use flowcraft_core::store::{Job, JobQueue, MAX_JOB_DELAY, StoreError};
use tokio::sync::OnceCell;

use crate::retry::{self, RetryPolicy, Service};
use crate::storage_account::StorageAccount;
use crate::wire;
use error::{error_code, root_cause, transient};

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
        op: &'static str,
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
        self.update("update visibility", message, None, timeout)
            .await
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
        let op = "replace text";
        let content = self.message_content(op, text)?;
        self.update(op, message, Some(content), timeout).await
    }

    /// A message body for `text`, or an error if the service would refuse it.
    fn message_content(
        &self,
        op: &str,
        text: &str,
    ) -> Result<RequestContent<QueueMessage, XmlFormat>, QueueError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(self.too_large(op, text.len()));
        }
        QueueMessage {
            message_text: Some(text.to_owned()),
        }
        .try_into()
        .map_err(|e| self.invalid(op, format!("message text cannot be sent as XML: {e}")))
    }

    /// Updates `message` (operation `op`); errors name the message.
    async fn update(
        &self,
        op: &'static str,
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
            .map_err(|(e, _)| self.error(&format!("{op} of message {}", message.id), e))?;
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

    /// Runs `request` (operation `op`), repeating it when throttled or on
    /// a transport error ([`crate::retry`]). The flag says whether it was
    /// repeated.
    async fn attempt<T, F, Fut>(
        &self,
        op: &'static str,
        request: F,
    ) -> Result<T, (azure_core::Error, bool)>
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
        op: &'static str,
        request: F,
    ) -> Result<T, (azure_core::Error, bool)>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        let (result, attempts) =
            retry::retrying(Service::Queue, op, policy, transient, root_cause, request).await;
        result.map_err(|e| (e, attempts > 1))
    }
}

impl JobQueue for AzureQueue {
    /// Sends [`wire::encode`]`(job)`; delays beyond 7 days are cut to 7 days
    /// (the engine re-enqueues a wake-up that arrives early). A job message
    /// over the 64 KiB limit is refused permanently
    /// ([`StoreError::refused`]).
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
                .map_err(|error| match error.kind {
                    QueueErrorKind::MessageTooLarge => StoreError::refused(
                        error::SERVICE,
                        format!(
                            "the job message is over Queue Storage's 64 KiB message limit; sending it again cannot succeed: {error}"
                        ),
                    ),
                    _ => StoreError::from(error),
                })
        }
    }
}

fn http_transport(account: &StorageAccount) -> Result<Transport, QueueError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if account.queue_endpoint().scheme() == "http" {
        // Plain HTTP needs no root certificates: trusting none spares loading
        // the system's store (milliseconds of a short-lived CLI command).
        builder = builder
            .pool_idle_timeout(EMULATOR_POOL_IDLE)
            .tls_certs_only([]);
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
