//! Queue errors: what kind of failure a request met ([`QueueErrorKind`],
//! from the HTTP status and the service's error code), whether it may be
//! repeated ([`transient`]), and the one-line message naming the operation,
//! queue and endpoint ([`QueueError`]).

use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;
use azure_core::http::headers::HeaderName;
use flowcraft_core::store::StoreError;
use thiserror::Error;

use super::{AzureQueue, EXISTS_CHECK, MAX_MESSAGE_BYTES};
use crate::retry::{self, Transient};

/// The service name of the `StoreError`s queue errors convert to.
pub(super) const SERVICE: &str = "queue";

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
    /// The message text is over the service's 64 KiB limit: found before
    /// sending, or refused by the service (`413 RequestBodyTooLarge`, or
    /// `MessageTooLarge`). Sending it again cannot succeed.
    MessageTooLarge,
    /// The request was refused before sending (duration, name).
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
    pub(super) fn new(kind: QueueErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<QueueError> for StoreError {
    /// Permanent ([`StoreError::refused`]) for a message over the size
    /// limit; any other failure may pass.
    fn from(error: QueueError) -> Self {
        match error.kind {
            QueueErrorKind::MessageTooLarge => StoreError::refused(SERVICE, error.message),
            _ => StoreError::new(SERVICE, error.message),
        }
    }
}

impl AzureQueue {
    pub(super) fn invalid(&self, op: &str, detail: String) -> QueueError {
        QueueError::new(
            QueueErrorKind::InvalidRequest,
            format!("queue '{}': {op}: {detail}", self.inner.name),
        )
    }

    /// A message text of `bytes` the service would refuse.
    pub(super) fn too_large(&self, op: &str, bytes: usize) -> QueueError {
        QueueError::new(
            QueueErrorKind::MessageTooLarge,
            format!(
                "queue '{}': {op}: message text is {bytes} bytes; the service accepts at most {MAX_MESSAGE_BYTES} (64 KiB)",
                self.inner.name
            ),
        )
    }

    pub(super) fn malformed(&self, op: &str, detail: &str) -> QueueError {
        QueueError::new(
            QueueErrorKind::Service,
            format!(
                "queue '{}' at {}: {op}: unexpected response: {detail}",
                self.inner.name, self.inner.endpoint
            ),
        )
    }

    /// One line naming the operation, the queue and the endpoint.
    pub(super) fn error(&self, op: &str, error: azure_core::Error) -> QueueError {
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
                let (kind, hint) = classify(status, &code, self.inner.account.needs_credential());
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

/// The kind of a refusal with HTTP `status` and the service's error `code`
/// (empty when it sent none), and a hint to end its message with.
/// `token_auth`: the request carried an Entra ID token rather than a key.
pub(super) fn classify(
    status: StatusCode,
    code: &str,
    token_auth: bool,
) -> (QueueErrorKind, &'static str) {
    match (status, code) {
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
        (StatusCode::PayloadTooLarge, _) | (_, "RequestBodyTooLarge" | "MessageTooLarge") => (
            QueueErrorKind::MessageTooLarge,
            "; the message is over Queue Storage's 64 KiB limit",
        ),
        (StatusCode::Unauthorized | StatusCode::Forbidden, _) if token_auth => (
            QueueErrorKind::Auth,
            "; the Entra ID token was refused: give the identity a data role on the queue (e.g. Storage Queue Data Contributor)",
        ),
        (StatusCode::Unauthorized | StatusCode::Forbidden, _) => (
            QueueErrorKind::Auth,
            "; check AccountName/AccountKey or SharedAccessSignature in AZURE_STORAGE_CONNECTION_STRING",
        ),
        _ => (QueueErrorKind::Service, ""),
    }
}

/// Whether a failed request may be repeated, and after what: throttling
/// (`429`, or `503 ServerBusy`: the service did not perform the request)
/// with the wait it advises, or a transport error.
pub(super) fn transient(error: &azure_core::Error) -> Option<Transient> {
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
pub(super) fn error_code(error: &azure_core::Error) -> Option<String> {
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

pub(super) fn xml_element(body: &[u8], name: &str) -> Option<String> {
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
pub(super) fn root_cause(error: &azure_core::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
