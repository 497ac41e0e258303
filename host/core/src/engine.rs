//! The job step: the one implementation of "execute one node of one run and
//! schedule what follows", shared by the embedded and the Azure mode.
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
//!    completion) and enqueue what it scheduled;
//! 6. publish a changed run status.
//!
//! Retries go back through the queue with a delay; a failing node's writes are
//! discarded. A crash between steps 5 and the enqueue leaves nodes scheduled
//! without a job; the reconciler re-enqueues the scheduled nodes of runs that
//! made no progress for a while. A job returns `Err` only for backend failures, so the caller can
//! leave it to be delivered again.
//!
//! Bad data ends where it can be seen, never in endless redelivery: a
//! node's context write that the store refuses for good (the context would
//! exceed the item limit) fails the node fatally, without retry or fallback;
//! a run whose context document is gone fails naming it; a job naming a node
//! its run's blueprint lacks is an error ([`EngineError::UnknownNode`], not
//! transient) for the caller to dead-letter; a completed run whose final
//! context is too large for its status is published without that copy.

use std::any::Any;
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::blueprint::NodeDefinition;
use crate::builtin::{self, BuiltinOutcome};
use crate::context::{
    ContextChange, ContextMap, ContextValue, DEFAULT_WRITE_QUOTA, NodeContext, WriteLimits,
};
use crate::context_cache::ContextCache;
use crate::dynamic::{self, Spawner};
use crate::expression::EvaluatorMode;
use crate::limits::{self, NodeLimits};
use crate::plan::{Plan, PlanRegistry};
use crate::progress::{
    Advance, AwaitReason, Completion, DEFAULT_STEP_LIMIT, NodeStatus, ParentLink, RunProgress,
    RunState, stored_output,
};
use crate::routing::{self, OUTPUT_KEY_PREFIX, RoutedResult, action_key, output_key};
use crate::runner::{FailureKind, NodeCall, NodeFailure, NodeRunner, NodeSuccess};
use crate::store::{Backend, Job, JobSignal, MAX_JOB_DELAY, StoreError};

/// Context key listing paused nodes (upstream-compatible).
pub const AWAITING_IDS_KEY: &str = "_awaitingNodeIds";
/// Context key with each paused node's details (upstream-compatible).
pub const AWAITING_DETAILS_KEY: &str = "_awaitingDetails";
/// Context key of dynamic nodes a node returned (for recovery after a crash).
const DYNAMIC_KEY_PREFIX: &str = "_dynamicNodes.";

/// How many bytes of final-context JSON a worker publishes at once. A
/// completed run's status carries its final context twice (upstream's
/// `payload.context` and `serializedContext`), and a store client copies the
/// request a few times more. A run waiting for its share holds only its
/// context; its status is serialized once the share is granted. Unbounded,
/// a burst of large runs completing together held most of a worker's memory
/// (see `bench/results/`). A larger context is published alone.
const PUBLISHING_BUDGET: usize = 1 << 19;

/// How many bytes of context changes a worker writes at once. A store
/// client makes several copies of each write while it is in flight (the
/// Cosmos SDK: a parsed tree of every value, the request body, a tree parsed
/// back from the body to check it, transport copies); a change waiting for
/// its turn is held once, shared with the context it came from.
const WRITING_BUDGET: usize = 1 << 19;

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Expression language for blueprints that do not name one.
    pub evaluator: EvaluatorMode,
    /// Node executions allowed per run.
    pub step_limit: u64,
    /// Upper bound of a retry's back-off delay.
    pub max_retry_delay: Duration,
    /// Context writes allowed per node call.
    pub write_quota: usize,
    /// Bytes of context writes allowed per node call.
    pub write_bytes: usize,
    /// The node runner's time limit for a node without `config.timeout`:
    /// the most a dynamic node may ask for when its spawner names none.
    pub default_node_timeout: Duration,
    /// Runs whose latest context this process remembers (0: none); see
    /// [`crate::context_cache`]. Off for fleets with writers outside the engine.
    pub context_cache: usize,
    /// Runs are shared with workers that do not keep the progress record
    /// (upstream's TypeScript workers): a job for a node this record has not
    /// scheduled was sent by one of them, so the record catches up with the
    /// context (nodes with an output count as done) and the node runs.
    /// Otherwise such a job is stale and dropped.
    pub shared_with_upstream: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            evaluator: EvaluatorMode::Safe,
            step_limit: DEFAULT_STEP_LIMIT,
            max_retry_delay: Duration::from_secs(3_600),
            write_quota: DEFAULT_WRITE_QUOTA,
            write_bytes: limits::DEFAULT_WRITE_BYTES,
            default_node_timeout: Duration::from_secs(30),
            context_cache: 0,
            shared_with_upstream: false,
        }
    }
}

/// What can go wrong outside a node.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Blueprint with ID '{0}' not found in the worker's runtime registry.")]
    UnknownBlueprint(String),
    #[error(
        "blueprint '{blueprint}' version {version} is not loaded in this worker (loaded: {loaded}); the job belongs to a worker that has it"
    )]
    UnknownBlueprintVersion {
        blueprint: String,
        version: Value,
        loaded: String,
    },
    #[error("run '{0}' already exists; choose another run id")]
    RunExists(String),
    #[error("run '{0}' not found")]
    UnknownRun(String),
    #[error(
        "job for node '{node}' of run '{run}', but blueprint '{blueprint}' (the run's version) has no node '{node}' and the run added none by that name; the message does not belong to this run"
    )]
    UnknownNode {
        run: String,
        blueprint: String,
        node: String,
    },
    #[error("cannot start blueprint '{blueprint}': {message}")]
    Pin { blueprint: String, message: String },
    #[error(
        "Cannot resume: The provided context is not in an awaiting state. Run '{run}' is {}; only an awaiting run can be resumed",
        state.as_str()
    )]
    NotAwaiting { run: String, state: RunState },
    #[error("Cannot resume: Node '{node}' is not in an awaiting state. {hint}")]
    NodeNotAwaiting { node: String, hint: String },
    #[error(
        "cannot retry run '{run}': it is {}; only a failed run can be retried",
        state.as_str()
    )]
    NotRetryable { run: String, state: RunState },
    #[error(
        "cannot retry run '{run}' with context key '{key}': the document's identity cannot be changed"
    )]
    ReservedKey { run: String, key: String },
    #[error(
        "internal error: the job for node '{node}' of run '{run}' panicked and its node could not be failed: {message}; the job is delivered again and dead-lettered after the delivery limit (a bug in flowcraft-host: please report it with the log)"
    )]
    Panicked {
        run: String,
        node: String,
        message: String,
    },
}

impl EngineError {
    /// Whether the job should be delivered again (a backend problem that
    /// may pass; not a store's permanent refusal).
    pub fn is_transient(&self) -> bool {
        matches!(self, EngineError::Store(error) if !error.is_permanent())
    }
}

/// A run's externally visible result.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub run_id: String,
    pub state: RunState,
    pub context: ContextMap,
    pub errors: Vec<crate::progress::RunError>,
    /// What went wrong without failing the run.
    pub warnings: Vec<crate::progress::RunError>,
}

/// The engine: plans, a backend and a node runner.
pub struct Engine<B, R> {
    backend: Arc<B>,
    runner: Arc<R>,
    plans: Arc<PlanRegistry>,
    settings: EngineSettings,
    cache: Arc<ContextCache>,
    /// Bytes of final contexts being published (see [`PUBLISHING_BUDGET`]).
    publishing: Arc<Semaphore>,
    /// Bytes of context changes being written (see [`WRITING_BUDGET`]).
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

/// The result of a node attempt as the step sees it.
enum Attempt {
    Success(NodeSuccess),
    Wait(Option<Value>, AwaitReason, Option<Duration>),
    Subflow(String, ContextMap),
    Reopen(Vec<NodeDefinition>),
    Failure(NodeFailure),
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
            publishing: Arc::new(Semaphore::new(PUBLISHING_BUDGET)),
            writing: Arc::new(Semaphore::new(WRITING_BUDGET)),
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

    /// Starts a run of `blueprint_id`; returns its id.
    pub async fn start_run(
        &self,
        blueprint_id: &str,
        run_id: Option<String>,
        initial: ContextMap,
    ) -> Result<String, EngineError> {
        self.start_run_with_parent(blueprint_id, run_id, initial, None)
            .await
    }

    async fn start_run_with_parent(
        &self,
        blueprint_id: &str,
        run_id: Option<String>,
        initial: ContextMap,
        parent: Option<ParentLink>,
    ) -> Result<String, EngineError> {
        let plan = self.plan(blueprint_id)?;
        let run_id = run_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let pins = self
            .runner
            .pin(&plan.blueprint)
            .map_err(|e| EngineError::Pin {
                blueprint: blueprint_id.to_owned(),
                message: e.0,
            })?;
        let mut context = ContextMap::new();
        context.insert(
            "blueprintId".into(),
            Value::String(blueprint_id.to_owned()).into(),
        );
        context.insert(
            "blueprintVersion".into(),
            plan.blueprint.version_value().into(),
        );
        context.extend(initial);
        let step_limit = plan
            .blueprint
            .step_limit()
            .unwrap_or(self.settings.step_limit);
        let mut progress = RunProgress::new(&run_id, blueprint_id, pins, step_limit);
        progress.blueprint_version = plan.blueprint.version_value();
        progress.parent = parent;
        let advance = progress.start(&plan.analysis.start_nodes);
        if !self.backend.create_progress(&progress).await? {
            return Err(EngineError::RunExists(run_id));
        }
        self.backend.create_context(&run_id, context).await?;
        self.backend
            .write_status(&run_id, RunState::Running, None)
            .await?;
        info!(run = %run_id, blueprint = %blueprint_id, "run started");
        self.enqueue_scheduled(&plan, &run_id, &advance).await?;
        if let Some(state) = advance.new_state {
            self.publish(&progress, state, None).await?;
        }
        Ok(run_id)
    }

    /// Like [`handle`](Self::handle), but the jobs the step would enqueue
    /// without delay for `job`'s own run (its successors) are answered
    /// instead, for a caller that makes them durable and runs them itself:
    /// the Azure worker rewrites the finished job's own message into them
    /// (one queue request instead of a delete and a send per successor).
    /// Jobs of other runs (a subflow's start) are enqueued as usual. If the
    /// step fails after keeping jobs, they are enqueued before the error is
    /// answered.
    pub async fn handle_continuing(&self, job: &Job) -> Result<Vec<Job>, EngineError> {
        let slot = Continuation {
            run_id: job.run_id.clone(),
            kept: Vec::new(),
        };
        CONTINUATION
            .scope(RefCell::new(slot), async {
                let outcome = self.handle(job).await;
                let kept = CONTINUATION.with(|slot| std::mem::take(&mut slot.borrow_mut().kept));
                match outcome {
                    Ok(()) => Ok(kept),
                    Err(error) => {
                        for job in kept {
                            self.backend.enqueue(job, Duration::ZERO).await?;
                        }
                        Err(error)
                    }
                }
            })
            .await
    }

    /// Handles one job. A panic anywhere in the job step is contained: the
    /// job's node fails with the panic's message (see [`Self::contain`]).
    pub async fn handle(&self, job: &Job) -> Result<(), EngineError> {
        match AssertUnwindSafe(self.step(job)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => self.contain(job, panic_message(panic.as_ref())).await,
        }
    }

    /// The job step panicked: its node fails, fatally (a bug is not
    /// retried, and no fallback hides it), so that the run follows the
    /// usual failure rules instead of staying `running` with nobody working
    /// on it. A node that had settled before the panic is left as it is.
    /// If failing the node panics or fails as well, the answer is
    /// [`EngineError::Panicked`], for the caller to deliver the job again.
    async fn contain(&self, job: &Job, panic: String) -> Result<(), EngineError> {
        error!(run = %job.run_id, node = %job.node_id, panic = %panic, "internal error: the job step panicked; failing the node");
        let message = format!(
            "Node '{}': internal error in flowcraft-host while handling this node: {panic}",
            job.node_id
        );
        let failing = AssertUnwindSafe(self.fail_node(job, message))
            .catch_unwind()
            .await;
        match failing {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) if error.is_transient() => Err(error),
            Ok(Err(error)) => Err(EngineError::Panicked {
                run: job.run_id.clone(),
                node: job.node_id.clone(),
                message: format!("{panic}; then: {error}"),
            }),
            Err(again) => Err(EngineError::Panicked {
                run: job.run_id.clone(),
                node: job.node_id.clone(),
                message: format!("{panic}; then: {}", panic_message(again.as_ref())),
            }),
        }
    }

    /// Fails `job`'s node with `message` if it is still scheduled or awaiting.
    async fn fail_node(&self, job: &Job, message: String) -> Result<(), EngineError> {
        let (_, plan) = self.run_plan(&job.run_id).await?;
        self.settle(&plan, &job.run_id, |p| p.fail(&job.node_id, &message))
            .await
    }

    /// The job step.
    async fn step(&self, job: &Job) -> Result<(), EngineError> {
        let view = self
            .backend
            .read_progress(&job.run_id, |p| JobView::of(p, &job.node_id))
            .await?;
        let view = match view {
            Some(view) => view,
            None if self.adopt(job).await? => self
                .backend
                .read_progress(&job.run_id, |p| JobView::of(p, &job.node_id))
                .await?
                .ok_or_else(|| EngineError::UnknownRun(job.run_id.clone()))?,
            None => return Err(EngineError::UnknownRun(job.run_id.clone())),
        };
        let plan = self.plan_version(&job.blueprint_id, &view.version)?;
        let known = plan.node(&job.node_id).is_some() || view.dynamic.is_some();
        if !known && view.status != NodeStatus::Scheduled {
            // Not a duplicate of one of the run's jobs: a stray message.
            return Err(EngineError::UnknownNode {
                run: job.run_id.clone(),
                blueprint: plan.blueprint.id.clone(),
                node: job.node_id.clone(),
            });
        }
        if view.state.is_terminal() || job.signal.is_some() {
            let progress = self
                .backend
                .load_progress(&job.run_id)
                .await?
                .ok_or_else(|| EngineError::UnknownRun(job.run_id.clone()))?;
            return match job.signal {
                _ if view.state.is_terminal() => self.ensure_published(&progress).await,
                Some(JobSignal::Wake) => self.wake(&plan, &progress, &job.node_id).await,
                _ => self.collect_child(&plan, &progress, &job.node_id).await,
            };
        }
        let view = if view.status == NodeStatus::Waiting
            && self.settings.shared_with_upstream
            && plan.node(&job.node_id).is_some()
        {
            self.catch_up(job).await?.unwrap_or(view)
        } else {
            view
        };
        if view.status != NodeStatus::Scheduled || view.has_child || job.attempt() < view.attempt {
            // A duplicate, or a late delivery of an attempt already retried.
            return Ok(());
        }
        let Some(node) = plan
            .node(&job.node_id)
            .cloned()
            .or_else(|| view.dynamic.clone())
        else {
            let message = format!(
                "Node '{}' not found in blueprint '{}'.",
                job.node_id, plan.blueprint.id
            );
            return self
                .settle(&plan, &job.run_id, |p| p.fail_run(&job.node_id, &message))
                .await;
        };
        let snapshot = match self.cache.get(&job.run_id, view.settled) {
            Some(remembered) => remembered,
            None => match self.backend.load_context(&job.run_id).await? {
                Some(context) => context.values,
                None => return self.context_missing(&plan, &job.run_id, &node.id).await,
            },
        };
        let (attempt, changes) = match self.recorded_result(&node, &snapshot) {
            Some(success) => (Attempt::Success(success), Vec::new()),
            None => {
                let pin = view.pins.get(&node.uses).cloned();
                self.attempt(&plan, pin, &node, job, snapshot.clone()).await
            }
        };
        match attempt {
            Attempt::Success(success) => {
                self.complete(
                    &plan,
                    &job.run_id,
                    &node,
                    view.stand_in.as_deref(),
                    snapshot,
                    changes,
                    success,
                    Some(view.settled),
                )
                .await
            }
            Attempt::Wait(output, reason, wake_after) => {
                self.pause(
                    &plan, job, &node, &snapshot, changes, output, reason, wake_after,
                )
                .await
            }
            Attempt::Subflow(child_blueprint, initial) => {
                self.start_child(&plan, job, &node, &view, child_blueprint, initial)
                    .await
            }
            Attempt::Reopen(dynamic_nodes) => {
                self.reopen(&plan, &job.run_id, &node, changes, dynamic_nodes)
                    .await
            }
            Attempt::Failure(failure) => self.failed(&plan, job, &node, failure).await,
        }
    }

    /// A job another kind of worker sent for a node this record has not
    /// scheduled (see [`EngineSettings::shared_with_upstream`]): the record
    /// takes the nodes with an output in the context as done and schedules
    /// the job's node. Answers the job's new view.
    async fn catch_up(&self, job: &Job) -> Result<Option<JobView>, EngineError> {
        let Some(context) = self.backend.load_context(&job.run_id).await? else {
            return Ok(None);
        };
        let done: Vec<String> = context
            .values
            .keys()
            .filter_map(|key| key.strip_prefix(OUTPUT_KEY_PREFIX))
            .map(str::to_owned)
            .collect();
        let node = job.node_id.clone();
        let view = self
            .backend
            .update_progress(&job.run_id, move |p| {
                p.catch_up(&done, &node);
                JobView::of(p, &node)
            })
            .await?;
        if view.is_some() {
            info!(run = %job.run_id, node = %job.node_id, "took a job another worker scheduled");
        }
        Ok(view)
    }

    /// Takes over a run that another client started the upstream way (a
    /// context document and queued start jobs, but no progress record):
    /// records it with its start nodes and the job's node scheduled and the
    /// nodes that already have an output done. The jobs are already queued,
    /// so nothing is enqueued. Returns false when the run has no context.
    async fn adopt(&self, job: &Job) -> Result<bool, EngineError> {
        let Some(context) = self.backend.load_context(&job.run_id).await? else {
            return Ok(false);
        };
        // A context without `blueprintVersion` counts as unversioned (upstream
        // would drop such a job; that is the bug FC-52 describes).
        let version = context
            .values
            .get("blueprintVersion")
            .map_or(Value::Null, ContextValue::to_value);
        let plan = self.plan_version(&job.blueprint_id, &version)?;
        let pins = self.runner.pin(&plan.blueprint).unwrap_or_default();
        let mut progress = RunProgress::new(
            &job.run_id,
            &plan.blueprint.id,
            pins,
            self.settings.step_limit,
        );
        progress.blueprint_version = version;
        let done = |id: &str| context.values.contains_key(&output_key(id));
        for node in plan.blueprint.nodes.iter().filter(|n| done(&n.id)) {
            progress.nodes.entry(node.id.clone()).or_default().status = NodeStatus::Done;
        }
        let mut scheduled: Vec<String> = plan
            .analysis
            .start_nodes
            .iter()
            .filter(|id| !done(id))
            .cloned()
            .collect();
        // A node the blueprint lacks is not scheduled: its job is refused
        // (`UnknownNode`) while the run goes on.
        if !done(&job.node_id)
            && !scheduled.contains(&job.node_id)
            && plan.node(&job.node_id).is_some()
        {
            scheduled.push(job.node_id.clone());
        }
        progress.start(&scheduled);
        if self.backend.create_progress(&progress).await? {
            info!(run = %job.run_id, blueprint = %plan.blueprint.id, "adopted a run started by another client");
        }
        Ok(true)
    }

    /// Resumes an awaiting node; `node` defaults to the first awaiting one.
    pub async fn resume(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> Result<(), EngineError> {
        let (progress, plan) = self.run_plan(run_id).await?;
        if progress.awaiting.is_empty() {
            return Err(EngineError::NotAwaiting {
                run: run_id.to_owned(),
                state: progress.state,
            });
        }
        let node_id = match node {
            Some(id) => id.to_owned(),
            None => progress.awaiting.keys().next().cloned().unwrap_or_default(),
        };
        match progress.awaiting.get(&node_id) {
            None => Err(not_awaiting(&plan, &progress, &node_id)),
            Some(AwaitReason::Subflow { child_run_id }) => {
                Box::pin(self.resume(child_run_id, None, action, output)).await
            }
            Some(_) => {
                self.resume_node(&plan, &progress, &node_id, action, output, Vec::new())
                    .await
            }
        }
    }

    /// The current result of a run.
    pub async fn report(&self, run_id: &str) -> Result<RunReport, EngineError> {
        let progress = self
            .backend
            .load_progress(run_id)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run_id.to_owned()))?;
        let context = self
            .backend
            .load_context(run_id)
            .await?
            .map(|c| (*c.values).clone())
            .unwrap_or_default();
        Ok(RunReport {
            run_id: run_id.to_owned(),
            state: progress.state,
            context,
            errors: progress.errors,
            warnings: progress.warnings,
        })
    }

    /// Gets a run moving again after jobs were lost (a worker crashed between
    /// settling a node and enqueueing its successors, say): re-enqueues every
    /// scheduled node, wakes overdue timers, re-checks subflow children and
    /// re-publishes a terminal state. Returns the nodes it enqueued. Unlike
    /// upstream's reconcile it never runs a node on a path that was not taken,
    /// a failed node or an awaiting one.
    pub async fn reconcile(&self, run_id: &str) -> Result<Vec<String>, EngineError> {
        let progress = self
            .backend
            .load_progress(run_id)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run_id.to_owned()))?;
        if progress.state.is_terminal() {
            self.ensure_published(&progress).await?;
            return Ok(Vec::new());
        }
        let mut enqueued = Vec::new();
        for node in &progress.pending {
            let mut job = Job::new(run_id, &progress.blueprint_id, node);
            if progress.children.contains_key(node) {
                job.signal = Some(JobSignal::Child);
            }
            let attempt = progress.attempt(node);
            job.attempt = (attempt > 1).then_some(attempt);
            self.backend.enqueue(job, Duration::ZERO).await?;
            enqueued.push(node.clone());
        }
        for (node, reason) in &progress.awaiting {
            if let AwaitReason::Timer { wake_up_at } = reason
                && time_until(wake_up_at).is_zero()
            {
                let mut job = Job::new(run_id, &progress.blueprint_id, node);
                job.signal = Some(JobSignal::Wake);
                self.backend.enqueue(job, Duration::ZERO).await?;
                enqueued.push(node.clone());
            }
        }
        self.backend.touch(run_id).await?;
        Ok(enqueued)
    }

    /// Fails a run that nothing will work on any more: its jobs ended in
    /// errors that no redelivery will repair (the embedded driver's queue
    /// ran dry), so that it does not stay `running`.
    pub async fn abandon(&self, run_id: &str, problem: &str) -> Result<(), EngineError> {
        let (progress, plan) = self.run_plan(run_id).await?;
        let node = progress.pending.first().cloned().unwrap_or_default();
        let message = format!(
            "the run stopped with nodes scheduled but no job left to run them, after this error: {problem}"
        );
        self.settle(&plan, run_id, |p| p.fail_run(&node, &message))
            .await
    }

    /// Cancels a run: queued jobs of it are dropped when they arrive, and a
    /// worker running one of its nodes may interrupt it (the Azure worker
    /// does) and drop its result. The `cancelled` status is published once.
    pub async fn cancel(&self, run_id: &str) -> Result<(), EngineError> {
        let (_, plan) = self.run_plan(run_id).await?;
        self.settle(&plan, run_id, |p| p.cancel()).await
    }

    /// Re-runs a failed run from its unfinished nodes (see
    /// [`RunProgress::retry`]) after setting the context keys of `patch`
    /// (an operator's fix of the data the failed nodes read). Returns the
    /// nodes scheduled again. Refused for a run that is not failed; of two
    /// retries at the same time exactly one wins, the other is refused
    /// because it finds the run running, and only the winner's patch is
    /// written.
    ///
    /// Order, for a crash at any point: the status document goes from
    /// `failed` back to `running` first (a crash here leaves a `running`
    /// status over a failed record, which the reconciler publishes as failed
    /// again), then the progress record changes (the one decision), then the
    /// patch is written, the status reopened once more (in case a late job
    /// of the failed run re-published `failed` meanwhile) and the jobs
    /// enqueued (a crash before that leaves scheduled nodes without jobs,
    /// which the reconciler re-sends).
    pub async fn retry(&self, run_id: &str, patch: ContextMap) -> Result<Vec<String>, EngineError> {
        if let Some(key) = patch.keys().find(|k| matches!(k.as_str(), "id" | "runId")) {
            return Err(EngineError::ReservedKey {
                run: run_id.to_owned(),
                key: key.clone(),
            });
        }
        let progress = self
            .backend
            .load_progress(run_id)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run_id.to_owned()))?;
        if progress.state != RunState::Failed {
            return Err(EngineError::NotRetryable {
                run: run_id.to_owned(),
                state: progress.state,
            });
        }
        let plan = self.plan_version(&progress.blueprint_id, &progress.blueprint_version)?;
        self.backend.reopen_failed(run_id).await?;
        let outcome = self
            .backend
            .update_progress(run_id, |p| p.retry().map(|advance| (advance, p.clone())))
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run_id.to_owned()))?;
        let (advance, record) = outcome.map_err(|state| EngineError::NotRetryable {
            run: run_id.to_owned(),
            state,
        })?;
        self.cache.forget(run_id);
        if !patch.is_empty() {
            let changes: Vec<ContextChange> = patch
                .into_iter()
                .map(|(key, value)| ContextChange::Set { key, value })
                .collect();
            self.write_changes(run_id, &changes).await?;
        }
        self.backend.reopen_failed(run_id).await?;
        info!(run = %run_id, retry = record.retries, nodes = ?advance.schedule, "run retried");
        self.enqueue_scheduled(&plan, run_id, &advance).await?;
        for (node, reason) in &record.awaiting {
            if let AwaitReason::Timer { wake_up_at } = reason {
                let mut job = Job::new(run_id, &record.blueprint_id, node);
                job.signal = Some(JobSignal::Wake);
                let delay = time_until(wake_up_at).min(MAX_JOB_DELAY);
                self.backend.enqueue(job, delay).await?;
            }
        }
        match advance.new_state {
            Some(RunState::Running) | None => {}
            Some(state) => self.publish(&record, state, None).await?,
        }
        Ok(advance.schedule)
    }

    /// A run's progress record and the plan it executes.
    async fn run_plan(&self, run_id: &str) -> Result<(RunProgress, Arc<Plan>), EngineError> {
        let progress = self
            .backend
            .load_progress(run_id)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run_id.to_owned()))?;
        let plan = self.plan_version(&progress.blueprint_id, &progress.blueprint_version)?;
        Ok((progress, plan))
    }

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

    fn definition(&self, plan: &Plan, progress: &RunProgress, id: &str) -> Option<NodeDefinition> {
        plan.blueprint
            .node(id)
            .or_else(|| progress.dynamic_node(id))
            .cloned()
    }

    /// A plugin node whose output is already stored was run by an earlier
    /// delivery that crashed before settling: reuse its result.
    fn recorded_result(&self, node: &NodeDefinition, snapshot: &ContextMap) -> Option<NodeSuccess> {
        if builtin::is_builtin(&node.uses) {
            return None;
        }
        let output = snapshot.get(&output_key(&node.id))?.to_value();
        // A node that failed for good wrote a null output beside
        // `_catch_error` before handing over to its fallback: not a result.
        let handing_over = snapshot
            .get("_catch_error")
            .map(ContextValue::to_value)
            .and_then(|error| error.get("nodeId").cloned())
            .is_some_and(|failed| failed.as_str() == Some(&node.id));
        if output.is_null() && handing_over {
            return None;
        }
        let dynamic_nodes = snapshot
            .get(&format!("{DYNAMIC_KEY_PREFIX}{}", node.id))
            .and_then(|v| serde_json::from_str(v.json()).ok())
            .unwrap_or_default();
        Some(NodeSuccess {
            output: Some(output),
            action: snapshot
                .get(&action_key(&node.id))
                .and_then(ContextValue::as_string),
            dynamic_nodes,
        })
    }

    async fn attempt(
        &self,
        plan: &Plan,
        pin: Option<String>,
        node: &NodeDefinition,
        job: &Job,
        snapshot: Arc<ContextMap>,
    ) -> (Attempt, Vec<ContextChange>) {
        let node_limits = match NodeLimits::of(node.config.as_ref()) {
            Ok(node_limits) => node_limits,
            Err(error) => {
                let message = format!("Node '{}': {error}", node.id);
                return (Attempt::Failure(NodeFailure::fatal(message)), Vec::new());
            }
        };
        let input = routing::resolve_input(plan, node, &snapshot);
        let write_limits = WriteLimits {
            writes: self.settings.write_quota,
            bytes: self.settings.write_bytes,
            store_keys: self.backend.reserved_keys(),
        };
        let context = NodeContext::with_limits(snapshot.clone(), write_limits);
        info!(run = %job.run_id, node = %node.id, uses = %node.uses, attempt = job.attempt(), "node started");
        if builtin::is_builtin(&node.uses) {
            let mut context = context.for_builtin();
            let input = input.as_ref().map(ContextValue::to_value);
            let outcome = builtin::execute(plan, &self.plans, node, input, &mut context, &snapshot);
            let changes = context.into_changes();
            let attempt = match outcome {
                Ok(BuiltinOutcome::Done(success)) => Attempt::Success(success),
                Ok(BuiltinOutcome::Reopen { dynamic_nodes }) => Attempt::Reopen(dynamic_nodes),
                Ok(BuiltinOutcome::Wait { output }) => {
                    Attempt::Wait(output, AwaitReason::ExternalEvent, None)
                }
                Ok(BuiltinOutcome::Sleep { output, wake_after }) => {
                    match wake_up_time(wake_after) {
                        Some(wake_up_at) => Attempt::Wait(
                            output,
                            AwaitReason::Timer { wake_up_at },
                            Some(wake_after),
                        ),
                        None => Attempt::Failure(NodeFailure::fatal(format!(
                            "Node '{}': a sleep of {} s ends after the last date this host can represent",
                            node.id,
                            wake_after.as_secs()
                        ))),
                    }
                }
                Ok(BuiltinOutcome::Subflow {
                    blueprint_id,
                    initial,
                }) => Attempt::Subflow(blueprint_id, initial),
                Err(failure) => Attempt::Failure(failure),
            };
            return (attempt, changes);
        }
        let timeout = node_limits.timeout;
        let call = NodeCall {
            uses: node.uses.clone(),
            run_id: job.run_id.clone(),
            node_id: node.id.clone(),
            blueprint_id: plan.blueprint.id.clone(),
            attempt: job.attempt(),
            input,
            params: node.params_or_empty(),
            pin: pin.clone(),
            timeout,
            context,
        };
        let outcome = match timeout {
            // The runner enforces the limit itself; this bound only catches a
            // runner that does not, with a grace period for its own report.
            Some(limit) => {
                match tokio::time::timeout(limit + Duration::from_secs(1), self.runner.run(call))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        return (
                            Attempt::Failure(NodeFailure::retryable(format!(
                                "Node '{}' timed out after {} ms",
                                node.id,
                                limit.as_millis()
                            ))),
                            Vec::new(),
                        );
                    }
                }
            }
            None => self.runner.run(call).await,
        };
        let admitted = outcome.result.and_then(|mut success| {
            if !success.dynamic_nodes.is_empty() {
                let spawner = Spawner {
                    node,
                    pin: pin.as_deref(),
                    limits: node_limits,
                    default_timeout: self.settings.default_node_timeout,
                };
                dynamic::admit(
                    self.runner.as_ref(),
                    &plan.blueprint,
                    &spawner,
                    &mut success.dynamic_nodes,
                )
                .map_err(NodeFailure::fatal)?;
            }
            Ok(success)
        });
        match admitted {
            Ok(success) => (Attempt::Success(success), outcome.context.into_changes()),
            Err(failure) => (Attempt::Failure(failure), Vec::new()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        plan: &Plan,
        run_id: &str,
        node: &NodeDefinition,
        stands_in_for: Option<&str>,
        snapshot: Arc<ContextMap>,
        mut changes: Vec<ContextChange>,
        success: NodeSuccess,
        seen: Option<u64>,
    ) -> Result<(), EngineError> {
        let continues = node.uses == crate::analysis::LOOP_CONTROLLER
            && success.action.as_deref() == Some("continue");
        let rearm = if continues {
            let mut rearm = plan
                .analysis
                .loop_bodies
                .get(&node.id)
                .cloned()
                .unwrap_or_default();
            for body in &rearm {
                changes.push(ContextChange::Delete {
                    key: output_key(body),
                });
                changes.push(ContextChange::Delete {
                    key: action_key(body),
                });
            }
            rearm.insert(node.id.clone());
            rearm
        } else {
            Default::default()
        };
        let has_expressions = std::iter::once(node.id.as_str())
            .chain(stands_in_for)
            .flat_map(|source| plan.analysis.edges_from(&plan.blueprint, source))
            .any(|(index, _)| plan.conditions[index].is_some() || plan.transforms[index].is_some());
        let view = if has_expressions && !changes.is_empty() {
            std::borrow::Cow::Owned(overlay(&snapshot, &changes))
        } else {
            std::borrow::Cow::Borrowed(snapshot.as_ref())
        };
        // The output's JSON text, made once: stored as the node's output and
        // delivered as-is over every edge without a transform.
        let output_json = stored_output(success.output.as_ref());
        let routing = routing::route(
            plan,
            node,
            stands_in_for,
            RoutedResult {
                output: success.output.as_ref(),
                output_json: success.output.as_ref().map(|_| &output_json),
                action: success.action.as_deref(),
            },
            &view,
        );
        drop(view);
        let warning = unmatched_action_warning(plan, node, success.action.as_deref());
        if let Some(warning) = &warning {
            warn!(run = %run_id, node = %node.id, "{warning}");
        }
        // A worker that remembers contexts keeps the snapshot: if no other
        // job settles meanwhile, the context after this write is the snapshot
        // with the changes applied, and nothing needs to be read back.
        // Otherwise the snapshot goes before the write, so that an in-memory
        // store can update the context in place instead of copying it.
        let kept = match seen {
            Some(seen) if self.cache.is_enabled() => Some((seen, snapshot)),
            _ => {
                drop(snapshot);
                None
            }
        };
        if !continues {
            changes.push(ContextChange::Set {
                key: output_key(&node.id),
                value: output_json,
            });
        }
        if let Some(action) = &success.action {
            changes.push(ContextChange::Set {
                key: action_key(&node.id),
                value: Value::String(action.clone()).into(),
            });
        }
        if !success.dynamic_nodes.is_empty() && !builtin::is_builtin(&node.uses) {
            changes.push(ContextChange::Set {
                key: format!("{DYNAMIC_KEY_PREFIX}{}", node.id),
                value: ContextValue::serialize_from(&success.dynamic_nodes)
                    .unwrap_or_else(|_| ContextValue::null()),
            });
        }
        changes.extend(
            routing
                .inputs
                .into_iter()
                .map(|(key, value)| ContextChange::Set { key, value }),
        );
        if let Err(error) = self.write_changes(run_id, &changes).await {
            return self.write_failed(plan, run_id, node, &changes, error).await;
        }
        let known = kept.map(|(seen, snapshot)| KnownContext {
            seen,
            snapshot,
            changes,
        });
        info!(run = %run_id, node = %node.id, "node finished");
        let mut sources = vec![node.id.clone()];
        sources.extend(stands_in_for.map(str::to_owned));
        let completion = Completion {
            sources,
            taken: routing.taken,
            gather: success
                .output
                .as_ref()
                .and_then(|o| o.get("gatherNodeId"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            dynamic_nodes: success.dynamic_nodes,
            rearm,
            reopen: false,
            warning,
        };
        let blueprint = &plan.blueprint;
        let analysis = &plan.analysis;
        let node_id = node.id.clone();
        self.settle_knowing(
            plan,
            run_id,
            move |p| p.complete(blueprint, analysis, &node_id, &completion),
            known,
        )
        .await
    }

    /// A node that is not finished adds `dynamic_nodes` and waits for them.
    async fn reopen(
        &self,
        plan: &Plan,
        run_id: &str,
        node: &NodeDefinition,
        changes: Vec<ContextChange>,
        dynamic_nodes: Vec<NodeDefinition>,
    ) -> Result<(), EngineError> {
        if let Err(error) = self.write_changes(run_id, &changes).await {
            return self.write_failed(plan, run_id, node, &changes, error).await;
        }
        let completion = Completion {
            sources: vec![node.id.clone()],
            taken: Default::default(),
            dynamic_nodes,
            gather: Some(node.id.clone()),
            rearm: Default::default(),
            reopen: true,
            warning: None,
        };
        let (blueprint, analysis) = (&plan.blueprint, &plan.analysis);
        let node_id = node.id.clone();
        self.settle(plan, run_id, move |p| {
            p.complete(blueprint, analysis, &node_id, &completion)
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn pause(
        &self,
        plan: &Plan,
        job: &Job,
        node: &NodeDefinition,
        snapshot: &ContextMap,
        mut changes: Vec<ContextChange>,
        output: Option<Value>,
        reason: AwaitReason,
        wake_after: Option<Duration>,
    ) -> Result<(), EngineError> {
        if let Some(output) = &output {
            changes.push(ContextChange::Set {
                key: output_key(&node.id),
                value: output.into(),
            });
        }
        changes.extend(awaiting_marks(snapshot, &node.id, Some(&reason)));
        if let Err(error) = self.write_changes(&job.run_id, &changes).await {
            return self
                .write_failed(plan, &job.run_id, node, &changes, error)
                .await;
        }
        info!(run = %job.run_id, node = %node.id, "node awaiting");
        let node_id = node.id.clone();
        self.settle(plan, &job.run_id, move |p| {
            p.pause(&node_id, reason.clone())
        })
        .await?;
        if let Some(delay) = wake_after {
            let mut wake = Job::new(&job.run_id, &job.blueprint_id, &node.id);
            wake.signal = Some(JobSignal::Wake);
            self.backend.enqueue(wake, delay.min(MAX_JOB_DELAY)).await?;
        }
        Ok(())
    }

    /// Starts the child run of subflow `node`, unless it would nest deeper
    /// than the blueprint's `metadata.maxSubflowDepth` allows, or the run's
    /// tree has started `metadata.maxSubflowRuns` child runs already.
    async fn start_child(
        &self,
        plan: &Plan,
        job: &Job,
        node: &NodeDefinition,
        view: &JobView,
        child_blueprint: String,
        initial: ContextMap,
    ) -> Result<(), EngineError> {
        if let Err(message) = self.admit_child(plan, node, view, &child_blueprint).await? {
            return self
                .failed(plan, job, node, NodeFailure::fatal(message))
                .await;
        }
        // A retried run starts new children (the failed one keeps its id).
        let child_run_id = match view.retries {
            0 => format!("{}.{}.{}", job.run_id, node.id, job.attempt()),
            n => format!("{}.{}.r{n}.{}", job.run_id, node.id, job.attempt()),
        };
        let parent = ParentLink {
            run_id: job.run_id.clone(),
            blueprint_id: plan.blueprint.id.clone(),
            node_id: node.id.clone(),
            lineage: view.lineage.clone(),
            root_run_id: Some(view.root_run_id.clone()),
        };
        let node_id = node.id.clone();
        let child = child_run_id.clone();
        self.backend
            .update_progress(&job.run_id, move |p| {
                p.children.insert(node_id.clone(), child.clone());
            })
            .await?;
        match self
            .start_run_with_parent(&child_blueprint, Some(child_run_id), initial, Some(parent))
            .await
        {
            Ok(_) | Err(EngineError::RunExists(_)) => Ok(()),
            Err(error) if error.is_transient() => Err(error),
            Err(error) => {
                self.failed(plan, job, node, NodeFailure::fatal(error.to_string()))
                    .await
            }
        }
    }

    /// Whether subflow `node` may start a child run of `child_blueprint`:
    /// within the depth limit, and counted against the run tree's budget of
    /// child runs (on the root run's record). The inner error says which
    /// limit was reached.
    async fn admit_child(
        &self,
        plan: &Plan,
        node: &NodeDefinition,
        view: &JobView,
        child_blueprint: &str,
    ) -> Result<Result<(), String>, EngineError> {
        let limits = plan
            .blueprint
            .subflow_depth()
            .and_then(|depth| Ok((depth, plan.blueprint.subflow_runs()?)));
        let (depth_limit, runs_limit) = match limits {
            Ok(limits) => limits,
            Err(error) => return Ok(Err(format!("Node '{}': {error}", node.id))),
        };
        if view.lineage.len() > depth_limit as usize {
            let chain = [view.lineage.as_slice(), &[child_blueprint.to_owned()]]
                .concat()
                .join(" → ");
            return Ok(Err(format!(
                "Node '{}': subflows nest deeper than {depth_limit} runs ({chain}); end the recursion with a condition, or raise metadata.maxSubflowDepth (at most {})",
                node.id,
                limits::MAX_SUBFLOW_DEPTH
            )));
        }
        let counted = self
            .backend
            .update_progress(&view.root_run_id, |p| {
                let room = p.subflow_runs < runs_limit;
                if room {
                    p.subflow_runs += 1;
                }
                room
            })
            .await?;
        if counted == Some(false) {
            return Ok(Err(format!(
                "Node '{}': run '{}' and its subflows have started {runs_limit} child runs, the most metadata.maxSubflowRuns allows (at most {})",
                node.id,
                view.root_run_id,
                limits::MAX_SUBFLOW_RUNS
            )));
        }
        Ok(Ok(()))
    }

    /// A child run of a subflow node settled: finish, fail or pause the node.
    async fn collect_child(
        &self,
        plan: &Plan,
        progress: &RunProgress,
        node_id: &str,
    ) -> Result<(), EngineError> {
        let Some(child_run_id) = progress.children.get(node_id) else {
            return Ok(());
        };
        if !matches!(
            progress.status(node_id),
            NodeStatus::Scheduled | NodeStatus::Awaiting
        ) {
            return Ok(());
        }
        let Some(node) = self.definition(plan, progress, node_id) else {
            return Ok(());
        };
        let child = self.report(child_run_id).await?;
        let child_blueprint = node
            .params
            .as_ref()
            .and_then(|p| p.get("blueprintId"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let job = Job::new(&progress.run_id, &plan.blueprint.id, node_id);
        match child.state {
            RunState::Completed => {
                let child_plan = self.plan(child_blueprint)?;
                let (output, writes) = builtin::subflow_result(&node, &child_plan, &child.context);
                let changes: Vec<ContextChange> = writes
                    .into_iter()
                    .map(|(key, value)| ContextChange::Set { key, value })
                    .collect();
                if progress.status(node_id) == NodeStatus::Awaiting {
                    return self
                        .resume_node(plan, progress, node_id, None, Some(output), changes)
                        .await;
                }
                let snapshot = self.load_snapshot(&progress.run_id).await?;
                let stands_in_for = progress.stand_ins.get(node_id).map(String::as_str);
                self.complete(
                    plan,
                    &progress.run_id,
                    &node,
                    stands_in_for,
                    snapshot,
                    changes,
                    NodeSuccess {
                        output: Some(output),
                        ..NodeSuccess::default()
                    },
                    None,
                )
                .await
            }
            RunState::Awaiting => {
                let reason = AwaitReason::Subflow {
                    child_run_id: child_run_id.clone(),
                };
                if progress.status(node_id) == NodeStatus::Awaiting {
                    return Ok(());
                }
                let snapshot = self.load_snapshot(&progress.run_id).await?;
                self.pause(plan, &job, &node, &snapshot, Vec::new(), None, reason, None)
                    .await
            }
            state => {
                let first_error = child
                    .errors
                    .first()
                    .map(|e| e.message.as_str())
                    .unwrap_or("none");
                let message = format!(
                    "Sub-workflow '{child_blueprint}' did not complete successfully. Status: {}. Error: {first_error}",
                    state.as_str()
                );
                self.failed(plan, &job, &node, NodeFailure::fatal(message))
                    .await
            }
        }
    }

    /// A sleeping node's timer fired.
    async fn wake(
        &self,
        plan: &Plan,
        progress: &RunProgress,
        node_id: &str,
    ) -> Result<(), EngineError> {
        match progress.awaiting.get(node_id) {
            Some(AwaitReason::Timer { wake_up_at }) => {
                let left = time_until(wake_up_at);
                if !left.is_zero() {
                    // Delays are capped (MAX_JOB_DELAY): wait another step.
                    let mut again = Job::new(&progress.run_id, &plan.blueprint.id, node_id);
                    again.signal = Some(JobSignal::Wake);
                    return Ok(self.backend.enqueue(again, left.min(MAX_JOB_DELAY)).await?);
                }
                self.resume_node(plan, progress, node_id, None, None, Vec::new())
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn resume_node(
        &self,
        plan: &Plan,
        progress: &RunProgress,
        node_id: &str,
        action: Option<String>,
        output: Option<Value>,
        mut changes: Vec<ContextChange>,
    ) -> Result<(), EngineError> {
        let Some(node) = self.definition(plan, progress, node_id) else {
            return Err(not_awaiting(plan, progress, node_id));
        };
        let snapshot = self.load_snapshot(&progress.run_id).await?;
        let output = output.clone().or_else(|| {
            snapshot
                .get(&output_key(node_id))
                .map(ContextValue::to_value)
        });
        changes.push(ContextChange::Set {
            key: "_resume.action".into(),
            value: action
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null)
                .into(),
        });
        if let Some(output) = &output {
            changes.push(ContextChange::Set {
                key: "_resume.output".into(),
                value: output.into(),
            });
        }
        changes.extend(awaiting_marks(&snapshot, node_id, None));
        let node_id_owned = node_id.to_owned();
        let unpaused = self
            .backend
            .update_progress(&progress.run_id, move |p| p.unpause(&node_id_owned))
            .await?
            .unwrap_or(false);
        if !unpaused {
            return Err(not_awaiting(plan, progress, node_id));
        }
        info!(run = %progress.run_id, node = %node_id, "node resumed");
        let stands_in_for = progress.stand_ins.get(node_id).map(String::as_str);
        self.complete(
            plan,
            &progress.run_id,
            &node,
            stands_in_for,
            snapshot,
            changes,
            NodeSuccess {
                output,
                action,
                dynamic_nodes: vec![],
            },
            None,
        )
        .await
    }

    async fn failed(
        &self,
        plan: &Plan,
        job: &Job,
        node: &NodeDefinition,
        failure: NodeFailure,
    ) -> Result<(), EngineError> {
        // Out-of-range numbers failed the node before it ran (see
        // `attempt`): such a node gets no retries.
        let node_limits = NodeLimits::of(node.config.as_ref()).unwrap_or_default();
        let attempt = job.attempt();
        if !failure.is_fatal() && attempt < node_limits.attempts {
            let delay = limits::backoff(
                node_limits.retry_delay,
                attempt,
                self.settings.max_retry_delay,
            );
            let node_id = node.id.clone();
            let first = self
                .backend
                .update_progress(&job.run_id, move |p| p.next_attempt(&node_id, attempt))
                .await?;
            if first != Some(true) {
                // A late delivery of this attempt failed again: the retry
                // was scheduled by the first delivery.
                return Ok(());
            }
            info!(run = %job.run_id, node = %node.id, attempt, error = %failure.message, "node failed; retrying");
            let mut retry = job.clone();
            retry.attempt = Some(attempt + 1);
            retry.signal = None;
            self.backend
                .enqueue(retry, delay.min(MAX_JOB_DELAY))
                .await?;
            return Ok(());
        }
        let mut message =
            if failure.is_fatal() || failure.message.starts_with(&format!("Node '{}'", node.id)) {
                failure.message.clone()
            } else {
                format!("Node '{}' execution failed: {}", node.id, failure.message)
            };
        if failure.kind == FailureKind::InvalidInput {
            // Where to look: the data may have been written (or edited)
            // anywhere upstream of the node.
            message.push_str(&format!(
                " (node '{}' reads its input from {})",
                node.id,
                routing::input_source(plan, node)
            ));
        }
        warn!(run = %job.run_id, node = %node.id, error = %message, "node failed");
        if let (Some(fallback), false) = (node.fallback(), failure.is_fatal())
            && fallback != node.id
            && plan.node(fallback).is_some()
        {
            let changes = vec![
                ContextChange::Set {
                    key: "_catch_error".into(),
                    value: json!({"message": message, "nodeId": node.id, "blueprintId": plan.blueprint.id}).into(),
                },
                ContextChange::Set {
                    key: output_key(&node.id),
                    value: ContextValue::null(),
                },
            ];
            self.write_changes(&job.run_id, &changes).await?;
            let (node_id, fallback) = (node.id.clone(), fallback.to_owned());
            return self
                .settle(plan, &job.run_id, move |p| {
                    p.fall_back(&node_id, &fallback, &message)
                })
                .await;
        }
        let node_id = node.id.clone();
        self.settle(plan, &job.run_id, move |p| p.fail(&node_id, &message))
            .await
    }

    /// A node's context write failed. A transient failure is returned (the
    /// job is delivered again). A permanent refusal (the run's context
    /// would exceed the store's item limit, say) would repeat on every
    /// attempt, and a fallback's output would be stored in the same
    /// document, so the node fails fatally: no retry, no fallback; the
    /// run fails with the store's reason and the size of the node's writes.
    async fn write_failed(
        &self,
        plan: &Plan,
        run_id: &str,
        node: &NodeDefinition,
        changes: &[ContextChange],
        error: StoreError,
    ) -> Result<(), EngineError> {
        if !error.is_permanent() {
            return Err(error.into());
        }
        let bytes: usize = changes
            .iter()
            .map(|change| match change {
                ContextChange::Set { key, value } => {
                    key.len() + serde_json::to_string(value).map_or(0, |text| text.len())
                }
                ContextChange::Delete { .. } => 0,
            })
            .sum();
        let message = format!(
            "Node '{}' ran, but the store refused its {bytes} bytes of context writes: {error}",
            node.id
        );
        let job = Job::new(run_id, &plan.blueprint.id, &node.id);
        self.failed(plan, &job, node, NodeFailure::fatal(message))
            .await
    }

    /// The run's progress record exists but its context document does not
    /// (deleted, or its identity edited): the node cannot run. The run
    /// fails naming the document and the way back, instead of the job being
    /// taken for one of an unknown run (which the reconciler would send
    /// again forever).
    async fn context_missing(
        &self,
        plan: &Plan,
        run_id: &str,
        node_id: &str,
    ) -> Result<(), EngineError> {
        let message = format!(
            "the context document of run '{run_id}' is missing (deleted, or its id/runId changed), so node '{node_id}' cannot run; restore the document, then retry the run (`flowcraft-host retry {run_id}`)"
        );
        warn!(run = %run_id, node = %node_id, "{message}");
        let node_id = node_id.to_owned();
        self.settle(plan, run_id, move |p| p.fail(&node_id, &message))
            .await
    }

    async fn load_snapshot(&self, run_id: &str) -> Result<Arc<ContextMap>, EngineError> {
        Ok(self
            .backend
            .load_context(run_id)
            .await?
            .ok_or_else(|| EngineError::UnknownRun(run_id.to_owned()))?
            .values)
    }

    /// Applies a transition and carries out what it asks for.
    async fn settle<F>(&self, plan: &Plan, run_id: &str, transition: F) -> Result<(), EngineError>
    where
        F: FnMut(&mut RunProgress) -> Advance + Send,
    {
        self.settle_knowing(plan, run_id, transition, None).await
    }

    /// [`Self::settle`] for a job that knows the context its write was made
    /// on. If no other job settled between its view and this settlement, the
    /// context after it is remembered for the run's next job on this worker,
    /// and published without a read if the run completes.
    async fn settle_knowing<F>(
        &self,
        plan: &Plan,
        run_id: &str,
        transition: F,
        known: Option<KnownContext>,
    ) -> Result<(), EngineError>
    where
        F: FnMut(&mut RunProgress) -> Advance + Send,
    {
        let mut transition = transition;
        let outcome = self
            .backend
            .update_progress(run_id, move |p| {
                let settled_before = p.settled;
                let advance = transition(p);
                // Only a state change needs the record (to publish it).
                let record = advance.new_state.map(|_| p.clone());
                (advance, record, settled_before, p.settled)
            })
            .await?;
        let Some((advance, record, settled_before, settled_after)) = outcome else {
            return Err(EngineError::UnknownRun(run_id.to_owned()));
        };
        // The context this job holds is the run's context after its own
        // settlement only if nobody settled between its view and its write.
        let current = known
            .filter(|known| known.seen == settled_before && settled_after == settled_before + 1)
            .map(|known| {
                // The cache's copy is the snapshot: letting go of it first
                // lets the changes apply in place rather than to a copy.
                self.cache.forget(run_id);
                known.after_write()
            });
        match (&current, advance.new_state) {
            (_, Some(state)) if state.is_terminal() => self.cache.forget(run_id),
            (Some(context), _) => self.cache.put(run_id, settled_after, context.clone()),
            _ => {}
        }
        self.enqueue_scheduled(plan, run_id, &advance).await?;
        let (Some(state), Some(progress)) = (advance.new_state, record) else {
            return Ok(());
        };
        self.publish(&progress, state, current).await
    }

    async fn enqueue_scheduled(
        &self,
        plan: &Plan,
        run_id: &str,
        advance: &Advance,
    ) -> Result<(), EngineError> {
        for node in &advance.schedule {
            let job = Job::new(run_id, &plan.blueprint.id, node);
            if let Some(job) = keep_as_continuation(job) {
                self.backend.enqueue(job, Duration::ZERO).await?;
            }
        }
        Ok(())
    }

    /// Makes sure a terminal run's status is published (a crash may have
    /// happened between reaching the state and publishing it).
    async fn ensure_published(&self, progress: &RunProgress) -> Result<(), EngineError> {
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
    async fn write_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), StoreError> {
        let size: usize = changes.iter().map(ContextChange::size).sum();
        let _writing = self
            .writing
            .acquire_many(size.clamp(1, WRITING_BUDGET) as u32)
            .await
            .ok();
        self.backend.apply_changes(run_id, changes).await
    }

    /// Writes the run's status; `final_context`, when known, spares reading
    /// the context for a completed run's payload.
    async fn publish(
        &self,
        progress: &RunProgress,
        state: RunState,
        final_context: Option<Arc<ContextMap>>,
    ) -> Result<(), EngineError> {
        let final_context = match (state, final_context) {
            (RunState::Completed, Some(context)) => Some(context),
            (RunState::Completed, None) => Some(self.load_snapshot(&progress.run_id).await?),
            _ => None,
        };
        let mut _publishing = None;
        let final_status = match state {
            RunState::Completed => {
                let context: IndexMap<&str, &ContextValue> = final_context
                    .iter()
                    .flat_map(|context| context.iter())
                    .filter(|(key, _)| !matches!(key.as_str(), "id" | "runId"))
                    .map(|(key, value)| (key.as_str(), value))
                    .collect();
                // The share is taken before anything is serialized: a run
                // waiting for its turn holds only its context.
                let size = serialized_size(&context);
                let share = size.clamp(1, PUBLISHING_BUDGET) as u32;
                _publishing = self.publishing.acquire_many(share).await.ok();
                let mut serialized = Vec::with_capacity(size);
                // Writing raw JSON values and string keys into a `Vec` cannot fail.
                let _ = serde_json::to_writer(&mut serialized, &context);
                Some(FinalStatus::Completed {
                    payload: CompletedPayload {
                        context,
                        serialized_context: String::from_utf8(serialized).unwrap_or_default(),
                        status: "completed",
                    },
                })
            }
            RunState::Failed => Some(FinalStatus::Failed {
                reason: progress
                    .errors
                    .first()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            }),
            RunState::Cancelled => Some(FinalStatus::Cancelled),
            RunState::Running | RunState::Awaiting => None,
        };
        // A terminal state is reached by exactly one transition of the
        // progress record (this one), so it is written without the guard.
        // The status is JSON text (no tree): the store writes it as it is.
        let final_status = final_status.map(|status| raw_json(&status));
        drop(final_context);
        match final_status {
            Some(final_status) => {
                let published = self
                    .backend
                    .publish_terminal(&progress.run_id, state, &final_status)
                    .await;
                match published {
                    // Upstream's payload holds the final context twice; a
                    // context near the store's item limit cannot be copied
                    // into the status. The status still has to say
                    // `completed`: publish it without the copy.
                    Err(error) if error.is_permanent() && state == RunState::Completed => {
                        warn!(run = %progress.run_id, error = %error, "final context too large for the status document; publishing the status without it");
                        let note = format!(
                            "the final context is too large to be copied into the status document ({error}); read it from the run's context document"
                        );
                        let trimmed = json!({"status": "completed", "payload": {"status": "completed", "contextOmitted": note}});
                        self.backend
                            .publish_terminal(&progress.run_id, state, &raw_json(&trimmed))
                            .await?
                    }
                    other => other?,
                }
            }
            None => {
                self.backend
                    .write_status(&progress.run_id, state, None)
                    .await?;
            }
        }
        info!(run = %progress.run_id, status = state.as_str(), "run status changed");
        if let Some(parent) = &progress.parent
            && state != RunState::Running
        {
            let mut job = Job::new(&parent.run_id, &parent.blueprint_id, &parent.node_id);
            job.signal = Some(JobSignal::Child);
            self.backend.enqueue(job, Duration::ZERO).await?;
        }
        Ok(())
    }
}

/// What handling a job needs from its run's progress record.
struct JobView {
    version: Value,
    /// Settlements so far (see [`RunProgress::settled`]).
    settled: u64,
    state: RunState,
    status: NodeStatus,
    /// The attempt the node is at.
    attempt: u32,
    /// A subflow node whose child run exists already.
    has_child: bool,
    /// The failed node this node stands in for as its fallback.
    stand_in: Option<String>,
    /// The node's definition when it was added at runtime.
    dynamic: Option<NodeDefinition>,
    pins: crate::runner::Pins,
    /// How often the run was retried (names new child runs).
    retries: u32,
    /// The blueprint ids of this run and the runs above it (see
    /// [`RunProgress::lineage`]).
    lineage: Vec<String>,
    /// The run at the top of this run's tree of subflows.
    root_run_id: String,
}

impl JobView {
    fn of(progress: &RunProgress, node: &str) -> Self {
        Self {
            version: progress.blueprint_version.clone(),
            settled: progress.settled,
            state: progress.state,
            status: progress.status(node),
            attempt: progress.attempt(node),
            has_child: progress.children.contains_key(node),
            stand_in: progress.stand_ins.get(node).cloned(),
            dynamic: progress.dynamic_node(node).cloned(),
            pins: progress.pins.clone(),
            retries: progress.retries,
            lineage: progress.lineage(),
            root_run_id: progress.root_run_id().to_owned(),
        }
    }
}

/// The slot of [`Engine::handle_continuing`] for the jobs it answers.
struct Continuation {
    /// The run whose jobs are kept.
    run_id: String,
    kept: Vec<Job>,
}

tokio::task_local! {
    /// Set while [`Engine::handle_continuing`] runs a job step.
    static CONTINUATION: RefCell<Continuation>;
}

/// Keeps `job` for the caller of [`Engine::handle_continuing`] if it is of
/// the run that caller wants jobs of; otherwise gives it back to be enqueued.
fn keep_as_continuation(job: Job) -> Option<Job> {
    let mut job = Some(job);
    // Outside `handle_continuing` there is no slot: enqueue.
    let _ = CONTINUATION.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        if job.as_ref().is_some_and(|job| job.run_id == slot.run_id)
            && let Some(kept) = job.take()
        {
            slot.kept.push(kept);
        }
    });
    job
}

/// The warning for a plugin node whose `action` matches none of its edges
/// while no default edge leaves it either: nothing follows it, silently.
fn unmatched_action_warning(
    plan: &Plan,
    node: &NodeDefinition,
    action: Option<&str>,
) -> Option<String> {
    let action = action.filter(|_| !builtin::is_builtin(&node.uses))?;
    let expected = routing::unmatched_action(plan, &node.id, action)?;
    Some(format!(
        "node '{}' returned action '{action}', which matches none of its edges (they expect: {}) and it has no default edge: nothing follows it",
        node.id,
        expected.join(", ")
    ))
}

/// Why `node` of `progress`'s run cannot be resumed, naming the nodes that can.
fn not_awaiting(plan: &Plan, progress: &RunProgress, node: &str) -> EngineError {
    let awaiting: Vec<&str> = progress.awaiting.keys().map(String::as_str).collect();
    let awaiting = match awaiting.as_slice() {
        [] => "no node is awaiting".to_owned(),
        nodes => format!("awaiting: {}", nodes.join(", ")),
    };
    let known = plan.node(node).is_some() || progress.dynamic_node(node).is_some();
    let hint = if known {
        format!("Resume an awaiting node ({awaiting})")
    } else {
        format!(
            "Blueprint '{}' has no node '{node}' ({awaiting})",
            plan.blueprint.id
        )
    };
    EngineError::NodeNotAwaiting {
        node: node.to_owned(),
        hint,
    }
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    match payload.downcast_ref::<&str>() {
        Some(text) => (*text).to_owned(),
        None => payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "a panic without a message".to_owned()),
    }
}

/// The RFC 3339 instant `after` from now; `None` past the representable dates.
fn wake_up_time(after: Duration) -> Option<String> {
    let at = time::OffsetDateTime::now_utc().checked_add(after.try_into().ok()?)?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Time left until an RFC 3339 instant (zero when it has passed or does not parse).
pub fn time_until(instant: &str) -> Duration {
    let Ok(at) =
        time::OffsetDateTime::parse(instant, &time::format_description::well_known::Rfc3339)
    else {
        return Duration::ZERO;
    };
    (at - time::OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or(Duration::ZERO)
}

/// What a job knows of its run's context after writing its changes: the
/// settlement count it saw, the snapshot it read at that count, and the
/// changes it wrote.
struct KnownContext {
    seen: u64,
    snapshot: Arc<ContextMap>,
    changes: Vec<ContextChange>,
}

impl KnownContext {
    /// The context after the write, as long as no other job wrote meanwhile
    /// (the caller checks the settlement count). Copies the snapshot only if
    /// another job of the run still holds it.
    fn after_write(self) -> Arc<ContextMap> {
        let mut context = Arc::unwrap_or_clone(self.snapshot);
        for change in self.changes {
            change.apply(&mut context);
        }
        Arc::new(context)
    }
}

/// A terminal status's `finalStatus`, in upstream's shape. It is written
/// as JSON text: the final context's values go in as the text they are kept
/// as, never parsed into a tree.
#[derive(Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum FinalStatus<'a> {
    Completed { payload: CompletedPayload<'a> },
    Failed { reason: String },
    Cancelled,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompletedPayload<'a> {
    context: IndexMap<&'a str, &'a ContextValue>,
    /// `context` as JSON text.
    serialized_context: String,
    status: &'static str,
}

/// `value` as JSON text. Serializing cannot fail here: every map key this
/// engine writes is a string.
fn raw_json<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The length of `context` as JSON text, give or take escapes in its keys.
fn serialized_size(context: &IndexMap<&str, &ContextValue>) -> usize {
    // `{` and `}`, `"key":value` for each entry, commas between them.
    let entries: usize = context
        .iter()
        .map(|(key, value)| key.len() + value.json().len() + 3)
        .sum();
    2 + entries + context.len().saturating_sub(1)
}

/// `snapshot` with `changes` applied (only built when a result is routed).
fn overlay(snapshot: &ContextMap, changes: &[ContextChange]) -> ContextMap {
    let mut view = snapshot.clone();
    for change in changes {
        change.apply_to(&mut view);
    }
    view
}

/// Context writes adding (`reason` given) or removing `node` from the
/// upstream awaiting marks.
fn awaiting_marks(
    snapshot: &ContextMap,
    node: &str,
    reason: Option<&AwaitReason>,
) -> Vec<ContextChange> {
    let mut ids: Vec<Value> = match snapshot.get(AWAITING_IDS_KEY).map(ContextValue::to_value) {
        Some(Value::Array(ids)) => ids,
        _ => Vec::new(),
    };
    let mut details: Map<String, Value> = match snapshot
        .get(AWAITING_DETAILS_KEY)
        .map(ContextValue::to_value)
    {
        Some(Value::Object(details)) => details,
        _ => Map::new(),
    };
    ids.retain(|id| id.as_str() != Some(node));
    details.shift_remove(node);
    if let Some(reason) = reason {
        ids.push(Value::String(node.to_owned()));
        let detail = match reason {
            AwaitReason::ExternalEvent => json!({"reason": "external_event"}),
            AwaitReason::Timer { wake_up_at } => json!({"reason": "timer", "wakeUpAt": wake_up_at}),
            AwaitReason::Subflow { child_run_id } => {
                json!({"reason": "subflow", "childRunId": child_run_id})
            }
        };
        details.insert(node.to_owned(), detail);
    }
    if ids.is_empty() {
        vec![
            ContextChange::Delete {
                key: AWAITING_IDS_KEY.into(),
            },
            ContextChange::Delete {
                key: AWAITING_DETAILS_KEY.into(),
            },
        ]
    } else {
        vec![
            ContextChange::Set {
                key: AWAITING_IDS_KEY.into(),
                value: Value::Array(ids).into(),
            },
            ContextChange::Set {
                key: AWAITING_DETAILS_KEY.into(),
                value: Value::Object(details).into(),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(entries: &[(&str, &str)]) -> ContextMap {
        entries
            .iter()
            .map(|(key, json)| {
                (
                    (*key).to_owned(),
                    ContextValue::parse((*json).to_owned()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_final_status_is_upstreams_shape_with_values_kept_verbatim() {
        let context = context(&[("a", r#"{"x": 1}"#), ("_outputs.n", r#"[1,2]"#)]);
        let entries: IndexMap<&str, &ContextValue> = context
            .iter()
            .map(|(key, value)| (key.as_str(), value))
            .collect();
        let size = serialized_size(&entries);
        let serialized = serde_json::to_string(&entries).unwrap();
        assert_eq!(size, serialized.len(), "{serialized}");
        let completed = FinalStatus::Completed {
            payload: CompletedPayload {
                context: entries,
                serialized_context: serialized,
                status: "completed",
            },
        };
        assert_eq!(
            raw_json(&completed).get(),
            r#"{"status":"completed","payload":{"context":{"a":{"x": 1},"_outputs.n":[1,2]},"serializedContext":"{\"a\":{\"x\": 1},\"_outputs.n\":[1,2]}","status":"completed"}}"#
        );
        let failed = FinalStatus::Failed {
            reason: "node B failed".into(),
        };
        assert_eq!(
            raw_json(&failed).get(),
            r#"{"status":"failed","reason":"node B failed"}"#
        );
        assert_eq!(
            raw_json(&FinalStatus::Cancelled).get(),
            r#"{"status":"cancelled"}"#
        );
    }
}
