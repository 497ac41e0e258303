//! The worker's leased queue over the `jobs` table, dead letters, and the
//! rest of [`WorkerBackend`]: stalled runs and waiting for work.
//!
//! A message's body is `{"jobs":[…],"lease":…}`: one job as the engine
//! sent it, or a group a worker rewrote its message into. Every receive,
//! renewal and rewrite changes the message's receipt, and each of them, like
//! a delete, applies only with the current receipt: a worker whose lease ran
//! out (the message went to another) is told so instead of acting on it.

use std::time::Duration;

use flowcraft_core::store::{Job, StoreError};
use flowcraft_worker::{Delivery, Group, LeaseQueue, WorkerBackend};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::{SERVICE, SqliteBackend, failed, millis, unix_ms};

/// A message's body.
#[derive(Serialize, Deserialize)]
struct Body {
    jobs: Vec<Job>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
}

/// The body of a message standing for `jobs`.
pub(crate) fn encode_jobs(jobs: &[Job], lease: Option<&str>) -> String {
    #[derive(Serialize)]
    struct BodyRef<'a> {
        jobs: &'a [Job],
        #[serde(skip_serializing_if = "Option::is_none")]
        lease: Option<&'a str>,
    }
    serde_json::to_string(&BodyRef { jobs, lease }).unwrap_or_else(|_| String::from("{}"))
}

/// A received message: its jobs' text and the receipt of this delivery.
#[derive(Debug, Clone)]
pub struct SqliteMessage {
    id: i64,
    id_text: String,
    receipt: i64,
    dequeue_count: u32,
    body: String,
}

impl Delivery for SqliteMessage {
    fn id(&self) -> &str {
        &self.id_text
    }

    fn dequeue_count(&self) -> u32 {
        self.dequeue_count
    }
}

/// A message given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    /// The message's body (a group without its lease).
    pub body: String,
    pub reason: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// The error of an operation on a message whose receipt is no longer current.
fn lease_lost(id: i64, what: &str) -> StoreError {
    StoreError::new(
        SERVICE,
        format!(
            "cannot {what} message {id}: it was received again (its lease ran out) or is gone; its jobs run again there"
        ),
    )
}

impl SqliteBackend {
    /// Leases a received message again until `until` (with its current
    /// receipt), with `body` as its new text if given; answers the new
    /// receipt.
    async fn lease_again(
        &self,
        message: &SqliteMessage,
        body: Option<String>,
        until: i64,
        what: &'static str,
    ) -> Result<i64, StoreError> {
        let (id, receipt) = (message.id, message.receipt);
        self.database
            .write("lease again", move |connection| {
                let changed = connection
                    .prepare_cached(
                        "UPDATE jobs SET body = coalesce(?3, body), visible_at = ?4, receipt = receipt + 1
                         WHERE id = ?1 AND receipt = ?2",
                    )
                    .and_then(|mut statement| statement.execute(params![id, receipt, body, until]))
                    .map_err(failed(what))?;
                if changed == 0 {
                    return Err(lease_lost(id, what));
                }
                Ok(receipt + 1)
            })
            .await
    }

    /// Every dead-lettered message, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.database
            .read("list dead letters", |connection| {
                let read = failed("read the dead letters");
                let mut statement = connection
                    .prepare_cached("SELECT id, body, reason, at FROM dead_letters ORDER BY id")
                    .map_err(&read)?;
                let rows = statement
                    .query_map([], |row| {
                        Ok(DeadLetter {
                            id: row.get(0)?,
                            body: row.get(1)?,
                            reason: row.get(2)?,
                            at: row.get(3)?,
                        })
                    })
                    .map_err(&read)?;
                rows.collect::<Result<_, _>>().map_err(&read)
            })
            .await
    }

    /// Moves dead letters back to the job queue, visible at once: those with
    /// the given ids, or all of them. Answers the ids moved.
    pub async fn replay_dead_letters(&self, ids: Option<Vec<i64>>) -> Result<Vec<i64>, StoreError> {
        let moved = self
            .database
            .write("replay dead letters", move |connection| {
                replay(connection, ids.as_deref())
            })
            .await?;
        if !moved.is_empty() {
            self.work.notify_one();
        }
        Ok(moved)
    }

    async fn add_dead_letter(&self, body: String, reason: &str) -> Result<(), StoreError> {
        let reason = reason.to_owned();
        self.database
            .write("add dead letter", move |connection| {
                connection
                    .execute(
                        "INSERT INTO dead_letters (body, reason, at) VALUES (?1, ?2, ?3)",
                        params![body, reason, unix_ms()],
                    )
                    .map_err(failed("dead-letter a message"))?;
                Ok(())
            })
            .await
    }
}

/// Moves the dead letters `ids` (all if `None`) to the job queue.
fn replay(connection: &Connection, ids: Option<&[i64]>) -> Result<Vec<i64>, StoreError> {
    let write = failed("replay dead letters");
    let chosen: Vec<i64> = match ids {
        Some(ids) => ids.to_vec(),
        None => {
            let mut statement = connection
                .prepare_cached("SELECT id FROM dead_letters ORDER BY id")
                .map_err(&write)?;
            let rows = statement.query_map([], |row| row.get(0)).map_err(&write)?;
            rows.collect::<Result<_, _>>().map_err(&write)?
        }
    };
    let now = unix_ms();
    let mut moved = Vec::new();
    for id in chosen {
        let copied = connection
            .prepare_cached(
                "INSERT INTO jobs (body, visible_at) SELECT body, ?2 FROM dead_letters WHERE id = ?1",
            )
            .and_then(|mut statement| statement.execute(params![id, now]))
            .map_err(&write)?;
        if copied == 1 {
            connection
                .prepare_cached("DELETE FROM dead_letters WHERE id = ?1")
                .and_then(|mut statement| statement.execute([id]))
                .map_err(&write)?;
            moved.push(id);
        }
    }
    Ok(moved)
}

/// Takes up to `max` due messages, each invisible until `until`.
fn take_due(
    connection: &Connection,
    max: u32,
    until: i64,
) -> Result<Vec<SqliteMessage>, StoreError> {
    let receive = failed("receive messages");
    let now = unix_ms();
    let mut due = connection
        .prepare_cached(
            "SELECT id, body, dequeue_count, receipt FROM jobs
             WHERE visible_at <= ?1 ORDER BY visible_at, id LIMIT ?2",
        )
        .map_err(&receive)?;
    let rows = due
        .query_map(params![now, max], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u32>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .map_err(&receive)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(&receive)?;
    let mut lease = connection
        .prepare_cached(
            "UPDATE jobs SET visible_at = ?2, dequeue_count = dequeue_count + 1, receipt = receipt + 1
             WHERE id = ?1",
        )
        .map_err(&receive)?;
    let mut messages = Vec::with_capacity(rows.len());
    for (id, body, dequeue_count, receipt) in rows {
        lease.execute(params![id, until]).map_err(&receive)?;
        messages.push(SqliteMessage {
            id,
            id_text: id.to_string(),
            receipt: receipt + 1,
            dequeue_count: dequeue_count + 1,
            body,
        });
    }
    Ok(messages)
}

impl LeaseQueue for SqliteBackend {
    type Message = SqliteMessage;

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<SqliteMessage>, StoreError> {
        let until = unix_ms().saturating_add(millis(visibility));
        self.database
            .write("receive", move |connection| {
                take_due(connection, max, until)
            })
            .await
    }

    fn group(&self, message: &SqliteMessage) -> Result<Group, String> {
        let body: Body = serde_json::from_str(&message.body)
            .map_err(|error| format!("the message is not a job group ({error})"))?;
        if body.jobs.is_empty() {
            return Err("the message stands for no job".to_owned());
        }
        Ok(Group {
            jobs: body.jobs,
            lease: body.lease,
        })
    }

    async fn delete(&self, message: &SqliteMessage) -> Result<(), StoreError> {
        let (id, receipt) = (message.id, message.receipt);
        self.database
            .write("delete message", move |connection| {
                let deleted = connection
                    .prepare_cached("DELETE FROM jobs WHERE id = ?1 AND receipt = ?2")
                    .and_then(|mut statement| statement.execute(params![id, receipt]))
                    .map_err(failed("delete a message"))?;
                if deleted == 0 {
                    return Err(lease_lost(id, "delete"));
                }
                Ok(())
            })
            .await
    }

    async fn hide(
        &self,
        message: &mut SqliteMessage,
        duration: Duration,
    ) -> Result<(), StoreError> {
        let until = unix_ms().saturating_add(millis(duration));
        message.receipt = self.lease_again(message, None, until, "renew").await?;
        self.work.notify_one();
        Ok(())
    }

    async fn rewrite(
        &self,
        message: &mut SqliteMessage,
        group: &Group,
        visibility: Duration,
    ) -> Result<(), StoreError> {
        let body = encode_jobs(&group.jobs, group.lease.as_deref());
        let until = unix_ms().saturating_add(millis(visibility));
        message.receipt = self
            .lease_again(message, Some(body.clone()), until, "rewrite")
            .await?;
        message.body = body;
        Ok(())
    }

    async fn dead_letter(&self, message: &SqliteMessage, reason: &str) -> Result<(), StoreError> {
        let body = match self.group(message) {
            Ok(group) => encode_jobs(&group.jobs, None),
            Err(_) => message.body.clone(),
        };
        self.add_dead_letter(body, reason).await
    }

    async fn dead_letter_job(&self, job: &Job, reason: &str) -> Result<(), StoreError> {
        self.add_dead_letter(encode_jobs(std::slice::from_ref(job), None), reason)
            .await
    }
}

impl WorkerBackend for SqliteBackend {
    type Queue = Self;

    fn lease_queue(&self) -> &Self {
        self
    }

    /// Runs `running` or `awaiting` whose status has not changed for
    /// `threshold`: an awaiting one may have lost its timer's wake-up job (its
    /// process died between pausing and sending it), which the reconciler
    /// sends again once the timer is due.
    async fn stalled_runs(&self, threshold: Duration) -> Result<Vec<String>, StoreError> {
        let before = (unix_ms() - millis(threshold)) / 1000;
        self.database
            .read("stalled runs", move |connection| {
                let read = failed("find stalled runs");
                let mut statement = connection
                    .prepare_cached(
                        "SELECT run_id FROM statuses
                         WHERE status IN ('running', 'awaiting') AND last_updated < ?1
                         ORDER BY last_updated, run_id",
                    )
                    .map_err(&read)?;
                let rows = statement
                    .query_map([before], |row| row.get(0))
                    .map_err(&read)?;
                rows.collect::<Result<_, _>>().map_err(&read)
            })
            .await
    }

    /// Waits for a job sent or returned through this backend, for the next
    /// delayed message's due time, or for `poll` (messages another process
    /// wrote), whichever comes first.
    async fn wait_for_work(&self, poll: Duration) {
        let next_due = self
            .database
            .read("next due", |connection| {
                connection
                    .query_row("SELECT min(visible_at) FROM jobs", [], |row| {
                        row.get::<_, Option<i64>>(0)
                    })
                    .map_err(failed("look for due messages"))
            })
            .await;
        let wait = match next_due {
            Ok(Some(at)) => {
                Duration::from_millis(u64::try_from(at - unix_ms()).unwrap_or(0)).min(poll)
            }
            _ => poll,
        };
        if wait.is_zero() {
            return;
        }
        tokio::select! {
            () = self.work.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
