//! The engine's stores over the database: contexts key by key, status
//! documents, progress records by compare-and-set, a job's settlement (its
//! context writes and the record's compare-and-set in one transaction), and
//! the job queue's sending side.

use std::sync::Arc;
use std::time::Duration;

use flowcraft_core::context::{ContextChange, ContextMap, ContextValue};
use flowcraft_core::progress::{RunProgress, RunState};
use flowcraft_core::store::{
    Backend, ContextStore, CoordinationStore, Job, JobQueue, RunStatusRecord, SettleError,
    StatusStore, StoreError, StoredContext,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::queue::encode_jobs;
use crate::{SERVICE, SqliteBackend, failed, millis, unix_ms};

/// Compare-and-set attempts of one progress update before it gives up.
const MAX_UPDATE_ATTEMPTS: u32 = 64;

/// The bytes one entry adds to a context's JSON: `"key":value,` (as the
/// in-memory store counts them).
fn entry_size(key: &str, value_json: &str) -> i64 {
    i64::try_from(key.len() + value_json.len() + 4).unwrap_or(i64::MAX)
}

/// A permanent refusal of a document of `size` bytes over `limit`.
fn too_large(what: &str, size: i64, limit: usize) -> StoreError {
    StoreError::refused(
        SERVICE,
        format!(
            "the {what} would be {size} bytes, more than the limit of {limit} bytes; keep large data outside the run context"
        ),
    )
}

impl JobQueue for SqliteBackend {
    async fn enqueue(&self, job: Job, delay: Duration) -> Result<(), StoreError> {
        let body = encode_jobs(std::slice::from_ref(&job), None);
        let visible_at = unix_ms().saturating_add(millis(delay));
        self.database
            .write("enqueue", move |connection| {
                connection
                    .execute(
                        "INSERT INTO jobs (body, visible_at) VALUES (?1, ?2)",
                        params![body, visible_at],
                    )
                    .map_err(failed("send a job"))?;
                Ok(())
            })
            .await?;
        self.work.notify_one();
        Ok(())
    }
}

impl ContextStore for SqliteBackend {
    async fn create_context(&self, run_id: &str, initial: ContextMap) -> Result<(), StoreError> {
        let run = run_id.to_owned();
        let limit = self.item_limit;
        let entries: Vec<(String, String)> = initial
            .iter()
            .map(|(key, value)| (key.clone(), value.json().to_owned()))
            .collect();
        self.database
            .write("create context", move |connection| {
                let size = 2 + entries
                    .iter()
                    .map(|(key, value)| entry_size(key, value))
                    .sum::<i64>();
                if usize::try_from(size).unwrap_or(usize::MAX) > limit {
                    return Err(too_large(&format!("context of run '{run}'"), size, limit));
                }
                let created = connection
                    .execute(
                        "INSERT OR IGNORE INTO context_sizes (run_id, bytes) VALUES (?1, ?2)",
                        params![run, size],
                    )
                    .map_err(failed("create a context"))?;
                if created == 0 {
                    return Err(StoreError::new(
                        SERVICE,
                        format!("context of run '{run}' exists"),
                    ));
                }
                let mut insert = connection
                    .prepare_cached("INSERT INTO contexts (run_id, key, value) VALUES (?1, ?2, ?3)")
                    .map_err(failed("create a context"))?;
                for (key, value) in &entries {
                    insert
                        .execute(params![run, key, value])
                        .map_err(failed("create a context"))?;
                }
                Ok(())
            })
            .await
    }

    async fn load_context(&self, run_id: &str) -> Result<Option<StoredContext>, StoreError> {
        let run = run_id.to_owned();
        self.database
            .read("load context", move |connection| {
                read_context(connection, &run)
            })
            .await
    }

    async fn apply_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), StoreError> {
        let run = run_id.to_owned();
        let limit = self.item_limit;
        let changes = changes.to_vec();
        self.database
            .write("apply changes", move |connection| {
                write_changes(connection, &run, &changes, limit)
            })
            .await
    }
}

/// A run's context, in the order its keys were first written.
fn read_context(connection: &Connection, run: &str) -> Result<Option<StoredContext>, StoreError> {
    let read = failed("read a context");
    let exists = connection
        .prepare_cached("SELECT 1 FROM context_sizes WHERE run_id = ?1")
        .and_then(|mut statement| statement.exists([run]))
        .map_err(&read)?;
    if !exists {
        return Ok(None);
    }
    let mut statement = connection
        .prepare_cached("SELECT key, value FROM contexts WHERE run_id = ?1 ORDER BY rowid")
        .map_err(&read)?;
    let rows = statement
        .query_map([run], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(&read)?;
    let mut values = ContextMap::new();
    for row in rows {
        let (key, json) = row.map_err(&read)?;
        let value = ContextValue::parse(json).map_err(|error| {
            StoreError::new(
                SERVICE,
                format!("context key '{key}' of run '{run}' is not JSON ({error}); the database was changed by hand"),
            )
        })?;
        values.insert(key, value);
    }
    Ok(Some(StoredContext {
        values: Arc::new(values),
    }))
}

/// Applies `changes` to a run's context (creating it if missing) and keeps
/// its size; refuses the whole write if the context would grow past `limit`.
fn write_changes(
    connection: &Connection,
    run: &str,
    changes: &[ContextChange],
    limit: usize,
) -> Result<(), StoreError> {
    let write = failed("write a context");
    let mut size: i64 = connection
        .prepare_cached("SELECT bytes FROM context_sizes WHERE run_id = ?1")
        .and_then(|mut statement| statement.query_row([run], |row| row.get(0)).optional())
        .map_err(&write)?
        .unwrap_or(2);
    let mut old_size = connection
        .prepare_cached("SELECT key, value FROM contexts WHERE run_id = ?1 AND key = ?2")
        .map_err(&write)?;
    let mut upsert = connection
        .prepare_cached(
            "INSERT INTO contexts (run_id, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
        )
        .map_err(&write)?;
    let mut delete = connection
        .prepare_cached("DELETE FROM contexts WHERE run_id = ?1 AND key = ?2")
        .map_err(&write)?;
    for change in changes {
        let key = change.key();
        let old: Option<(String, String)> = old_size
            .query_row(params![run, key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .map_err(&write)?;
        if let Some((old_key, old_value)) = old {
            size -= entry_size(&old_key, &old_value);
        }
        match change {
            ContextChange::Set { key, value } => {
                size += entry_size(key, value.json());
                upsert
                    .execute(params![run, key, value.json()])
                    .map_err(&write)?;
            }
            ContextChange::Delete { key } => {
                delete.execute(params![run, key]).map_err(&write)?;
            }
        }
    }
    if usize::try_from(size).unwrap_or(usize::MAX) > limit {
        return Err(too_large(&format!("context of run '{run}'"), size, limit));
    }
    connection
        .prepare_cached(
            "INSERT INTO context_sizes (run_id, bytes) VALUES (?1, ?2)
             ON CONFLICT (run_id) DO UPDATE SET bytes = excluded.bytes",
        )
        .and_then(|mut statement| statement.execute(params![run, size]))
        .map_err(&write)?;
    Ok(())
}

impl StatusStore for SqliteBackend {
    async fn write_status(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<Value>,
    ) -> Result<bool, StoreError> {
        let run = run_id.to_owned();
        let final_json = final_status.map(|value| value.to_string());
        let size = 64 + final_json.as_ref().map_or(0, String::len);
        if size > self.item_limit {
            let size = i64::try_from(size).unwrap_or(i64::MAX);
            return Err(too_large(
                &format!("status of run '{run}'"),
                size,
                self.item_limit,
            ));
        }
        let written = self
            .database
            .write("write status", move |connection| {
                let write = failed("write a status");
                let current: Option<String> = connection
                    .prepare_cached("SELECT status FROM statuses WHERE run_id = ?1")
                    .and_then(|mut statement| {
                        statement.query_row([&run], |row| row.get(0)).optional()
                    })
                    .map_err(&write)?;
                if current.is_some_and(|state| parse_state(&state).is_ok_and(RunState::is_terminal))
                {
                    return Ok(false);
                }
                connection
                    .prepare_cached(
                        "INSERT INTO statuses (run_id, status, last_updated, final_status)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,
                           last_updated = excluded.last_updated, final_status = excluded.final_status",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![run, status.as_str(), unix_ms() / 1000, final_json])
                    })
                    .map_err(&write)?;
                Ok(true)
            })
            .await?;
        if written {
            let _ = self.status_changes.send(run_id.to_owned());
        }
        Ok(written)
    }

    async fn read_status(&self, run_id: &str) -> Result<Option<RunStatusRecord>, StoreError> {
        let run = run_id.to_owned();
        self.database
            .read("read status", move |connection| {
                read_status(connection, &run)
            })
            .await
    }

    async fn touch(&self, run_id: &str) -> Result<(), StoreError> {
        let run = run_id.to_owned();
        self.database
            .write("touch", move |connection| {
                connection
                    .prepare_cached("UPDATE statuses SET last_updated = ?2 WHERE run_id = ?1")
                    .and_then(|mut statement| statement.execute(params![run, unix_ms() / 1000]))
                    .map_err(failed("touch a status"))?;
                Ok(())
            })
            .await
    }

    async fn reopen_failed(&self, run_id: &str) -> Result<bool, StoreError> {
        let run = run_id.to_owned();
        let reopened = self
            .database
            .write("reopen failed", move |connection| {
                let reopened = connection
                    .execute(
                        "UPDATE statuses SET status = 'running', last_updated = ?2, final_status = NULL
                         WHERE run_id = ?1 AND status = 'failed'",
                        params![run, unix_ms() / 1000],
                    )
                    .map_err(failed("reopen a status"))?;
                Ok(reopened == 1)
            })
            .await?;
        if reopened {
            let _ = self.status_changes.send(run_id.to_owned());
        }
        Ok(reopened)
    }
}

/// A run's status document.
fn read_status(connection: &Connection, run: &str) -> Result<Option<RunStatusRecord>, StoreError> {
    let row: Option<(String, i64, Option<String>)> = connection
        .prepare_cached("SELECT status, last_updated, final_status FROM statuses WHERE run_id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([run], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()
        })
        .map_err(failed("read a status"))?;
    let Some((state, last_updated, final_json)) = row else {
        return Ok(None);
    };
    let corrupt = |what: String| {
        StoreError::new(
            SERVICE,
            format!(
                "the status of run '{run}' is unreadable ({what}); the database was changed by hand"
            ),
        )
    };
    let status = parse_state(&state).map_err(corrupt)?;
    let final_status = final_json
        .map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|error| corrupt(format!("finalStatus: {error}")))?;
    Ok(Some(RunStatusRecord {
        status,
        last_updated,
        final_status,
    }))
}

/// A run state from its name.
pub(crate) fn parse_state(name: &str) -> Result<RunState, String> {
    serde_json::from_value(Value::String(name.to_owned()))
        .map_err(|_| format!("unknown status '{name}'"))
}

impl CoordinationStore for SqliteBackend {
    async fn create_progress(&self, progress: &RunProgress) -> Result<bool, StoreError> {
        let run = progress.run_id.clone();
        let blueprint = progress.blueprint_id.clone();
        let record = encode_progress(progress)?;
        self.database
            .write("create progress", move |connection| {
                let created = connection
                    .execute(
                        "INSERT OR IGNORE INTO progress (run_id, blueprint_id, created_at, version, record)
                         VALUES (?1, ?2, ?3, 1, ?4)",
                        params![run, blueprint, unix_ms(), record],
                    )
                    .map_err(failed("create a progress record"))?;
                Ok(created == 1)
            })
            .await
    }

    async fn load_progress(&self, run_id: &str) -> Result<Option<RunProgress>, StoreError> {
        Ok(self
            .versioned_progress(run_id)
            .await?
            .map(|(_, record)| record))
    }

    async fn read_progress<T, F>(&self, run_id: &str, read: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        Ok(self.load_progress(run_id).await?.as_ref().map(read))
    }

    /// [`Backend::settle`] without context changes.
    async fn update_progress<T, F>(&self, run_id: &str, change: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        self.settle(run_id, &[], change)
            .await
            .map_err(|(SettleError::Context(error) | SettleError::Progress(error))| error)
    }
}

/// A settlement's context write and compare-and-set, when the record
/// changed meanwhile: the transaction is rolled back and tried again.
enum SettleWrite {
    Failed(SettleError),
    Conflict,
}

impl From<StoreError> for SettleWrite {
    fn from(error: StoreError) -> Self {
        Self::Failed(SettleError::Progress(error))
    }
}

impl Backend for SqliteBackend {
    /// The context write and the record's compare-and-set in one
    /// transaction: a job's effects and what it schedules are committed
    /// together, with one commit. Updates of one run in this process take
    /// turns; the version check guards against other processes sharing the
    /// database.
    async fn settle<T, F>(
        &self,
        run_id: &str,
        changes: &[ContextChange],
        mut change: F,
    ) -> Result<Option<T>, SettleError>
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        let _turn = self.progress_turn(run_id).await;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some((version, mut record)) = self
                .versioned_progress(run_id)
                .await
                .map_err(SettleError::Progress)?
            else {
                return Ok(None);
            };
            let before = record.clone();
            let answer = change(&mut record);
            let encoded = (record != before)
                .then(|| encode_progress(&record))
                .transpose()
                .map_err(SettleError::Progress)?;
            if encoded.is_none() && changes.is_empty() {
                return Ok(Some(answer));
            }
            let (run, limit, changes) = (run_id.to_owned(), self.item_limit, changes.to_vec());
            let written = self
                .database
                .write("settle", move |connection| {
                    if !changes.is_empty() {
                        write_changes(connection, &run, &changes, limit)
                            .map_err(|error| SettleWrite::Failed(SettleError::Context(error)))?;
                    }
                    match encoded {
                        Some(encoded) if !compare_and_set(connection, &run, version, &encoded)? => {
                            Err(SettleWrite::Conflict)
                        }
                        _ => Ok(()),
                    }
                })
                .await;
            match written {
                Ok(()) => return Ok(Some(answer)),
                Err(SettleWrite::Conflict) => {}
                Err(SettleWrite::Failed(error)) => return Err(error),
            }
        }
        Err(SettleError::Progress(StoreError::new(
            SERVICE,
            format!(
                "run {run_id} is contended: its progress record changed under {MAX_UPDATE_ATTEMPTS} updates in a row"
            ),
        )))
    }
}

/// Writes `encoded` as `run`'s record if its version is still `version`.
fn compare_and_set(
    connection: &Connection,
    run: &str,
    version: i64,
    encoded: &str,
) -> Result<bool, StoreError> {
    let written = connection
        .prepare_cached(
            "UPDATE progress SET record = ?3, version = version + 1
             WHERE run_id = ?1 AND version = ?2",
        )
        .and_then(|mut statement| statement.execute(params![run, version, encoded]))
        .map_err(failed("write a progress record"))?;
    Ok(written == 1)
}

impl SqliteBackend {
    /// Waits for the turn of this process to update `run_id`'s progress.
    async fn progress_turn(&self, run_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(run_id, &mut hasher);
        let stripes = self.progress_turns.len();
        let stripe =
            usize::try_from(std::hash::Hasher::finish(&hasher) % stripes as u64).unwrap_or(0);
        self.progress_turns[stripe].lock().await
    }

    /// A run's progress record with its version.
    async fn versioned_progress(
        &self,
        run_id: &str,
    ) -> Result<Option<(i64, RunProgress)>, StoreError> {
        let run = run_id.to_owned();
        let row: Option<(i64, String)> = self
            .database
            .read("read progress", move |connection| {
                connection
                    .prepare_cached("SELECT version, record FROM progress WHERE run_id = ?1")
                    .and_then(|mut statement| {
                        statement
                            .query_row([&run], |row| Ok((row.get(0)?, row.get(1)?)))
                            .optional()
                    })
                    .map_err(failed("read a progress record"))
            })
            .await?;
        row.map(|(version, json)| {
            serde_json::from_str(&json)
                .map(|record| (version, record))
                .map_err(|error| {
                    StoreError::new(
                        SERVICE,
                        format!("the progress record of run '{run_id}' is unreadable ({error}); the database was changed by hand"),
                    )
                })
        })
        .transpose()
    }
}

fn encode_progress(record: &RunProgress) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|error| {
        StoreError::refused(
            SERVICE,
            format!(
                "the progress record of run '{}' cannot be written as JSON: {error}",
                record.run_id
            ),
        )
    })
}
