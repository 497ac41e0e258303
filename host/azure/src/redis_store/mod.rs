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
//! Beside them, one sorted set per deployment lists the runs by start time
//! (the `index` module).
//!
//! * create: one Lua script that writes the hash only if the key is absent
//!   (and enters the run in the index);
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
//! update reads the hash first (`HMGET v r w`).
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
//! [`StoreError`]. Every error is a
//! `StoreError { service: "redis", .. }` naming the operation, the run and
//! the server (the URL without its password).

mod connection;
mod index;
mod remembered;
mod scripts;
#[cfg(test)]
mod tests;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowcraft_core::clock::unix_ms;
use flowcraft_core::progress::RunProgress;
use flowcraft_core::store::{CoordinationStore, StoreError};
use redis::{AsyncConnectionConfig, Client, Script};

use crate::retry::RetryPolicy;
use connection::{Link, redact};
pub use index::{IndexedRun, RunIndexPage, run_index_key};
use remembered::Memory;
use scripts::{CREATE_SCRIPT, Cas, UPDATE_SCRIPT};

const SERVICE: &str = "redis";

/// Prefix of the per-run progress keys.
pub const PROGRESS_KEY_PREFIX: &str = "flowcraft:progress:";

/// The Redis key holding the progress record of `run_id`.
pub fn progress_key(run_id: &str) -> String {
    format!("{PROGRESS_KEY_PREFIX}{run_id}")
}

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
    /// The sorted set that lists the runs (see `index`): one per
    /// deployment, named by [`run_index_key`]. Default: that of the default
    /// database and status container.
    pub run_index: String,
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
            run_index: run_index_key("flowcraft", "workflow-statuses"),
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

    /// The server URL with its password masked.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
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
            .key(&self.inner.options.run_index)
            .arg(record)
            .arg(&token)
            .arg(self.ttl_for(progress))
            .arg(unix_ms())
            .arg(run_id);
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

    /// The remembered record, when there is one: the job that follows a
    /// settlement on this worker reads the record that settlement wrote.
    async fn read_progress_remembered<T, F>(
        &self,
        run_id: &str,
        read: F,
    ) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        match self.inner.memory.get(run_id) {
            Some(seen) => Ok(Some(read(&seen.record))),
            None => self.read_progress(run_id, read).await,
        }
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
