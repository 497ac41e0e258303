//! What a node's result does to its run: a finished node writes its output
//! and its successors' inputs and settles (joins, skips, completion); a
//! pausing one records why it waits; a failing one is retried, handed to its
//! fallback or fails the run. Every outcome hands its context writes and
//! its transition of the progress record to the store as one settlement
//! (see [`super::settle`]).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::attempt::Pausing;
use super::settle::{KnownContext, Unsettled};
use super::step::DYNAMIC_KEY_PREFIX;
use super::{Engine, EngineError};
use crate::blueprint::NodeDefinition;
use crate::builtin::{self, Builtin};
use crate::context::{ContextChange, ContextMap, ContextValue};
use crate::limits::{self, NodeLimits};
use crate::plan::Plan;
use crate::progress::{AwaitReason, Completion, stored_output};
use crate::routing::{self, RoutedResult, action_key, output_key};
use crate::runner::{FailureKind, NodeFailure, NodeRunner, NodeSuccess};
use crate::store::{Backend, Job, StoreError};

/// Context key listing paused nodes (upstream-compatible).
pub const AWAITING_IDS_KEY: &str = "_awaitingNodeIds";
/// Context key with each paused node's details (upstream-compatible).
pub const AWAITING_DETAILS_KEY: &str = "_awaitingDetails";

/// A node's result, ready to be written and settled.
pub(super) struct Finished<'a> {
    pub node: &'a NodeDefinition,
    /// The failed node this one stands in for as its fallback.
    pub stands_in_for: Option<&'a str>,
    /// The context the node ran on.
    pub snapshot: Arc<ContextMap>,
    /// The node's own context writes.
    pub changes: Vec<ContextChange>,
    pub success: NodeSuccess,
    /// The settlement count `snapshot` was read at, when the job read it
    /// for this node (not for a resumed node or a collected child).
    pub seen: Option<u64>,
}

impl<B: Backend, R: NodeRunner> Engine<B, R> {
    /// Writes a finished node's results and settles it.
    pub(super) async fn complete(
        &self,
        plan: &Plan,
        run_id: &str,
        finished: Finished<'_>,
    ) -> Result<Vec<Job>, EngineError> {
        let Finished {
            node,
            stands_in_for,
            snapshot,
            mut changes,
            success,
            seen,
        } = finished;
        let (continues, rearm) = loop_rearm(plan, node, &success, &mut changes);
        // The output's JSON text, made once: stored as the node's output and
        // delivered as-is over every edge without a transform.
        let output_json = stored_output(success.output.as_ref());
        let result = RoutedResult {
            output: success.output.as_ref(),
            output_json: success.output.as_ref().map(|_| &output_json),
            action: success.action.as_deref(),
        };
        let routing = {
            let view = routing_view(plan, node, stands_in_for, &snapshot, &changes);
            routing::route(plan, node, stands_in_for, result, &view)
        };
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
        changes.extend(result_changes(node, &success));
        changes.extend(
            routing
                .inputs
                .into_iter()
                .map(|(key, value)| ContextChange::Set { key, value }),
        );
        let known = kept.map(|(seen, snapshot)| KnownContext { seen, snapshot });
        let completion = Completion {
            sources: std::iter::once(node.id.clone())
                .chain(stands_in_for.map(str::to_owned))
                .collect(),
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
        let bytes = written_bytes(&changes);
        let settled = self
            .settle_completion(plan, run_id, &node.id, changes, completion, known)
            .await;
        if settled.is_ok() {
            info!(run = %run_id, node = %node.id, "node finished");
        }
        self.unless_refused(plan, run_id, node, bytes, settled)
            .await
    }

    /// A settlement's jobs; if the store refused its context write, the
    /// node fails instead ([`Self::write_failed`]).
    async fn unless_refused(
        &self,
        plan: &Plan,
        run_id: &str,
        node: &NodeDefinition,
        bytes: usize,
        settled: Result<Vec<Job>, Unsettled>,
    ) -> Result<Vec<Job>, EngineError> {
        match settled {
            Err(Unsettled::Write(error)) => {
                self.write_failed(plan, run_id, node, bytes, error).await
            }
            settled => Ok(settled?),
        }
    }

    /// A node that is not finished adds `dynamic_nodes` and waits for them.
    pub(super) async fn reopen(
        &self,
        plan: &Plan,
        run_id: &str,
        node: &NodeDefinition,
        changes: Vec<ContextChange>,
        dynamic_nodes: Vec<NodeDefinition>,
    ) -> Result<Vec<Job>, EngineError> {
        let completion = Completion {
            sources: vec![node.id.clone()],
            taken: Default::default(),
            dynamic_nodes,
            gather: Some(node.id.clone()),
            rearm: Default::default(),
            reopen: true,
            warning: None,
        };
        let bytes = written_bytes(&changes);
        let settled = self
            .settle_completion(plan, run_id, &node.id, changes, completion, None)
            .await;
        self.unless_refused(plan, run_id, node, bytes, settled)
            .await
    }

    /// Records a paused node (its output, the upstream awaiting marks) and
    /// sets its timer if it sleeps.
    pub(super) async fn pause(
        &self,
        plan: &Plan,
        job: &Job,
        node: &NodeDefinition,
        snapshot: &ContextMap,
        mut changes: Vec<ContextChange>,
        pausing: Pausing,
    ) -> Result<Vec<Job>, EngineError> {
        let Pausing {
            output,
            reason,
            wake_after,
        } = pausing;
        if let Some(output) = &output {
            changes.push(ContextChange::Set {
                key: output_key(&node.id),
                value: output.into(),
            });
        }
        changes.extend(awaiting_marks(snapshot, &node.id, Some(&reason)));
        let bytes = written_bytes(&changes);
        let settled = self
            .settle_knowing(
                plan,
                &job.run_id,
                changes,
                |p| p.pause(&node.id, reason.clone()),
                None,
            )
            .await;
        let scheduled = match settled {
            Err(Unsettled::Write(error)) => {
                return self
                    .write_failed(plan, &job.run_id, node, bytes, error)
                    .await;
            }
            settled => settled?,
        };
        info!(run = %job.run_id, node = %node.id, "node awaiting");
        if let Some(delay) = wake_after {
            self.wake_later(&job.run_id, &job.blueprint_id, &node.id, delay)
                .await?;
        }
        Ok(scheduled)
    }

    /// A node failed: retried with back-off while it has attempts left,
    /// else handed to its fallback, else failing the run.
    pub(super) async fn failed(
        &self,
        plan: &Plan,
        job: &Job,
        node: &NodeDefinition,
        failure: NodeFailure,
    ) -> Result<Vec<Job>, EngineError> {
        // Out-of-range numbers failed the node before it ran (see
        // `attempt`): such a node gets no retries.
        let node_limits = NodeLimits::of(node.config.as_ref()).unwrap_or_default();
        if !failure.is_fatal() && job.attempt() < node_limits.attempts {
            self.retry_node(job, node_limits, &failure).await?;
            return Ok(Vec::new());
        }
        let message = failure_message(plan, node, &failure);
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
            let settled = self
                .settle_knowing(
                    plan,
                    &job.run_id,
                    changes,
                    |p| p.fall_back(&node.id, fallback, &message),
                    None,
                )
                .await;
            return Ok(settled?);
        }
        self.settle(plan, &job.run_id, |p| p.fail(&node.id, &message))
            .await
    }

    /// Enqueues the node's next attempt after its back-off, once: a late
    /// delivery of an attempt that failed again finds the retry scheduled.
    async fn retry_node(
        &self,
        job: &Job,
        node_limits: NodeLimits,
        failure: &NodeFailure,
    ) -> Result<(), EngineError> {
        let attempt = job.attempt();
        let delay = limits::backoff(
            node_limits.retry_delay,
            attempt,
            self.settings.max_retry_delay,
        );
        let node_id = job.node_id.clone();
        let first = self
            .backend
            .update_progress(&job.run_id, move |p| p.next_attempt(&node_id, attempt))
            .await?;
        if first != Some(true) {
            return Ok(());
        }
        info!(run = %job.run_id, node = %job.node_id, attempt, error = %failure.message, "node failed; retrying");
        let mut retry = job.clone();
        retry.attempt = Some(attempt + 1);
        retry.signal = None;
        self.backend
            .enqueue(retry, delay.min(crate::store::MAX_JOB_DELAY))
            .await?;
        Ok(())
    }

    /// A node's context write failed. A transient failure is returned (the
    /// job is delivered again). A permanent refusal (the run's context
    /// would exceed the store's item limit, say) would repeat on every
    /// attempt, and a fallback's output would be stored in the same
    /// document, so the node fails fatally: no retry, no fallback; the
    /// run fails with the store's reason and the size of the node's writes.
    pub(super) async fn write_failed(
        &self,
        plan: &Plan,
        run_id: &str,
        node: &NodeDefinition,
        bytes: usize,
        error: StoreError,
    ) -> Result<Vec<Job>, EngineError> {
        if !error.is_permanent() {
            return Err(error.into());
        }
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
    pub(super) async fn context_missing(
        &self,
        plan: &Plan,
        run_id: &str,
        node_id: &str,
    ) -> Result<Vec<Job>, EngineError> {
        let message = format!(
            "the context document of run '{run_id}' is missing (deleted, or its id/runId changed), so node '{node_id}' cannot run; restore the document, then retry the run (`flowcraft-host retry {run_id}`)"
        );
        warn!(run = %run_id, node = %node_id, "{message}");
        self.settle(plan, run_id, |p| p.fail(node_id, &message))
            .await
    }
}

/// A loop controller that continues deletes its body's outputs and actions
/// (they run again) and re-arms the body and itself. Answers whether it
/// continues, and the nodes re-armed.
fn loop_rearm(
    plan: &Plan,
    node: &NodeDefinition,
    success: &NodeSuccess,
    changes: &mut Vec<ContextChange>,
) -> (bool, BTreeSet<String>) {
    let continues = Builtin::parse(&node.uses) == Some(Builtin::LoopController)
        && success.action.as_deref() == Some("continue");
    if !continues {
        return (false, BTreeSet::new());
    }
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
    (true, rearm)
}

/// The context edges' conditions and transforms see: the snapshot with the
/// node's own writes, copied only if an edge has an expression.
fn routing_view<'a>(
    plan: &Plan,
    node: &NodeDefinition,
    stands_in_for: Option<&str>,
    snapshot: &'a ContextMap,
    changes: &[ContextChange],
) -> Cow<'a, ContextMap> {
    let has_expressions = std::iter::once(node.id.as_str())
        .chain(stands_in_for)
        .flat_map(|source| plan.analysis.edges_from(&plan.blueprint, source))
        .any(|(index, _)| plan.conditions[index].is_some() || plan.transforms[index].is_some());
    if !has_expressions || changes.is_empty() {
        return Cow::Borrowed(snapshot);
    }
    let mut view = snapshot.clone();
    for change in changes {
        change.apply_to(&mut view);
    }
    Cow::Owned(view)
}

/// The writes recording a finished node's action and, for a plugin node,
/// the dynamic nodes it returned (kept for recovery after a crash).
fn result_changes(node: &NodeDefinition, success: &NodeSuccess) -> Vec<ContextChange> {
    let mut changes = Vec::new();
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
    changes
}

/// The run error for a node that failed for good: the node's own words,
/// prefixed with its id, and where its input came from if it was invalid.
fn failure_message(plan: &Plan, node: &NodeDefinition, failure: &NodeFailure) -> String {
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
    message
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

/// Context writes adding (`reason` given) or removing `node` from the
/// upstream awaiting marks.
pub(super) fn awaiting_marks(
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
            AwaitReason::Webhook { url, event } => {
                json!({"reason": "webhook", "url": url, "event": event})
            }
        };
        details.insert(node.to_owned(), detail);
    }
    if ids.is_empty() {
        return vec![
            ContextChange::Delete {
                key: AWAITING_IDS_KEY.into(),
            },
            ContextChange::Delete {
                key: AWAITING_DETAILS_KEY.into(),
            },
        ];
    }
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

/// The bytes of a node's context writes, as a refusal names them.
fn written_bytes(changes: &[ContextChange]) -> usize {
    changes.iter().map(ContextChange::size).sum()
}
