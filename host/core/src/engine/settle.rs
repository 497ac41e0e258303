//! Settling: a transition of the run's progress record, applied atomically,
//! the jobs it schedules, and the run's status when it changes. Also the two
//! memory budgets of a worker: the bytes of context changes being written
//! and of final contexts being published at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::SemaphorePermit;
use tracing::{info, warn};

use super::{Engine, EngineError};
use crate::clock::unix_ms;
use crate::context::{ContextChange, ContextMap};
use crate::final_status::FinalOutcome;
use crate::plan::Plan;
use crate::progress::{Advance, Completion, RunProgress, RunState};
use crate::runner::NodeRunner;
use crate::store::{Backend, Job, JobSignal, SettleError, StoreError};
use crate::telemetry;

/// How many bytes of final-context JSON a worker publishes at once. A
/// completed run's status carries its final context twice (upstream's
/// `payload.context` and `serializedContext`), and a store client copies the
/// request a few times more. A run waiting for its share holds only its
/// context; its status is serialized once the share is granted. Unbounded,
/// a burst of large runs completing together holds most of a worker's
/// memory (see `bench/results/`). A larger context is published alone.
pub(super) const PUBLISHING_BUDGET: usize = 1 << 19;

/// How many bytes of context changes a worker writes at once. A store
/// client makes several copies of each write while it is in flight (the
/// Cosmos SDK: a parsed tree of every value, the request body, a tree parsed
/// back from the body to check it, transport copies); a change waiting for
/// its turn is held once, shared with the context it came from.
pub(super) const WRITING_BUDGET: usize = 1 << 19;

/// What a job knows of its run's context before its settlement writes its
/// changes: the settlement count it saw and the snapshot it read at that
/// count.
pub(super) struct KnownContext {
    pub seen: u64,
    pub snapshot: Arc<ContextMap>,
}

impl KnownContext {
    /// The context after `changes`, as long as no other job wrote meanwhile
    /// (the caller checks the settlement count). Copies the snapshot only if
    /// another job of the run still holds it.
    fn after_write(self, changes: Vec<ContextChange>) -> Arc<ContextMap> {
        let mut context = Arc::unwrap_or_clone(self.snapshot);
        for change in changes {
            change.apply(&mut context);
        }
        Arc::new(context)
    }
}

/// Why a settlement did not happen.
pub(super) enum Unsettled {
    /// The store refused or failed the job's context write; neither the
    /// context nor the record changed.
    Write(StoreError),
    Engine(EngineError),
}

impl From<EngineError> for Unsettled {
    fn from(error: EngineError) -> Self {
        Self::Engine(error)
    }
}

impl From<Unsettled> for EngineError {
    fn from(unsettled: Unsettled) -> Self {
        match unsettled {
            Unsettled::Write(error) => error.into(),
            Unsettled::Engine(error) => error,
        }
    }
}

/// Counts a run that reached terminal `state`, and exports its root span.
fn record_end(progress: &RunProgress, state: RunState) {
    let now = unix_ms();
    let started = progress.started_at();
    let elapsed = started.map(|start| Duration::from_millis(now.saturating_sub(start) as u64));
    telemetry::run_finished(&progress.blueprint_id, state, elapsed);
    if let Some(trace) = progress.trace {
        telemetry::run_ended(&telemetry::RunSpan {
            trace,
            caller: progress.parent.as_ref().and_then(|link| link.trace),
            run_id: &progress.run_id,
            blueprint_id: &progress.blueprint_id,
            status: state.as_str(),
            started_ms: started.unwrap_or(now),
            ended_ms: now,
        });
    }
}

/// The jobs for the nodes `advance` scheduled.
pub(super) fn jobs_for(plan: &Plan, run_id: &str, advance: &Advance) -> Vec<Job> {
    advance
        .schedule
        .iter()
        .map(|node| Job::new(run_id, &plan.blueprint.id, node))
        .collect()
}

impl<B: Backend, R: NodeRunner> Engine<B, R> {
    /// Applies a transition; answers the jobs it scheduled and publishes a
    /// changed run status.
    pub(super) async fn settle<F>(
        &self,
        plan: &Plan,
        run_id: &str,
        transition: F,
    ) -> Result<Vec<Job>, EngineError>
    where
        F: FnMut(&mut RunProgress) -> Advance + Send,
    {
        Ok(self
            .settle_knowing(plan, run_id, Vec::new(), transition, None)
            .await?)
    }

    /// Settles node `node_id`'s completion with its context `changes`.
    pub(super) async fn settle_completion(
        &self,
        plan: &Plan,
        run_id: &str,
        node_id: &str,
        changes: Vec<ContextChange>,
        completion: Completion,
        known: Option<KnownContext>,
    ) -> Result<Vec<Job>, Unsettled> {
        let (blueprint, analysis) = (&plan.blueprint, &plan.analysis);
        self.settle_knowing(
            plan,
            run_id,
            changes,
            |p| p.complete(blueprint, analysis, node_id, &completion),
            known,
        )
        .await
    }

    /// Writes a job's context `changes` and applies `transition` in one
    /// settlement ([`Backend::settle`]); answers the jobs it scheduled and
    /// publishes a changed run status. A job that knows the context its
    /// changes were made on passes it as `known`: if no other job settled
    /// between its view and this settlement, the context after it is
    /// remembered for the run's next job on this worker, and published
    /// without a read if the run completes. If publishing fails, the
    /// scheduled jobs are sent before the error is answered.
    pub(super) async fn settle_knowing<F>(
        &self,
        plan: &Plan,
        run_id: &str,
        changes: Vec<ContextChange>,
        mut transition: F,
        known: Option<KnownContext>,
    ) -> Result<Vec<Job>, Unsettled>
    where
        F: FnMut(&mut RunProgress) -> Advance + Send,
    {
        let writing = self.writing_share(&changes).await;
        let outcome = self
            .backend
            .settle(run_id, &changes, |p| {
                let settled_before = p.settled;
                let was_scheduled = p.pending.clone();
                let advance = transition(p);
                p.stamp_times(&was_scheduled, &advance, unix_ms());
                // Only a state change needs the record (to publish it).
                let record = advance.new_state.map(|_| p.clone());
                (advance, record, settled_before, p.settled)
            })
            .await;
        drop(writing);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(SettleError::Context(error)) => return Err(Unsettled::Write(error)),
            Err(SettleError::Progress(error)) => return Err(EngineError::from(error).into()),
        };
        let Some((advance, record, settled_before, settled_after)) = outcome else {
            return Err(EngineError::UnknownRun(run_id.to_owned()).into());
        };
        // The context this job holds is the run's context after its own
        // settlement only if nobody settled between its view and its write.
        let current = known
            .filter(|known| known.seen == settled_before && settled_after == settled_before + 1)
            .map(|known| {
                // The cache's copy is the snapshot: letting go of it first
                // lets the changes apply in place rather than to a copy.
                self.cache.forget(run_id);
                known.after_write(changes)
            });
        match (&current, advance.new_state) {
            (_, Some(state)) if state.is_terminal() => self.cache.forget(run_id),
            (Some(context), _) => self.cache.put(run_id, settled_after, context.clone()),
            _ => {}
        }
        let scheduled = jobs_for(plan, run_id, &advance);
        let (Some(state), Some(progress)) = (advance.new_state, record) else {
            return Ok(scheduled);
        };
        if let Err(error) = self.publish(&progress, state, current).await {
            self.send(scheduled).await?;
            return Err(error.into());
        }
        Ok(scheduled)
    }

    /// Makes sure a terminal run's status is published (a crash may have
    /// happened between reaching the state and publishing it).
    pub(super) async fn ensure_published(&self, progress: &RunProgress) -> Result<(), EngineError> {
        let published = self
            .backend
            .read_status(&progress.run_id)
            .await?
            .is_some_and(|status| status.status.is_terminal());
        if !published {
            self.publish(progress, progress.state, None).await?;
        }
        Ok(())
    }

    /// Writes `changes` to the run's context once their size fits in the
    /// [`WRITING_BUDGET`].
    pub(super) async fn write_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), StoreError> {
        let _writing = self.writing_share(changes).await;
        self.backend.apply_changes(run_id, changes).await
    }

    /// Waits for `changes`' share of [`WRITING_BUDGET`] (none for no changes).
    async fn writing_share(&self, changes: &[ContextChange]) -> Option<SemaphorePermit<'_>> {
        if changes.is_empty() {
            return None;
        }
        let size: usize = changes.iter().map(ContextChange::size).sum();
        self.writing
            .acquire_many(size.clamp(1, WRITING_BUDGET) as u32)
            .await
            .ok()
    }

    /// Writes the run's status; `final_context`, when known, spares reading
    /// the context for a completed run's final status. A run's parent (if it
    /// is a subflow's child) is told of every change but `running`.
    pub(super) async fn publish(
        &self,
        progress: &RunProgress,
        state: RunState,
        final_context: Option<Arc<ContextMap>>,
    ) -> Result<(), EngineError> {
        let run_id = &progress.run_id;
        let first_error = progress.errors.first().map_or("", |e| e.message.as_str());
        match state {
            RunState::Completed => {
                let context = match final_context {
                    Some(context) => context,
                    None => self.load_snapshot(run_id).await?,
                };
                self.publish_completed(run_id, &context).await?;
            }
            RunState::Failed => {
                let outcome = FinalOutcome::Failed(first_error);
                self.backend.publish_terminal(run_id, &outcome).await?;
            }
            RunState::Cancelled => {
                let outcome = FinalOutcome::Cancelled;
                self.backend.publish_terminal(run_id, &outcome).await?;
            }
            RunState::Running | RunState::Awaiting => {
                self.backend.write_status(run_id, state, None).await?;
            }
        }
        info!(run = %run_id, status = state.as_str(), "run status changed");
        if state.is_terminal() {
            record_end(progress, state);
        }
        if let Some(parent) = &progress.parent
            && state != RunState::Running
        {
            let job = Job::signalled(
                &parent.run_id,
                &parent.blueprint_id,
                &parent.node_id,
                JobSignal::Child,
            );
            self.send(vec![job]).await?;
        }
        Ok(())
    }

    /// Publishes a completed run with its final context, within the
    /// [`PUBLISHING_BUDGET`]: the share is taken before anything is
    /// serialized, so a run waiting for its turn holds only its context. A
    /// status store refusing the copy for good (a context near the store's
    /// item limit, which upstream's payload holds twice) gets the status
    /// without it: the run still has to read `completed`.
    async fn publish_completed(
        &self,
        run_id: &str,
        context: &ContextMap,
    ) -> Result<(), EngineError> {
        let outcome = FinalOutcome::Completed(context);
        let share = outcome.size().clamp(1, PUBLISHING_BUDGET) as u32;
        let _publishing = self.publishing.acquire_many(share).await.ok();
        match self.backend.publish_terminal(run_id, &outcome).await {
            Err(error) if error.is_permanent() => {
                warn!(run = %run_id, error = %error, "final context too large for the status document; publishing the status without it");
                let note = format!(
                    "the final context is too large to be copied into the status document ({error}); read it from the run's context document"
                );
                let trimmed = FinalOutcome::CompletedWithoutContext(&note);
                Ok(self.backend.publish_terminal(run_id, &trimmed).await?)
            }
            other => Ok(other?),
        }
    }
}
