//! A fault-injecting leased queue and a backend around the in-memory stores,
//! for testing the worker's delivery policy without services. Time is
//! tokio's: the tests run with paused time, so visibility timeouts, back-off
//! and slow nodes pass in virtual time, deterministically.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use flowcraft_core::context::{ContextChange, ContextMap};
use flowcraft_core::memory::MemoryBackend;
use flowcraft_core::progress::{RunProgress, RunState};
use flowcraft_core::store::{
    Backend, ContextStore, CoordinationStore, Job, JobQueue, RunStatusRecord, StatusStore,
    StoreError, StoredContext,
};
use flowcraft_worker::{Delivery, Group, LeaseQueue, WorkerBackend};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a stored message holds: jobs, or text that is no job.
#[derive(Debug, Clone)]
pub enum Body {
    Jobs(Group),
    Garbage(String),
}

#[derive(Debug)]
struct Stored {
    id: String,
    body: Body,
    visible_at: Instant,
    dequeue_count: u32,
    receipt: u64,
}

/// A received message of the fake queue.
#[derive(Debug)]
pub struct FakeMessage {
    id: String,
    receipt: u64,
    dequeue_count: u32,
}

impl Delivery for FakeMessage {
    fn id(&self) -> &str {
        &self.id
    }

    fn dequeue_count(&self) -> u32 {
        self.dequeue_count
    }
}

/// Faults the queue injects, each every `n`-th time (0: never).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// A send is stored twice, under two message ids.
    pub duplicate_every: u32,
    /// A send fails (transiently) without storing anything.
    pub fail_send_every: u32,
    /// A delete answers success but the message stays (it reappears).
    pub lose_delete_every: u32,
    /// Sent messages become visible after this much (times 1, 2 or 3, in turn).
    pub send_delay: Duration,
    /// Sends are not announced: idle workers find them only by polling.
    pub drop_wakeups: bool,
}

/// A dead-lettered message or job.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub jobs: Vec<Job>,
    pub reason: String,
}

#[derive(Default)]
struct QueueState {
    messages: Vec<Stored>,
    next_id: u64,
    next_receipt: u64,
    faults: Faults,
    sends: u32,
    deletes: u32,
    /// Deliveries of each message, kept after it is deleted.
    deliveries: HashMap<String, u32>,
    renewals: u32,
    rewrites: u32,
    dead: Vec<DeadLetter>,
}

/// The fake leased queue.
#[derive(Default)]
pub struct FakeQueue {
    state: Mutex<QueueState>,
    changed: Notify,
    /// Announces sent messages as they become due (see `wait_for_work`).
    due: std::sync::Arc<Notify>,
}

impl FakeQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Stores a message as a client (not the worker) would, visible now;
    /// `dequeue_count` deliveries are taken as done already. Answers its id.
    pub fn inject(&self, body: Body, dequeue_count: u32) -> String {
        let mut state = self.lock();
        let id = state.store(body, Duration::ZERO);
        state.messages.last_mut().unwrap().dequeue_count = dequeue_count;
        self.changed.notify_waiters();
        id
    }

    /// Stores a group of `jobs` under a lease naming the message itself,
    /// as a worker that rewrote it and then died leaves it.
    pub fn inject_held_group(&self, jobs: Vec<Job>) -> String {
        let mut state = self.lock();
        let id = state.store(Body::Garbage(String::new()), Duration::ZERO);
        let lease = Some(id.clone());
        state.messages.last_mut().unwrap().body = Body::Jobs(Group { jobs, lease });
        self.changed.notify_waiters();
        id
    }

    /// Takes every message out of the queue, as a worker that received
    /// them and then died would hold them; answers their bodies.
    pub fn take_all(&self) -> Vec<Body> {
        let taken = std::mem::take(&mut self.lock().messages);
        taken.into_iter().map(|stored| stored.body).collect()
    }

    /// The bodies of the messages in the queue (visible or not).
    pub fn bodies(&self) -> Vec<Body> {
        self.lock()
            .messages
            .iter()
            .map(|stored| stored.body.clone())
            .collect()
    }

    /// Messages still in the queue (visible or not).
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.clone()
    }

    /// How often message `id` was received.
    pub fn deliveries(&self, id: &str) -> u32 {
        self.lock().deliveries.get(id).copied().unwrap_or(0)
    }

    pub fn renewals(&self) -> u32 {
        self.lock().renewals
    }

    pub fn rewrites(&self) -> u32 {
        self.lock().rewrites
    }

    pub fn sends(&self) -> u32 {
        self.lock().sends
    }

    /// Waits until `done` holds; it is checked after every change of the
    /// queue (a job's message is deleted, returned or dead-lettered once
    /// the job is handled).
    pub async fn until(&self, done: impl Fn() -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done() {
                return;
            }
            changed.await;
        }
    }

    fn send(&self, job: Job, delay: Duration) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.sends += 1;
        let n = state.sends;
        let faults = state.faults.clone();
        if every(faults.fail_send_every, n) {
            return Err(StoreError::new("fake queue", "send failed (injected)"));
        }
        let delay = delay + faults.send_delay * (n % 3 + 1);
        let body = Body::Jobs(Group::single(job));
        state.store(body.clone(), delay);
        if every(faults.duplicate_every, n) {
            state.store(body, delay);
        }
        drop(state);
        if !faults.drop_wakeups {
            let due = self.due.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                due.notify_one();
            });
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// The stored message `message` names, if its receipt is current.
    fn held<'a>(
        state: &'a mut QueueState,
        message: &FakeMessage,
    ) -> Result<&'a mut Stored, StoreError> {
        state
            .messages
            .iter_mut()
            .find(|m| m.id == message.id && m.receipt == message.receipt)
            .ok_or_else(|| StoreError::new("fake queue", "message gone or receipt stale"))
    }
}

impl QueueState {
    fn store(&mut self, body: Body, delay: Duration) -> String {
        self.next_id += 1;
        let id = format!("m{}", self.next_id);
        self.messages.push(Stored {
            id: id.clone(),
            body,
            visible_at: Instant::now() + delay,
            dequeue_count: 0,
            receipt: 0,
        });
        id
    }

    fn new_receipt(&mut self) -> u64 {
        self.next_receipt += 1;
        self.next_receipt
    }
}

fn every(n: u32, count: u32) -> bool {
    n > 0 && count.is_multiple_of(n)
}

impl LeaseQueue for FakeQueue {
    type Message = FakeMessage;

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<FakeMessage>, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut received = Vec::new();
        for index in 0..state.messages.len() {
            if received.len() == max as usize {
                break;
            }
            if state.messages[index].visible_at > now {
                continue;
            }
            let receipt = state.new_receipt();
            let stored = &mut state.messages[index];
            stored.visible_at = now + visibility;
            stored.dequeue_count += 1;
            stored.receipt = receipt;
            let id = stored.id.clone();
            *state.deliveries.entry(id).or_default() += 1;
            let stored = &state.messages[index];
            received.push(FakeMessage {
                id: stored.id.clone(),
                receipt,
                dequeue_count: stored.dequeue_count,
            });
        }
        drop(state);
        if !received.is_empty() {
            self.changed.notify_waiters();
        }
        Ok(received)
    }

    fn group(&self, message: &FakeMessage) -> Result<Group, String> {
        let state = self.lock();
        let stored = state.messages.iter().find(|m| m.id == message.id);
        match stored.map(|m| &m.body) {
            Some(Body::Jobs(group)) => Ok(group.clone()),
            Some(Body::Garbage(text)) => Err(format!("not a job: {text:?}")),
            None => Err("the message is gone".into()),
        }
    }

    async fn delete(&self, message: &FakeMessage) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.deletes += 1;
        let lose = every(state.faults.lose_delete_every, state.deletes);
        Self::held(&mut state, message)?;
        if !lose {
            state.messages.retain(|m| m.id != message.id);
        }
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn hide(&self, message: &mut FakeMessage, duration: Duration) -> Result<(), StoreError> {
        let mut state = self.lock();
        let receipt = state.new_receipt();
        let stored = Self::held(&mut state, message)?;
        stored.visible_at = Instant::now() + duration;
        stored.receipt = receipt;
        message.receipt = receipt;
        state.renewals += 1;
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn rewrite(
        &self,
        message: &mut FakeMessage,
        group: &Group,
        visibility: Duration,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let receipt = state.new_receipt();
        let stored = Self::held(&mut state, message)?;
        stored.body = Body::Jobs(group.clone());
        stored.visible_at = Instant::now() + visibility;
        stored.receipt = receipt;
        message.receipt = receipt;
        state.rewrites += 1;
        Ok(())
    }

    async fn dead_letter(&self, message: &FakeMessage, reason: &str) -> Result<(), StoreError> {
        let jobs = match self.group(message) {
            Ok(group) => group.jobs,
            Err(_) => Vec::new(),
        };
        self.lock().dead.push(DeadLetter {
            jobs,
            reason: reason.to_owned(),
        });
        self.changed.notify_waiters();
        Ok(())
    }

    async fn dead_letter_job(&self, job: &Job, reason: &str) -> Result<(), StoreError> {
        self.lock().dead.push(DeadLetter {
            jobs: vec![job.clone()],
            reason: reason.to_owned(),
        });
        self.changed.notify_waiters();
        Ok(())
    }
}

/// The in-memory stores with the fake queue as their job queue, a clock of
/// status changes in tokio time (for the reconciler) and an injectable
/// outage of context reads.
pub struct FakeBackend {
    pub memory: MemoryBackend,
    pub queue: FakeQueue,
    /// Context reads that fail (transiently) before they work again.
    pub failing_context_loads: AtomicU32,
    changed_at: Mutex<HashMap<String, Instant>>,
}

impl FakeBackend {
    pub fn new() -> Self {
        Self {
            memory: MemoryBackend::new().0,
            queue: FakeQueue::default(),
            failing_context_loads: AtomicU32::new(0),
            changed_at: Mutex::default(),
        }
    }

    /// The run's status, if it has one.
    pub fn state(&self, run_id: &str) -> Option<RunState> {
        self.memory
            .snapshot()
            .statuses
            .get(run_id)
            .map(|status| status.status)
    }

    fn mark_changed(&self, run_id: &str) {
        self.changed_at
            .lock()
            .unwrap()
            .insert(run_id.to_owned(), Instant::now());
    }
}

impl JobQueue for FakeBackend {
    async fn enqueue(&self, job: Job, delay: Duration) -> Result<(), StoreError> {
        self.queue.send(job, delay)
    }
}

impl ContextStore for FakeBackend {
    async fn create_context(&self, run_id: &str, initial: ContextMap) -> Result<(), StoreError> {
        self.memory.create_context(run_id, initial).await
    }

    async fn load_context(&self, run_id: &str) -> Result<Option<StoredContext>, StoreError> {
        let failing =
            self.failing_context_loads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::new("fake context store", "outage (injected)"));
        }
        self.memory.load_context(run_id).await
    }

    async fn apply_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), StoreError> {
        self.memory.apply_changes(run_id, changes).await
    }
}

impl StatusStore for FakeBackend {
    async fn write_status(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<Value>,
    ) -> Result<bool, StoreError> {
        self.mark_changed(run_id);
        self.memory.write_status(run_id, status, final_status).await
    }

    async fn read_status(&self, run_id: &str) -> Result<Option<RunStatusRecord>, StoreError> {
        self.memory.read_status(run_id).await
    }

    async fn touch(&self, run_id: &str) -> Result<(), StoreError> {
        self.mark_changed(run_id);
        self.memory.touch(run_id).await
    }

    async fn reopen_failed(&self, run_id: &str) -> Result<bool, StoreError> {
        self.memory.reopen_failed(run_id).await
    }
}

impl Backend for FakeBackend {}

impl CoordinationStore for FakeBackend {
    async fn create_progress(&self, progress: &RunProgress) -> Result<bool, StoreError> {
        self.memory.create_progress(progress).await
    }

    async fn load_progress(&self, run_id: &str) -> Result<Option<RunProgress>, StoreError> {
        self.memory.load_progress(run_id).await
    }

    async fn read_progress<T, F>(&self, run_id: &str, read: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        self.memory.read_progress(run_id, read).await
    }

    async fn update_progress<T, F>(&self, run_id: &str, change: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        self.memory.update_progress(run_id, change).await
    }
}

impl WorkerBackend for FakeBackend {
    type Queue = FakeQueue;

    fn lease_queue(&self) -> &FakeQueue {
        &self.queue
    }

    async fn wait_for_work(&self, poll: Duration) {
        let _ = tokio::time::timeout(poll, self.queue.due.notified()).await;
    }

    async fn stalled_runs(&self, threshold: Duration) -> Result<Vec<String>, StoreError> {
        let changed_at = self.changed_at.lock().unwrap().clone();
        Ok(changed_at
            .into_iter()
            .filter(|(run, at)| {
                at.elapsed() >= threshold && self.state(run) == Some(RunState::Running)
            })
            .map(|(run, _)| run)
            .collect())
    }
}

/// Counts each node's executions by run and node.
#[derive(Default)]
pub struct Effects(Mutex<HashMap<(String, String), u32>>);

impl Effects {
    pub fn record(&self, run: &str, node: &str) {
        *self
            .0
            .lock()
            .unwrap()
            .entry((run.to_owned(), node.to_owned()))
            .or_default() += 1;
    }

    pub fn count(&self, run: &str, node: &str) -> u32 {
        self.0
            .lock()
            .unwrap()
            .get(&(run.to_owned(), node.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Every (run, node) executed more than once.
    pub fn repeated(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(key, _)| key.clone())
            .collect()
    }
}
