//! The shared Redis connection: made on first use, dropped when it breaks
//! and made afresh by the next attempt; operations repeated in place while
//! Redis cannot be reached or is still loading its data ([`crate::retry`]);
//! and the one-line errors naming the operation, the run and the server.

use std::sync::MutexGuard;

use flowcraft_core::store::StoreError;
use flowcraft_core::telemetry;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, ServerErrorKind};

use super::{RedisCoordination, SERVICE};
use crate::retry::{self, Backoff, RetryPolicy, Service, Transient};

/// The shared connection and what the last attempt to make one did.
#[derive(Default)]
pub(super) struct Link {
    /// Bumped for every new connection, so a failure on an old one does not
    /// drop a newer one.
    generation: u64,
    connection: Option<MultiplexedConnection>,
    /// Connection attempts so far, and the error of the last one if it failed.
    attempts: u64,
    last_error: Option<RedisError>,
}

/// A connection handed to one operation.
pub(super) struct Conn {
    generation: u64,
    pub(super) connection: MultiplexedConnection,
}

impl RedisCoordination {
    /// Checks that the server answers (`PING`), e.g. at start-up.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pong()
            .await
            .map_err(|err| self.error("ping", None, &err))
    }

    pub(super) async fn pong(&self) -> Result<(), RedisError> {
        let reply: String = self
            .retrying(RetryPolicy::SETUP, "ping", |mut conn| async move {
                let reply = redis::cmd("PING").query_async(&mut conn.connection).await;
                (conn, reply)
            })
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected reply to PING",
                reply,
            )))
        }
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        // A panic while holding the lock cannot leave `Link` inconsistent.
        self.inner
            .link
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shared connection, connecting first if there is none. Callers
    /// that waited while another one tried to connect share its failure
    /// instead of trying again.
    async fn conn(&self) -> Result<Conn, RedisError> {
        let seen = {
            let link = self.link();
            if let Some(connection) = &link.connection {
                return Ok(Conn {
                    generation: link.generation,
                    connection: connection.clone(),
                });
            }
            link.attempts
        };
        let _connecting = self.inner.connecting.lock().await;
        {
            let link = self.link();
            if let Some(connection) = &link.connection {
                return Ok(Conn {
                    generation: link.generation,
                    connection: connection.clone(),
                });
            }
            if link.attempts != seen
                && let Some(err) = &link.last_error
            {
                return Err(err.clone());
            }
        }
        let result = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&self.inner.connection)
            .await;
        let mut link = self.link();
        link.attempts += 1;
        match result {
            Ok(connection) => {
                link.generation += 1;
                link.connection = Some(connection.clone());
                link.last_error = None;
                if link.attempts > 1 {
                    tracing::info!(server = %self.inner.target, "reconnected to Redis");
                }
                Ok(Conn {
                    generation: link.generation,
                    connection,
                })
            }
            Err(err) => {
                link.last_error = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Drops the shared connection if `err` means it is broken (unless it
    /// was replaced already). Returns whether it did.
    fn settle(&self, conn: &Conn, err: &RedisError) -> bool {
        if !is_connection_error(err) {
            return false;
        }
        let mut link = self.link();
        if link.generation == conn.generation && link.connection.is_some() {
            link.connection = None;
            tracing::warn!(server = %self.inner.target, error = %err, "Redis connection lost; reconnecting on next use");
        }
        true
    }

    /// Runs `op` (named `operation` in log lines), again on a fresh
    /// connection after a short back-off while the connection breaks or
    /// cannot be made, or the server is still loading its data (within
    /// `policy`). Only for operations that may safely run twice.
    pub(super) async fn retrying<T, F, Fut>(
        &self,
        policy: RetryPolicy,
        operation: &'static str,
        op: F,
    ) -> Result<T, RedisError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, RedisError>)>,
    {
        let attempt = || async {
            let (conn, result) = op(self.conn().await?).await;
            if let Err(err) = &result {
                self.settle(&conn, err);
            }
            result
        };
        let classify = |err: &RedisError| {
            (is_connection_error(err) || is_busy(err)).then_some(Transient::Unreachable)
        };
        retry::retrying(
            Service::Redis,
            operation,
            policy,
            classify,
            RedisError::to_string,
            attempt,
        )
        .await
        .0
    }

    /// Runs a write script; while the connection breaks or cannot be made,
    /// runs it again on a fresh one after a short back-off (within
    /// [`RetryPolicy::DEFAULT`]). The write token makes a repeated run
    /// report success (a reply that `applied` accepts) if an earlier one
    /// was applied and nothing was written since; any other answer after a
    /// broken write leaves the outcome unknown, so it is an error.
    pub(super) async fn write<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        run_id: &str,
        invocation: &redis::ScriptInvocation<'_>,
        applied: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError> {
        let write = self.write_once(operation, run_id, invocation, applied);
        telemetry::backend_call(Service::Redis.label(), operation, write).await
    }

    /// [`write`](Self::write) without its metrics.
    async fn write_once<T: redis::FromRedisValue>(
        &self,
        operation: &str,
        run_id: &str,
        invocation: &redis::ScriptInvocation<'_>,
        applied: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError> {
        let mut lost: Option<RedisError> = None;
        let mut backoff = Backoff::new(RetryPolicy::DEFAULT);
        loop {
            let mut conn = match self.conn().await {
                Ok(conn) => conn,
                Err(err) if is_connection_error(&err) || is_busy(&err) => {
                    self.back_off(&mut backoff, operation, run_id, err).await?;
                    continue;
                }
                Err(err) => return Err(self.error(operation, Some(run_id), &err)),
            };
            match invocation.invoke_async(&mut conn.connection).await {
                Ok(reply) => match lost {
                    Some(err) if !applied(&reply) => {
                        return Err(StoreError::new(
                            SERVICE,
                            format!(
                                "{operation} of run {run_id} at {}: the connection broke during the write ({err}) and the record changed meanwhile, so whether the write was applied is unknown",
                                self.inner.target
                            ),
                        ));
                    }
                    _ => return Ok(reply),
                },
                Err(err) if self.settle(&conn, &err) => {
                    lost = Some(err.clone());
                    self.back_off(&mut backoff, operation, run_id, err).await?;
                }
                // Refused without running the script.
                Err(err) if is_busy(&err) => {
                    self.back_off(&mut backoff, operation, run_id, err).await?;
                }
                Err(err) => return Err(self.error(operation, Some(run_id), &err)),
            }
        }
    }

    /// Waits before the next attempt of a write that failed on the
    /// connection with `err`, or fails with it when the budget is spent.
    async fn back_off(
        &self,
        backoff: &mut Backoff,
        operation: &str,
        run_id: &str,
        err: RedisError,
    ) -> Result<(), StoreError> {
        let Some(wait) = backoff.next(Transient::Unreachable) else {
            return Err(self.error(operation, Some(run_id), &err));
        };
        if backoff.attempts() == 2 {
            tracing::warn!(server = %self.inner.target, operation, run = run_id, error = %err, "Redis unreachable; retrying with back-off");
        } else {
            tracing::debug!(server = %self.inner.target, operation, run = run_id, error = %err, "Redis still unreachable; retrying");
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    pub(super) fn error(
        &self,
        operation: &str,
        run_id: Option<&str>,
        err: &RedisError,
    ) -> StoreError {
        let run = run_id
            .map(|run| format!(" of run {run}"))
            .unwrap_or_default();
        StoreError::new(
            SERVICE,
            format!("{operation}{run} at {}: {err}", self.inner.target),
        )
    }
}

/// Whether the server refused a command for now: still loading its data
/// after a restart (`LOADING`), or `TRYAGAIN` / `MASTERDOWN`.
fn is_busy(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown
        )
    )
}

/// Whether `err` means the connection is unusable (rather than the command
/// being refused).
fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
}

/// `url` with its password masked (or a placeholder if it does not parse,
/// since it might contain one).
pub(super) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have credentials.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}
