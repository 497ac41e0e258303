//! Wake-ups over Redis pub/sub: an idle worker learns of a message the moment
//! it is sent instead of at its next poll, and `flowcraft-host wait` learns
//! of a run's end the moment it is published.
//!
//! Every message this host sends is announced on the queue's channel,
//! `flowcraft:wake:<queue>`, with the Unix time in milliseconds at which it
//! becomes visible (a delayed retry or a `sleep` timer is announced with its
//! due time, and the listening worker sets a timer for it). Every status but
//! `running` that this host writes (a run ended, or awaits) is announced on
//! `flowcraft:status:<run id>`.
//!
//! Announcements are hints. Publishing never holds up a send (a task of its
//! own publishes them; [`Wakeups::flush`] waits for it, for a process about
//! to exit); a lost or late wake-up costs latency, never a job: workers keep
//! polling the queue for messages nobody announces (runs started by
//! TypeScript clients, redeliveries), and `wait` reads the status document
//! on every announcement and at least once a second. A listener whose
//! connection breaks connects again after a second; until then its worker
//! polls.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::{Notify, OnceCell, mpsc, oneshot};
use tracing::{debug, warn};

/// How long a broken subscription waits before it connects again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The longest a connection or a `PUBLISH` may take: Redis out of reach
/// delays no announcement past this, and `wait` falls back to polling.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The announcements of one queue (see the module docs).
pub struct Wakeups {
    client: Client,
    /// `flowcraft:wake:<queue>`.
    channel: String,
    announcer: mpsc::UnboundedSender<Announcement>,
    /// The worker's subscription, made by its first wait.
    listener: OnceCell<Arc<Notify>>,
}

enum Announcement {
    /// A message becomes visible at this Unix time (ms).
    Message(u64),
    /// Run `0` has a new status (`1`).
    Status(String, &'static str),
    /// Answer once everything announced before is published.
    Flush(oneshot::Sender<()>),
}

/// The channel announcing the status changes of `run_id`.
pub fn status_channel(run_id: &str) -> String {
    format!("flowcraft:status:{run_id}")
}

impl Wakeups {
    /// Wake-ups for `queue` through the Redis server of `client`; call
    /// inside a tokio runtime (the publishing task starts here).
    pub fn new(client: Client, queue: &str) -> Self {
        let (announcer, announcements) = mpsc::unbounded_channel();
        let channel = format!("flowcraft:wake:{queue}");
        tokio::spawn(publish(client.clone(), channel.clone(), announcements));
        Self {
            client,
            channel,
            announcer,
            listener: OnceCell::new(),
        }
    }

    /// Announces a message sent now, visible after `delay`.
    pub fn message_sent(&self, delay: Duration) {
        let due = unix_millis(SystemTime::now() + delay);
        let _ = self.announcer.send(Announcement::Message(due));
    }

    /// Announces that `run_id` now has status `state`.
    pub fn status_written(&self, run_id: &str, state: &'static str) {
        let _ = self
            .announcer
            .send(Announcement::Status(run_id.to_owned(), state));
    }

    /// Waits until everything announced so far is published (or failed to
    /// be): for a process that exits after sending.
    pub async fn flush(&self) {
        let (done, published) = oneshot::channel();
        if self.announcer.send(Announcement::Flush(done)).is_ok() {
            let _ = published.await;
        }
    }

    /// Resolves when an announced message is due, or after `poll`.
    pub async fn wait(&self, poll: Duration) {
        let due = self
            .listener
            .get_or_init(|| async { listen(self.client.clone(), self.channel.clone()) })
            .await;
        let _ = tokio::time::timeout(poll, due.notified()).await;
    }

    /// A subscription to `run_id`'s status announcements: resolves on each
    /// one. `None` if Redis cannot be subscribed to (then poll).
    pub async fn status_changes(&self, run_id: &str) -> Option<StatusChanges> {
        let subscribe = async {
            let mut subscription = self.client.get_async_pubsub().await.ok()?;
            subscription.subscribe(status_channel(run_id)).await.ok()?;
            Some(subscription)
        };
        let subscription = tokio::time::timeout(REDIS_TIMEOUT, subscribe)
            .await
            .ok()??;
        Some(StatusChanges {
            stream: subscription.into_on_message(),
        })
    }
}

/// The announcements of one run's status changes.
pub struct StatusChanges {
    stream: redis::aio::PubSubStream,
}

impl StatusChanges {
    /// Resolves on the next announcement; never, once the subscription broke.
    pub async fn next(&mut self) {
        if self.stream.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Starts the subscription task of a worker; answers what it notifies.
fn listen(client: Client, channel: String) -> Arc<Notify> {
    let due = Arc::new(Notify::new());
    let notify = due.clone();
    tokio::spawn(async move {
        loop {
            if let Err(error) = subscribe(&client, &channel, &notify).await {
                debug!(error = %error, "wake-up subscription broke; polling until it is back");
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    });
    due
}

/// Follows `channel`, notifying `due` when an announced message is due.
async fn subscribe(client: &Client, channel: &str, due: &Arc<Notify>) -> redis::RedisResult<()> {
    let connect = async {
        let mut subscription = client.get_async_pubsub().await?;
        subscription.subscribe(channel).await?;
        redis::RedisResult::Ok(subscription)
    };
    let timed_out = || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let subscription = tokio::time::timeout(REDIS_TIMEOUT, connect)
        .await
        .map_err(|_| timed_out())??;
    let mut messages = subscription.into_on_message();
    while let Some(message) = messages.next().await {
        let Ok(at) = message.get_payload::<u64>() else {
            continue;
        };
        let wait = Duration::from_millis(at.saturating_sub(unix_millis(SystemTime::now())));
        if wait.is_zero() {
            due.notify_one();
        } else {
            let due = due.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                due.notify_one();
            });
        }
    }
    Ok(())
}

/// The publishing task: publishes announcements in the order they come,
/// several messages due now as one. After a failure the rest of the batch is
/// dropped (announcements are hints), so that an outage costs one attempt
/// per batch, not one per announcement.
async fn publish(
    client: Client,
    channel: String,
    mut announcements: mpsc::UnboundedReceiver<Announcement>,
) {
    // Connected ahead of the first announcement, which then costs one round
    // trip (a client command announces once, right before it exits).
    let mut connection = connect(&client).await.ok();
    while let Some(first) = announcements.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = announcements.try_recv() {
            batch.push(next);
        }
        let now = unix_millis(SystemTime::now());
        let mut announced_now = false;
        let mut failed = false;
        for announcement in batch {
            let (to, payload) = match announcement {
                Announcement::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
                _ if failed => continue,
                Announcement::Message(at) if at <= now && announced_now => continue,
                Announcement::Message(at) => {
                    announced_now |= at <= now;
                    (channel.clone(), at.to_string())
                }
                Announcement::Status(run_id, state) => (status_channel(&run_id), state.to_owned()),
            };
            if let Err(error) = send(&client, &mut connection, &to, &payload).await {
                warn!(channel = %to, error = %error, "could not publish a wake-up; listeners find the work by polling");
                connection = None;
                failed = true;
            }
        }
    }
}

/// One `PUBLISH`, connecting first if needed.
async fn send(
    client: &Client,
    connection: &mut Option<MultiplexedConnection>,
    channel: &str,
    payload: &str,
) -> redis::RedisResult<()> {
    if connection.is_none() {
        *connection = Some(connect(client).await?);
    }
    let Some(connection) = connection.as_mut() else {
        return Ok(());
    };
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async::<i64>(connection)
        .await
        .map(|_| ())
}

/// A publishing connection that gives up after [`REDIS_TIMEOUT`].
async fn connect(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
