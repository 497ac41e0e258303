//! The job step: what the engine does with one delivered job. It reads the
//! job's view of its run, drops duplicates and stale deliveries, runs the
//! node (or reuses the result an earlier, crashed delivery stored) and hands
//! the result to [`super::outcome`]. A panic anywhere in the step is
//! contained: the node fails instead of the worker.

use std::any::Any;
use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::Value;
use tracing::{Instrument, error, info};

use super::attempt::{Attempt, Attempted};
use super::outcome::Finished;
use super::{Engine, EngineError};
use crate::blueprint::NodeDefinition;
use crate::builtin;
use crate::clock::unix_ms;
use crate::context::{ContextMap, ContextValue};
use crate::plan::Plan;
use crate::progress::{NodeStatus, RunProgress, RunState};
use crate::routing::{OUTPUT_KEY_PREFIX, action_key, output_key};
use crate::runner::{NodeRunner, NodeSuccess, Pins};
use crate::store::{Backend, Job, JobSignal};
use crate::telemetry::{self, TraceParent};

/// The trace span of `job`'s attempt: a child of the span that scheduled the
/// job when it names one of its run's trace, else of the run's root span.
fn node_span(job: &Job, view: &JobView, node: Option<&NodeDefinition>) -> tracing::Span {
    let parent = job
        .traceparent
        .filter(|parent| view.trace.is_some_and(|run| run.same_trace(parent)))
        .or(view.trace);
    let uses = node.map_or("", |node| node.uses.as_str());
    telemetry::node_span(
        parent.as_ref(),
        &job.run_id,
        &job.node_id,
        uses,
        job.attempt(),
    )
}

/// `scheduled`, the jobs of `job`'s run among them naming `span` (when
/// spans are exported) as the span that scheduled them.
fn scheduled_within(span: &tracing::Span, job: &Job, mut scheduled: Vec<Job>) -> Vec<Job> {
    if let Some(traceparent) = telemetry::traceparent_of(span) {
        for next in scheduled
            .iter_mut()
            .filter(|next| next.run_id == job.run_id)
        {
            next.traceparent = Some(traceparent);
        }
    }
    scheduled
}

/// Context key of dynamic nodes a node returned (for recovery after a crash).
pub(super) const DYNAMIC_KEY_PREFIX: &str = "_dynamicNodes.";

/// How a job reached the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Through a queue: it may be a duplicate.
    Received,
    /// From an earlier step's answer, in this process.
    HandedOver,
}

/// What handling a job needs from its run's progress record.
pub(super) struct JobView {
    pub version: Value,
    /// Settlements so far (see [`RunProgress::settled`]).
    pub settled: u64,
    pub state: RunState,
    pub status: NodeStatus,
    /// The attempt the node is at.
    pub attempt: u32,
    /// A subflow node whose child run exists already.
    pub has_child: bool,
    /// The failed node this node stands in for as its fallback.
    pub stand_in: Option<String>,
    /// The node's definition when it was added at runtime.
    pub dynamic: Option<NodeDefinition>,
    pub pins: Pins,
    /// How often the run was retried (names new child runs).
    pub retries: u32,
    /// The blueprint ids of this run and the runs above it (see
    /// [`RunProgress::lineage`]).
    pub lineage: Vec<String>,
    /// The run's trace (see [`RunProgress::trace`]).
    pub trace: Option<TraceParent>,
    /// The run at the top of this run's tree of subflows.
    pub root_run_id: String,
}

impl JobView {
    /// Whether `job` runs its node on this view: its run goes on, the node
    /// is scheduled at the job's attempt and no child run stands for it.
    fn runs(&self, job: &Job) -> bool {
        !self.state.is_terminal()
            && job.signal.is_none()
            && self.status == NodeStatus::Scheduled
            && !self.has_child
            && job.attempt() >= self.attempt
    }

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
            trace: progress.trace,
            root_run_id: progress.root_run_id().to_owned(),
        }
    }
}

impl<B: Backend, R: NodeRunner> Engine<B, R> {
    /// Handles one job. Answers the jobs it scheduled for the job's run
    /// without delay (the nodes that follow), which the caller must make
    /// durable: send them ([`Self::send`]) or run them itself. A panic
    /// anywhere in the job step is contained: the job's node fails with the
    /// panic's message (see [`Self::contain`]).
    #[must_use = "the jobs a step scheduled are lost unless sent or run"]
    pub async fn handle(&self, job: &Job) -> Result<Vec<Job>, EngineError> {
        self.contained(job, Delivery::Received).await
    }

    /// [`Self::handle`] for a job this process got from an earlier step's
    /// answer and runs itself: nobody else was sent it, so its view may be
    /// the record as this process's store last wrote it (no read; see
    /// `job_view`). A job that came through a queue may be a duplicate, and
    /// is checked against the stored record.
    #[must_use = "the jobs a step scheduled are lost unless sent or run"]
    pub async fn handle_successor(&self, job: &Job) -> Result<Vec<Job>, EngineError> {
        self.contained(job, Delivery::HandedOver).await
    }

    /// The job step, with a panic contained.
    async fn contained(&self, job: &Job, delivery: Delivery) -> Result<Vec<Job>, EngineError> {
        match AssertUnwindSafe(self.step(job, delivery))
            .catch_unwind()
            .await
        {
            Ok(outcome) => outcome,
            Err(panic) => self.contain(job, panic_message(panic.as_ref())).await,
        }
    }

    /// Whether `job` still has work to do: its run is not over and its node
    /// is scheduled at the job's attempt, or awaiting (for a signal job). A
    /// job of no known run counts as outstanding. A worker asks this before
    /// dead-lettering a message delivered too often: one whose jobs were
    /// all handled (its deletes were lost) is no poison.
    pub async fn is_outstanding(&self, job: &Job) -> Result<bool, EngineError> {
        let view = self
            .backend
            .read_progress(&job.run_id, |p| JobView::of(p, &job.node_id))
            .await?;
        Ok(view.is_none_or(|view| {
            !view.state.is_terminal()
                && job.attempt() >= view.attempt
                && matches!(view.status, NodeStatus::Scheduled | NodeStatus::Awaiting)
        }))
    }

    /// The job step panicked: its node fails, fatally (a bug is not
    /// retried, and no fallback hides it), so that the run follows the
    /// usual failure rules instead of staying `running` with nobody working
    /// on it. A node that had settled before the panic is left as it is.
    /// If failing the node panics or fails as well, the answer is
    /// [`EngineError::Panicked`], for the caller to deliver the job again.
    async fn contain(&self, job: &Job, panic: String) -> Result<Vec<Job>, EngineError> {
        error!(run = %job.run_id, node = %job.node_id, panic = %panic, "internal error: the job step panicked; failing the node");
        let message = format!(
            "Node '{}': internal error in flowcraft-host while handling this node: {panic}",
            job.node_id
        );
        let failing = AssertUnwindSafe(self.fail_node(job, message))
            .catch_unwind()
            .await;
        let then = match failing {
            Ok(Ok(scheduled)) => return Ok(scheduled),
            Ok(Err(error)) if error.is_transient() => return Err(error),
            Ok(Err(error)) => error.to_string(),
            Err(again) => panic_message(again.as_ref()),
        };
        Err(EngineError::Panicked {
            run: job.run_id.clone(),
            node: job.node_id.clone(),
            message: format!("{panic}; then: {then}"),
        })
    }

    /// Fails `job`'s node with `message` if it is still scheduled or awaiting.
    async fn fail_node(&self, job: &Job, message: String) -> Result<Vec<Job>, EngineError> {
        let (_, plan) = self.run_plan(&job.run_id).await?;
        self.settle(&plan, &job.run_id, |p| p.fail(&job.node_id, &message))
            .await
    }

    /// The job step.
    async fn step(&self, job: &Job, delivery: Delivery) -> Result<Vec<Job>, EngineError> {
        let view = self.job_view(job, delivery).await?;
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
        let node = plan
            .node(&job.node_id)
            .cloned()
            .or_else(|| view.dynamic.clone());
        let span = node_span(job, &view, node.as_ref());
        if view.state.is_terminal() || job.signal.is_some() {
            let outcome = match job.signal {
                None => "duplicate",
                Some(JobSignal::Wake) => "woken",
                Some(JobSignal::Child) => "child_settled",
            };
            span.record("flowcraft.outcome", outcome);
            let signalled = self.signalled(&plan, job, view.state);
            let scheduled = signalled.instrument(span.clone()).await?;
            return Ok(scheduled_within(&span, job, scheduled));
        }
        let view = self.caught_up(&plan, job, view).await?;
        if !view.runs(job) {
            // A duplicate, or a late delivery of an attempt already retried.
            span.record("flowcraft.outcome", "duplicate");
            return Ok(Vec::new());
        }
        let scheduled = self
            .run_node(&plan, job, &view, node, &span)
            .instrument(span.clone())
            .await?;
        Ok(scheduled_within(&span, job, scheduled))
    }

    /// Runs the job's node (`None`: the blueprint lacks it) and settles what
    /// it did; `span` records the outcome.
    async fn run_node(
        &self,
        plan: &Plan,
        job: &Job,
        view: &JobView,
        node: Option<NodeDefinition>,
        span: &tracing::Span,
    ) -> Result<Vec<Job>, EngineError> {
        let Some(node) = node else {
            let message = format!(
                "Node '{}' not found in blueprint '{}'.",
                job.node_id, plan.blueprint.id
            );
            span.record("flowcraft.outcome", "failed");
            return self
                .settle(plan, &job.run_id, |p| p.fail_run(&job.node_id, &message))
                .await;
        };
        let snapshot = match self.cache.get(&job.run_id, view.settled) {
            Some(remembered) => remembered,
            None => match self.backend.load_context(&job.run_id).await? {
                Some(context) => context.values,
                None => return self.context_missing(plan, &job.run_id, &node.id).await,
            },
        };
        let attempted = match recorded_result(&node, &snapshot) {
            Some(success) => Attempted::without_changes(Attempt::Success(success)),
            None => {
                let pin = view.pins.get(&node.uses).cloned();
                if let Some(pin) = &pin {
                    span.record("flowcraft.bundle", pin.as_str());
                    self.prepared(job, &node, pin).await?;
                }
                self.attempt(plan, pin, &node, job, snapshot.clone()).await
            }
        };
        span.record("flowcraft.outcome", attempted.attempt.outcome());
        self.conclude(plan, job, &node, view, snapshot, attempted)
            .await
    }

    /// Asks the runner for the implementation `node`'s run is pinned to.
    async fn prepared(
        &self,
        job: &Job,
        node: &NodeDefinition,
        pin: &str,
    ) -> Result<(), EngineError> {
        self.runner
            .prepare(&node.uses, pin)
            .await
            .map_err(|reason| EngineError::ImplementationUnavailable {
                run: job.run_id.clone(),
                node: node.id.clone(),
                reason,
            })
    }

    /// The job's view of its run; a run started the upstream way (no
    /// progress record yet) is adopted first. For a successor handed over
    /// in process, a view that says the job is to run may come from the
    /// record as this worker's store last saw it (see
    /// [`read_progress_remembered`]): the job that follows a settlement on
    /// this worker then costs no read. That view is the record as it was
    /// when this node was scheduled or later; what another writer changed
    /// since (a parallel branch, a cancel) is applied first when the job
    /// settles. Any other answer is read afresh, so that a job is never
    /// dropped on an out-of-date record.
    ///
    /// [`read_progress_remembered`]: crate::store::CoordinationStore::read_progress_remembered
    async fn job_view(&self, job: &Job, delivery: Delivery) -> Result<JobView, EngineError> {
        let of = |p: &RunProgress| JobView::of(p, &job.node_id);
        if delivery == Delivery::HandedOver {
            let remembered = self
                .backend
                .read_progress_remembered(&job.run_id, of)
                .await?;
            if let Some(view) = remembered.filter(|view| view.runs(job)) {
                return Ok(view);
            }
        }
        if let Some(view) = self.backend.read_progress(&job.run_id, of).await? {
            return Ok(view);
        }
        if self.adopt(job).await?
            && let Some(view) = self.backend.read_progress(&job.run_id, of).await?
        {
            return Ok(view);
        }
        Err(EngineError::UnknownRun(job.run_id.clone()))
    }

    /// A job for a run that is over (its status may still need publishing),
    /// or one with a signal: a timer fired, or a child run settled.
    async fn signalled(
        &self,
        plan: &Plan,
        job: &Job,
        state: RunState,
    ) -> Result<Vec<Job>, EngineError> {
        let progress = self.progress(&job.run_id).await?;
        if state.is_terminal() {
            self.ensure_published(&progress).await?;
            return Ok(Vec::new());
        }
        match job.signal {
            Some(JobSignal::Wake) => self.wake(plan, &progress, &job.node_id).await,
            _ => self.collect_child(plan, &progress, &job.node_id).await,
        }
    }

    /// Hands the node's attempt to the outcome it asks for.
    async fn conclude(
        &self,
        plan: &Plan,
        job: &Job,
        node: &NodeDefinition,
        view: &JobView,
        snapshot: Arc<ContextMap>,
        Attempted { attempt, changes }: Attempted,
    ) -> Result<Vec<Job>, EngineError> {
        match attempt {
            Attempt::Success(success) => {
                let finished = Finished {
                    node,
                    stands_in_for: view.stand_in.as_deref(),
                    snapshot,
                    changes,
                    success,
                    seen: Some(view.settled),
                };
                self.complete(plan, &job.run_id, finished).await
            }
            Attempt::Wait(pausing) => {
                self.pause(plan, job, node, &snapshot, changes, pausing)
                    .await
            }
            Attempt::Subflow(child_blueprint, initial) => {
                self.start_child(plan, job, node, view, child_blueprint, initial)
                    .await
            }
            Attempt::Reopen(dynamic_nodes) => {
                self.reopen(plan, &job.run_id, node, changes, dynamic_nodes)
                    .await
            }
            Attempt::Failure(failure) => self.failed(plan, job, node, failure).await,
        }
    }

    /// In a fleet shared with upstream workers (see
    /// [`EngineSettings::shared_with_upstream`](super::EngineSettings::shared_with_upstream)),
    /// a job for a node this record has not scheduled was sent by one of
    /// them: the record catches up first. Otherwise the view stays.
    async fn caught_up(
        &self,
        plan: &Plan,
        job: &Job,
        view: JobView,
    ) -> Result<JobView, EngineError> {
        if view.status == NodeStatus::Waiting
            && self.settings.shared_with_upstream
            && plan.node(&job.node_id).is_some()
        {
            return Ok(self.catch_up(job).await?.unwrap_or(view));
        }
        Ok(view)
    }

    /// The record takes the nodes with an output in the context as done and
    /// schedules the job's node. Answers the job's new view.
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
        progress.trace = Some(TraceParent::new_trace());
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
        let advance = progress.start(&scheduled);
        progress.stamp_times(&BTreeSet::new(), &advance, unix_ms());
        if self.backend.create_progress(&progress).await? {
            info!(run = %job.run_id, blueprint = %plan.blueprint.id, "adopted a run started by another client");
        }
        Ok(true)
    }
}

/// A plugin node whose output is already stored was run by an earlier
/// delivery that crashed before settling: reuse its result.
fn recorded_result(node: &NodeDefinition, snapshot: &ContextMap) -> Option<NodeSuccess> {
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
