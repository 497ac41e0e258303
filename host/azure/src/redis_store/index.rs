//! The run index: every run whose progress record a store created, in one
//! sorted set per deployment ([`run_index_key`]: the Cosmos DB database and
//! status container its runs' statuses live in), scored by the run's start
//! time (Unix milliseconds). It is what `serve`'s run list pages through,
//! newest first.
//! The create script enters a run in the same step that creates its record,
//! so a run started here, by a parent run or adopted from a TypeScript
//! client's message is listed from its first job.
//!
//! A listed run's state and blueprint come from its progress record. An
//! entry whose record is gone (it expired after the run ended) names no run
//! any more: a listing that meets one removes it.
//!
//! Filters are applied to the records, so a page looks at up to
//! [`SCAN_LIMIT`] entries: a page of a rare status may come back short, with
//! a cursor to go on from.

use flowcraft_core::directory::{ListError, RunCursor, RunQuery};
use flowcraft_core::progress::RunState;

use flowcraft_core::store::StoreError;

use super::{RedisCoordination, progress_key};
use crate::retry::RetryPolicy;

/// The key of the run index of the deployment whose run statuses are in
/// `container` of `database`.
pub fn run_index_key(database: &str, container: &str) -> String {
    format!("flowcraft:runs:{database}/{container}")
}

/// How many index entries one page reads at most.
const SCAN_LIMIT: usize = 1_000;

/// How many entries are read per round trip.
const CHUNK: usize = 100;

/// A run as the index and its record know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRun {
    pub run_id: String,
    pub blueprint_id: String,
    pub status: RunState,
    /// Unix milliseconds.
    pub started_at: i64,
}

/// A page of the index, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIndexPage {
    pub runs: Vec<IndexedRun>,
    /// Where the next page starts; `None` after the last entry.
    pub next: Option<RunCursor>,
}

impl RedisCoordination {
    /// A page of `query`'s runs (see the module docs).
    pub async fn list_runs(&self, query: &RunQuery) -> Result<RunIndexPage, ListError> {
        let mut after = query.cursor.as_deref().map(RunCursor::parse).transpose()?;
        // One run more than asked for says whether there is a next page.
        let wanted = query.limit.saturating_add(1);
        let mut runs = Vec::new();
        let mut scanned = 0;
        while runs.len() < wanted && scanned < SCAN_LIMIT {
            let entries = self.index_chunk(after.as_ref()).await?;
            let exhausted = entries.len() < CHUNK;
            let mut gone = Vec::new();
            for (run_id, started_at, record) in entries {
                scanned += 1;
                after = Some(RunCursor {
                    started_at,
                    run_id: run_id.clone(),
                });
                let Some(record) = record else {
                    gone.push(run_id);
                    continue;
                };
                let progress = self.decode(&run_id, &record)?;
                if query.status.is_none_or(|status| status == progress.state)
                    && query
                        .blueprint_id
                        .as_ref()
                        .is_none_or(|id| *id == progress.blueprint_id)
                {
                    runs.push(IndexedRun {
                        run_id,
                        blueprint_id: progress.blueprint_id,
                        status: progress.state,
                        started_at,
                    });
                    if runs.len() == wanted {
                        break;
                    }
                }
            }
            self.forget_runs(gone).await?;
            if exhausted && runs.len() < wanted {
                return Ok(RunIndexPage { runs, next: None });
            }
        }
        let next = if runs.len() == wanted {
            runs.pop();
            runs.last().map(|run| RunCursor {
                started_at: run.started_at,
                run_id: run.run_id.clone(),
            })
        } else {
            // The scan limit: go on from the last entry looked at.
            after
        };
        Ok(RunIndexPage { runs, next })
    }

    /// Up to [`CHUNK`] entries after `after`, with their records (`None`
    /// when gone): one round trip for the entries, one for the records.
    async fn index_chunk(
        &self,
        after: Option<&RunCursor>,
    ) -> Result<Vec<(String, i64, Option<String>)>, StoreError> {
        let max = after.map_or_else(|| "+inf".to_owned(), |cursor| cursor.started_at.to_string());
        // Entries tied with the cursor's start time are read again, then
        // skipped; ties beyond a whole chunk are read from an offset.
        let mut offset = 0;
        let entries = loop {
            let (chunk,): (Vec<(String, f64)>,) = self
                .read_index("list runs", |pipeline| {
                    pipeline
                        .cmd("ZREVRANGEBYSCORE")
                        .arg(&self.inner.options.run_index)
                        .arg(&max)
                        .arg("-inf")
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(offset)
                        .arg(CHUNK);
                })
                .await?;
            let full = chunk.len() == CHUNK;
            let entries: Vec<(String, i64)> = chunk
                .into_iter()
                .map(|(run_id, score)| (run_id, score as i64))
                .filter(|(run_id, at)| after.is_none_or(|cursor| cursor.admits(*at, run_id)))
                .collect();
            if !entries.is_empty() || !full {
                break entries;
            }
            offset += CHUNK;
        };
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<Option<String>> = self
            .read_index("read listed runs", |pipeline| {
                for (run_id, _) in &entries {
                    pipeline.cmd("HGET").arg(progress_key(run_id)).arg("r");
                }
            })
            .await?;
        Ok(entries
            .into_iter()
            .zip(records)
            .map(|((run_id, at), record)| (run_id, at, record))
            .collect())
    }

    /// Removes the entries of runs whose records are gone.
    async fn forget_runs(&self, gone: Vec<String>) -> Result<(), StoreError> {
        if gone.is_empty() {
            return Ok(());
        }
        self.read_index("drop ended runs from the index", |pipeline| {
            pipeline
                .cmd("ZREM")
                .arg(&self.inner.options.run_index)
                .arg(&gone);
        })
        .await
        .map(|_: (i64,)| ())
    }

    /// Sends the commands `build` adds to a pipeline (safe to repeat) and
    /// answers their replies.
    async fn read_index<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        build: impl Fn(&mut redis::Pipeline),
    ) -> Result<T, StoreError> {
        self.retrying(RetryPolicy::DEFAULT, operation, |mut conn| {
            let mut pipeline = redis::pipe();
            build(&mut pipeline);
            async move {
                let reply = pipeline.query_async(&mut conn.connection).await;
                (conn, reply)
            }
        })
        .await
        .map_err(|err| self.error(operation, None, &err))
    }
}
