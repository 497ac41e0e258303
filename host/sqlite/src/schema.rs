//! The database's tables, created on first open. `PRAGMA user_version`
//! holds the schema version: a database of a newer flowcraft-host is
//! refused rather than misread.
//!
//! - `contexts`: one row per context key of a run (the value as JSON text),
//!   in insertion order (`rowid`), so a write touches only its keys;
//!   `context_sizes` keeps each context's JSON size for the item limit.
//! - `statuses`: the status document of each run.
//! - `progress`: each run's progress record (JSON) with a version for
//!   compare-and-set, plus its blueprint and start time for listing.
//! - `jobs`: the job queue; a message is visible from `visible_at` (Unix
//!   milliseconds) and `receipt` changes at each receive, renewal and
//!   rewrite, so only the current holder can act on it.
//! - `dead_letters`: messages given up on, with the reason.

use std::path::Path;

use rusqlite::Connection;

use crate::OpenError;

/// The schema this build writes.
const SCHEMA_VERSION: i64 = 1;

const CREATE: &str = "
CREATE TABLE contexts (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE context_sizes (
    run_id TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE statuses (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    last_updated INTEGER NOT NULL,
    final_status TEXT
) WITHOUT ROWID;
CREATE INDEX statuses_by_state ON statuses (status, last_updated);
CREATE TABLE progress (
    run_id TEXT PRIMARY KEY,
    blueprint_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX progress_by_start ON progress (created_at);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    dequeue_count INTEGER NOT NULL DEFAULT 0,
    receipt INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_due ON jobs (visible_at, id);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

/// Creates the tables of a new database; refuses one of a newer schema.
pub(crate) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let failed = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(failed)?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let transaction = connection.transaction().map_err(failed)?;
    transaction.execute_batch(CREATE).map_err(failed)?;
    transaction
        .pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(failed)?;
    transaction.commit().map_err(failed)
}
