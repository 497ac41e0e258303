//! `SqliteBackend` on a real database file in a temporary directory: the
//! store contracts, the lease rules of the queue, and what survives closing
//! and opening the database again.

use std::sync::Arc;
use std::time::Duration;

use flowcraft_core::context::{ContextChange, ContextValue, context_from_value};
use flowcraft_core::progress::{DEFAULT_STEP_LIMIT, RunProgress, RunState};
use flowcraft_core::runner::Pins;
use flowcraft_core::store::{
    Backend, ContextStore, CoordinationStore, Job, JobQueue, SettleError, StatusStore, StoreError,
};
use flowcraft_sqlite::{OpenError, SqliteBackend};
use flowcraft_worker::{Delivery, LeaseQueue, WorkerBackend};
use serde_json::json;

fn open(dir: &tempfile::TempDir) -> SqliteBackend {
    SqliteBackend::open(dir.path()).expect("database opens")
}

fn set(key: &str, value: serde_json::Value) -> ContextChange {
    ContextChange::Set {
        key: key.to_owned(),
        value: ContextValue::from_value(&value),
    }
}

fn keys_and_values(
    backend_context: &flowcraft_core::store::StoredContext,
) -> Vec<(String, String)> {
    backend_context
        .values
        .iter()
        .map(|(key, value)| (key.clone(), value.json().to_owned()))
        .collect()
}

#[tokio::test]
async fn contexts_keep_key_order_and_apply_changes_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir);
    let initial = context_from_value(json!({"b": 1, "a": {"x": [1, 2]}})).unwrap();
    backend.create_context("r1", initial.clone()).await.unwrap();
    let again = backend.create_context("r1", initial).await.unwrap_err();
    assert!(again.message.contains("exists"), "{again}");
    assert!(!again.is_permanent());

    backend
        .apply_changes(
            "r1",
            &[
                set("c", json!("three")),
                set("b", json!(2)),
                ContextChange::Delete { key: "a".into() },
                set("a", json!(null)),
            ],
        )
        .await
        .unwrap();
    let context = backend.load_context("r1").await.unwrap().unwrap();
    assert_eq!(
        keys_and_values(&context),
        vec![
            ("b".to_owned(), "2".to_owned()),
            ("c".to_owned(), "\"three\"".to_owned()),
            ("a".to_owned(), "null".to_owned()),
        ]
    );
    assert!(backend.load_context("nobody").await.unwrap().is_none());
    backend
        .create_context("empty", Default::default())
        .await
        .unwrap();
    let empty = backend.load_context("empty").await.unwrap().unwrap();
    assert!(empty.values.is_empty());
}

#[tokio::test]
async fn a_context_write_past_the_item_limit_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir).with_item_limit(200);
    backend
        .create_context("r1", context_from_value(json!({"small": 1})).unwrap())
        .await
        .unwrap();
    let big = "x".repeat(300);
    let err = backend
        .apply_changes("r1", &[set("other", json!(2)), set("big", json!(big))])
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(
        err.message.contains("more than the limit of 200 bytes"),
        "{err}"
    );
    let context = backend.load_context("r1").await.unwrap().unwrap();
    assert_eq!(
        keys_and_values(&context),
        vec![("small".to_owned(), "1".to_owned())]
    );
    // Replacing a value counts the old one out.
    let medium = "y".repeat(120);
    for _ in 0..3 {
        backend
            .apply_changes("r1", &[set("medium", json!(medium))])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_terminal_status_is_never_overwritten_and_only_failed_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir);
    assert!(
        backend
            .write_status("r1", RunState::Running, None)
            .await
            .unwrap()
    );
    assert!(
        backend
            .write_status("r1", RunState::Failed, Some(json!({"reason": "boom"})))
            .await
            .unwrap()
    );
    assert!(
        !backend
            .write_status("r1", RunState::Running, None)
            .await
            .unwrap()
    );
    let failed = backend.read_status("r1").await.unwrap().unwrap();
    assert_eq!(failed.status, RunState::Failed);
    assert_eq!(failed.final_status, Some(json!({"reason": "boom"})));

    assert!(backend.reopen_failed("r1").await.unwrap());
    assert!(!backend.reopen_failed("r1").await.unwrap());
    let reopened = backend.read_status("r1").await.unwrap().unwrap();
    assert_eq!(reopened.status, RunState::Running);
    assert_eq!(reopened.final_status, None);
    assert!(
        backend
            .write_status("r1", RunState::Completed, None)
            .await
            .unwrap()
    );
    assert!(!backend.reopen_failed("r1").await.unwrap());
    assert!(backend.read_status("nobody").await.unwrap().is_none());
}

#[tokio::test]
async fn running_and_awaiting_runs_without_a_status_change_for_the_threshold_are_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir);
    backend
        .write_status("old", RunState::Running, None)
        .await
        .unwrap();
    backend
        .write_status("waiting", RunState::Awaiting, None)
        .await
        .unwrap();
    backend
        .write_status("done", RunState::Running, None)
        .await
        .unwrap();
    backend
        .write_status("done", RunState::Completed, None)
        .await
        .unwrap();
    assert!(
        backend
            .stalled_runs(Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    // Statuses are kept in whole seconds: a threshold of zero seconds finds
    // runs written before this second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        backend.stalled_runs(Duration::ZERO).await.unwrap(),
        vec!["old".to_owned(), "waiting".to_owned()]
    );
}

fn record(run_id: &str) -> RunProgress {
    RunProgress::new(run_id, "bp", Pins::default(), DEFAULT_STEP_LIMIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_progress_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(open(&dir));
    assert!(backend.create_progress(&record("r1")).await.unwrap());
    assert!(!backend.create_progress(&record("r1")).await.unwrap());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                backend
                    .update_progress("r1", |p| p.steps += 1)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        backend.read_progress("r1", |p| p.steps).await.unwrap(),
        Some(160)
    );
    assert_eq!(
        backend
            .update_progress("nobody", |p| p.steps += 1)
            .await
            .unwrap(),
        None
    );
}

/// A settlement's context write and record change are one transaction:
/// both land, or (the write refused) neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_writes_the_context_and_the_record_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(open(&dir).with_item_limit(2_000));
    backend
        .create_context("r1", context_from_value(json!({"small": 1})).unwrap())
        .await
        .unwrap();
    assert!(backend.create_progress(&record("r1")).await.unwrap());

    let settled = backend
        .settle("r1", &[set("_outputs.A", json!("a"))], |p| {
            p.steps += 1;
            p.steps
        })
        .await
        .unwrap();
    assert_eq!(settled, Some(1));
    let context = backend.load_context("r1").await.unwrap().unwrap();
    assert_eq!(context.values["_outputs.A"].json(), "\"a\"");

    let big = "x".repeat(3_000);
    let refused = backend
        .settle("r1", &[set("big", json!(big))], |p| p.steps += 1)
        .await
        .unwrap_err();
    let SettleError::Context(error) = refused else {
        panic!("not a context refusal: {refused:?}");
    };
    assert!(error.is_permanent(), "{error}");
    assert_eq!(
        backend.read_progress("r1", |p| p.steps).await.unwrap(),
        Some(1),
        "the record is unchanged"
    );

    // Concurrent settlements of one run lose neither writes nor counts.
    let mut tasks = Vec::new();
    for task in 0..8 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let key = format!("k{task}-{i}");
                backend
                    .settle("r1", &[set(&key, json!(i))], |p| p.steps += 1)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        backend.read_progress("r1", |p| p.steps).await.unwrap(),
        Some(41)
    );
    let context = backend.load_context("r1").await.unwrap().unwrap();
    assert_eq!(context.values.len(), 2 + 40);
    let none = backend
        .settle("nobody", &[set("k", json!(1))], |p| p.steps += 1)
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(backend.load_context("nobody").await.unwrap().is_none());
}

fn job(node: &str) -> Job {
    Job::new("r1", "bp", node)
}

/// Waits for work as an idle worker does (with a minute's poll) and
/// receives, until a message comes. A wait may end early (a job sent while
/// nobody waited leaves a wake-up behind), but never later than the next
/// message's due time: 20 s is far below the poll.
async fn receive_when_due(backend: &SqliteBackend) -> Vec<flowcraft_sqlite::SqliteMessage> {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            backend.wait_for_work(Duration::from_secs(60)).await;
            let messages = backend.receive(32, Duration::from_secs(30)).await.unwrap();
            if !messages.is_empty() {
                return messages;
            }
        }
    });
    waited
        .await
        .expect("a message came by its due time, not by the poll")
}

#[tokio::test]
async fn a_received_message_is_invisible_until_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir);
    backend.enqueue(job("a"), Duration::ZERO).await.unwrap();
    let first = backend
        .receive(32, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].dequeue_count(), 1);
    assert_eq!(backend.group(&first[0]).unwrap().jobs, vec![job("a")]);
    assert!(
        backend
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let second = receive_when_due(&backend).await;
    assert_eq!(second.len(), 1, "the message reappears after its lease");
    assert_eq!(second[0].dequeue_count(), 2);
    assert_eq!(second[0].id(), first[0].id());

    // The first holder's receipt is no longer current.
    let err = backend.delete(&first[0]).await.unwrap_err();
    assert!(err.message.contains("received again"), "{err}");
    backend.delete(&second[0]).await.unwrap();
    assert!(
        backend
            .receive(32, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn renewing_and_rewriting_change_the_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir);
    backend.enqueue(job("a"), Duration::ZERO).await.unwrap();
    let mut message = backend
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    let stale = message.clone();
    backend
        .hide(&mut message, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        backend
            .hide(&mut stale.clone(), Duration::ZERO)
            .await
            .is_err()
    );

    let group = flowcraft_worker::Group {
        jobs: vec![job("a"), job("b")],
        lease: Some(message.id().to_owned()),
    };
    backend
        .rewrite(&mut message, &group, Duration::ZERO)
        .await
        .unwrap();
    let again = backend
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(backend.group(&again).unwrap(), group);
    assert!(backend.delete(&message).await.is_err());
    backend.delete(&again).await.unwrap();
}

#[tokio::test]
async fn delayed_jobs_wait_and_wake_the_waiting_worker_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(open(&dir));
    backend
        .enqueue(job("later"), Duration::from_millis(400))
        .await
        .unwrap();
    assert!(
        backend
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let due = receive_when_due(&backend).await;
    assert_eq!(backend.group(&due[0]).unwrap().jobs, vec![job("later")]);

    // A job sent while a worker waits wakes it. (The wait of 1 ms takes the
    // wake-up the first job left behind, if any.)
    backend.wait_for_work(Duration::from_millis(1)).await;
    backend.delete(&due[0]).await.unwrap();
    let waiter = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.wait_for_work(Duration::from_secs(60)).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished(), "nothing to do: the worker waits");
    backend.enqueue(job("now"), Duration::ZERO).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the sent job woke the waiting worker")
        .unwrap();
}

#[tokio::test]
async fn dead_letters_keep_their_reason_and_replay_to_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir);
    backend.enqueue(job("a"), Duration::ZERO).await.unwrap();
    let message = backend
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    backend
        .dead_letter(&message, "node failed 5 times")
        .await
        .unwrap();
    backend.delete(&message).await.unwrap();
    backend
        .dead_letter_job(&job("b"), "unknown blueprint")
        .await
        .unwrap();
    let letters = backend.dead_letters().await.unwrap();
    assert_eq!(
        letters
            .iter()
            .map(|l| l.reason.as_str())
            .collect::<Vec<_>>(),
        vec!["node failed 5 times", "unknown blueprint"]
    );
    let moved = backend
        .replay_dead_letters(Some(vec![letters[1].id, 999]))
        .await
        .unwrap();
    assert_eq!(moved, vec![letters[1].id]);
    let replayed = backend.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(backend.group(&replayed[0]).unwrap().jobs, vec![job("b")]);
    assert_eq!(backend.dead_letters().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_malformed_message_is_named_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir);
    let raw = rusqlite::Connection::open(backend.path()).unwrap();
    raw.execute(
        "INSERT INTO jobs (body, visible_at) VALUES ('not json', 0), ('{\"jobs\":[]}', 0)",
        [],
    )
    .unwrap();
    let messages = backend.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(messages.len(), 2);
    assert!(
        backend
            .group(&messages[0])
            .unwrap_err()
            .contains("not a job group")
    );
    assert!(backend.group(&messages[1]).unwrap_err().contains("no job"));
}

#[tokio::test]
async fn everything_written_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let backend = open(&dir);
        backend
            .create_context("r1", context_from_value(json!({"k": "v"})).unwrap())
            .await
            .unwrap();
        backend
            .write_status("r1", RunState::Awaiting, None)
            .await
            .unwrap();
        backend.create_progress(&record("r1")).await.unwrap();
        backend
            .enqueue(job("timer"), Duration::from_secs(3600))
            .await
            .unwrap();
    }
    let backend = open(&dir);
    let context = backend.load_context("r1").await.unwrap().unwrap();
    assert_eq!(
        keys_and_values(&context),
        vec![("k".to_owned(), "\"v\"".to_owned())]
    );
    assert_eq!(
        backend.read_status("r1").await.unwrap().unwrap().status,
        RunState::Awaiting
    );
    assert!(backend.load_progress("r1").await.unwrap().is_some());
    let raw = rusqlite::Connection::open(backend.path()).unwrap();
    let waiting: i64 = raw
        .query_row(
            "SELECT count(*) FROM jobs WHERE visible_at > 0",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(waiting, 1, "the delayed job is still queued");
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let raw = rusqlite::Connection::open(dir.path().join(flowcraft_sqlite::DATABASE_FILE)).unwrap();
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);
    let Err(err) = SqliteBackend::open(dir.path()) else {
        panic!("a newer schema opened");
    };
    assert!(
        matches!(err, OpenError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer flowcraft-host"), "{err}");
}

#[tokio::test]
async fn a_failed_write_in_a_batch_leaves_the_others_committed() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(open(&dir).with_item_limit(100));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            let size = if i % 4 == 0 { 500 } else { 10 };
            let initial = context_from_value(json!({"v": "z".repeat(size)})).unwrap();
            backend.create_context(&format!("r{i}"), initial).await
        }));
    }
    let mut refused = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(()) => assert!(
                backend
                    .load_context(&format!("r{i}"))
                    .await
                    .unwrap()
                    .is_some()
            ),
            Err(StoreError {
                permanent: true, ..
            }) => {
                refused += 1;
                assert!(
                    backend
                        .load_context(&format!("r{i}"))
                        .await
                        .unwrap()
                        .is_none()
                );
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(refused, 10);
}

async fn started_run(backend: &SqliteBackend, run_id: &str, blueprint: &str, state: RunState) {
    let progress = RunProgress::new(run_id, blueprint, Pins::default(), DEFAULT_STEP_LIMIT);
    assert!(backend.create_progress(&progress).await.unwrap());
    backend
        .write_status(run_id, RunState::Running, None)
        .await
        .unwrap();
    if state != RunState::Running {
        backend.write_status(run_id, state, None).await.unwrap();
    }
}

#[tokio::test]
async fn runs_are_listed_newest_first_a_page_at_a_time_with_filters() {
    use flowcraft_core::directory::{ListError, RunDirectory, RunQuery};
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir);
    for i in 0..5 {
        let state = if i % 2 == 0 {
            RunState::Completed
        } else {
            RunState::Failed
        };
        let blueprint = if i < 3 { "a" } else { "b" };
        started_run(&backend, &format!("run-{i}"), blueprint, state).await;
    }
    let ids = |page: &flowcraft_core::directory::RunPage| {
        page.runs
            .iter()
            .map(|r| r.run_id.clone())
            .collect::<Vec<_>>()
    };
    let mut query = RunQuery {
        limit: 2,
        ..RunQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = backend.list_runs(&query).await.unwrap();
        assert!(page.runs.len() <= 2);
        seen.extend(page.runs);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    // Newest first; runs started in the same millisecond by id, descending.
    let order: Vec<(i64, String)> = seen
        .iter()
        .map(|r| (r.started_at, r.run_id.clone()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, sorted);
    let mut listed: Vec<String> = seen.iter().map(|r| r.run_id.clone()).collect();
    listed.sort();
    assert_eq!(
        listed,
        (0..5).map(|i| format!("run-{i}")).collect::<Vec<_>>()
    );

    let failed_in_a = RunQuery {
        status: Some(RunState::Failed),
        blueprint_id: Some("a".into()),
        limit: 10,
        cursor: None,
    };
    assert_eq!(
        ids(&backend.list_runs(&failed_in_a).await.unwrap()),
        vec!["run-1"]
    );
    let bad = RunQuery {
        limit: 10,
        cursor: Some("nonsense".into()),
        ..RunQuery::default()
    };
    assert!(matches!(
        backend.list_runs(&bad).await,
        Err(ListError::BadCursor(_))
    ));
}

#[tokio::test]
async fn a_status_watch_ends_when_that_runs_status_is_written() {
    use flowcraft_core::directory::{RunDirectory, StatusWatch};
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(open(&dir));
    backend
        .write_status("r1", RunState::Running, None)
        .await
        .unwrap();
    let mut watch = backend.watch_status("r1").await;
    backend
        .write_status("other", RunState::Running, None)
        .await
        .unwrap();
    backend
        .write_status("r1", RunState::Completed, None)
        .await
        .unwrap();
    // Ends at the announcement, not after the minute.
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.changed(Duration::from_secs(60)),
    )
    .await
    .expect("the write of r1's status ended the wait");
}
