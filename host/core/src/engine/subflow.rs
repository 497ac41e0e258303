//! Nodes that wait for something outside their job: a subflow node for its
//! child run (started within the run tree's depth and size limits, collected
//! when the child settles), a sleeping node for its timer, and any paused
//! node for an operator's resume.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::info;

use super::attempt::Pausing;
use super::outcome::{Finished, awaiting_marks};
use super::step::JobView;
use super::{Engine, EngineError};
use crate::blueprint::NodeDefinition;
use crate::builtin;
use crate::context::{ContextChange, ContextMap, ContextValue};
use crate::limits;
use crate::plan::Plan;
use crate::progress::{AwaitReason, NodeStatus, ParentLink, RunProgress, RunState};
use crate::routing::output_key;
use crate::runner::{NodeFailure, NodeRunner, NodeSuccess};
use crate::store::{Backend, Job};
use crate::telemetry;

impl<B: Backend, R: NodeRunner> Engine<B, R> {
    /// Starts the child run of subflow `node`, unless it would nest deeper
    /// than the blueprint's `metadata.maxSubflowDepth` allows, or the run's
    /// tree has started `metadata.maxSubflowRuns` child runs already.
    pub(super) async fn start_child(
        &self,
        plan: &Plan,
        job: &Job,
        node: &NodeDefinition,
        view: &JobView,
        child_blueprint: String,
        initial: ContextMap,
    ) -> Result<Vec<Job>, EngineError> {
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
            trace: telemetry::traceparent_of(&tracing::Span::current()),
        };
        let child = child_run_id.clone();
        self.backend
            .update_progress(&job.run_id, |p| {
                p.children.insert(node.id.clone(), child.clone());
            })
            .await?;
        let started = self
            .start_run_with_parent(&child_blueprint, Some(child_run_id), initial, Some(parent))
            .await;
        match started {
            Ok(_) | Err(EngineError::RunExists(_)) => Ok(Vec::new()),
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
    pub(super) async fn collect_child(
        &self,
        plan: &Plan,
        progress: &RunProgress,
        node_id: &str,
    ) -> Result<Vec<Job>, EngineError> {
        let Some(child_run_id) = progress.children.get(node_id) else {
            return Ok(Vec::new());
        };
        let status = progress.status(node_id);
        if !matches!(status, NodeStatus::Scheduled | NodeStatus::Awaiting) {
            return Ok(Vec::new());
        }
        let Some(node) = self.definition(plan, progress, node_id) else {
            return Ok(Vec::new());
        };
        let child = self.report(child_run_id).await?;
        let child_blueprint = node
            .params
            .as_ref()
            .and_then(|p| p.get("blueprintId"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        match child.state {
            RunState::Completed => {
                let child_plan = self.plan(child_blueprint)?;
                let (output, writes) = builtin::subflow_result(&node, &child_plan, &child.context);
                let changes: Vec<ContextChange> = writes
                    .into_iter()
                    .map(|(key, value)| ContextChange::Set { key, value })
                    .collect();
                self.child_completed(plan, progress, &node, output, changes)
                    .await
            }
            RunState::Awaiting if status == NodeStatus::Awaiting => Ok(Vec::new()),
            RunState::Awaiting => {
                let pausing = Pausing {
                    output: None,
                    reason: AwaitReason::Subflow {
                        child_run_id: child_run_id.clone(),
                    },
                    wake_after: None,
                };
                let snapshot = self.load_snapshot(&progress.run_id).await?;
                let job = Job::new(&progress.run_id, &plan.blueprint.id, node_id);
                self.pause(plan, &job, &node, &snapshot, Vec::new(), pausing)
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
                let job = Job::new(&progress.run_id, &plan.blueprint.id, node_id);
                self.failed(plan, &job, &node, NodeFailure::fatal(message))
                    .await
            }
        }
    }

    /// The child run of subflow `node` completed with `output`: the node
    /// finishes (or is resumed, if it paused because the child did).
    async fn child_completed(
        &self,
        plan: &Plan,
        progress: &RunProgress,
        node: &NodeDefinition,
        output: Value,
        changes: Vec<ContextChange>,
    ) -> Result<Vec<Job>, EngineError> {
        if progress.status(&node.id) == NodeStatus::Awaiting {
            return self
                .resume_node(plan, progress, &node.id, None, Some(output), changes)
                .await;
        }
        let finished = Finished {
            node,
            stands_in_for: progress.stand_ins.get(&node.id).map(String::as_str),
            snapshot: self.load_snapshot(&progress.run_id).await?,
            changes,
            success: NodeSuccess {
                output: Some(output),
                ..NodeSuccess::default()
            },
            seen: None,
        };
        self.complete(plan, &progress.run_id, finished).await
    }

    /// A sleeping node's timer fired.
    pub(super) async fn wake(
        &self,
        plan: &Plan,
        progress: &RunProgress,
        node_id: &str,
    ) -> Result<Vec<Job>, EngineError> {
        let Some(AwaitReason::Timer { wake_up_at }) = progress.awaiting.get(node_id) else {
            return Ok(Vec::new());
        };
        let left = time_until(wake_up_at);
        if !left.is_zero() {
            // Delays are capped (MAX_JOB_DELAY): wait another step.
            self.wake_later(&progress.run_id, &plan.blueprint.id, node_id, left)
                .await?;
            return Ok(Vec::new());
        }
        self.resume_node(plan, progress, node_id, None, None, Vec::new())
            .await
    }

    /// Resumes paused `node_id` with `action` and `output` (its recorded
    /// output by default), writing `changes` with its result.
    pub(super) async fn resume_node(
        &self,
        plan: &Plan,
        progress: &RunProgress,
        node_id: &str,
        action: Option<String>,
        output: Option<Value>,
        mut changes: Vec<ContextChange>,
    ) -> Result<Vec<Job>, EngineError> {
        let Some(node) = self.definition(plan, progress, node_id) else {
            return Err(super::operator::not_awaiting(plan, progress, node_id));
        };
        let snapshot = self.load_snapshot(&progress.run_id).await?;
        let output = output.or_else(|| {
            snapshot
                .get(&output_key(node_id))
                .map(ContextValue::to_value)
        });
        changes.extend(resume_marks(
            &snapshot,
            node_id,
            action.as_deref(),
            output.as_ref(),
        ));
        // Running before the node leaves `awaiting`: a resume cut off after
        // that (its process died before the node's successors were sent)
        // leaves a `running` run without jobs, which the reconciler finds.
        if !progress.awaiting.contains_key(node_id) {
            return Err(super::operator::not_awaiting(plan, progress, node_id));
        }
        self.backend
            .write_status(&progress.run_id, RunState::Running, None)
            .await?;
        let unpaused = self
            .backend
            .update_progress(&progress.run_id, |p| p.unpause(node_id))
            .await?
            .unwrap_or(false);
        if !unpaused {
            return Err(super::operator::not_awaiting(plan, progress, node_id));
        }
        info!(run = %progress.run_id, node = %node_id, "node resumed");
        let finished = Finished {
            node: &node,
            stands_in_for: progress.stand_ins.get(node_id).map(String::as_str),
            snapshot,
            changes,
            success: NodeSuccess {
                output,
                action,
                dynamic_nodes: vec![],
            },
            seen: None,
        };
        self.complete(plan, &progress.run_id, finished).await
    }
}

/// The writes of a resume: `_resume.action`, `_resume.output` and the node
/// off the awaiting marks.
fn resume_marks(
    snapshot: &Arc<ContextMap>,
    node_id: &str,
    action: Option<&str>,
    output: Option<&Value>,
) -> Vec<ContextChange> {
    let mut changes = vec![ContextChange::Set {
        key: "_resume.action".into(),
        value: action
            .map(|action| Value::String(action.to_owned()))
            .unwrap_or(Value::Null)
            .into(),
    }];
    if let Some(output) = output {
        changes.push(ContextChange::Set {
            key: "_resume.output".into(),
            value: output.into(),
        });
    }
    changes.extend(awaiting_marks(snapshot, node_id, None));
    changes
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
