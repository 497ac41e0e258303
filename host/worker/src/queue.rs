//! What the worker needs from a deployment besides the engine's stores: a
//! queue whose messages are leased (received invisible for a while, kept
//! invisible while their jobs run, rewritten, deleted or dead-lettered) and
//! a way to find stalled runs. The Azure deployment implements both with
//! Queue Storage and the Cosmos DB status container
//! (`flowcraft_azure::worker`); the tests with a fault-injecting fake.

use std::future::Future;
use std::time::Duration;

use flowcraft_core::store::{Backend, Job, StoreError};

/// What a message stands for: one job, or a group of one run's jobs that a
/// worker took on under one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The message's job first; the rest are first attempts of its run.
    pub jobs: Vec<Job>,
    /// The id of the message the holding worker wrote the group into. A
    /// message with another id and this group is a copy (a duplicated
    /// delivery) of jobs that worker still holds.
    pub lease: Option<String>,
}

impl Group {
    /// The group of one job, without a lease.
    pub fn single(job: Job) -> Self {
        Self {
            jobs: vec![job],
            lease: None,
        }
    }
}

/// A received message.
pub trait Delivery: Send + Sync + 'static {
    /// The message's id, the same on every delivery.
    fn id(&self) -> &str;
    /// How often the message has been received, this time included.
    fn dequeue_count(&self) -> u32;
}

/// A queue of leased messages. Every operation on a received message needs
/// its current receipt, which `hide` and `rewrite` renew in `message`.
pub trait LeaseQueue: Send + Sync + 'static {
    type Message: Delivery;

    /// Receives up to `max` messages, each invisible to other receivers for
    /// `visibility`.
    fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<Self::Message>, StoreError>> + Send;

    /// The jobs `message` stands for, or why it stands for none (its text
    /// is not a job): such a message is dead-lettered with that reason.
    fn group(&self, message: &Self::Message) -> Result<Group, String>;

    /// Deletes a handled message.
    fn delete(
        &self,
        message: &Self::Message,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes `message` invisible for `duration` from now: renewing the lease
    /// while its jobs run, or returning it to the queue after a delay.
    fn hide(
        &self,
        message: &mut Self::Message,
        duration: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Rewrites `message` to stand for `group`, invisible for `visibility`.
    fn rewrite(
        &self,
        message: &mut Self::Message,
        group: &Group,
        visibility: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes `message` to the dead-letter queue with `reason` (the caller
    /// deletes it from this queue afterwards). A group loses its lease
    /// there: replayed, it is a message of its own.
    fn dead_letter(
        &self,
        message: &Self::Message,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes one job of a group to the dead-letter queue with `reason`.
    fn dead_letter_job(
        &self,
        job: &Job,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A deployment a worker runs on: the engine's stores, a leased queue
/// holding the jobs the stores' [`JobQueue`](flowcraft_core::store::JobQueue)
/// sends, and the runs that stopped making progress.
pub trait WorkerBackend: Backend {
    type Queue: LeaseQueue;

    fn lease_queue(&self) -> &Self::Queue;

    /// Runs still `running` whose status has not changed for `threshold`.
    fn stalled_runs(
        &self,
        threshold: Duration,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Resolves when work may be waiting: a message was announced as due
    /// (a deployment that announces what it sends wakes an idle worker at
    /// once), or after `poll` at the latest (messages nobody announces are
    /// found by polling). The default only waits for `poll`.
    fn wait_for_work(&self, poll: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(poll)
    }
}
