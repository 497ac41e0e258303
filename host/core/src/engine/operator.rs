//! What an operator (or a client) does to runs: start one, resume a paused
//! node, call a webhook, retry a failed run, cancel, reconcile a stalled run,
//! read a run's report. Each sends the jobs it schedules itself.

use std::collections::BTreeSet;

use serde_json::Value;
use tracing::info;

use super::{Engine, EngineError, RunReport};
use crate::builtin::Builtin;
use crate::clock::unix_ms;
use crate::context::{ContextChange, ContextMap, IDENTITY_KEYS};
use crate::plan::Plan;
use crate::progress::{AwaitReason, NodeStatus, ParentLink, RunProgress, RunState};
use crate::runner::NodeRunner;
use crate::store::{Backend, Job, JobSignal};
use crate::telemetry::{self, TraceParent};

use super::subflow::time_until;

impl<B: Backend, R: NodeRunner> Engine<B, R> {
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

    /// Starts a run, as the child of a subflow node when `parent` is given.
    pub(super) async fn start_run_with_parent(
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
        // A child run's trace goes on its parent's, under the subflow node.
        progress.trace = Some(match parent.as_ref().and_then(|link| link.trace) {
            Some(caller) => TraceParent::child_of(&caller),
            None => TraceParent::new_trace(),
        });
        progress.parent = parent;
        let advance = progress.start(&plan.analysis.start_nodes);
        progress.stamp_times(&BTreeSet::new(), &advance, unix_ms());
        if !self.backend.create_progress(&progress).await? {
            return Err(EngineError::RunExists(run_id));
        }
        telemetry::run_started(blueprint_id);
        // Both before the first job is sent, in no order among themselves:
        // the progress record, made first, is what makes the run exist.
        tokio::try_join!(
            self.backend.create_context(&run_id, context),
            self.backend.write_status(&run_id, RunState::Running, None)
        )?;
        info!(run = %run_id, blueprint = %blueprint_id, "run started");
        self.send(super::settle::jobs_for(&plan, &run_id, &advance))
            .await?;
        if let Some(state) = advance.new_state {
            self.publish(&progress, state, None).await?;
        }
        Ok(run_id)
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
        // A cancelled run keeps the nodes it was awaiting on record; it
        // awaits nothing any more.
        if progress.awaiting.is_empty() || progress.state.is_terminal() {
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
                let scheduled = self
                    .resume_node(&plan, &progress, &node_id, action, output, Vec::new())
                    .await?;
                self.send(scheduled).await
            }
        }
    }

    /// Answers a call of `node_id`'s webhook in `run_id`: `payload` becomes
    /// the node's output and the run goes on. A webhook is called once; a
    /// second call finds the node no longer awaiting.
    pub async fn call_webhook(
        &self,
        run_id: &str,
        node_id: &str,
        payload: Value,
    ) -> Result<(), EngineError> {
        let (progress, plan) = self.run_plan(run_id).await?;
        if let Some(AwaitReason::Webhook { .. }) = progress.awaiting.get(node_id)
            && !progress.state.is_terminal()
        {
            let scheduled = self
                .resume_node(&plan, &progress, node_id, None, Some(payload), Vec::new())
                .await?;
            return self.send(scheduled).await;
        }
        let is_webhook = plan
            .node(node_id)
            .or_else(|| progress.dynamic_node(node_id))
            .is_some_and(|node| node.uses == Builtin::Webhook.as_str());
        if !is_webhook {
            return Err(EngineError::NoWebhook {
                run: run_id.to_owned(),
                node: node_id.to_owned(),
            });
        }
        Err(EngineError::NodeNotAwaiting {
            node: node_id.to_owned(),
            hint: format!(
                "Its webhook is called once: run '{run_id}' is {}, and the node {}",
                progress.state.as_str(),
                match progress.status(node_id) {
                    NodeStatus::Waiting => "has not run yet",
                    NodeStatus::Scheduled => "is about to wait for its call",
                    _ => "was called already",
                }
            ),
        })
    }

    /// The current result of a run.
    pub async fn report(&self, run_id: &str) -> Result<RunReport, EngineError> {
        let progress = self.progress(run_id).await?;
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
    /// re-publishes a terminal state, or the `awaiting` status of a run
    /// whose resume was cut off before it took its node off `awaiting`.
    /// Returns the nodes it enqueued. Unlike upstream's reconcile it never
    /// runs a node on a path that was not taken, a failed node or an
    /// awaiting one.
    pub async fn reconcile(&self, run_id: &str) -> Result<Vec<String>, EngineError> {
        let progress = self.progress(run_id).await?;
        if progress.state.is_terminal() {
            self.ensure_published(&progress).await?;
            return Ok(Vec::new());
        }
        // A resume cut off after it published `running` left the record
        // awaiting: the status says so again. (A run found stalled while its
        // status already says awaiting is looked at for due timers only.)
        if progress.state == RunState::Awaiting {
            let published = self.backend.read_status(run_id).await?;
            if published.is_none_or(|status| status.status != RunState::Awaiting) {
                self.backend
                    .write_status(run_id, RunState::Awaiting, None)
                    .await?;
            }
        }
        let mut jobs = Vec::new();
        for node in &progress.pending {
            let mut job = Job::new(run_id, &progress.blueprint_id, node);
            if progress.children.contains_key(node) {
                job.signal = Some(JobSignal::Child);
            }
            let attempt = progress.attempt(node);
            job.attempt = (attempt > 1).then_some(attempt);
            jobs.push(job);
        }
        let mut enqueued: Vec<String> = jobs.iter().map(|job| job.node_id.clone()).collect();
        self.send(jobs).await?;
        for (node, wake_up_at) in timers(&progress) {
            if time_until(wake_up_at).is_zero() {
                self.wake_later(run_id, &progress.blueprint_id, node, Default::default())
                    .await?;
                enqueued.push(node.to_owned());
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
        let scheduled = self
            .settle(&plan, run_id, |p| p.fail_run(&node, &message))
            .await?;
        self.send(scheduled).await
    }

    /// Cancels a run: queued jobs of it are dropped when they arrive, and a
    /// worker running one of its nodes may interrupt it (the Azure worker
    /// does) and drop its result. The `cancelled` status is published once.
    pub async fn cancel(&self, run_id: &str) -> Result<(), EngineError> {
        let (_, plan) = self.run_plan(run_id).await?;
        let scheduled = self.settle(&plan, run_id, |p| p.cancel()).await?;
        self.send(scheduled).await
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
        if let Some(key) = patch.keys().find(|k| IDENTITY_KEYS.contains(&k.as_str())) {
            return Err(EngineError::ReservedKey {
                run: run_id.to_owned(),
                key: key.clone(),
            });
        }
        let progress = self.progress(run_id).await?;
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
            .update_progress(run_id, |p| {
                let was_scheduled = p.pending.clone();
                p.retry().map(|advance| {
                    p.stamp_times(&was_scheduled, &advance, unix_ms());
                    (advance, p.clone())
                })
            })
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
        self.send(super::settle::jobs_for(&plan, run_id, &advance))
            .await?;
        for (node, wake_up_at) in timers(&record) {
            self.wake_later(run_id, &record.blueprint_id, node, time_until(wake_up_at))
                .await?;
        }
        match advance.new_state {
            Some(RunState::Running) | None => {}
            Some(state) => self.publish(&record, state, None).await?,
        }
        Ok(advance.schedule)
    }
}

/// The run's sleeping nodes with their wake-up instants.
fn timers(progress: &RunProgress) -> impl Iterator<Item = (&str, &str)> {
    progress
        .awaiting
        .iter()
        .filter_map(|(node, reason)| match reason {
            AwaitReason::Timer { wake_up_at } => Some((node.as_str(), wake_up_at.as_str())),
            _ => None,
        })
}

/// Why `node` of `progress`'s run cannot be resumed, naming the nodes that can.
pub(super) fn not_awaiting(plan: &Plan, progress: &RunProgress, node: &str) -> EngineError {
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
