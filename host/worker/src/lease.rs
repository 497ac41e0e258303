//! One received message and the jobs it stands for, from receipt to its
//! deletion, return or dead-lettering.
//!
//! A message stands for one job, or, once this worker has taken on a
//! fan-out, for a [`Group`] of jobs of one run. The engine answers the jobs
//! a finished job schedules for its own run instead of sending them; the
//! lease keeps up to [`GROUP_LIMIT`] and sends the rest as messages of their
//! own. It makes the kept ones durable by rewriting its message into the
//! group of every job it still stands for (one request, however many jobs)
//! and runs them at once in the worker's free slots, the others as slots
//! free up. A chain is the group of one: the message follows it to its
//! latest step.
//!
//! The rewrite is under way while the next jobs run: a step need not wait
//! for it, since nothing a job does depends on its own message. The
//! message's other requests (renewal, deletion, a further rewrite) wait for
//! it. It starts [`REWRITE_DELAY`] after the jobs changed, so that the steps
//! of a fast chain share one rewrite, or need none when the chain ends
//! first (the message is then deleted). If the worker dies before the
//! rewrite lands, the message reappears as it was: its jobs are done and
//! dropped, and the jobs that followed them are re-sent by the reconciler,
//! as for any job lost between settling and sending. A failed rewrite is
//! tried again at the next renewal. A message that is to be delivered again
//! (a job failed and is left or returned) is first rewritten into the jobs
//! it still stands for, the failed ones included.
//!
//! A group message also names its own message id (its lease): a message
//! that carries a group under another id is a copy of one (a duplicated
//! delivery) whose jobs the holder of the original runs, and is dropped.
//!
//! If this worker dies, the message reappears with the jobs it stood for at
//! its last rewrite. The worker that receives it runs them all; those that
//! are already done are recognised as duplicates and skipped, the others run
//! again (at least once, as any redelivered job). The message is deleted
//! only when every job of the lease has been handled; what happens on an
//! error is [`Disposition`]'s: a transient failure leaves the message to
//! reappear, one that another delivery may fix returns it after a delay, and
//! one that fails for good dead-letters the job on its own.
//!
//! Groups are off in a fleet shared with upstream's TypeScript workers: they
//! read `nodeId` only, so the lease keeps at most one job (the successor it
//! runs next) and sends the others.

use std::sync::Arc;
use std::time::Duration;

use flowcraft_core::engine::{Engine, EngineError};
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::store::{Job, StoreError};
use flowcraft_core::telemetry::{self, JobOutcome};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::cancel::Cancellations;
use crate::policy::{self, Disposition};
use crate::queue::{Delivery, Group, LeaseQueue, WorkerBackend};

/// The most jobs one message stands for. A fan-out wider than this is
/// shared with other workers through the queue; up to this many of its
/// branches wait for this worker's slots (in turn with newly received jobs)
/// rather than costing a send, a receive and a delete each.
pub const GROUP_LIMIT: usize = 16;

/// How long after its jobs change a message is rewritten into them. On a
/// fast backend a chain step takes about as long as a rewrite, so rewriting
/// for each step keeps one under way beside every step, competing with the
/// step's own requests; with the delay the steps of a fast chain share one.
/// Where steps take longer than the delay (on Azure), the message is
/// rewritten about as often as before. The cost is a longer window in which
/// a worker's death leaves its latest jobs to the reconciler.
pub const REWRITE_DELAY: Duration = Duration::from_millis(50);

/// What every lease of a worker shares.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// How long a message stays invisible; renewed at half of it.
    pub visibility: Duration,
    /// Deliveries after which a message is dead-lettered.
    pub max_dequeue: u32,
    /// Whether a lease may run several jobs at once under its message.
    pub groups: bool,
}

type Message<B> = <<B as WorkerBackend>::Queue as LeaseQueue>::Message;

/// A rewrite under way, a task of its own: it holds the message and gives
/// it back.
type Rewrite<B> = JoinHandle<(Message<B>, Result<(), StoreError>)>;

/// A job of the lease that ended: the job, the extra slot it held (none when
/// it ran in the lease's own slot) and what the engine answered.
type Ended = (
    Job,
    Option<OwnedSemaphorePermit>,
    Result<Vec<Job>, EngineError>,
);

/// Handles one message to the end. The caller holds one of the worker's
/// slots for it; jobs run alongside take further slots from `slots`.
/// Answers whether its jobs ran to their end (the message was deleted after
/// them), rather than being returned, left, dead-lettered or dropped.
pub async fn process<B: WorkerBackend, R: NodeRunner>(
    engine: Arc<Engine<B, R>>,
    cancellations: Arc<Cancellations>,
    slots: Arc<Semaphore>,
    message: Message<B>,
    settings: LeaseSettings,
) -> bool {
    let queue = engine.backend().lease_queue();
    if let Some(reason) = policy::over_delivered(message.dequeue_count(), settings.max_dequeue) {
        over_delivered(&engine, message, &reason).await;
        return false;
    }
    let jobs = match queue.group(&message) {
        Ok(Group {
            lease: Some(lease), ..
        }) if lease != message.id() => {
            info!(message = %message.id(), holder = %lease, "dropping a copy of another message's group of jobs");
            if let Err(problem) = queue.delete(&message).await {
                warn!(message = %message.id(), error = %problem, "could not delete the copy; it will be dropped again when it reappears");
            }
            return false;
        }
        Ok(group) => group.jobs,
        Err(problem) => {
            let reason = format!("undecodable message: {problem}");
            dead_letter(queue, &message, &reason).await;
            return false;
        }
    };
    let lease = Lease {
        engine: engine.clone(),
        slots,
        renew_at: Instant::now() + settings.visibility / 2,
        settings,
        message_id: message.id().to_owned(),
        message: Some(message),
        rewriting: None,
        outdated: false,
        rewrite_at: None,
        changed: false,
        own_slot_free: true,
        waiting: jobs,
        successors: Vec::new(),
        running: Vec::new(),
        kept: Vec::new(),
        tasks: JoinSet::new(),
        left: None,
        poisoned: None,
    };
    lease.run(&cancellations).await
}

/// A message delivered more often than allowed is dead-lettered without
/// running its jobs (they may be what kills workers), unless none of them
/// has work left: then its earlier deletes were lost, and it is deleted.
async fn over_delivered<B: WorkerBackend, R: NodeRunner>(
    engine: &Engine<B, R>,
    message: Message<B>,
    reason: &str,
) {
    let queue = engine.backend().lease_queue();
    let Ok(group) = queue.group(&message) else {
        return dead_letter(queue, &message, reason).await;
    };
    for job in &group.jobs {
        // A failed check counts as work left: dead-letter rather than drop.
        if engine.is_outstanding(job).await.unwrap_or(true) {
            return dead_letter(queue, &message, reason).await;
        }
    }
    info!(message = %message.id(), "deleting a message delivered too often whose jobs are all handled");
    if let Err(problem) = queue.delete(&message).await {
        warn!(message = %message.id(), error = %problem, "could not delete it; it is checked again when it reappears");
    }
}

/// Moves `message` to the dead-letter queue with `reason`, then deletes it.
pub async fn dead_letter<Q: LeaseQueue>(queue: &Q, message: &Q::Message, reason: &str) {
    error!(message = %message.id(), reason, "moving message to the poison queue");
    match queue.dead_letter(message, reason).await {
        Ok(()) => {
            telemetry::poisoned();
            if let Err(problem) = queue.delete(message).await {
                warn!(error = %problem, "poisoned message could not be deleted from the job queue");
            }
        }
        Err(problem) => {
            error!(error = %problem, "could not write to the poison queue; the message stays in the job queue")
        }
    }
}

struct Lease<B: WorkerBackend, R> {
    engine: Arc<Engine<B, R>>,
    slots: Arc<Semaphore>,
    settings: LeaseSettings,
    /// The message, while no rewrite holds it.
    message: Option<Message<B>>,
    message_id: String,
    rewriting: Option<Rewrite<B>>,
    /// The jobs changed since the last rewrite started, or it failed: the
    /// message is to be rewritten again.
    outdated: bool,
    /// When the next rewrite starts, if one is due and none is under way.
    rewrite_at: Option<Instant>,
    /// When the message's invisibility is next renewed.
    renew_at: Instant,
    /// Whether the jobs the message stands for changed since it was
    /// received (whether or not it was rewritten since).
    changed: bool,
    /// Whether the slot the caller holds for this lease is free for a job.
    own_slot_free: bool,
    /// Jobs the message stands for that have not started.
    waiting: Vec<Job>,
    /// Those of them that earlier jobs of this lease scheduled (the others
    /// came with the message).
    successors: Vec<Job>,
    /// Jobs the message stands for that are running.
    running: Vec<Job>,
    /// Jobs that failed and are to be delivered again with the message.
    kept: Vec<Job>,
    tasks: JoinSet<Ended>,
    /// The first error that keeps the message (see [`Disposition`]): it is
    /// left to reappear, or returned, instead of being deleted.
    left: Option<(Job, EngineError)>,
    /// The lease's only job failed for good, with this reason: the message
    /// itself is dead-lettered.
    poisoned: Option<String>,
}

impl<B: WorkerBackend, R: NodeRunner> Lease<B, R> {
    fn queue(&self) -> &B::Queue {
        self.engine.backend().lease_queue()
    }

    async fn run(mut self, cancellations: &Cancellations) -> bool {
        let run_id = self.waiting[0].run_id.clone();
        let mut cancelled = cancellations.watch(&run_id);
        self.start_waiting();
        while !self.tasks.is_empty() {
            tokio::select! {
                ended = self.tasks.join_next() => match ended {
                    Some(Ok(ended)) => self.ended(ended).await,
                    Some(Err(panic)) => {
                        error!(run = %run_id, error = %panic, "a job panicked; its message will be delivered again");
                        self.abandon();
                        return false;
                    }
                    None => {}
                },
                permit = self.slots.clone().acquire_owned(), if self.settings.groups && !self.waiting.is_empty() => {
                    let job = self.waiting.remove(0);
                    self.start(job, permit.ok());
                }
                landed = async { self.rewriting.as_mut().expect("guarded").await }, if self.rewriting.is_some() => {
                    self.rewriting = None;
                    match landed {
                        Ok(landed) => self.landed(landed),
                        Err(problem) => {
                            error!(run = %run_id, error = %problem, "the message's rewrite failed; its jobs will be delivered again");
                            self.abandon();
                            return false;
                        }
                    }
                }
                () = tokio::time::sleep_until(self.rewrite_at.unwrap_or(self.renew_at)), if self.rewriting.is_none() && self.rewrite_at.is_some() => {
                    self.start_rewrite();
                }
                () = tokio::time::sleep_until(self.renew_at), if self.rewriting.is_none() => {
                    if !self.renew(&run_id).await {
                        self.abandon();
                        return false;
                    }
                }
                () = cancelled.wait() => {
                    self.interrupt(&run_id).await;
                    return false;
                }
            }
            self.start_waiting();
        }
        self.settle().await
    }

    /// The run was cancelled: dropping the tasks stops their nodes (a
    /// WebAssembly call ends at its next await point) before they write
    /// anything, and the message goes.
    async fn interrupt(&mut self, run_id: &str) {
        for job in &self.running {
            info!(run = %run_id, node = %job.node_id, "run cancelled: node interrupted, its result dropped");
            telemetry::job_handled(JobOutcome::Cancelled);
        }
        self.abandon();
        let Some(message) = self.take_message().await else {
            return;
        };
        if let Err(problem) = self.queue().delete(&message).await {
            warn!(run = %run_id, error = %problem, "interrupted job's message could not be deleted; its redelivery will be dropped");
        }
    }

    /// Starts waiting jobs while there are slots for them.
    fn start_waiting(&mut self) {
        while !self.waiting.is_empty() {
            let Some(permit) = self.take_slot() else {
                return;
            };
            let job = self.waiting.remove(0);
            self.start(job, permit);
        }
    }

    /// A slot for one more job: the lease's own if free (`Some(None)`), else
    /// a free one of the worker's if groups are allowed.
    fn take_slot(&mut self) -> Option<Option<OwnedSemaphorePermit>> {
        if self.own_slot_free {
            self.own_slot_free = false;
            return Some(None);
        }
        if !self.settings.groups {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok().map(Some)
    }

    fn start(&mut self, job: Job, permit: Option<OwnedSemaphorePermit>) {
        self.running.push(job.clone());
        let successor = match self.successors.iter().position(|s| *s == job) {
            Some(position) => {
                self.successors.swap_remove(position);
                true
            }
            None => false,
        };
        let engine = self.engine.clone();
        self.tasks.spawn(async move {
            let outcome = match successor {
                true => engine.handle_successor(&job).await,
                false => engine.handle(&job).await,
            };
            (job, permit, outcome)
        });
    }

    /// Stops every running job; the message reappears after its visibility
    /// timeout with the jobs it stands for.
    fn abandon(&mut self) {
        self.tasks.abort_all();
    }

    async fn ended(&mut self, (job, permit, outcome): Ended) {
        if let Some(position) = self.running.iter().position(|running| *running == job) {
            self.running.remove(position);
        }
        match permit {
            Some(permit) => drop(permit),
            None => self.own_slot_free = true,
        }
        let problem = match outcome {
            Ok(next) => {
                telemetry::job_handled(JobOutcome::Handled);
                return self.hand_off(next).await;
            }
            Err(problem) => problem,
        };
        let disposition = Disposition::of(&problem);
        telemetry::job_handled(match disposition {
            Disposition::Redeliver => JobOutcome::BackendError,
            Disposition::ReturnLater => JobOutcome::Returned,
            Disposition::DeadLetter => JobOutcome::DeadLettered,
        });
        match disposition {
            Disposition::Redeliver | Disposition::ReturnLater => {
                if problem.is_transient() {
                    warn!(run = %job.run_id, node = %job.node_id, error = %problem, "backend error; the job will be delivered again");
                }
                self.kept.push(job.clone());
                self.left.get_or_insert((job, problem));
            }
            Disposition::DeadLetter => {
                let alone = !self.changed
                    && self.running.is_empty()
                    && self.waiting.is_empty()
                    && self.kept.is_empty();
                if alone {
                    self.poisoned = Some(problem.to_string());
                } else {
                    self.dead_letter_job(&job, &problem.to_string()).await;
                }
            }
        }
    }

    /// Takes on the jobs a finished job scheduled, up to [`GROUP_LIMIT`]
    /// for the whole lease, made durable by rewriting the message; they
    /// start as slots free up. The rest are sent as messages of their own.
    async fn hand_off(&mut self, mut next: Vec<Job>) {
        let limit = if self.settings.groups { GROUP_LIMIT } else { 1 };
        let room = limit.saturating_sub(self.running.len() + self.waiting.len());
        let overflow = next.split_off(room.min(next.len()));
        for (job, problem) in self.send_each(overflow).await {
            if self.settings.groups {
                // Not lost: it stays with this lease, made durable below.
                warn!(run = %job.run_id, node = %job.node_id, error = %problem, "could not send a scheduled job; running it under this message instead");
                next.push(job);
            } else {
                warn!(run = %job.run_id, node = %job.node_id, error = %problem, "could not send a scheduled job; the reconciler will re-send it");
                self.left.get_or_insert((job, EngineError::Store(problem)));
            }
        }
        if next.is_empty() {
            return;
        }
        self.successors.extend(next.iter().cloned());
        self.waiting.extend(next);
        self.changed = true;
        self.outdate();
    }

    /// The jobs changed: the message is rewritten into them
    /// [`REWRITE_DELAY`] from now, unless a rewrite is already due.
    fn outdate(&mut self) {
        self.outdated = true;
        self.rewrite_at
            .get_or_insert_with(|| Instant::now() + REWRITE_DELAY);
    }

    /// Starts rewriting the message into the group of every job the lease
    /// stands for; one under way is waited for first (it then starts again).
    fn start_rewrite(&mut self) {
        self.rewrite_at = None;
        let Some(mut message) = self.message.take() else {
            self.outdated = true;
            return;
        };
        let jobs: Vec<Job> = (self.running.iter())
            .chain(&self.waiting)
            .chain(&self.kept)
            .cloned()
            .collect();
        let group = Group {
            lease: (jobs.len() > 1).then(|| self.message_id.clone()),
            jobs,
        };
        self.outdated = false;
        let engine = self.engine.clone();
        let visibility = self.settings.visibility;
        self.rewriting = Some(tokio::spawn(async move {
            let queue = engine.backend().lease_queue();
            let written = queue.rewrite(&mut message, &group, visibility).await;
            (message, written)
        }));
    }

    /// A rewrite ended: the message is back; the next one is due if the
    /// jobs changed meanwhile. A failed one is tried again at the renewal.
    fn landed(&mut self, (message, written): (Message<B>, Result<(), StoreError>)) {
        self.message = Some(message);
        match written {
            Ok(()) => self.renew_at = Instant::now() + self.settings.visibility / 2,
            Err(problem) => {
                warn!(message = %self.message_id, error = %problem, "could not rewrite the message into the jobs that follow; trying again at the next renewal (if this worker dies first, the reconciler re-sends them)");
                self.outdated = true;
                return;
            }
        }
        if self.outdated {
            self.outdate();
        }
    }

    /// Lets a rewrite under way land, then starts one if the jobs changed
    /// since (or it failed).
    async fn bring_up_to_date(&mut self) {
        if let Some(rewriting) = self.rewriting.take() {
            match rewriting.await {
                Ok(landed) => self.landed(landed),
                // The message reappears after its visibility timeout.
                Err(_) => return,
            }
        }
        if self.outdated {
            self.start_rewrite();
        }
    }

    /// The message, once a rewrite under way has landed; `None` if that
    /// rewrite's task failed (the message reappears after its visibility
    /// timeout).
    async fn take_message(&mut self) -> Option<Message<B>> {
        if let Some(rewriting) = self.rewriting.take() {
            self.message = rewriting.await.ok().map(|(message, _)| message);
        }
        self.message.take()
    }

    /// Sends each job as a message of its own; answers those that failed.
    async fn send_each(&self, jobs: Vec<Job>) -> Vec<(Job, StoreError)> {
        let mut failed = Vec::new();
        for job in jobs {
            if let Err(problem) = self
                .engine
                .backend()
                .enqueue(job.clone(), Duration::ZERO)
                .await
            {
                failed.push((job, problem));
            }
        }
        failed
    }

    /// Keeps the message invisible and marks the run alive. False if the
    /// message could not be renewed (it now belongs to whoever gets it next).
    async fn renew(&mut self, run_id: &str) -> bool {
        if self.outdated {
            // The rewrite renews the message as well.
            self.start_rewrite();
        } else {
            let queue = self.engine.backend().lease_queue();
            let message = self.message.as_mut().expect("no rewrite is under way");
            if let Err(problem) = queue.hide(message, self.settings.visibility).await {
                error!(run = %run_id, error = %problem, "could not renew a running job's visibility; abandoning it");
                return false;
            }
            self.renew_at = Instant::now() + self.settings.visibility / 2;
        }
        if let Err(problem) = self.engine.backend().touch(run_id).await {
            warn!(run = %run_id, error = %problem, "could not mark the run alive");
        }
        true
    }

    /// Dead-letters one job of a group; the message goes on standing for the
    /// others.
    async fn dead_letter_job(&self, job: &Job, reason: &str) {
        error!(run = %job.run_id, node = %job.node_id, reason, "moving job to the poison queue");
        match self.queue().dead_letter_job(job, reason).await {
            Ok(()) => telemetry::poisoned(),
            Err(problem) => {
                error!(error = %problem, "could not write to the poison queue; the job's message will be delivered again")
            }
        }
    }

    /// Every job has ended: delete, return or dead-letter the message.
    /// Answers whether the jobs were all handled.
    async fn settle(mut self) -> bool {
        if self.left.is_some() {
            // The message is delivered again: with the jobs it stands for.
            self.bring_up_to_date().await;
        }
        let Some(mut message) = self.take_message().await else {
            return false;
        };
        let queue = self.engine.backend().lease_queue();
        if let Some(reason) = &self.poisoned {
            dead_letter(queue, &message, reason).await;
            return false;
        }
        let Some((job, problem)) = self.left.take() else {
            if let Err(problem) = queue.delete(&message).await {
                warn!(message = %self.message_id, error = %problem, "jobs done but their message could not be deleted; a redelivery will be ignored");
            }
            return true;
        };
        let dequeue_count = message.dequeue_count();
        match Disposition::of(&problem) {
            Disposition::Redeliver => {}
            _ if dequeue_count >= self.settings.max_dequeue => {
                // Its last allowed delivery: no worker took it, so dead-letter it
                // now with the reason (naming the blueprint) rather than after one
                // more round trip with only a delivery count as the reason.
                let reason = format!(
                    "{problem} (delivered {dequeue_count} times; limit {})",
                    self.settings.max_dequeue
                );
                dead_letter(queue, &message, &reason).await
            }
            _ => {
                warn!(run = %job.run_id, blueprint = %job.blueprint_id, error = %problem, "returning the job to the queue");
                let delay = policy::return_delay(self.settings.visibility);
                if let Err(problem) = queue.hide(&mut message, delay).await {
                    warn!(error = %problem, "could not return the job to the queue; it reappears after the visibility timeout");
                }
            }
        }
        false
    }
}
