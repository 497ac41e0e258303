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
//! | `w` | token of the last write, unique to it (lets a write retried after a lost reply recognise itself; with `v`, names the record's state) |
//!
//! * create: one Lua script that writes the hash only if the key is absent;
//! * read: `HMGET v r w`, then the record is deserialized;
//! * update: the change is applied to a copy of the record, which is written
//!   by a Lua compare-and-set: it writes `r`, `w` and `v + 1` only if `v`
//!   and `w` are still the ones the copy came from. On a conflict the script
//!   answers the hash's current `v`, `r` and `w` instead, and the change is
//!   applied again to that record, at most [`RedisOptions::max_attempts`]
//!   times after a short jittered back-off; after that the update fails with
//!   "progress of run R is contended". A change that leaves the record as it
//!   was writes nothing. Scripts go out as `EVALSHA`, falling back to
//!   `SCRIPT LOAD` when the server does not know them (after a restart).
//!
//! # Remembered records
//!
//! An update does not read the hash first when the store remembers the run:
//! each store keeps the last `v`, `w` and record it read or wrote for up to
//! [`RedisOptions::remembered_runs`] live runs (within
//! [`RedisOptions::remembered_bytes`] of record JSON; the oldest are dropped
//! first, finished runs are not kept). A job that read the run's progress
//! and then settles costs one read and one compare-and-set. The remembered
//! state is only ever a guess: the compare-and-set decides. If it is out of
//! date (another worker or task changed the run, the record expired, or it
//! was deleted and created anew), the script refuses the write and answers
//! the current record in the same round trip, so the change is applied to
//! that one at once (this first conflict is the read the update would
//! otherwise have made: it neither waits nor counts against
//! [`RedisOptions::max_attempts`]); a run whose record is gone answers
//! "unknown". Comparing `w` as
//! well as `v` matters for the last case: `v` starts at 1 again for a record
//! created anew, while `w` is a token unique to each write. A change that
//! leaves a remembered record as it was still asks Redis whether that record
//! is current (a compare-and-set that writes nothing), since its outcome
//! must come from the record as it stands. Without a remembered run, an
//! update reads the hash first (`HMGET v r w`), as it always did.
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

use std::collections::HashMap;
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

/// Compare-and-set on the version and the write token.
/// KEYS[1] = progress key; ARGV = expected version, expected write token
/// (empty when the hash has none), record JSON (empty: write nothing, only
/// compare), this write's token, TTL seconds (0 = none).
/// Returns the version now stored when written, or when it matched and
/// nothing was to be written, or when this very token wrote it already; -1
/// when the record does not exist; on a conflict, the current
/// `[v, r, w]` (`w` empty when absent).
const UPDATE_SCRIPT: &str = r#"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
local w = redis.call('HGET', KEYS[1], 'w') or ''
if v ~= ARGV[1] or w ~= ARGV[2] then
  if w == ARGV[4] then return tonumber(v) end
  return {v, redis.call('HGET', KEYS[1], 'r'), w}
end
if ARGV[3] == '' then return tonumber(v) end
v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'r', ARGV[3], 'w', ARGV[4])
if tonumber(ARGV[5]) > 0 then
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
else
  redis.call('PERSIST', KEYS[1])
end
return v
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
    /// How many live runs' records the store remembers, so that an update
    /// needs no read first (see the module docs); 0 turns this off.
    /// Default: 4096.
    pub remembered_runs: usize,
    /// Bound on the JSON size of the remembered records together (a record
    /// takes a few times its JSON size in memory); a record over an eighth
    /// of it is not remembered. Default: 8 MiB.
    pub remembered_bytes: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            terminal_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            max_attempts: 100,
            max_backoff: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            remembered_runs: 4096,
            remembered_bytes: 8 << 20,
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
    /// What this store last saw of each live run's hash.
    memory: Memory,
    /// Updates of one run through this store take turns (see
    /// [`UPDATE_LANES`]).
    lanes: Box<[tokio::sync::Mutex<()>]>,
}

/// How many update lanes a store has. An update of a run holds the lane its
/// run id hashes to, so two jobs of one run settling at the same moment on
/// one worker (the branches of a fan-out) queue here instead of losing a
/// compare-and-set to each other and trying again: the second finds the
/// first's write remembered and costs one round trip, not two or three
/// and a back-off. Runs sharing a lane wait for each other for a round trip
/// at most; 256 lanes keep that rare with hundreds of live runs. Writers in
/// other workers are still arbitrated by the compare-and-set.
const UPDATE_LANES: usize = 256;

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

/// One state of a run's progress hash: its version, write token and record.
#[derive(Clone)]
struct Seen {
    version: i64,
    /// `w` (empty when the hash has none).
    token: String,
    record: Arc<RunProgress>,
    /// The length of the record's JSON, its weight in [`Memory`].
    size: usize,
}

/// What the update script answered.
enum Cas {
    /// The version now stored (after this write, or the one compared).
    Written(i64),
    /// The record does not exist.
    Missing,
    /// Another state is current: its `v`, `r` (absent if the hash has
    /// none) and `w`.
    Conflict(i64, Option<String>, String),
}

impl redis::FromRedisValue for Cas {
    fn from_redis_value(value: redis::Value) -> Result<Self, redis::ParsingError> {
        match value {
            redis::Value::Int(-1) => Ok(Cas::Missing),
            redis::Value::Int(version) => Ok(Cas::Written(version)),
            redis::Value::Array(items) if items.len() == 3 => {
                let mut items = items.into_iter();
                let mut next = || items.next().unwrap_or_default();
                let version = redis::from_redis_value(next())?;
                let record = redis::from_redis_value(next())?;
                let token = redis::from_redis_value::<Option<String>>(next())?;
                Ok(Cas::Conflict(version, record, token.unwrap_or_default()))
            }
            other => Err(format!("unexpected reply of the update script: {other:?}").into()),
        }
    }
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
        let memory = Memory::new(options.remembered_runs, options.remembered_bytes);
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
                memory,
                lanes: (0..UPDATE_LANES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
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

    /// Reads the run's hash (`HMGET v r w`) and deserializes the record;
    /// remembers what it read (see [`Self::remember`]).
    async fn fetch(&self, run_id: &str, key: &str) -> Result<Option<Seen>, StoreError> {
        let (version, record, token): (Option<i64>, Option<String>, Option<String>) = self
            .retrying(
                RetryPolicy::DEFAULT,
                "read progress",
                |mut conn| async move {
                    let reply = redis::cmd("HMGET")
                        .arg(key)
                        .arg("v")
                        .arg("r")
                        .arg("w")
                        .query_async(&mut conn.connection)
                        .await;
                    (conn, reply)
                },
            )
            .await
            .map_err(|err| self.error("read progress", Some(run_id), &err))?;
        let (Some(version), Some(record)) = (version, record) else {
            self.inner.memory.forget(run_id);
            return Ok(None);
        };
        let seen = self.seen(run_id, version, record, token.unwrap_or_default())?;
        self.remember(run_id, &seen);
        Ok(Some(seen))
    }

    /// A state of the run's hash as read, with its record deserialized.
    fn seen(
        &self,
        run_id: &str,
        version: i64,
        raw: String,
        token: String,
    ) -> Result<Seen, StoreError> {
        let record = self.decode(run_id, &raw).inspect_err(|_| {
            self.inner.memory.forget(run_id);
        })?;
        Ok(Seen {
            version,
            token,
            record: Arc::new(record),
            size: raw.len(),
        })
    }

    /// Remembers `seen` as the latest known state of the run's hash, unless
    /// the run is over (a finished run's record is rarely written again).
    /// Whether the remembered state is current matters only for the number
    /// of round trips, never for correctness: every write is compared with
    /// the hash as it stands.
    fn remember(&self, run_id: &str, seen: &Seen) {
        if seen.record.state.is_terminal() {
            self.inner.memory.forget(run_id);
        } else {
            self.inner.memory.put(run_id, seen.clone());
        }
    }

    /// Runs a write script; while the connection breaks or cannot be made,
    /// runs it again on a fresh one after a short back-off (within
    /// [`RetryPolicy::DEFAULT`]). The write token makes a repeated run
    /// report success (a reply that `applied` accepts) if an earlier one
    /// was applied and nothing was written since; any other answer after a
    /// broken write leaves the outcome unknown, so it is an error.
    async fn write<T: redis::FromRedisValue>(
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
        let size = record.len();
        let token = self.token();
        let mut invocation = self.inner.create.prepare_invoke();
        invocation
            .key(progress_key(run_id))
            .arg(record)
            .arg(&token)
            .arg(self.ttl_for(progress));
        let created: i64 = self
            .write("create progress", run_id, &invocation, |reply| *reply == 1)
            .await?;
        if created == 1 {
            // Version 1 with this token: the script answers 1 for this very
            // token only while nothing else was written.
            let seen = Seen {
                version: 1,
                token,
                record: Arc::new(progress.clone()),
                size,
            };
            self.remember(run_id, &seen);
        }
        Ok(created == 1)
    }

    async fn load_progress(&self, run_id: &str) -> Result<Option<RunProgress>, StoreError> {
        let seen = self.fetch(run_id, &progress_key(run_id)).await?;
        Ok(seen.map(|seen| Arc::unwrap_or_clone(seen.record)))
    }

    async fn read_progress<T, F>(&self, run_id: &str, read: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        let seen = self.fetch(run_id, &progress_key(run_id)).await?;
        Ok(seen.map(|seen| read(&seen.record)))
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
        let lane = self.inner.random.hash_one(run_id) as usize % UPDATE_LANES;
        let _turn = self.inner.lanes[lane].lock().await;
        // The state the next compare-and-set expects, and whether it was
        // read during this call (rather than remembered from before it).
        let (mut base, mut fresh) = match self.inner.memory.get(run_id) {
            Some(seen) => (seen, false),
            None => match self.fetch(run_id, &key).await? {
                Some(seen) => (seen, true),
                None => return Ok(None),
            },
        };
        // Compare-and-sets from a fresh state that lost to another writer.
        let mut lost = 0;
        loop {
            let mut record = RunProgress::clone(&base.record);
            let outcome = change(&mut record);
            let unchanged = record == *base.record;
            if unchanged && fresh {
                // Nothing to write, and the state was current during this call.
                return Ok(Some(outcome));
            }
            // A record left unchanged is not written, but its state is
            // compared all the same: the outcome must not come from an
            // outdated record.
            let raw = if unchanged {
                String::new()
            } else {
                self.encode(run_id, &record)?
            };
            let size = raw.len();
            let token = self.token();
            let mut invocation = self.inner.update.prepare_invoke();
            invocation
                .key(&key)
                .arg(base.version)
                .arg(&base.token)
                .arg(raw)
                .arg(&token)
                .arg(self.ttl_for(&record));
            // A compare-only call writes nothing, so any answer to it is sure.
            let reply: Cas = self
                .write("update progress", run_id, &invocation, |reply| {
                    unchanged || matches!(reply, Cas::Written(_))
                })
                .await?;
            match reply {
                Cas::Written(_) if unchanged => return Ok(Some(outcome)),
                Cas::Written(version) => {
                    let seen = Seen {
                        version,
                        token,
                        record: Arc::new(record),
                        size,
                    };
                    self.remember(run_id, &seen);
                    return Ok(Some(outcome));
                }
                Cas::Missing | Cas::Conflict(_, None, _) => {
                    self.inner.memory.forget(run_id);
                    return Ok(None);
                }
                Cas::Conflict(version, Some(raw), token) => {
                    let current = self.seen(run_id, version, raw, token)?;
                    self.remember(run_id, &current);
                    if fresh {
                        lost += 1;
                        if lost >= attempts {
                            break;
                        }
                        tracing::trace!(
                            run_id,
                            attempt = lost,
                            "progress update conflict; retrying"
                        );
                        tokio::time::sleep(self.backoff(run_id, lost)).await;
                    } else {
                        // Only the remembered state was out of date: the
                        // answer is the read an update without it makes.
                        tracing::trace!(run_id, "remembered progress was out of date; retrying");
                    }
                    base = current;
                    fresh = true;
                }
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

/// The last state of each live run's hash a store read or wrote, at most
/// `runs` of them with records of at most `bytes` of JSON together: two
/// generations of up to half that each; a state goes into the young one
/// (also when it is looked up in the old one), and when the young one is
/// full it becomes the old one and the old one is dropped. Approximately
/// least recently used, in constant time per operation.
struct Memory {
    /// Bounds of one generation.
    runs: usize,
    bytes: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: Generation,
    old: Generation,
}

#[derive(Default)]
struct Generation {
    states: HashMap<String, Seen>,
    /// Total weight of `states` (see [`weight`]).
    bytes: usize,
}

/// What a remembered state counts against the byte bound.
fn weight(run_id: &str, seen: &Seen) -> usize {
    run_id.len() + seen.token.len() + seen.size
}

impl Generation {
    fn remove(&mut self, run_id: &str) -> Option<Seen> {
        let seen = self.states.remove(run_id)?;
        self.bytes -= weight(run_id, &seen);
        Some(seen)
    }
}

impl Memory {
    fn new(runs: usize, bytes: usize) -> Self {
        Self {
            runs: runs.div_ceil(2),
            bytes: bytes / 2,
            generations: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        // Every change below leaves `Generations` consistent before it can panic.
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, run_id: &str) -> Option<Seen> {
        if self.runs == 0 {
            return None;
        }
        let mut generations = self.lock();
        if let Some(seen) = generations.young.states.get(run_id) {
            return Some(seen.clone());
        }
        let seen = generations.old.remove(run_id)?;
        self.insert(&mut generations, run_id, seen.clone());
        Some(seen)
    }

    fn put(&self, run_id: &str, seen: Seen) {
        if self.runs == 0 {
            return;
        }
        let mut generations = self.lock();
        generations.old.remove(run_id);
        generations.young.remove(run_id);
        // A record this large would push out many others.
        if weight(run_id, &seen) <= self.bytes / 4 {
            self.insert(&mut generations, run_id, seen);
        }
    }

    fn forget(&self, run_id: &str) {
        if self.runs == 0 {
            return;
        }
        let mut generations = self.lock();
        generations.old.remove(run_id);
        generations.young.remove(run_id);
    }

    /// Adds a state of a run that neither generation holds.
    fn insert(&self, generations: &mut Generations, run_id: &str, seen: Seen) {
        let added = weight(run_id, &seen);
        let young = &generations.young;
        if young.states.len() >= self.runs || young.bytes + added > self.bytes {
            generations.old = std::mem::take(&mut generations.young);
        }
        generations.young.bytes += added;
        generations.young.states.insert(run_id.to_owned(), seen);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let generations = self.lock();
        generations.young.states.len() + generations.old.states.len()
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

    fn state(version: i64, size: usize) -> Seen {
        Seen {
            version,
            token: String::new(),
            record: Arc::new(RunProgress::new(
                "run",
                "bp",
                flowcraft_core::runner::Pins::default(),
                10,
            )),
            size,
        }
    }

    #[test]
    fn memory_is_bounded_by_runs() {
        let memory = Memory::new(4, 1 << 20);
        for i in 0..100 {
            memory.put(&format!("run-{i}"), state(i, 10));
            assert!(memory.len() <= 4, "{} states after {i}", memory.len());
        }
        // The latest ones are kept, the oldest dropped.
        assert_eq!(memory.get("run-99").map(|s| s.version), Some(99));
        assert!(memory.get("run-0").is_none());
        // Looking a state up keeps it: run-98 outlives the rotations that
        // drop its peers.
        for i in 100..110 {
            assert_eq!(memory.get("run-98").map(|s| s.version), Some(98));
            memory.put(&format!("run-{i}"), state(i, 10));
        }
        assert!(memory.get("run-98").is_some());
        assert!(memory.get("run-101").is_none());
        // A newer state replaces the remembered one; forgetting removes it.
        memory.put("run-98", state(120, 10));
        assert_eq!(memory.get("run-98").map(|s| s.version), Some(120));
        memory.forget("run-98");
        assert!(memory.get("run-98").is_none());
    }

    #[test]
    fn memory_is_bounded_by_bytes() {
        let memory = Memory::new(1000, 8000);
        for i in 0..100 {
            memory.put(&format!("run-{i:02}"), state(i, 394));
            let generations = memory.lock();
            assert!(generations.young.bytes + generations.old.bytes <= 8000);
        }
        // 400 bytes each: at most 20 fit.
        assert!(memory.len() <= 20 && memory.len() >= 10, "{}", memory.len());
        // Too large for the bound: not remembered, and not kept in an old state either.
        memory.put("run-99", state(7, 1500));
        assert!(memory.get("run-99").is_none());
        assert_eq!(memory.get("run-98").map(|s| s.version), Some(98));
    }

    #[test]
    fn memory_can_be_off() {
        let memory = Memory::new(0, 1 << 20);
        memory.put("run", state(1, 10));
        assert!(memory.get("run").is_none());
        assert_eq!(memory.len(), 0);
    }

    #[test]
    fn update_replies_parse() {
        use redis::{FromRedisValue, Value};
        assert!(matches!(
            Cas::from_redis_value(Value::Int(-1)),
            Ok(Cas::Missing)
        ));
        assert!(matches!(
            Cas::from_redis_value(Value::Int(7)),
            Ok(Cas::Written(7))
        ));
        let conflict = Value::Array(vec![
            Value::BulkString(b"5".to_vec()),
            Value::BulkString(b"{}".to_vec()),
            Value::BulkString(b"tok".to_vec()),
        ]);
        match Cas::from_redis_value(conflict) {
            Ok(Cas::Conflict(5, Some(record), token)) => {
                assert_eq!((record.as_str(), token.as_str()), ("{}", "tok"));
            }
            _ => panic!("not a conflict"),
        }
        let gone = Value::Array(vec![
            Value::BulkString(b"5".to_vec()),
            Value::Nil,
            Value::BulkString(Vec::new()),
        ]);
        assert!(matches!(
            Cas::from_redis_value(gone),
            Ok(Cas::Conflict(5, None, token)) if token.is_empty()
        ));
        assert!(Cas::from_redis_value(Value::Okay).is_err());
    }

    #[test]
    fn progress_keys_are_new_names() {
        assert_eq!(progress_key("run-1"), "flowcraft:progress:run-1");
    }
}
