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
