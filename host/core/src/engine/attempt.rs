//! Running one node: a built-in one in process, a plugin through the node
//! runner, each within its limits (time, context writes, dynamic nodes).
//! The result is an [`Attempt`] for [`super::outcome`] to carry out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::info;

use super::Engine;
use crate::blueprint::NodeDefinition;
use crate::builtin::{self, BuiltinOutcome};
use crate::context::{ContextChange, ContextMap, ContextValue, NodeContext, WriteLimits};
use crate::dynamic::{self, Spawner};
use crate::limits::NodeLimits;
use crate::plan::Plan;
use crate::progress::AwaitReason;
use crate::runner::{NodeCall, NodeFailure, NodeOutcome, NodeRunner, NodeSuccess};
use crate::store::{Backend, Job};
use crate::telemetry;

/// What a node attempt asks of its run.
pub(super) enum Attempt {
    Success(NodeSuccess),
    Wait(Pausing),
    /// Start a child run of the blueprint with this context.
    Subflow(String, ContextMap),
    /// Add these dynamic nodes and wait for them.
    Reopen(Vec<NodeDefinition>),
    Failure(NodeFailure),
}

impl Attempt {
    /// The outcome its trace span records.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Success(_) => "completed",
            Self::Wait(_) => "awaiting",
            Self::Subflow(..) => "subflow",
            Self::Reopen(_) => "reopened",
            Self::Failure(_) => "failed",
        }
    }
}

/// A node that pauses: what it records and what wakes it.
pub(super) struct Pausing {
    /// Recorded as the node's output now.
    pub output: Option<Value>,
    pub reason: AwaitReason,
    /// A timer's delay, for a sleeping node.
    pub wake_after: Option<Duration>,
}

/// An attempt with the context writes the node made.
pub(super) struct Attempted {
    pub attempt: Attempt,
    pub changes: Vec<ContextChange>,
}

impl Attempted {
    pub fn without_changes(attempt: Attempt) -> Self {
        Self {
            attempt,
            changes: Vec::new(),
        }
    }

    fn failure(failure: NodeFailure) -> Self {
        Self::without_changes(Attempt::Failure(failure))
    }
}

impl<B: Backend, R: NodeRunner> Engine<B, R> {
    /// Runs `node` for `job` on the context `snapshot`.
    pub(super) async fn attempt(
        &self,
        plan: &Plan,
        pin: Option<String>,
        node: &NodeDefinition,
        job: &Job,
        snapshot: Arc<ContextMap>,
    ) -> Attempted {
        let node_limits = match NodeLimits::of(node.config.as_ref()) {
            Ok(node_limits) => node_limits,
            Err(error) => {
                return Attempted::failure(NodeFailure::fatal(format!(
                    "Node '{}': {error}",
                    node.id
                )));
            }
        };
        let input = crate::routing::resolve_input(plan, node, &snapshot);
        let write_limits = WriteLimits {
            writes: self.settings.write_quota,
            bytes: self.settings.write_bytes,
            store_keys: self.backend.reserved_keys(),
        };
        let context = NodeContext::with_limits(snapshot.clone(), write_limits);
        info!(run = %job.run_id, node = %node.id, uses = %node.uses, attempt = job.attempt(), "node started");
        if builtin::is_builtin(&node.uses) {
            let input = input.as_ref().map(ContextValue::to_value);
            let started = Instant::now();
            let attempted = self.run_builtin(&job.run_id, plan, node, input, context, &snapshot);
            telemetry::node_finished(&node.uses, telemetry::BUILTIN_BUNDLE, started.elapsed());
            return attempted;
        }
        let call = NodeCall {
            uses: node.uses.clone(),
            run_id: job.run_id.clone(),
            node_id: node.id.clone(),
            blueprint_id: plan.blueprint.id.clone(),
            attempt: job.attempt(),
            input,
            params: node.params_or_empty(),
            pin: pin.clone(),
            timeout: node_limits.timeout,
            context,
        };
        let Some(outcome) = self.run_plugin(call).await else {
            return Attempted::failure(NodeFailure::retryable(format!(
                "Node '{}' timed out after {} ms",
                node.id,
                node_limits.timeout.unwrap_or_default().as_millis()
            )));
        };
        let spawner = Spawner {
            node,
            pin: pin.as_deref(),
            limits: node_limits,
            default_timeout: self.settings.default_node_timeout,
        };
        let admitted = outcome.result.and_then(|mut success| {
            if !success.dynamic_nodes.is_empty() {
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
            Ok(success) => Attempted {
                attempt: Attempt::Success(success),
                changes: outcome.context.into_changes(),
            },
            Err(failure) => Attempted::failure(failure),
        }
    }

    /// Runs a plugin node. The runner enforces the node's time limit itself;
    /// the bound here (with a second's grace for the runner's own report)
    /// only catches a runner that does not: `None` then.
    async fn run_plugin(&self, call: NodeCall) -> Option<NodeOutcome> {
        match call.timeout {
            Some(limit) => {
                tokio::time::timeout(limit + Duration::from_secs(1), self.runner.run(call))
                    .await
                    .ok()
            }
            None => Some(self.runner.run(call).await),
        }
    }

    /// Runs a built-in node in process.
    fn run_builtin(
        &self,
        run_id: &str,
        plan: &Plan,
        node: &NodeDefinition,
        input: Option<Value>,
        context: NodeContext,
        snapshot: &ContextMap,
    ) -> Attempted {
        let mut context = context.for_builtin();
        let outcome = builtin::execute(plan, &self.plans, node, input, &mut context, snapshot);
        let attempt = match outcome {
            Ok(BuiltinOutcome::Done(success)) => Attempt::Success(success),
            Ok(BuiltinOutcome::Reopen { dynamic_nodes }) => Attempt::Reopen(dynamic_nodes),
            Ok(BuiltinOutcome::Wait { output }) => Attempt::Wait(Pausing {
                output,
                reason: AwaitReason::ExternalEvent,
                wake_after: None,
            }),
            Ok(BuiltinOutcome::Webhook) => self.webhook(run_id, &node.id),
            Ok(BuiltinOutcome::Sleep { output, wake_after }) => sleeping(node, output, wake_after),
            Ok(BuiltinOutcome::Subflow {
                blueprint_id,
                initial,
            }) => Attempt::Subflow(blueprint_id, initial),
            Err(failure) => Attempt::Failure(failure),
        };
        Attempted {
            attempt,
            changes: context.into_changes(),
        }
    }

    /// A `webhook` node pausing until its URL is called; its output, until
    /// then, is upstream's `{url, event}`.
    fn webhook(&self, run_id: &str, node_id: &str) -> Attempt {
        let path = builtin::webhook_path(run_id, node_id);
        let url = match &self.settings.public_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => path,
        };
        let event = format!("webhook:{run_id}:{node_id}");
        Attempt::Wait(Pausing {
            output: Some(json!({"url": url, "event": event})),
            reason: AwaitReason::Webhook { url, event },
            wake_after: None,
        })
    }
}

/// A `sleep` node pausing for `wake_after`; a failure if its end is past
/// the last date this host can represent.
fn sleeping(node: &NodeDefinition, output: Option<Value>, wake_after: Duration) -> Attempt {
    match wake_up_time(wake_after) {
        Some(wake_up_at) => Attempt::Wait(Pausing {
            output,
            reason: AwaitReason::Timer { wake_up_at },
            wake_after: Some(wake_after),
        }),
        None => Attempt::Failure(NodeFailure::fatal(format!(
            "Node '{}': a sleep of {} s ends after the last date this host can represent",
            node.id,
            wake_after.as_secs()
        ))),
    }
}

/// The RFC 3339 instant `after` from now; `None` past the representable dates.
fn wake_up_time(after: Duration) -> Option<String> {
    let at = time::OffsetDateTime::now_utc().checked_add(after.try_into().ok()?)?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}
