//! What operators and the API ask of a deployment beyond the engine's
//! stores: the runs it holds (newest first, filtered, a page at a time),
//! word of a run's status changing (for long polls), whether its services
//! answer, and the messages it gave up on.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::progress::RunState;
use crate::store::StoreError;

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub status: Option<RunState>,
    pub blueprint_id: Option<String>,
    /// At most this many runs (the caller bounds it).
    pub limit: usize,
    /// Where the previous page ended ([`RunPage::next`]).
    pub cursor: Option<String>,
}

/// One run in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run_id: String,
    pub blueprint_id: String,
    pub status: RunState,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Unix seconds of the last status change.
    pub last_updated: i64,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    /// The cursor of the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Where a page of runs ended: the start time and id of its last run.
/// Pages are ordered newest first, ties by run id, descending; the text
/// form is `<startedAt>:<runId>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    pub started_at: i64,
    pub run_id: String,
}

impl RunCursor {
    /// The cursor of the page that ends with `run`.
    pub fn after(run: &RunSummary) -> Self {
        Self {
            started_at: run.started_at,
            run_id: run.run_id.clone(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, ListError> {
        text.split_once(':')
            .and_then(|(at, run)| {
                Some(Self {
                    started_at: at.parse().ok()?,
                    run_id: run.to_owned(),
                })
            })
            .ok_or_else(|| ListError::BadCursor(text.to_owned()))
    }

    /// Whether the run started at `started_at` with id `run_id` belongs to a
    /// page after this cursor.
    pub fn admits(&self, started_at: i64, run_id: &str) -> bool {
        (started_at, run_id) < (self.started_at, self.run_id.as_str())
    }
}

impl std::fmt::Display for RunCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.started_at, self.run_id)
    }
}

/// Why a list query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("the cursor '{0}' is not one this server gave out; start again without a cursor")]
    BadCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A message the workers gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    pub id: String,
    /// The message's text (the jobs it stood for).
    pub body: String,
    pub reason: String,
    /// Unix milliseconds, when known.
    pub at: Option<i64>,
}

/// A subscription to one run's status changes.
pub trait StatusWatch: Send {
    /// Resolves when the run's status may have changed, or after `within`
    /// (announcements are hints: the caller reads the status again).
    fn changed(&mut self, within: Duration) -> impl Future<Output = ()> + Send;
}

/// The runs of a deployment, as operators see them.
pub trait RunDirectory: Send + Sync + 'static {
    fn list_runs(
        &self,
        query: &RunQuery,
    ) -> impl Future<Output = Result<RunPage, ListError>> + Send;

    /// Announcements of status changes.
    type Watch: StatusWatch;

    /// Subscribes to `run_id`'s status changes. A caller subscribes before
    /// it reads the status it waits on, so that no change falls between.
    fn watch_status(&self, run_id: &str) -> impl Future<Output = Self::Watch> + Send;

    /// Whether every service answers; the error names the one that does not.
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The messages given up on, oldest first.
    fn dead_letters(&self) -> impl Future<Output = Result<Vec<DeadLetterView>, StoreError>> + Send;

    /// Moves dead letters back to the job queue: those with `ids`, or all.
    /// Answers the ids moved.
    fn replay_dead_letters(
        &self,
        ids: Option<Vec<String>>,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}
