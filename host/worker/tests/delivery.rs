//! The worker's delivery policy against the in-memory stores and a queue
//! that duplicates, delays, loses deletes and fails sends (`support`): group
//! messages, duplicated deliveries, how each engine error routes a message,
//! lease renewal and shutdown. Time is paused tokio time.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::ContextMap;
use flowcraft_core::engine::{Engine, EngineSettings};
use flowcraft_core::plan::{Plan, PlanRegistry};
use flowcraft_core::progress::RunState;
use flowcraft_core::runner::{NodeCall, NodeOutcome, NodeRunner, NodeSuccess, PinError, Pins};
use flowcraft_core::store::Job;
use flowcraft_worker::lease::REWRITE_DELAY;
use flowcraft_worker::{Group, WorkerSettings};
use serde_json::Value;
use support::{Body, Effects, FakeBackend, Faults};
use tokio::sync::Semaphore;

/// `step` passes its input on; `slow` does so after `params.seconds`;
/// `gate` waits for a permit the test hands out. Each records its effect.
struct Nodes {
    effects: Effects,
    gate: Semaphore,
    gate_entered: tokio::sync::Notify,
}

impl Default for Nodes {
    fn default() -> Self {
        Self {
            effects: Effects::default(),
            gate: Semaphore::new(0),
            gate_entered: tokio::sync::Notify::new(),
        }
    }
}

impl NodeRunner for Nodes {
    fn implements(&self, uses: &str) -> bool {
        matches!(uses, "step" | "slow" | "gate")
    }

    fn pin(&self, _: &Blueprint) -> Result<Pins, PinError> {
        Ok(Pins::new())
    }

    async fn run(&self, call: NodeCall) -> NodeOutcome {
        match call.uses.as_str() {
            "slow" => {
                let seconds = call.params["seconds"].as_u64().unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            "gate" => {
                self.gate_entered.notify_one();
                let _ = self.gate.acquire().await.map(|permit| permit.forget());
            }
            _ => {}
        }
        self.effects.record(&call.run_id, &call.node_id);
        NodeOutcome {
            result: Ok(NodeSuccess {
                output: Some(Value::from(call.node_id.clone())),
                ..NodeSuccess::default()
            }),
            context: call.context,
        }
    }
}

type TestEngine = Engine<FakeBackend, Nodes>;

/// `A` fans out to `B1`..`B{width}`, which join in `J`.
fn fan_out(id: &str, width: usize) -> String {
    let branches: Vec<String> = (1..=width).map(|i| format!("B{i}")).collect();
    let mut nodes = vec![r#"{"id":"A","uses":"step"}"#.to_owned()];
    let mut edges = Vec::new();
    for branch in &branches {
        nodes.push(format!(r#"{{"id":"{branch}","uses":"step"}}"#));
        edges.push(format!(r#"{{"source":"A","target":"{branch}"}}"#));
        edges.push(format!(r#"{{"source":"{branch}","target":"J"}}"#));
    }
    nodes.push(r#"{"id":"J","uses":"step"}"#.to_owned());
    format!(
        r#"{{"id":"{id}","nodes":[{}],"edges":[{}]}}"#,
        nodes.join(","),
        edges.join(",")
    )
}

/// `A` (a `first` node) followed by `B` (a `second` node).
fn two_steps(id: &str, first: &str, second: &str) -> String {
    format!(
        r#"{{"id":"{id}","nodes":[{{"id":"A","uses":"{first}"}},{{"id":"B","uses":"{second}"}}],"edges":[{{"source":"A","target":"B"}}]}}"#
    )
}

fn one_node(id: &str, uses: &str, params: &str) -> String {
    format!(
        r#"{{"id":"{id}","nodes":[{{"id":"N","uses":"{uses}","params":{params}}}],"edges":[]}}"#
    )
}

fn engine_on(
    backend: Arc<FakeBackend>,
    nodes: Arc<Nodes>,
    blueprints: &[String],
) -> Arc<TestEngine> {
    let plans = blueprints.iter().map(|text| {
        let blueprint = Blueprint::from_json(text).expect("blueprint");
        Plan::new(blueprint, Default::default()).expect("plan")
    });
    Arc::new(Engine::new(
        backend,
        nodes,
        Arc::new(PlanRegistry::new(plans)),
        EngineSettings::default(),
    ))
}

/// An engine on a fresh fake backend, and its node runner.
fn engine(blueprints: &[String]) -> (Arc<TestEngine>, Arc<Nodes>) {
    let nodes = Arc::new(Nodes::default());
    let engine = engine_on(Arc::new(FakeBackend::new()), nodes.clone(), blueprints);
    (engine, nodes)
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        concurrency: 8,
        visibility: Duration::from_secs(10),
        max_dequeue: 3,
        reconcile_every: Some(Duration::from_secs(5)),
        stalled_after: Duration::from_secs(20),
        groups: true,
        idle_poll: Duration::from_millis(200),
    }
}

/// Runs a worker until `done` holds (checked on every queue change), then
/// shuts it down and waits for it to return. Fails after an hour of
/// virtual time.
async fn work_until(engine: &Arc<TestEngine>, settings: WorkerSettings, done: impl Fn() -> bool) {
    let backend = engine.backend().clone();
    let shutdown = async move { backend.queue.until(done).await };
    run_worker(engine, settings, shutdown).await;
}

async fn run_worker(
    engine: &Arc<TestEngine>,
    settings: WorkerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let worker = flowcraft_worker::run(engine.clone(), settings, shutdown);
    tokio::time::timeout(Duration::from_secs(3_600), worker)
        .await
        .expect("the worker did not finish within an hour of virtual time");
}

async fn start(engine: &TestEngine, blueprint: &str, run: &str) {
    engine
        .start_run(blueprint, Some(run.into()), ContextMap::new())
        .await
        .expect("run starts");
}

fn completed(engine: &TestEngine, runs: &[&str]) -> impl Fn() -> bool + use<> {
    let backend = engine.backend().clone();
    let runs: Vec<String> = runs.iter().map(|run| (*run).to_owned()).collect();
    move || {
        runs.iter()
            .all(|run| backend.state(run) == Some(RunState::Completed))
    }
}

#[tokio::test(start_paused = true)]
async fn a_fan_out_runs_under_its_one_message_and_each_node_once() {
    let (engine, nodes) = engine(&[fan_out("f", 5)]);
    start(&engine, "f", "r").await;
    work_until(&engine, settings(), completed(&engine, &["r"])).await;
    for node in ["A", "B1", "B2", "B3", "B4", "B5", "J"] {
        assert_eq!(nodes.effects.count("r", node), 1, "{node}");
    }
    let queue = &engine.backend().queue;
    assert_eq!(queue.sends(), 1, "only the start job was sent");
    assert_eq!(
        queue.rewrites(),
        0,
        "a fan-out that ends within the rewrite delay costs its message no rewrite"
    );
    assert_eq!(queue.len(), 0, "the message is deleted");
}

#[tokio::test(start_paused = true)]
async fn a_successor_that_outlasts_the_rewrite_delay_is_what_its_message_stands_for() {
    let (engine, nodes) = engine(&[two_steps("c", "step", "gate")]);
    start(&engine, "c", "r").await;
    let backend = engine.backend().clone();
    let gate = nodes.clone();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = held.clone();
    let shutdown = async move {
        gate.gate_entered.notified().await;
        tokio::time::sleep(REWRITE_DELAY * 2).await;
        // What another worker would receive if this one died now.
        *seen.lock().unwrap() = backend.queue.bodies();
        gate.gate.add_permits(1);
    };
    run_worker(&engine, settings(), shutdown).await;
    let held = held.lock().unwrap();
    let [Body::Jobs(group)] = held.as_slice() else {
        panic!("one message of jobs, not {held:?}");
    };
    let nodes_held: Vec<&str> = group.jobs.iter().map(|job| job.node_id.as_str()).collect();
    assert_eq!(
        nodes_held,
        ["B"],
        "the message was rewritten into the successor"
    );
    assert!(completed(&engine, &["r"])());
    assert_eq!(nodes.effects.count("r", "B"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_successor_left_for_redelivery_comes_back_with_its_message() {
    let (engine, nodes) = engine(&[two_steps("c", "gate", "step")]);
    start(&engine, "c", "r").await;
    let queue = &engine.backend().queue;
    let id = queue.inject(queue.take_all().into_iter().next().unwrap(), 0);
    let (gate, backend) = (nodes.clone(), engine.backend().clone());
    tokio::spawn(async move {
        gate.gate_entered.notified().await;
        // B, handed on before the message was rewritten, meets an outage.
        backend.failing_context_loads.store(1, Ordering::SeqCst);
        gate.gate.add_permits(1);
    });
    work_until(&engine, settings(), completed(&engine, &["r"])).await;
    assert_eq!(queue.deliveries(&id), 2, "B came back in A's message");
    assert_eq!(queue.sends(), 1, "not re-sent by the reconciler");
    assert_eq!(nodes.effects.count("r", "A"), 1);
    assert_eq!(nodes.effects.count("r", "B"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_group_message_whose_jobs_are_partly_done_runs_only_the_rest() {
    let (engine, nodes) = engine(&[fan_out("f", 4)]);
    start(&engine, "f", "r").await;
    // A worker received the start job, ran A, B1 and B2, rewrote its
    // message into the group of the branches and died.
    let queue = &engine.backend().queue;
    assert_eq!(queue.take_all().len(), 1);
    let branches = engine.handle(&Job::new("r", "f", "A")).await.unwrap();
    assert_eq!(branches.len(), 4);
    for done in &branches[..2] {
        let joined = engine.handle(done).await.unwrap();
        assert!(joined.is_empty(), "J waits for every branch");
    }
    queue.inject_held_group(branches);
    work_until(&engine, settings(), completed(&engine, &["r"])).await;
    for node in ["A", "B1", "B2", "B3", "B4", "J"] {
        assert_eq!(nodes.effects.count("r", node), 1, "{node}");
    }
    assert_eq!(queue.len(), 0);
    assert!(queue.dead_letters().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_copy_of_a_group_under_another_message_id_is_dropped() {
    let (engine, nodes) = engine(&[fan_out("f", 3)]);
    start(&engine, "f", "r").await;
    let queue = &engine.backend().queue;
    queue.take_all();
    let branches = engine.handle(&Job::new("r", "f", "A")).await.unwrap();
    // The holder's message, and a duplicated delivery of it under another id.
    let held = queue.inject_held_group(branches.clone());
    let copy = Group {
        jobs: branches,
        lease: Some(held.clone()),
    };
    queue.inject(Body::Jobs(copy), 0);
    work_until(&engine, settings(), completed(&engine, &["r"])).await;
    for node in ["A", "B1", "B2", "B3", "J"] {
        assert_eq!(nodes.effects.count("r", node), 1, "{node}");
    }
    assert_eq!(queue.len(), 0, "the copy was deleted, not left");
    assert!(queue.dead_letters().is_empty(), "a copy is no poison");
}

#[tokio::test(start_paused = true)]
async fn a_backend_outage_leaves_the_message_to_reappear() {
    let (engine, nodes) = engine(&[one_node("o", "step", "{}")]);
    start(&engine, "o", "r").await;
    engine
        .backend()
        .failing_context_loads
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let queue = &engine.backend().queue;
    let start = queue.take_all();
    let id = queue.inject(start.into_iter().next().unwrap(), 0);
    let before = tokio::time::Instant::now();
    work_until(&engine, settings(), completed(&engine, &["r"])).await;
    assert_eq!(queue.deliveries(&id), 2, "left once, then handled");
    assert!(
        before.elapsed() >= settings().visibility,
        "it reappeared after its visibility timeout, not before"
    );
    assert_eq!(nodes.effects.count("r", "N"), 1);
    assert!(queue.dead_letters().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_job_of_a_blueprint_this_worker_lacks_is_returned_then_dead_lettered_at_the_limit() {
    let (engine, _) = engine(&[one_node("o", "step", "{}")]);
    start(&engine, "o", "r").await;
    // A worker that has other blueprints only.
    let other = engine_on(
        engine.backend().clone(),
        Arc::default(),
        &[one_node("x", "step", "{}")],
    );
    let queue = &engine.backend().queue;
    // Returned after 30 s each time, where a lease is a minute; no
    // reconciler re-sends the job meanwhile.
    let settings = WorkerSettings {
        visibility: Duration::from_secs(60),
        reconcile_every: None,
        ..settings()
    };
    let poisoned = {
        let backend = engine.backend().clone();
        move || !backend.queue.dead_letters().is_empty()
    };
    let before = tokio::time::Instant::now();
    work_until(&other, settings.clone(), poisoned).await;
    let dead = queue.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].jobs, vec![Job::new("r", "o", "N")]);
    assert!(
        dead[0].reason.contains("Blueprint with ID 'o' not found")
            && dead[0].reason.contains("(delivered 3 times; limit 3)"),
        "{}",
        dead[0].reason
    );
    // Returned twice with the short delay, not left for a lease each time.
    let returned_after = flowcraft_worker::policy::return_delay(settings.visibility);
    assert_eq!(returned_after, Duration::from_secs(30));
    assert!(before.elapsed() >= returned_after * 2);
    assert!(before.elapsed() < settings.visibility * 2);
    assert_eq!(queue.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn messages_that_no_delivery_can_fix_are_dead_lettered_at_once() {
    let (engine, nodes) = engine(&[fan_out("f", 2)]);
    start(&engine, "f", "r").await;
    // A run whose start job was delivered too often (a node that kills
    // its worker, say).
    start(&engine, "f", "r2").await;
    let queue = &engine.backend().queue;
    queue.take_all();
    let branches = engine.handle(&Job::new("r", "f", "A")).await.unwrap();
    let mut with_stray = branches.clone();
    with_stray.push(Job::new("r", "f", "nosuch"));
    queue.inject_held_group(with_stray);
    queue.inject(Body::Jobs(Group::single(Job::new("ghost", "f", "A"))), 0);
    queue.inject(Body::Garbage("hello".into()), 0);
    queue.inject(Body::Jobs(Group::single(Job::new("r2", "f", "A"))), 3);
    let backend = engine.backend().clone();
    let done = move || backend.queue.dead_letters().len() == 4 && backend.queue.len() == 0;
    let without_reconciler = WorkerSettings {
        reconcile_every: None,
        ..settings()
    };
    work_until(&engine, without_reconciler, done).await;
    let mut reasons: Vec<String> = queue.dead_letters().into_iter().map(|d| d.reason).collect();
    reasons.sort();
    let expected = [
        "delivered 4 times without completing (limit 3)",
        "job for node 'nosuch' of run 'r'",
        "run 'ghost' not found",
        "undecodable message: not a job: \"hello\"",
    ];
    for (reason, expected) in reasons.iter().zip(expected) {
        assert!(reason.starts_with(expected), "{reason} / {expected}");
    }
    assert!(
        completed(&engine, &["r"])(),
        "the stray job did not hold up its group"
    );
    for node in ["A", "B1", "B2", "J"] {
        assert_eq!(nodes.effects.count("r", node), 1, "{node}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_node_keeps_its_message_invisible() {
    let (engine, nodes) = engine(&[one_node("s", "slow", r#"{"seconds": 60}"#)]);
    start(&engine, "s", "r").await;
    let queue = &engine.backend().queue;
    let id = queue.inject(queue.take_all().into_iter().next().unwrap(), 0);
    work_until(&engine, settings(), completed(&engine, &["r"])).await;
    assert_eq!(queue.deliveries(&id), 1, "no second delivery while it ran");
    assert_eq!(nodes.effects.count("r", "N"), 1);
    // Renewed at half the visibility timeout for a minute.
    assert!(queue.renewals() >= 11, "{} renewals", queue.renewals());
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_running_job_finish() {
    let (engine, nodes) = engine(&[one_node("g", "gate", "{}")]);
    start(&engine, "g", "r").await;
    let gate = nodes.clone();
    let shutdown = async move {
        gate.gate_entered.notified().await;
        // Asked to stop while the node runs; it may finish.
        gate.gate.add_permits(1);
    };
    run_worker(&engine, settings(), shutdown).await;
    assert_eq!(nodes.effects.count("r", "N"), 1);
    assert!(completed(&engine, &["r"])());
    assert_eq!(engine.backend().queue.len(), 0, "its message is deleted");
}

#[tokio::test(start_paused = true)]
async fn shutdown_leaves_a_job_that_outlasts_its_lease_to_another_worker() {
    let (engine, nodes) = engine(&[one_node("g", "gate", "{}")]);
    start(&engine, "g", "r").await;
    let gate = nodes.clone();
    let before = tokio::time::Instant::now();
    run_worker(&engine, settings(), async move {
        gate.gate_entered.notified().await;
    })
    .await;
    assert!(
        before.elapsed() >= settings().visibility,
        "it waited a lease"
    );
    assert_eq!(nodes.effects.count("r", "N"), 0, "the node never finished");
    let queue = &engine.backend().queue;
    assert_eq!(queue.len(), 1, "the message stays for another worker");
    assert!(queue.dead_letters().is_empty());
    assert_eq!(engine.backend().state("r"), Some(RunState::Running));
}

/// Every fault at once, with and without groups: sends duplicated, delayed
/// and failing, deletes lost. Every run completes and every node runs once;
/// nothing is dead-lettered. A job whose send failed is sent again by the
/// reconciler (without groups) or run under its lease (with them).
#[tokio::test(start_paused = true)]
async fn under_every_fault_each_run_completes_with_each_node_once() {
    for groups in [true, false] {
        let (engine, nodes) = engine(&[fan_out("f", 20), fan_out("g", 3)]);
        engine.backend().queue.set_faults(Faults {
            duplicate_every: 3,
            fail_send_every: 4,
            lose_delete_every: 2,
            send_delay: Duration::from_millis(150),
            ..Faults::default()
        });
        let runs: Vec<String> = (0..12).map(|i| format!("run-{i}")).collect();
        for (i, run) in runs.iter().enumerate() {
            let blueprint = if i % 2 == 0 { "f" } else { "g" };
            // A start job whose send failed is the reconciler's to re-send.
            let started = engine
                .start_run(blueprint, Some(run.clone()), ContextMap::new())
                .await;
            if let Err(problem) = started {
                assert!(problem.is_transient(), "{problem}");
            }
        }
        let names: Vec<&str> = runs.iter().map(String::as_str).collect();
        let settings = WorkerSettings {
            groups,
            ..settings()
        };
        work_until(&engine, settings, completed(&engine, &names)).await;
        assert!(
            nodes.effects.repeated().is_empty(),
            "groups {groups}: ran twice: {:?}",
            nodes.effects.repeated()
        );
        for (i, run) in runs.iter().enumerate() {
            let width = if i % 2 == 0 { 20 } else { 3 };
            for branch in 1..=width {
                let node = format!("B{branch}");
                assert_eq!(nodes.effects.count(run, &node), 1, "{run} {node}");
            }
            assert_eq!(nodes.effects.count(run, "J"), 1, "{run}");
        }
        let dead = engine.backend().queue.dead_letters();
        assert!(dead.is_empty(), "groups {groups}: {dead:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_delivered_too_often_whose_jobs_are_done_is_deleted_not_dead_lettered() {
    let (engine, nodes) = engine(&[one_node("o", "step", "{}")]);
    start(&engine, "o", "r").await;
    let queue = &engine.backend().queue;
    let start_job = queue.take_all();
    let job = Job::new("r", "o", "N");
    assert!(engine.handle(&job).await.unwrap().is_empty());
    // Its deletes were lost three times over.
    let id = queue.inject(start_job.into_iter().next().unwrap(), 3);
    let backend = engine.backend().clone();
    work_until(&engine, settings(), move || backend.queue.len() == 0).await;
    assert_eq!(queue.deliveries(&id), 1);
    assert!(
        queue.dead_letters().is_empty(),
        "{:?}",
        queue.dead_letters()
    );
    assert_eq!(nodes.effects.count("r", "N"), 1);
}

/// An idle worker polls once a minute here; a run started meanwhile is
/// announced and taken at once. With every wake-up dropped it still runs,
/// found by the next poll.
#[tokio::test(start_paused = true)]
async fn an_idle_worker_takes_announced_work_at_once_and_polls_for_the_rest() {
    for drop_wakeups in [false, true] {
        let (engine, nodes) = engine(&[one_node("o", "step", "{}")]);
        engine.backend().queue.set_faults(Faults {
            drop_wakeups,
            ..Faults::default()
        });
        let settings = WorkerSettings {
            idle_poll: Duration::from_secs(60),
            reconcile_every: None,
            ..settings()
        };
        let idle = Duration::from_secs(300);
        let starter = engine.clone();
        let started = tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            start(&starter, "o", "r").await;
            tokio::time::Instant::now()
        });
        work_until(&engine, settings, completed(&engine, &["r"])).await;
        let waited = started.await.unwrap().elapsed();
        assert_eq!(nodes.effects.count("r", "N"), 1);
        if drop_wakeups {
            assert!(
                waited <= Duration::from_secs(60),
                "found by the next poll: {waited:?}"
            );
        } else {
            assert!(
                waited < Duration::from_millis(10),
                "woken at once: {waited:?}"
            );
        }
    }
}
