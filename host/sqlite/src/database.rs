//! One SQLite database file in WAL mode, shared by every store.
//!
//! Writes go to one writer thread, which commits the writes of concurrent
//! callers together: it takes every request waiting when its last commit
//! ended, runs each in a savepoint of one transaction (a failed request
//! rolls back only itself) and commits once, so one fsync makes a whole
//! batch durable (group commit). A caller hears back only after that commit.
//! Reads use a small pool of reader connections on the blocking threads; in
//! WAL mode they see every committed write and never wait for the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use flowcraft_core::store::StoreError;
use flowcraft_core::telemetry;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;
use tracing::error;

use crate::schema;
use crate::{OpenError, SERVICE};

/// The most requests one transaction takes.
const MAX_BATCH: usize = 512;

/// Reader connections kept open between reads.
const IDLE_READERS: usize = 8;

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the writer does after a batch's commit: tell one caller the outcome.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One write, run inside the batch's transaction: answers whether it
/// succeeded (else its savepoint is rolled back) and how to answer its caller.
type Request = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// The database: the writer thread's queue and the reader pool.
pub(crate) struct Database {
    requests: mpsc::Sender<Request>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

impl Database {
    /// Opens (creating if needed) the database at `path`, brings its schema
    /// up to date and starts the writer thread.
    pub(crate) fn open(path: &Path) -> Result<Self, OpenError> {
        let mut writer = connect(path, OpenFlags::default())?;
        schema::migrate(&mut writer, path)?;
        let (sender, receiver) = mpsc::channel();
        thread::Builder::new()
            .name("flowcraft-sqlite-writer".into())
            .spawn(move || write_batches(writer, receiver))
            .map_err(|source| OpenError::Thread { source })?;
        Ok(Self {
            requests: sender,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
        })
    }

    /// Runs `work` in the next batch's transaction and answers its result
    /// once that transaction is committed (durable). If `work` fails, its
    /// changes are rolled back and the others of the batch stand.
    /// `operation` names it in the backend metrics.
    pub(crate) async fn write<T, E, F>(&self, operation: &'static str, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        telemetry::backend_call(SERVICE, operation, self.commit(work)).await
    }

    async fn commit<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let request: Request = Box::new(move |connection| {
            let result = work(connection);
            let succeeded = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let committed = commit.map_err(|reason| {
                    E::from(StoreError::new(
                        SERVICE,
                        format!("the write was not committed: {reason}"),
                    ))
                });
                let _ = answer.send(committed.and(result));
            });
            (succeeded, completion)
        });
        self.requests
            .send(request)
            .map_err(|_| E::from(writer_gone()))?;
        answered.await.map_err(|_| E::from(writer_gone()))?
    }

    /// Runs `work` on a reader connection (on a blocking thread);
    /// `operation` names it in the backend metrics.
    pub(crate) async fn read<T, F>(&self, operation: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        telemetry::backend_call(SERVICE, operation, self.read_on_reader(work)).await
    }

    async fn read_on_reader<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let idle = readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            let connection = match idle {
                Some(connection) => connection,
                None => connect(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(|error| StoreError::new(SERVICE, error.to_string()))?,
            };
            let result = work(&connection);
            let mut idle = readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if idle.len() < IDLE_READERS {
                idle.push(connection);
            }
            result
        })
        .await
        .map_err(|error| StoreError::new(SERVICE, format!("a read did not finish: {error}")))?
    }
}

fn writer_gone() -> StoreError {
    StoreError::new(
        SERVICE,
        "the database writer stopped (an earlier error is in the log)",
    )
}

/// A connection with the settings every connection needs: WAL, fsync at
/// every commit, a busy timeout for other processes' locks.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, OpenError> {
    let open = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(open)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
    }
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(open)?;
    Ok(connection)
}

/// The writer thread: commits batches until every sender is gone.
fn write_batches(mut connection: Connection, requests: mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        commit_batch(&mut connection, batch);
    }
}

/// Runs `batch` in one transaction and answers every request after the
/// commit. Requests not reached when the transaction itself fails are
/// dropped, which their callers hear as the writer's failure.
fn commit_batch(connection: &mut Connection, batch: Vec<Request>) {
    let mut completions = Vec::with_capacity(batch.len());
    let outcome = (|| -> rusqlite::Result<()> {
        let mut transaction =
            connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for request in batch {
            let savepoint = transaction.savepoint()?;
            let (succeeded, completion) = request(&savepoint);
            completions.push(completion);
            if succeeded {
                savepoint.commit()?;
            }
        }
        transaction.commit()
    })();
    let outcome = outcome.map_err(|error| {
        error!(error = %error, "sqlite: a batch of writes failed to commit");
        error.to_string()
    });
    for completion in completions {
        completion(outcome.clone());
    }
}
