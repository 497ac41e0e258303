//! Why a node failed: [`NodeError`], whose variant tells the host whether to retry.

use thiserror::Error;

use crate::context::ContextError;

/// Why an execution failed. The host applies the blueprint's retry and fallback
/// rules according to the variant (the WIT `node-error`).
///
/// ```
/// use flowcraft_sdk::NodeError;
///
/// let error = NodeError::retryable("payment gateway timed out");
/// assert!(error.is_retryable());
/// assert_eq!(error.message(), "payment gateway timed out");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeError {
    /// A transient failure: retried while attempts remain, then the fallback runs.
    #[error("retryable error: {0}")]
    Retryable(String),
    /// A permanent failure: no more attempts and no fallback; the run fails.
    #[error("fatal error: {0}")]
    Fatal(String),
    /// The input or params are unusable; the host treats it like [`NodeError::Fatal`].
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl NodeError {
    /// A transient failure worth another attempt (timeouts, unavailable services).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    /// A permanent failure: the run fails without retries or fallback.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal(message.into())
    }

    /// The node cannot work with the input or params it was given.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// The message without the variant prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable(message) | Self::Fatal(message) | Self::InvalidInput(message) => {
                message
            }
        }
    }

    /// Whether the host may run the node again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// Lets nodes use `?` on context calls: a value of the wrong shape is invalid
/// input; a value that cannot be stored will not be storable on a retry either.
impl From<ContextError> for NodeError {
    fn from(error: ContextError) -> Self {
        match error {
            ContextError::Decode { .. } => Self::invalid_input(error.to_string()),
            ContextError::Encode { .. } | ContextError::Rejected { .. } => {
                Self::fatal(error.to_string())
            }
        }
    }
}
