//! The embedded mode: every store in process memory, an in-process job queue
//! with durable-timer semantics (a delayed job is a tokio timer, not a busy
//! wait), and a driver that runs a workflow to its end with bounded
//! concurrency. The whole state of a run can be saved and loaded
//! ([`MemorySnapshot`]), which is how `flowcraft-host run --state` pauses and
//! `resume` continues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::error;

use crate::context::{ContextChange, ContextMap, ContextValue};
use crate::engine::{Engine, EngineError, RunReport, time_until};
use crate::progress::{AwaitReason, RunProgress, RunState};
use crate::runner::NodeRunner;
use crate::store::{
    Backend, ContextStore, CoordinationStore, Job, JobQueue, JobSignal, RunStatusRecord,
    StatusStore, StoreError, StoredContext,
};

/// Everything the embedded stores hold, serializable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemorySnapshot {
    pub contexts: HashMap<String, Arc<ContextMap>>,
    pub progress: HashMap<String, RunProgress>,
    pub statuses: HashMap<String, RunStatusRecord>,
    /// Each context's JSON size ([`context_size`]), kept up to date by
    /// writes so that checking the item limit does not walk the context;
    /// measured once when missing (after loading a saved state).
    #[serde(skip)]
    pub context_sizes: HashMap<String, usize>,
}

/// All four stores in memory, plus the queue.
pub struct MemoryBackend {
    state: Mutex<MemorySnapshot>,
    sender: mpsc::UnboundedSender<Job>,
    timers: Arc<AtomicUsize>,
    /// Largest document (JSON bytes) a write may leave; see
    /// [`MemoryBackend::with_item_limit`].
    item_limit: Option<usize>,
}

/// The receiving end of the in-process queue.
pub struct JobReceiver {
    receiver: mpsc::UnboundedReceiver<Job>,
}

impl MemoryBackend {
    /// An empty backend and its queue's receiver.
    pub fn new() -> (Self, JobReceiver) {
        Self::from_snapshot(MemorySnapshot::default())
    }

    /// A backend holding `snapshot`. Sleeping nodes get their timers back
    /// (firing at once if their wake-up time has passed); call this inside a
    /// tokio runtime.
    pub fn from_snapshot(snapshot: MemorySnapshot) -> (Self, JobReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let backend = Self {
            state: Mutex::new(snapshot),
            sender,
            timers: Arc::new(AtomicUsize::new(0)),
            item_limit: Some(crate::limits::MAX_CONTEXT_BYTES),
        };
        backend.rearm_timers();
        (backend, JobReceiver { receiver })
    }

    /// Refuses (permanently, as Cosmos DB does with HTTP 413 past its 2 MB
    /// item limit) a write that would leave a run's context, or its status
    /// with the final status, larger than `bytes` of JSON. By default
    /// [`MAX_CONTEXT_BYTES`](crate::limits::MAX_CONTEXT_BYTES), Cosmos DB's limit.
    pub fn with_item_limit(mut self, bytes: usize) -> Self {
        self.item_limit = Some(bytes);
        self
    }

    /// A permanent refusal if `document` is larger than the item limit.
    fn check_size(&self, what: &str, document: &impl Serialize) -> Result<(), StoreError> {
        let Some(limit) = self.item_limit else {
            return Ok(());
        };
        let size = serde_json::to_vec(document).map_or(0, |json| json.len());
        if size <= limit {
            return Ok(());
        }
        Err(StoreError::refused(
            "memory store",
            format!(
                "the {what} would be {size} bytes, more than the limit of {limit} bytes; keep large data outside the run context"
            ),
        ))
    }

    /// A copy of everything stored.
    pub fn snapshot(&self) -> MemorySnapshot {
        self.lock().clone()
    }

    /// Delayed jobs not yet delivered.
    pub fn pending_timers(&self) -> usize {
        self.timers.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemorySnapshot> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn rearm_timers(&self) {
        let sleeping: Vec<(Job, Duration)> = {
            let state = self.lock();
            state
                .progress
                .values()
                .flat_map(|progress| {
                    progress
                        .awaiting
                        .iter()
                        .filter_map(|(node, reason)| match reason {
                            AwaitReason::Timer { wake_up_at } => {
                                let job = Job::signalled(
                                    &progress.run_id,
                                    &progress.blueprint_id,
                                    node,
                                    JobSignal::Wake,
                                );
                                Some((job, time_until(wake_up_at)))
                            }
                            _ => None,
                        })
                })
                .collect()
        };
        for (job, delay) in sleeping {
            self.send(job, delay);
        }
    }

    fn send(&self, job: Job, delay: Duration) {
        if delay.is_zero() {
            let _ = self.sender.send(job);
            return;
        }
        let sender = self.sender.clone();
        let timers = self.timers.clone();
        timers.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = sender.send(job);
            timers.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

impl JobReceiver {
    /// The next queued job, if one is ready (for drivers that step by hand).
    pub fn try_recv(&mut self) -> Result<Job, mpsc::error::TryRecvError> {
        self.receiver.try_recv()
    }

    /// The next job, waiting for one (a delayed job arrives when its timer fires).
    pub async fn recv(&mut self) -> Option<Job> {
        self.receiver.recv().await
    }
}

fn now_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl JobQueue for MemoryBackend {
    async fn enqueue(&self, job: Job, delay: Duration) -> Result<(), StoreError> {
        self.send(job, delay);
        Ok(())
    }
}

impl ContextStore for MemoryBackend {
    async fn create_context(&self, run_id: &str, initial: ContextMap) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.contexts.contains_key(run_id) {
            return Err(StoreError::new(
                "memory context",
                format!("context of run '{run_id}' exists"),
            ));
        }
        self.check_size(&format!("context of run '{run_id}'"), &initial)?;
        state.contexts.insert(run_id.to_owned(), Arc::new(initial));
        Ok(())
    }

    async fn load_context(&self, run_id: &str) -> Result<Option<StoredContext>, StoreError> {
        Ok(self
            .lock()
            .contexts
            .get(run_id)
            .map(|values| StoredContext {
                values: values.clone(),
            }))
    }

    async fn apply_changes(
        &self,
        run_id: &str,
        changes: &[ContextChange],
    ) -> Result<(), StoreError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(limit) = self.item_limit {
            let current = state.contexts.get(run_id).map(Arc::as_ref);
            let before = *state
                .context_sizes
                .entry(run_id.to_owned())
                .or_insert_with(|| context_size(current));
            let size = size_after(before, current, changes);
            if size > limit {
                return Err(StoreError::refused(
                    "memory store",
                    format!(
                        "the context of run '{run_id}' would be {size} bytes, more than the limit of {limit} bytes; keep large data outside the run context"
                    ),
                ));
            }
            state.context_sizes.insert(run_id.to_owned(), size);
        }
        // Copy-on-write: copies only while a job still holds an older snapshot.
        let context = Arc::make_mut(state.contexts.entry(run_id.to_owned()).or_default());
        for change in changes {
            change.apply_to(context);
        }
        Ok(())
    }
}

/// The bytes one entry adds to a context's JSON: `"key":value,`, give or
/// take escapes in the key; counted from the value's text.
fn entry_size(key: &str, value: &ContextValue) -> usize {
    key.len() + value.json().len() + 4
}

/// The JSON size of `context` (none: empty), without serializing it.
fn context_size(context: Option<&ContextMap>) -> usize {
    2 + context.map_or(0, |context| {
        context
            .iter()
            .map(|(key, value)| entry_size(key, value))
            .sum()
    })
}

/// The size of `context`, `before` bytes now, once `changes` are applied.
fn size_after(before: usize, context: Option<&ContextMap>, changes: &[ContextChange]) -> usize {
    let mut touched: HashMap<&str, Option<&ContextValue>> = HashMap::new();
    for change in changes {
        let value = match change {
            ContextChange::Set { value, .. } => Some(value),
            ContextChange::Delete { .. } => None,
        };
        touched.insert(change.key(), value);
    }
    let mut size = before;
    for (key, value) in touched {
        if let Some(old) = context.and_then(|context| context.get(key)) {
            size -= entry_size(key, old);
        }
        if let Some(new) = value {
            size += entry_size(key, new);
        }
    }
    size
}

impl StatusStore for MemoryBackend {
    async fn write_status(
        &self,
        run_id: &str,
        status: RunState,
        final_status: Option<Value>,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if state
            .statuses
            .get(run_id)
            .is_some_and(|existing| existing.status.is_terminal())
        {
            return Ok(false);
        }
        let record = RunStatusRecord {
            status,
            last_updated: now_seconds(),
            final_status,
        };
        self.check_size(&format!("status of run '{run_id}'"), &record)?;
        state.statuses.insert(run_id.to_owned(), record);
        Ok(true)
    }

    async fn read_status(&self, run_id: &str) -> Result<Option<RunStatusRecord>, StoreError> {
        Ok(self.lock().statuses.get(run_id).cloned())
    }

    async fn touch(&self, run_id: &str) -> Result<(), StoreError> {
        if let Some(status) = self.lock().statuses.get_mut(run_id) {
            status.last_updated = now_seconds();
        }
        Ok(())
    }

    async fn reopen_failed(&self, run_id: &str) -> Result<bool, StoreError> {
        let mut state = self.lock();
        match state.statuses.get_mut(run_id) {
            Some(status) if status.status == RunState::Failed => {
                *status = RunStatusRecord {
                    status: RunState::Running,
                    last_updated: now_seconds(),
                    final_status: None,
                };
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl Backend for MemoryBackend {}

impl CoordinationStore for MemoryBackend {
    async fn create_progress(&self, progress: &RunProgress) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if state.progress.contains_key(&progress.run_id) {
            return Ok(false);
        }
        state
            .progress
            .insert(progress.run_id.clone(), progress.clone());
        Ok(true)
    }

    async fn load_progress(&self, run_id: &str) -> Result<Option<RunProgress>, StoreError> {
        Ok(self.lock().progress.get(run_id).cloned())
    }

    async fn read_progress<T, F>(&self, run_id: &str, read: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RunProgress) -> T + Send,
    {
        Ok(self.lock().progress.get(run_id).map(read))
    }

    async fn update_progress<T, F>(&self, run_id: &str, change: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut RunProgress) -> T + Send,
    {
        Ok(self.lock().progress.get_mut(run_id).map(change))
    }
}

/// When [`drive`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerPolicy {
    /// Wait for sleeping nodes to wake up (the run continues by itself).
    Wait,
    /// Stop as soon as the run is awaiting, timers or not.
    Stop,
}

/// Runs jobs from `receiver` with up to `concurrency` in flight until the run
/// `run_id` is over, or awaiting (and, with [`TimerPolicy::Wait`], no timer
/// is pending), then reports it.
pub async fn drive<R: NodeRunner>(
    engine: &Engine<MemoryBackend, R>,
    receiver: &mut JobReceiver,
    run_id: &str,
    concurrency: usize,
    timers: TimerPolicy,
) -> Result<RunReport, EngineError> {
    let concurrency = concurrency.max(1);
    let mut tasks: JoinSet<Result<(), EngineError>> = JoinSet::new();
    // The last job error: nothing delivers an embedded job again, so a run
    // left running when the jobs run out is failed with it.
    let mut last_error = None;
    loop {
        if tasks.is_empty() {
            let state = engine
                .backend()
                .read_progress(run_id, |p| p.state)
                .await?
                .unwrap_or(RunState::Failed);
            let queue_idle = receiver.receiver.is_empty();
            let timers_pending = engine.backend().pending_timers() > 0;
            let finished = state.is_terminal()
                || (queue_idle
                    && (!timers_pending
                        || (state == RunState::Awaiting && timers == TimerPolicy::Stop)));
            if finished {
                break;
            }
        }
        tokio::select! {
            Some(job) = receiver.receiver.recv(), if tasks.len() < concurrency => {
                let engine = engine.clone();
                tasks.spawn(async move { engine.handle_and_send(&job).await });
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let problem = match joined {
                    Ok(Ok(())) => continue,
                    Ok(Err(problem)) => problem.to_string(),
                    Err(task) => task.to_string(),
                };
                error!(error = %problem, "job failed");
                last_error = Some(problem);
            }
        }
    }
    let report = engine.report(run_id).await?;
    match last_error {
        Some(problem) if report.state == RunState::Running => {
            engine.abandon(run_id, &problem).await?;
            engine.report(run_id).await
        }
        _ => Ok(report),
    }
}
