//! The coordination store on Redis: each run's [`RunProgress`] record, changed
//! atomically by compare-and-set.
//!
//! [`RedisCoordination`] implements [`CoordinationStore`] for the Azure mode
//! (Azure Cache for Redis, or `redis-server` locally). It does not decide
//! workflow semantics: it stores the record that `flowcraft_core::progress`
//! changes, and guarantees that concurrent changes of one run are not lost.
//!
//! # Key layout
//!
//! One hash per run under a key of our own, [`progress_key`]
//! `flowcraft:progress:<runId>` (upstream's `flowcraft:fanin:*`,
//! `flowcraft:joinlock:*`, ... keys are neither used nor touched):
//!
//! | field | value |
//! |---|---|
//! | `v` | version, an integer: 1 at creation, +1 on every change |
//! | `r` | the record, `RunProgress` as JSON |
//! | `w` | token of the last write (lets a write retried after a lost reply recognise itself) |
//!
//! * create: one Lua script that writes the hash only if the key is absent;
//! * read: `HMGET v r`, then the record is deserialized;
//! * update: read, apply the change to the deserialized copy, then a Lua
//!   compare-and-set that writes `r` and `v + 1` only if `v` is still the
//!   version that was read. On a conflict the whole step (read, change, write)
//!   is repeated after a short jittered back-off, at most
//!   [`RedisOptions::max_attempts`] times; after that the update fails with
//!   "progress of run R is contended". A change that leaves the record as it
//!   was writes nothing. Scripts go out as `EVALSHA`, falling back to
//!   `SCRIPT LOAD` when the server does not know them (after a restart).
//!
//! # Expiry
//!
//! Records never expire while a run is live. The write that stores a record
//! whose `state` is terminal (completed, failed, cancelled) also sets an
//! `EXPIRE` of [`RedisOptions::terminal_ttl`] (default 7 days) if the key has
//! none yet, so the record disappears that long after the run ended; later
//! writes to the finished run do not push the expiry back. Afterwards the run
//! reads as unknown (`None`). A write that stores a live record again (an
//! operator retried a failed run) removes the expiry.
//!
//! # Connection
//!
//! One multiplexed connection is shared by all callers. When it breaks (a
//! Redis restart, a network fault, a timeout), it is dropped and the next
//! attempt connects afresh. Reads, and writes whose outcome can be checked
//! with their write token, are repeated in place on a fresh connection,
//! after a short back-off while Redis cannot be reached or is still loading
//! its data after a restart (`LOADING`), within the bounds of
//! [`crate::retry`]: a Redis restart of a few seconds delays operations
//! instead of failing them; a longer outage fails them with a
//! [`StoreError`] as before. Every error is a
//! `StoreError { service: "redis", .. }` naming the operation, the run and
//! the server (the URL without its password).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flowcraft_core::progress::RunProgress;
use flowcraft_core::store::{CoordinationStore, StoreError};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script, ServerErrorKind};

use crate::retry::{self, Backoff, RetryPolicy, Transient};

const SERVICE: &str = "redis";

/// Prefix of the per-run progress keys.
pub const PROGRESS_KEY_PREFIX: &str = "flowcraft:progress:";

/// The Redis key holding the progress record of `run_id`.
pub fn progress_key(run_id: &str) -> String {
    format!("{PROGRESS_KEY_PREFIX}{run_id}")
}

/// Creates the record unless the key exists.
/// KEYS[1] = progress key; ARGV = record JSON, write token, TTL seconds (0 = none).
/// Returns 1 when created (or already created by this very token), 0 when the key exists.
const CREATE_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[2] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'v', 1, 'r', ARGV[1], 'w', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"#;

/// Compare-and-set on the version.
/// KEYS[1] = progress key; ARGV = expected version, record JSON, write token, TTL seconds (0 = none).
/// Returns 1 when written (or already written by this very token), 0 on a
/// version conflict, -1 when the record does not exist.
const UPDATE_SCRIPT: &str = r#"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if v ~= ARGV[1] then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[3] then return 1 end
  return 0
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'r', ARGV[2], 'w', ARGV[3])
if tonumber(ARGV[4]) > 0 then
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
else
  redis.call('PERSIST', KEYS[1])
end
return 1
"#;

/// Tuning of [`RedisCoordination`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// How long a record is kept after its run reached a terminal state
    /// (rounded down to whole seconds, at least one). Default: 7 days.
    pub terminal_ttl: Duration,
    /// Compare-and-set attempts of one update before it fails as contended.
    /// Default: 100.
    pub max_attempts: u32,
    /// Longest back-off between two attempts of a contended update (each
    /// back-off is random, up to an exponentially growing bound capped by
    /// this). Default: 50 ms.
    pub max_backoff: Duration,
    /// Limit for establishing a connection. Default: 5 s.
    pub connect_timeout: Duration,
    /// Limit for one command's reply. Default: 5 s.
    pub response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            terminal_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            max_attempts: 100,
            max_backoff: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// The coordination store on Redis (see the module docs). Cheap to clone;
/// clones share one connection.
#[derive(Clone)]
pub struct RedisCoordination {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The URL with its password masked, for messages.
    target: String,
    options: RedisOptions,
    connection: AsyncConnectionConfig,
    link: Mutex<Link>,
    /// Serializes connection attempts.
    connecting: tokio::sync::Mutex<()>,
    create: Script,
    update: Script,
    /// Source of write tokens.
    tokens: AtomicU64,
    random: RandomState,
}

/// The shared connection and what the last attempt to make one did.
#[derive(Default)]
struct Link {
    /// Bumped for every new connection, so a failure on an old one does not
    /// drop a newer one.
    generation: u64,
    connection: Option<MultiplexedConnection>,
    /// Connection attempts so far, and the error of the last one if it failed.
    attempts: u64,
    last_error: Option<RedisError>,
}

/// A connection handed to one operation.
struct Conn {
    generation: u64,
    connection: MultiplexedConnection,
}

/// What the progress hash holds, as read.
struct Stored {
    version: i64,
    record: String,
}

impl std::fmt::Debug for RedisCoordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordination")
            .field("target", &self.inner.target)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl RedisCoordination {
    /// Connects to `url` (`redis://[[user]:password@]host[:port][/db]`,
    /// `rediss://` for TLS) with default [`RedisOptions`], and checks the
    /// server answers.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Like [`connect`](Self::connect), with explicit options. Fails with a
    /// one-line error naming the URL (password masked) if the URL is invalid
    /// or the server cannot be reached.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let target = redact(url);
        let client = Client::open(url).map_err(|err| {
            StoreError::new(
                SERVICE,
                format!(
                    "invalid Redis URL {target}: {err} (expected redis://[[user]:password@]host[:port][/db] or rediss://...)"
                ),
            )
        })?;
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout));
        let store = Self {
            inner: Arc::new(Inner {
                client,
                target,
                options,
                connection,
                link: Mutex::new(Link::default()),
                connecting: tokio::sync::Mutex::new(()),
                create: Script::new(CREATE_SCRIPT),
                update: Script::new(UPDATE_SCRIPT),
                tokens: AtomicU64::new(0),
                random: RandomState::new(),
            }),
        };
        store.pong().await.map_err(|err| {
            StoreError::new(
                SERVICE,
                format!(
                    "cannot reach Redis at {}: {err}; check that the server runs and the Redis URL (host, port, password) is right",
                    store.inner.target
                ),
            )
        })?;
        Ok(store)
    }

    /// Checks that the server answers (`PING`), e.g. at start-up.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pong()
            .await
            .map_err(|err| self.error("ping", None, &err))
    }

    async fn pong(&self) -> Result<(), RedisError> {
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

    /// The server URL with its password masked.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
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
    async fn retrying<T, F, Fut>(
        &self,
        policy: RetryPolicy,
        operation: &str,
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
            "Redis",
            operation,
            policy,
            classify,
            RedisError::to_string,
            attempt,
        )
        .await
        .0
    }

    /// Reads `v` and `r` of the run's hash.
    async fn fetch(&self, key: &str) -> Result<Option<Stored>, RedisError> {
        let (version, record): (Option<i64>, Option<String>) = self
            .retrying(
                RetryPolicy::DEFAULT,
                "read progress",
                |mut conn| async move {
                    let reply = redis::cmd("HMGET")
                        .arg(key)
                        .arg("v")
                        .arg("r")
                        .query_async(&mut conn.connection)
                        .await;
                    (conn, reply)
                },
            )
            .await?;
        Ok(match (version, record) {
            (Some(version), Some(record)) => Some(Stored { version, record }),
            _ => None,
        })
    }

    /// The run's record (`HGET r`), deserialized.
    async fn record(&self, run_id: &str) -> Result<Option<RunProgress>, StoreError> {
        let key = progress_key(run_id);
        let raw: Option<String> = self
            .retrying(RetryPolicy::DEFAULT, "read progress", |mut conn| {
                let key = &key;
                async move {
                    let reply = redis::cmd("HGET")
                        .arg(key)
                        .arg("r")
                        .query_async(&mut conn.connection)
                        .await;
                    (conn, reply)
                }
            })
            .await
            .map_err(|err| self.error("read progress", Some(run_id), &err))?;
        raw.map(|raw| self.decode(run_id, &raw)).transpose()
    }

    /// Runs a write script; while the connection breaks or cannot be made,
    /// runs it again on a fresh one after a short back-off (within
    /// [`RetryPolicy::DEFAULT`]). The write token makes a repeated run
    /// report success (1) if an earlier one was applied and nothing was
    /// written since; any other answer after a broken write leaves the
    /// outcome unknown, so it is an error.
    async fn write(
        &self,
        operation: &str,
        run_id: &str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<i64, StoreError> {
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
                    Some(err) if reply != 1 => {
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

    /// A token no other write uses.
    fn token(&self) -> String {
        let count = self.inner.tokens.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:016x}{:016x}",
            self.inner.random.hash_one((std::process::id(), count)),
            count
        )
    }

    /// A random back-off before attempt `attempt + 1` of a contended update.
    fn backoff(&self, run_id: &str, attempt: u32) -> Duration {
        let cap = Duration::from_micros(500)
            .saturating_mul(1 << attempt.min(16))
            .min(self.inner.options.max_backoff);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        let noise = self.inner.random.hash_one((
            run_id,
            attempt,
            self.inner.tokens.fetch_add(1, Ordering::Relaxed),
        ));
        Duration::from_nanos(if nanos == 0 { 0 } else { noise % nanos })
    }

    fn ttl_for(&self, record: &RunProgress) -> u64 {
        if record.state.is_terminal() {
            self.inner.options.terminal_ttl.as_secs().max(1)
        } else {
            0
        }
    }

    fn error(&self, operation: &str, run_id: Option<&str>, err: &RedisError) -> StoreError {
        let run = run_id
            .map(|run| format!(" of run {run}"))
            .unwrap_or_default();
        StoreError::new(
            SERVICE,
            format!("{operation}{run} at {}: {err}", self.inner.target),
        )
    }

    fn decode(&self, run_id: &str, raw: &str) -> Result<RunProgress, StoreError> {
        serde_json::from_str(raw).map_err(|err| {
            StoreError::new(
                SERVICE,
                format!(
                    "the progress record of run {run_id} (key {}) is not valid: {err}",
                    progress_key(run_id)
                ),
            )
        })
    }

    fn encode(&self, run_id: &str, record: &RunProgress) -> Result<String, StoreError> {
        serde_json::to_string(record).map_err(|err| {
            StoreError::new(
                SERVICE,
                format!("cannot serialize the progress record of run {run_id}: {err}"),
            )
        })
    }
}

impl CoordinationStore for RedisCoordination {
    async fn create_progress(&self, progress: &RunProgress) -> Result<bool, StoreError> {
        let run_id = progress.run_id.as_str();
        let record = self.encode(run_id, progress)?;
        let mut invocation = self.inner.create.prepare_invoke();
        invocation
            .key(progress_key(run_id))
            .arg(record)
            .arg(self.token())
            .arg(self.ttl_for(progress));
        let created = self.write("create progress", run_id, &invocation).await?;
        Ok(created == 1)
    }

    async fn load_progress(&self, run_id: &str) -> Result<Option<RunProgress>, StoreError> {
        self.record(run_id).await
    }

    async fn read_progress<T, F>(&self, run_id: &str, read: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        Ok(self.record(run_id).await?.as_ref().map(read))
    }

    async fn update_progress<T, F>(
        &self,
        run_id: &str,
        mut change: F,
    ) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        let key = progress_key(run_id);
        let attempts = self.inner.options.max_attempts.max(1);
        for attempt in 1..=attempts {
            let Some(stored) = self
                .fetch(&key)
                .await
                .map_err(|err| self.error("read progress (for update)", Some(run_id), &err))?
            else {
                return Ok(None);
            };
            let mut record = self.decode(run_id, &stored.record)?;
            let outcome = change(&mut record);
            let raw = self.encode(run_id, &record)?;
            if raw == stored.record {
                // Nothing changed: the read was a consistent snapshot.
                return Ok(Some(outcome));
            }
            let mut invocation = self.inner.update.prepare_invoke();
            invocation
                .key(&key)
                .arg(stored.version)
                .arg(raw)
                .arg(self.token())
                .arg(self.ttl_for(&record));
            let written = self.write("update progress", run_id, &invocation).await?;
            match written {
                1 => return Ok(Some(outcome)),
                -1 => return Ok(None),
                _ if attempt < attempts => {
                    tracing::trace!(run_id, attempt, "progress update conflict; retrying");
                    tokio::time::sleep(self.backoff(run_id, attempt)).await;
                }
                _ => {}
            }
        }
        Err(StoreError::new(
            SERVICE,
            format!(
                "progress of run {run_id} is contended: {attempts} compare-and-set attempts lost to concurrent updates"
            ),
        ))
    }
}

/// Whether `err` means the connection is unusable (rather than the command
/// being refused).
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

fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
}

/// `url` with its password masked (or a placeholder if it does not parse,
/// since it might contain one).
fn redact(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://:s3cret@cache.example:6380/2"),
            "redis://:***@cache.example:6380/2"
        );
        assert_eq!(
            redact("rediss://user:pw@host:6380"),
            "rediss://user:***@host:6380"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("not a url :pw@"), "<unparseable URL>");
    }

    #[test]
    fn progress_keys_are_new_names() {
        assert_eq!(progress_key("run-1"), "flowcraft:progress:run-1");
    }
}
