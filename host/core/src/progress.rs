//! Run progress: which node of a run is waiting, scheduled, done, skipped,
//! failed or awaiting, and the rules that move a run forward.
//!
//! One [`RunProgress`] record per run lives in the coordination store and is
//! changed only through the transitions below, atomically (the store applies a
//! transition as a compare-and-set on the whole record). Because every
//! transition checks the node's current status first, applying the same
//! settlement twice (a redelivered job) changes nothing and schedules nothing
//! twice: joins are sets of arrived predecessors, not counters; a node runs at
//! most once per generation; the terminal state is sticky and reached once.
//!
//! Joins: when a node settles, every outgoing edge delivers an *arrival* at its
//! target, marked taken or not taken. An `all` join runs when every
//! predecessor has arrived and all were taken, and is *skipped* when every
//! predecessor arrived but some were not taken; an `any` join runs on the
//! first taken arrival and is skipped when all arrivals were not taken. A
//! skipped node passes not-taken arrivals on, so skips propagate. A run is
//! finished when nothing is scheduled.
//!
//! Loops: when a loop controller continues, its body and the controller itself
//! are re-armed (a new generation, no arrivals), so they can run again.
//!
//! Retry: failure is sticky for everything but one transition, [`RunProgress::retry`],
//! which an operator asks for (`flowcraft-host retry`). So that a retry can
//! pick up every unfinished node, a failed run is frozen rather than wound
//! down: a node that finishes after its run failed stays scheduled (its
//! result is already in the context, so the retry routes it without running
//! it again), and a node that fails over to its fallback after the run failed
//! hands over to it with the fallback left scheduled.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::analysis::Analysis;
use crate::blueprint::{Blueprint, JoinStrategy, NodeDefinition};
use crate::context::ContextValue;
use crate::runner::Pins;
use crate::telemetry::TraceParent;

/// Default per-run limit on node executions (upstream's traversal limit).
pub const DEFAULT_STEP_LIMIT: u64 = 10_000;

/// The state of a run as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Awaiting,
    Completed,
    Failed,
    Cancelled,
}

impl RunState {
    /// Whether the run is over (sticky: nothing leaves these states).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Awaiting => "awaiting",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

/// Where one node of a run stands, in its current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Not ready: waiting for predecessors (or never reached).
    #[default]
    Waiting,
    /// A job for it is queued or running.
    Scheduled,
    /// Paused until resumed (wait, sleep, subflow).
    Awaiting,
    /// Finished; its arrivals were delivered.
    Done,
    /// On a path that was not taken.
    Skipped,
    /// Finally failed.
    Failed,
}

/// One node's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeProgress {
    /// Bumped each time a loop re-arms the node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    pub status: NodeStatus,
    /// Predecessor id → whether its edge to this node was taken.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arrivals: BTreeMap<String, bool>,
    /// The attempt the node is at (0 or absent: the first), raised when a
    /// retry is scheduled so that a late delivery of an earlier attempt is
    /// recognised and dropped.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// When the node was last scheduled (Unix ms): from then on it is queued
    /// or running. For operators; no transition reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// When it last stopped being scheduled (Unix ms): it finished, failed
    /// or paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Why a node is paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum AwaitReason {
    /// `wait`: until someone resumes it.
    ExternalEvent,
    /// `sleep`: until `wake_up_at` (ISO-8601), then it resumes itself.
    Timer { wake_up_at: String },
    /// `subflow`: until the child run settles.
    Subflow { child_run_id: String },
    /// `webhook`: until its URL is called (`POST` of the API's
    /// `/api/v1/webhooks/{runId}/{nodeId}`); `event` names the call.
    Webhook { url: String, event: String },
}

/// An error recorded against a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunError {
    pub node_id: String,
    pub message: String,
}

/// The parent of a subflow's child run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentLink {
    pub run_id: String,
    pub blueprint_id: String,
    pub node_id: String,
    /// The blueprint ids of the runs above the child, outermost first,
    /// ending with the parent's: the child's subflow depth is its length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<String>,
    /// The run at the top of the tree, which counts its subflow runs
    /// (absent in records written before it was kept: the parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_run_id: Option<String>,
    /// The span of the subflow node's attempt that started the child (when
    /// spans were exported): the child's root span is its child, in the
    /// parent run's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceParent>,
}

impl RunProgress {
    /// The blueprint ids of this run and the runs above it, outermost first.
    pub fn lineage(&self) -> Vec<String> {
        let mut lineage = match &self.parent {
            Some(parent) if parent.lineage.is_empty() => vec![parent.blueprint_id.clone()],
            Some(parent) => parent.lineage.clone(),
            None => Vec::new(),
        };
        lineage.push(self.blueprint_id.clone());
        lineage
    }

    /// The run at the top of this run's tree of subflows (itself if none).
    pub fn root_run_id(&self) -> &str {
        match &self.parent {
            Some(parent) => parent.root_run_id.as_deref().unwrap_or(&parent.run_id),
            None => &self.run_id,
        }
    }
}

/// Nodes and edges added to a run at runtime (dynamic nodes, batch workers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DynamicGraph {
    pub nodes: Vec<NodeDefinition>,
    /// (source, target); always taken.
    pub edges: Vec<(String, String)>,
}

/// The progress record of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunProgress {
    pub run_id: String,
    pub blueprint_id: String,
    /// The `blueprintVersion` the run started with (`null` for unversioned).
    #[serde(default)]
    pub blueprint_version: Value,
    pub state: RunState,
    pub nodes: BTreeMap<String, NodeProgress>,
    #[serde(default)]
    pub dynamic: DynamicGraph,
    /// Scheduled nodes (queued or running).
    pub pending: BTreeSet<String>,
    pub awaiting: BTreeMap<String, AwaitReason>,
    #[serde(default)]
    pub errors: Vec<RunError>,
    /// Node executions scheduled since the run started or was last
    /// retried, against `step_limit`.
    pub steps: u64,
    /// Settlements applied so far (a node finished, paused or failed). A job
    /// that saw this count before reading the context, and finds it one lower
    /// than after its own settlement, knows no other job wrote in between.
    #[serde(default)]
    pub settled: u64,
    pub step_limit: u64,
    /// Implementation pins chosen at start (see [`crate::runner::Pins`]).
    #[serde(default)]
    pub pins: Pins,
    #[serde(default)]
    pub parent: Option<ParentLink>,
    /// Fallback node → the failed node it stands in for (it routes that node's edges).
    #[serde(default)]
    pub stand_ins: BTreeMap<String, String>,
    /// Subflow node → its child run.
    #[serde(default)]
    pub children: BTreeMap<String, String>,
    /// How many times the run was retried after failing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// The errors of the failures that were retried, oldest first
    /// (`errors` holds only those since the last retry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried_errors: Vec<RunError>,
    /// Child runs started in this run's tree (kept on the root run).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subflow_runs: u32,
    /// What went wrong without failing the run (an action that matched no
    /// edge), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<RunError>,
    /// The run's trace: its trace id and the span id of its root span
    /// (chosen when the run started; see [`crate::telemetry`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceParent>,
}

/// What a transition asks the caller to do next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Advance {
    /// Nodes newly scheduled: enqueue one job each.
    pub schedule: Vec<String>,
    /// Set when this transition moved the run into a new overall state
    /// (`awaiting`, a terminal state, or back to `running` after a pause).
    pub new_state: Option<RunState>,
    /// True when the settlement had already been applied (a redelivery):
    /// nothing changed and nothing is to be done.
    pub duplicate: bool,
}

/// How a node instance finished, as decided by the job step.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The nodes whose outgoing edges this result routes: the node itself,
    /// and for a fallback node also the failed node it stands in for.
    pub sources: Vec<String>,
    /// The chosen static edges, as (source, target).
    pub taken: BTreeSet<(String, String)>,
    /// Dynamic nodes the result added, and the gather node they feed.
    pub dynamic_nodes: Vec<NodeDefinition>,
    pub gather: Option<String>,
    /// Nodes to re-arm first (a loop controller that continues: its body and itself).
    pub rearm: BTreeSet<String>,
    /// The node is not finished: it goes back to waiting (keeping its
    /// arrivals) for the dynamic nodes it added, and routes nothing now.
    pub reopen: bool,
    /// Something the run's result should mention (see [`RunProgress::warnings`]).
    pub warning: Option<String>,
}

/// The graph a run executes: the blueprint plus its dynamic additions.
struct Graph<'a> {
    blueprint: &'a Blueprint,
    analysis: &'a Analysis,
    dynamic: &'a DynamicIndex,
}

/// A run's dynamic nodes and edges indexed by id, built once per
/// transition, so that a fan-out of n dynamic nodes is delivered in time
/// linear in n rather than scanning every dynamic edge per arrival.
#[derive(Default)]
struct DynamicIndex {
    ids: HashSet<String>,
    predecessors: HashMap<String, Vec<String>>,
    successors: HashMap<String, Vec<String>>,
}

impl DynamicIndex {
    fn of(dynamic: &DynamicGraph) -> Self {
        let mut index = Self {
            ids: dynamic.nodes.iter().map(|n| n.id.clone()).collect(),
            ..Self::default()
        };
        for (source, target) in &dynamic.edges {
            index
                .predecessors
                .entry(target.clone())
                .or_default()
                .push(source.clone());
            index
                .successors
                .entry(source.clone())
                .or_default()
                .push(target.clone());
        }
        index
    }
}

impl Graph<'_> {
    fn exists(&self, id: &str) -> bool {
        self.analysis.node(self.blueprint, id).is_some() || self.dynamic.ids.contains(id)
    }

    fn predecessors(&self, id: &str) -> BTreeSet<&str> {
        let mut set: BTreeSet<&str> = self
            .analysis
            .predecessors
            .get(id)
            .map(|p| p.iter().map(String::as_str).collect())
            .unwrap_or_default();
        set.extend(
            self.dynamic
                .predecessors
                .get(id)
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
        set
    }

    fn join(&self, id: &str) -> JoinStrategy {
        self.analysis
            .node(self.blueprint, id)
            .map(NodeDefinition::join_strategy)
            .unwrap_or(JoinStrategy::All)
    }

    /// Static targets of `source`, de-duplicated, in edge order.
    fn static_targets(&self, source: &str) -> Vec<String> {
        let mut targets: Vec<String> = Vec::new();
        for (_, edge) in self.analysis.edges_from(self.blueprint, source) {
            if !targets.contains(&edge.target) {
                targets.push(edge.target.clone());
            }
        }
        targets
    }

    fn dynamic_targets(&self, source: &str) -> Vec<String> {
        self.dynamic
            .successors
            .get(source)
            .cloned()
            .unwrap_or_default()
    }
}

impl RunProgress {
    /// A new run's record, before its start nodes are scheduled.
    pub fn new(run_id: &str, blueprint_id: &str, pins: Pins, step_limit: u64) -> Self {
        Self {
            run_id: run_id.to_owned(),
            blueprint_id: blueprint_id.to_owned(),
            blueprint_version: Value::Null,
            state: RunState::Running,
            nodes: BTreeMap::new(),
            dynamic: DynamicGraph::default(),
            pending: BTreeSet::new(),
            awaiting: BTreeMap::new(),
            errors: Vec::new(),
            steps: 0,
            settled: 0,
            step_limit,
            pins,
            parent: None,
            stand_ins: BTreeMap::new(),
            children: BTreeMap::new(),
            retries: 0,
            retried_errors: Vec::new(),
            subflow_runs: 0,
            warnings: Vec::new(),
            trace: None,
        }
    }

    /// When the run's first node was scheduled (Unix milliseconds): its
    /// start as this record knows it.
    pub fn started_at(&self) -> Option<i64> {
        self.nodes.values().filter_map(|node| node.started_at).min()
    }

    /// The status of `node` (Waiting if never touched).
    pub fn status(&self, node: &str) -> NodeStatus {
        self.nodes.get(node).map(|n| n.status).unwrap_or_default()
    }

    /// The attempt `node` is at: 1 until a retry is scheduled.
    pub fn attempt(&self, node: &str) -> u32 {
        self.nodes.get(node).map_or(1, |n| n.attempt.max(1))
    }

    /// Moves a scheduled `node` from `attempt` to the next one, before that
    /// retry is enqueued. False when the node is not scheduled or already
    /// past `attempt`: this failure is a late delivery's, its retry exists.
    pub fn next_attempt(&mut self, node: &str, attempt: u32) -> bool {
        if self.status(node) != NodeStatus::Scheduled || self.attempt(node) != attempt {
            return false;
        }
        if let Some(entry) = self.nodes.get_mut(node) {
            entry.attempt = attempt + 1;
        }
        true
    }

    /// For a run shared with workers that do not keep this record
    /// (upstream's TypeScript workers): marks the nodes of `done` (those with
    /// an output in the context) completed and schedules `node`, whose job
    /// one of them sent. Other nodes are left alone.
    pub fn catch_up(&mut self, done: &[String], node: &str) {
        for id in done.iter().filter(|id| id.as_str() != node) {
            let entry = self.nodes.entry(id.clone()).or_default();
            if matches!(entry.status, NodeStatus::Waiting | NodeStatus::Scheduled) {
                entry.status = NodeStatus::Done;
                self.pending.remove(id);
            }
        }
        if self.status(node) == NodeStatus::Waiting {
            self.nodes.entry(node.to_owned()).or_default().status = NodeStatus::Scheduled;
            self.pending.insert(node.to_owned());
        }
        self.settled += 1;
    }

    /// The definition of a dynamic node of this run.
    pub fn dynamic_node(&self, id: &str) -> Option<&NodeDefinition> {
        self.dynamic.nodes.iter().find(|n| n.id == id)
    }

    /// Schedules the start nodes.
    pub fn start(&mut self, nodes: &[String]) -> Advance {
        let mut advance = Advance::default();
        for node in nodes {
            self.schedule(node, &mut advance);
        }
        self.conclude(&mut advance);
        advance
    }

    /// Records that `node` finished with a routed result.
    pub fn complete(
        &mut self,
        blueprint: &Blueprint,
        analysis: &Analysis,
        node: &str,
        completion: &Completion,
    ) -> Advance {
        let mut advance = Advance::default();
        match self.status(node) {
            NodeStatus::Scheduled | NodeStatus::Awaiting => {}
            _ => {
                return Advance {
                    duplicate: true,
                    ..Advance::default()
                };
            }
        }
        if self.state == RunState::Failed {
            // Frozen: the node stays scheduled for a retry, which finds its
            // result in the context and routes it then.
            return advance;
        }
        self.leave(node, NodeStatus::Done);
        if let Some(warning) = &completion.warning {
            self.warnings.push(RunError {
                node_id: node.to_owned(),
                message: warning.clone(),
            });
        }
        if completion.reopen && !self.state.is_terminal() {
            self.nodes.entry(node.to_owned()).or_default().status = NodeStatus::Waiting;
            self.add_dynamic(blueprint, node, completion);
            let index = DynamicIndex::of(&self.dynamic);
            let graph = Graph {
                blueprint,
                analysis,
                dynamic: &index,
            };
            let targets = graph.dynamic_targets(node);
            let arrivals = targets
                .into_iter()
                .filter(|target| self.status(target) == NodeStatus::Waiting && target != node)
                .map(|target| (node.to_owned(), target, true))
                .collect();
            self.deliver(blueprint, analysis, arrivals, &mut advance);
            self.conclude(&mut advance);
            return advance;
        }
        for id in &completion.rearm {
            let entry = self.nodes.entry(id.clone()).or_default();
            entry.generation += 1;
            entry.status = NodeStatus::Waiting;
            entry.arrivals.clear();
            entry.attempt = 0;
            // A body node still scheduled or paused from the last round
            // starts over too: its job is dropped when it arrives, and the
            // run must not wait for it.
            self.pending.remove(id);
            self.awaiting.remove(id);
        }
        if !completion.dynamic_nodes.is_empty() && !self.state.is_terminal() {
            self.add_dynamic(blueprint, node, completion);
        }
        if !self.state.is_terminal() {
            let mut arrivals = Vec::new();
            {
                let index = DynamicIndex::of(&self.dynamic);
                let graph = Graph {
                    blueprint,
                    analysis,
                    dynamic: &index,
                };
                // A loop controller that continues will run again: its
                // untaken exits are not skipped yet.
                let runs_again = completion.rearm.contains(node);
                for source in &completion.sources {
                    for target in graph.static_targets(source) {
                        let taken = completion.taken.contains(&(source.clone(), target.clone()));
                        if taken || !runs_again {
                            arrivals.push((source.clone(), target, taken));
                        }
                    }
                }
                for target in graph.dynamic_targets(node) {
                    arrivals.push((node.to_owned(), target, true));
                }
            }
            self.deliver(blueprint, analysis, arrivals, &mut advance);
        }
        self.conclude(&mut advance);
        advance
    }

    /// Records that `node` paused.
    pub fn pause(&mut self, node: &str, reason: AwaitReason) -> Advance {
        let mut advance = Advance::default();
        if self.status(node) != NodeStatus::Scheduled {
            return Advance {
                duplicate: true,
                ..Advance::default()
            };
        }
        self.leave(node, NodeStatus::Awaiting);
        self.awaiting.insert(node.to_owned(), reason);
        self.conclude(&mut advance);
        advance
    }

    /// Takes `node` out of the awaiting set so it can be completed (resume).
    /// Returns false when it was not awaiting.
    pub fn unpause(&mut self, node: &str) -> bool {
        if self.awaiting.remove(node).is_none() {
            return false;
        }
        self.pending.insert(node.to_owned());
        self.nodes.entry(node.to_owned()).or_default().status = NodeStatus::Scheduled;
        if self.state == RunState::Awaiting {
            self.state = RunState::Running;
        }
        true
    }

    /// Records that `node` finally failed: the run fails (sticky).
    pub fn fail(&mut self, node: &str, message: &str) -> Advance {
        let mut advance = Advance::default();
        if !matches!(
            self.status(node),
            NodeStatus::Scheduled | NodeStatus::Awaiting
        ) {
            return Advance {
                duplicate: true,
                ..Advance::default()
            };
        }
        self.leave(node, NodeStatus::Failed);
        self.awaiting.remove(node);
        self.record_failure(node, message, &mut advance);
        self.conclude(&mut advance);
        advance
    }

    /// Records that `node` failed and hands over to its fallback node, which
    /// will route the failed node's edges when it completes.
    /// A fallback that is itself scheduled or awaiting cannot stand in: the
    /// node fails with `message` and a note why. One that ran before runs
    /// again, its attempts counted afresh.
    pub fn fall_back(&mut self, node: &str, fallback: &str, message: &str) -> Advance {
        if self.status(node) != NodeStatus::Scheduled {
            return Advance {
                duplicate: true,
                ..Advance::default()
            };
        }
        let busy = match self.status(fallback) {
            NodeStatus::Scheduled => Some("scheduled"),
            NodeStatus::Awaiting => Some("awaiting"),
            _ => None,
        };
        if let Some(busy) = busy {
            let message = format!(
                "{message} (its fallback '{fallback}' is {busy} itself, so it cannot stand in)"
            );
            return self.fail(node, &message);
        }
        let mut advance = Advance::default();
        self.leave(node, NodeStatus::Done);
        self.nodes.entry(fallback.to_owned()).or_default().attempt = 0;
        if self.state == RunState::Failed {
            // Frozen: the handover is recorded and the fallback waits,
            // scheduled but not enqueued, for a retry.
            self.stand_ins.insert(fallback.to_owned(), node.to_owned());
            self.nodes.entry(fallback.to_owned()).or_default().status = NodeStatus::Scheduled;
            self.pending.insert(fallback.to_owned());
        } else if !self.state.is_terminal() {
            self.stand_ins.insert(fallback.to_owned(), node.to_owned());
            self.schedule(fallback, &mut advance);
        }
        self.conclude(&mut advance);
        advance
    }

    /// Fails the whole run without a node (bad blueprint, lost implementation).
    pub fn fail_run(&mut self, node: &str, message: &str) -> Advance {
        let mut advance = Advance::default();
        self.record_failure(node, message, &mut advance);
        advance
    }

    /// Cancels the run: nothing scheduled runs any more.
    pub fn cancel(&mut self) -> Advance {
        let mut advance = Advance::default();
        if !self.state.is_terminal() {
            self.state = RunState::Cancelled;
            advance.new_state = Some(RunState::Cancelled);
        }
        advance
    }

    /// Re-runs a failed run from where it failed: the run is running again
    /// and every node it left unfinished is scheduled afresh (attempts start
    /// at 1 again, since a job's attempt lives in its message): the nodes
    /// that failed, the nodes that were scheduled when it failed (their jobs
    /// were dropped, or they finished late; see the module docs), and a node
    /// whose scheduling hit the step limit. Completed and skipped nodes keep
    /// their results; awaiting nodes keep waiting. The errors move to
    /// `retried_errors`, the step budget starts again, and `settled` moves on
    /// (the context may have been changed by the operator, so no worker may
    /// trust a context it remembers). A failed subflow node forgets its child
    /// run and starts a new one.
    ///
    /// Refused with the run's state when it is not failed: a retry that
    /// loses a race with another one finds the run running.
    pub fn retry(&mut self) -> Result<Advance, RunState> {
        if self.state != RunState::Failed {
            return Err(self.state);
        }
        let mut again: BTreeSet<String> = std::mem::take(&mut self.pending);
        again.extend(
            self.nodes
                .iter()
                .filter(|(_, n)| n.status == NodeStatus::Failed)
                .map(|(id, _)| id.clone()),
        );
        // The step limit fails a run before scheduling a node that was due.
        again.extend(
            self.errors
                .iter()
                .filter(|e| self.status(&e.node_id) == NodeStatus::Waiting)
                .map(|e| e.node_id.clone()),
        );
        self.retried_errors.append(&mut self.errors);
        self.retries += 1;
        self.settled += 1;
        self.steps = 0;
        self.state = RunState::Running;
        let mut advance = Advance {
            new_state: Some(RunState::Running),
            ..Advance::default()
        };
        for node in &again {
            self.children.remove(node);
            let entry = self.nodes.entry(node.clone()).or_default();
            entry.status = NodeStatus::Waiting;
            entry.attempt = 0;
            self.schedule(node, &mut advance);
        }
        self.conclude(&mut advance);
        Ok(advance)
    }

    /// Records the times of a transition made at `now` (Unix ms): the nodes
    /// it scheduled started then, and those that were scheduled before it
    /// (`was_scheduled`) and are no more finished then.
    pub fn stamp_times(&mut self, was_scheduled: &BTreeSet<String>, advance: &Advance, now: i64) {
        for node in was_scheduled.difference(&self.pending) {
            self.nodes.entry(node.clone()).or_default().finished_at = Some(now);
        }
        for node in &advance.schedule {
            let entry = self.nodes.entry(node.clone()).or_default();
            entry.started_at = Some(now);
            entry.finished_at = None;
        }
    }

    fn leave(&mut self, node: &str, status: NodeStatus) {
        self.settled += 1;
        self.pending.remove(node);
        self.nodes.entry(node.to_owned()).or_default().status = status;
    }

    fn record_failure(&mut self, node: &str, message: &str, advance: &mut Advance) {
        self.errors.push(RunError {
            node_id: node.to_owned(),
            message: message.to_owned(),
        });
        if !self.state.is_terminal() {
            self.state = RunState::Failed;
            advance.new_state = Some(RunState::Failed);
        }
    }

    fn schedule(&mut self, node: &str, advance: &mut Advance) {
        if self.state.is_terminal() {
            return;
        }
        if self.steps >= self.step_limit {
            let message = format!(
                "Traversal exceeded maximum iterations, possible infinite loop: run '{}' reached its limit of {} node executions before scheduling '{}' (raise it with --step-limit)",
                self.run_id, self.step_limit, node
            );
            self.record_failure(node, &message, advance);
            return;
        }
        self.steps += 1;
        self.nodes.entry(node.to_owned()).or_default().status = NodeStatus::Scheduled;
        self.pending.insert(node.to_owned());
        advance.schedule.push(node.to_owned());
    }

    fn add_dynamic(&mut self, blueprint: &Blueprint, node: &str, completion: &Completion) {
        let mut known: HashSet<String> = self.dynamic.nodes.iter().map(|n| n.id.clone()).collect();
        for definition in &completion.dynamic_nodes {
            if blueprint.node(&definition.id).is_some() || !known.insert(definition.id.clone()) {
                continue;
            }
            self.dynamic.nodes.push(definition.clone());
            self.dynamic
                .edges
                .push((node.to_owned(), definition.id.clone()));
            if let Some(gather) = &completion.gather {
                self.dynamic
                    .edges
                    .push((definition.id.clone(), gather.clone()));
            }
        }
    }

    /// Delivers arrivals, running or skipping joins, propagating skips.
    fn deliver(
        &mut self,
        blueprint: &Blueprint,
        analysis: &Analysis,
        mut queue: Vec<(String, String, bool)>,
        advance: &mut Advance,
    ) {
        queue.reverse();
        let index = DynamicIndex::of(&self.dynamic);
        let graph = Graph {
            blueprint,
            analysis,
            dynamic: &index,
        };
        while let Some((source, target, taken)) = queue.pop() {
            let decision = {
                if !graph.exists(&target) {
                    continue;
                }
                let predecessors: BTreeSet<String> = graph
                    .predecessors(&target)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                let join = graph.join(&target);
                let entry = self.nodes.entry(target.clone()).or_default();
                if entry.status != NodeStatus::Waiting {
                    continue;
                }
                let arrived = entry.arrivals.entry(source).or_insert(false);
                *arrived |= taken;
                let all_arrived = predecessors.iter().all(|p| entry.arrivals.contains_key(p));
                let any_taken = entry.arrivals.values().any(|t| *t);
                let all_taken = all_arrived && entry.arrivals.values().all(|t| *t);
                match join {
                    JoinStrategy::All if all_taken => Some(true),
                    JoinStrategy::All if all_arrived => Some(false),
                    JoinStrategy::Any if any_taken => Some(true),
                    JoinStrategy::Any if all_arrived => Some(false),
                    _ => None,
                }
            };
            match decision {
                Some(true) => self.schedule(&target, advance),
                Some(false) => {
                    self.nodes.entry(target.clone()).or_default().status = NodeStatus::Skipped;
                    let mut next: Vec<String> = graph.static_targets(&target);
                    next.extend(graph.dynamic_targets(&target));
                    for successor in next.into_iter().rev() {
                        queue.push((target.clone(), successor, false));
                    }
                }
                None => {}
            }
        }
    }

    /// Moves the run to `awaiting` / `completed` once nothing is scheduled.
    fn conclude(&mut self, advance: &mut Advance) {
        if self.state.is_terminal() || !self.pending.is_empty() {
            return;
        }
        let next = if self.awaiting.is_empty() {
            RunState::Completed
        } else {
            RunState::Awaiting
        };
        if self.state != next {
            self.state = next;
            advance.new_state = Some(next);
        }
    }
}

/// The value stored for a node's output: `null` when it has none.
pub fn stored_output(output: Option<&Value>) -> ContextValue {
    output.map_or_else(ContextValue::null, ContextValue::from_value)
}

#[cfg(test)]
mod tests;
