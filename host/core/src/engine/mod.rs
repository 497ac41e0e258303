//! The engine: the one implementation of "execute one node of one run and
//! schedule what follows" (the job step), shared by the embedded and the
//! Azure mode, and the operations an operator runs on runs.
//!
//! A job is handled in this order, so that a crash at any point followed by
//! a redelivery neither loses nor repeats an effect the design promises once:
//!
//! 1. read the run's progress record and drop the job if the node is not
//!    scheduled (a duplicate or a stale job);
//! 2. read the run's context once;
//! 3. run the node (or recover its recorded result if `_outputs.<id>` exists);
//! 4. write the node's context changes, its output, its action and its
//!    successors' `_inputs` in one store write;
//! 5. apply the settlement to the progress record atomically (joins, skips,
//!    completion) and answer the jobs it scheduled;
//! 6. publish a changed run status.
//!
//! [`Engine::handle`] answers the jobs the step scheduled for the job's own
//! run without delay (its successors); the caller makes them durable, by
//! sending them ([`Engine::send`]) or by running them itself under a message
//! it holds. Every other job (a retry's delayed one, a timer, a child run's
//! start, a parent's notice) the engine enqueues itself. A crash between
//! step 5 and the send leaves nodes scheduled without a job; the reconciler
//! re-enqueues the scheduled nodes of runs that made no progress for a while.
//! A job returns `Err` only for backend failures and jobs that belong to no
//! run this worker knows, so the caller can leave it to be delivered again or
//! dead-letter it.
//!
//! Bad data ends where it can be seen, never in endless redelivery: a
//! node's context write that the store refuses for good (the context would
//! exceed the item limit) fails the node fatally, without retry or fallback;
//! a run whose context document is gone fails naming it; a job naming a node
//! its run's blueprint lacks is an error ([`EngineError::UnknownNode`], not
//! transient) for the caller to dead-letter; a completed run whose final
//! context is too large for its status is published without that copy.
//!
//! The files, by concern:
//! - `settings`: tunables, errors and the run report;
//! - `step`: the job step (reading the job's view, catching up with other
//!   workers, adopting upstream runs, containing panics);
//! - `attempt`: running one node, built-in or plugin, within its limits;
//! - `outcome`: what a node's result does to its run (complete, pause, fail);
//! - `subflow`: child runs, timers and resuming a paused node;
//! - `operator`: start, resume, retry, cancel, reconcile, report;
//! - `settle`: applying a transition, the jobs it schedules, publishing the
//!   run's status, and the memory budgets of both.

mod attempt;
mod operator;
mod outcome;
mod settings;
mod settle;
mod step;
mod subflow;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::blueprint::NodeDefinition;
use crate::context::ContextMap;
use crate::context_cache::ContextCache;
use crate::plan::{Plan, PlanRegistry};
use crate::progress::RunProgress;
use crate::runner::NodeRunner;
use crate::store::{Backend, Job, JobSignal, MAX_JOB_DELAY};

pub use outcome::{AWAITING_DETAILS_KEY, AWAITING_IDS_KEY};
pub use settings::{EngineError, EngineSettings, RunReport};
pub use step::panic_message;
pub use subflow::time_until;

/// The engine: plans, a backend and a node runner.
pub struct Engine<B, R> {
    backend: Arc<B>,
    runner: Arc<R>,
    plans: Arc<PlanRegistry>,
    settings: EngineSettings,
    cache: Arc<ContextCache>,
    /// Bytes of final contexts being published (see [`settle::PUBLISHING_BUDGET`]).
    publishing: Arc<Semaphore>,
    /// Bytes of context changes being written (see [`settle::WRITING_BUDGET`]).
    writing: Arc<Semaphore>,
}

impl<B, R> Clone for Engine<B, R> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            runner: self.runner.clone(),
            plans: self.plans.clone(),
            publishing: self.publishing.clone(),
            writing: self.writing.clone(),
            settings: self.settings.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<B: Backend, R: NodeRunner> Engine<B, R> {
    pub fn new(
        backend: Arc<B>,
        runner: Arc<R>,
        plans: Arc<PlanRegistry>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            backend,
            runner,
            plans,
            cache: Arc::new(ContextCache::new(settings.context_cache)),
            publishing: Arc::new(Semaphore::new(settle::PUBLISHING_BUDGET)),
            writing: Arc::new(Semaphore::new(settle::WRITING_BUDGET)),
            settings,
        }
    }

    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    pub fn plans(&self) -> &Arc<PlanRegistry> {
        &self.plans
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Enqueues `jobs` without delay: what a caller of [`Self::handle`]
    /// does with the successors it does not run itself.
    pub async fn send(&self, jobs: Vec<Job>) -> Result<(), EngineError> {
        for job in jobs {
            self.backend.enqueue(job, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Handles one job ([`Self::handle`]) and sends the jobs it scheduled:
    /// for a caller that does not run successors itself.
    pub async fn handle_and_send(&self, job: &Job) -> Result<(), EngineError> {
        let scheduled = self.handle(job).await?;
        self.send(scheduled).await
    }

    /// Enqueues the wake-up job of sleeping `node`, due after `delay`
    /// (capped at [`MAX_JOB_DELAY`]: a longer sleep is woken in steps).
    async fn wake_later(
        &self,
        run_id: &str,
        blueprint_id: &str,
        node: &str,
        delay: Duration,
    ) -> Result<(), EngineError> {
        let job = Job::signalled(run_id, blueprint_id, node, JobSignal::Wake);
        Ok(self.backend.enqueue(job, delay.min(MAX_JOB_DELAY)).await?)
    }

    /// The run's progress record; [`EngineError::UnknownRun`] without one.
    async fn progress(&self, run_id: &str) -> Result<RunProgress, EngineError> {
        self.backend
            .load_progress(run_id)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run_id.to_owned()))
    }

    /// A run's progress record and the plan it executes.
    async fn run_plan(&self, run_id: &str) -> Result<(RunProgress, Arc<Plan>), EngineError> {
        let progress = self.progress(run_id).await?;
        let plan = self.plan_version(&progress.blueprint_id, &progress.blueprint_version)?;
        Ok((progress, plan))
    }

    /// The run's context; [`EngineError::UnknownRun`] without one.
    async fn load_snapshot(&self, run_id: &str) -> Result<Arc<ContextMap>, EngineError> {
        Ok(self
            .backend
            .load_context(run_id)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run_id.to_owned()))?
            .values)
    }

    /// The newest loaded version of a blueprint.
    fn plan(&self, blueprint_id: &str) -> Result<Arc<Plan>, EngineError> {
        self.plans
            .get(blueprint_id)
            .ok_or_else(|| EngineError::UnknownBlueprint(blueprint_id.to_owned()))
    }

    /// The plan a run executes: its blueprint at the version it started with.
    fn plan_version(&self, blueprint_id: &str, version: &Value) -> Result<Arc<Plan>, EngineError> {
        if let Some(plan) = self.plans.get_version(blueprint_id, version) {
            return Ok(plan);
        }
        let loaded = self.plans.versions(blueprint_id);
        if loaded.is_empty() {
            return Err(EngineError::UnknownBlueprint(blueprint_id.to_owned()));
        }
        Err(EngineError::UnknownBlueprintVersion {
            blueprint: blueprint_id.to_owned(),
            version: version.clone(),
            loaded: loaded
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Node `id` of the run: from its blueprint, or added at run time.
    fn definition(&self, plan: &Plan, progress: &RunProgress, id: &str) -> Option<NodeDefinition> {
        plan.blueprint
            .node(id)
            .or_else(|| progress.dynamic_node(id))
            .cloned()
    }
}
