//! The operator's view of the database ([`RunDirectory`]): runs newest
//! first, status announcements within this process, dead letters.

use std::time::Duration;

use flowcraft_core::directory::{
    DeadLetterView, ListError, RunCursor, RunDirectory, RunPage, RunQuery, RunSummary, StatusWatch,
};
use flowcraft_core::store::StoreError;
use rusqlite::{Connection, params};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::stores::parse_state;
use crate::{SqliteBackend, failed};

/// A subscription to the status changes written through this backend.
pub struct SqliteWatch {
    run_id: String,
    changes: broadcast::Receiver<String>,
}

impl StatusWatch for SqliteWatch {
    async fn changed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.changes.recv()).await {
                Ok(Ok(run_id)) if run_id != self.run_id => continue,
                // This run, a missed announcement (lagged) or the deadline.
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => return,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            }
        }
    }
}

/// Up to `limit + 1` runs of `query`, newest first.
fn select_runs(
    connection: &Connection,
    query: &RunQuery,
    after: Option<&RunCursor>,
) -> Result<Vec<RunSummary>, StoreError> {
    let read = failed("list runs");
    let mut statement = connection
        .prepare_cached(
            "SELECT p.run_id, p.blueprint_id, p.created_at, s.status, s.last_updated
             FROM progress p JOIN statuses s ON s.run_id = p.run_id
             WHERE (?1 IS NULL OR s.status = ?1) AND (?2 IS NULL OR p.blueprint_id = ?2)
               AND (?3 IS NULL OR (p.created_at, p.run_id) < (?3, ?4))
             ORDER BY p.created_at DESC, p.run_id DESC LIMIT ?5",
        )
        .map_err(&read)?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX - 1) + 1;
    let rows = statement
        .query_map(
            params![
                query.status.map(|state| state.as_str()),
                query.blueprint_id,
                after.map(|cursor| cursor.started_at),
                after.map(|cursor| cursor.run_id.as_str()),
                limit
            ],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            },
        )
        .map_err(&read)?;
    let mut runs = Vec::new();
    for row in rows {
        let (run_id, blueprint_id, started_at, status, last_updated) = row.map_err(&read)?;
        let status = parse_state(&status).map_err(|problem| {
            StoreError::new(crate::SERVICE, format!("run '{run_id}': {problem}"))
        })?;
        runs.push(RunSummary {
            run_id,
            blueprint_id,
            status,
            started_at,
            last_updated,
        });
    }
    Ok(runs)
}

impl RunDirectory for SqliteBackend {
    type Watch = SqliteWatch;

    async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, ListError> {
        let after = query.cursor.as_deref().map(RunCursor::parse).transpose()?;
        let query = query.clone();
        let limit = query.limit;
        let mut runs = self
            .database
            .read("list runs", move |connection| {
                select_runs(connection, &query, after.as_ref())
            })
            .await?;
        let next_cursor = if runs.len() > limit {
            runs.truncate(limit);
            runs.last().map(|run| RunCursor::after(run).to_string())
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    async fn watch_status(&self, run_id: &str) -> SqliteWatch {
        SqliteWatch {
            run_id: run_id.to_owned(),
            changes: self.status_changes.subscribe(),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.database
            .read("check", |connection| {
                connection
                    .query_row("SELECT count(*) FROM jobs", [], |row| row.get::<_, i64>(0))
                    .map_err(failed("read the database"))
            })
            .await
            .map(|_| ())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetterView>, StoreError> {
        Ok(SqliteBackend::dead_letters(self)
            .await?
            .into_iter()
            .map(|letter| DeadLetterView {
                id: letter.id.to_string(),
                body: letter.body,
                reason: letter.reason,
                at: Some(letter.at),
            })
            .collect())
    }

    async fn replay_dead_letters(
        &self,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<String>, StoreError> {
        // An id that is not a number names no dead letter here.
        let ids = ids.map(|ids| ids.iter().filter_map(|id| id.parse().ok()).collect());
        Ok(SqliteBackend::replay_dead_letters(self, ids)
            .await?
            .into_iter()
            .map(|id| id.to_string())
            .collect())
    }
}
