//! The local durable backend: every store the engine needs and the worker's
//! leased queue in one SQLite database (`flowcraft.db` in a data directory),
//! for `flowcraft-host serve` without Azure.
//!
//! It keeps the Azure deployment's semantics, so a blueprint behaves the
//! same on both: contexts are written key by key and refused past Cosmos
//! DB's item limit, a terminal status is never overwritten, progress records
//! change by compare-and-set, a message is leased (received invisible,
//! renewed, rewritten into a group, deleted or dead-lettered by its current
//! holder only), delayed jobs (retry delays, `sleep` timers) wait in the
//! queue table and so survive restarts.
//!
//! Durability: WAL mode with `synchronous = FULL`, so a write is on disk
//! when its call returns. Concurrent writes share one transaction and one
//! fsync (group commit, see [`database`]), which is what makes fsync'd
//! commits affordable at thousands of jobs a second.
//!
//! Idle workers do not poll blindly: every job sent through this backend
//! wakes the process's waiting worker at once, and a worker waits for the
//! next delayed job's due time rather than a fixed interval
//! ([`WorkerBackend::wait_for_work`](flowcraft_worker::WorkerBackend::wait_for_work)).

mod database;
mod directory;
mod queue;
mod schema;
mod stores;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use flowcraft_core::clock::unix_ms;
use flowcraft_core::limits::MAX_CONTEXT_BYTES;
use flowcraft_core::store::StoreError;
use thiserror::Error;
use tokio::sync::Notify;

use database::Database;

pub use directory::SqliteWatch;
pub use queue::{DeadLetter, SqliteMessage};

/// The service name in this backend's [`StoreError`]s.
pub const SERVICE: &str = "sqlite";

/// The database file's name in the data directory.
pub const DATABASE_FILE: &str = "flowcraft.db";

/// Why the database could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(
        "cannot create the data directory {path}: {source}; check its permissions or choose another --data-dir"
    )]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open the database {path}: {source}; check that it is a flowcraft-host database and that its directory is writable"
    )]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this flowcraft-host reads ({supported}); run a newer flowcraft-host or choose another --data-dir"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("cannot start the database writer thread: {source}")]
    Thread { source: std::io::Error },
}

/// The stores and the queue over one SQLite database.
pub struct SqliteBackend {
    database: Database,
    /// Signalled whenever a job is sent or returned to the queue.
    work: Notify,
    /// Largest context or status document (JSON bytes) a write may leave.
    item_limit: usize,
    /// Progress updates of runs hashed to the same stripe take turns, so
    /// that concurrent jobs of one run do not fail each other's
    /// compare-and-set.
    progress_turns: Vec<tokio::sync::Mutex<()>>,
    /// The run id of every status written, for long polls.
    status_changes: tokio::sync::broadcast::Sender<String>,
    path: PathBuf,
}

/// Status announcements a slow listener may fall behind by before it is
/// told it missed some (it then reads the status again).
const STATUS_ANNOUNCEMENTS: usize = 1024;

/// Stripes of [`SqliteBackend::progress_turns`].
const PROGRESS_STRIPES: usize = 256;

impl SqliteBackend {
    /// Opens the database in `data_dir` (both created if missing).
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::Directory {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DATABASE_FILE);
        Ok(Self {
            database: Database::open(&path)?,
            work: Notify::new(),
            item_limit: MAX_CONTEXT_BYTES,
            progress_turns: (0..PROGRESS_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            status_changes: tokio::sync::broadcast::channel(STATUS_ANNOUNCEMENTS).0,
            path,
        })
    }

    /// Refuses (permanently, as Cosmos DB does past its item limit) a write
    /// that would leave a context or status larger than `bytes` of JSON.
    pub fn with_item_limit(mut self, bytes: usize) -> Self {
        self.item_limit = bytes;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A database error as a transient [`StoreError`] naming what was done.
fn failed(what: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::new(SERVICE, format!("{what}: {error}"))
}
