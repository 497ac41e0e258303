"""Why a node failed: the exceptions a node raises to tell the host whether
to retry it.

Raise :class:`RetryableError` for transient failures, :class:`FatalError` for
permanent ones and :class:`InvalidInputError` when the input or params are
unusable; they map to the WIT ``node-error`` variants ``retryable``, ``fatal``
and ``invalid-input``. Any other exception a node raises is reported as
``retryable`` (upstream Flowcraft retries thrown errors).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """The WIT ``node-error`` variant an error maps to."""

    RETRYABLE = "retryable"
    """Retried while attempts remain, then the node's fallback runs."""
    FATAL = "fatal"
    """No more attempts and no fallback: the run fails."""
    INVALID_INPUT = "invalid-input"
    """The input or params are unusable; the host treats it like ``fatal``."""


class NodeError(Exception):
    """A node failure of a given :class:`ErrorKind`; catch this to catch all three."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class RetryableError(NodeError):
    """A transient failure worth another attempt (timeouts, unavailable services)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.RETRYABLE, message)


class FatalError(NodeError):
    """A permanent failure: the run fails without retries or fallback."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.FATAL, message)


class InvalidInputError(NodeError):
    """The node cannot work with the input or params it was given."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.INVALID_INPUT, message)


class ContextWriteError(FatalError):
    """A context write that failed: the value is not JSON, or the host refused
    it (a key reserved for the engine, a value nested too deeply, the call's
    write budget used up). It is fatal because a retry would fail the same way;
    the host fails the call after a refused write even if the node catches it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"context key `{key}`: {reason}")
        self.key = key
        self.reason = reason
