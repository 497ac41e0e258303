//! The Cosmos DB stores against the real local stand-in
//! (`scripts/azure-local.sh start`): document shapes, PATCH chunking, the
//! sticky terminal status, the reconciler query and setup errors.
//!
//! Each test works in its own database (named after the process and the
//! test), so tests and concurrent runs do not see each other's documents.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::FeedScope;
use flowcraft_azure::cosmos::{CosmosConnection, CosmosSetupError, CosmosStores};
use flowcraft_core::context::{
    ContextChange, ContextMap, ContextValue, context_from_value, context_to_object,
};
use flowcraft_core::final_status::{self, FinalOutcome};
use flowcraft_core::progress::RunState;
use flowcraft_core::store::{ContextStore, StatusStore};
use futures_util::TryStreamExt;
use serde_json::{Map, Value, json};

const KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

fn connection() -> CosmosConnection {
    let text = std::env::var("COSMOS_DB_CONNECTION_STRING").unwrap_or_else(|_| {
        panic!(
            "COSMOS_DB_CONNECTION_STRING is not set: start the local services: scripts/azure-local.sh start; eval \"$(scripts/azure-local.sh env)\""
        )
    });
    CosmosConnection::parse(&text).expect("COSMOS_DB_CONNECTION_STRING")
}

fn database(test: &str) -> String {
    format!("flowcraft-test-{}-{test}", std::process::id())
}

async fn stores(test: &str) -> CosmosStores {
    CosmosStores::connect(
        &connection(),
        &database(test),
        "workflow-contexts",
        "workflow-status",
        true,
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

async fn drop_database(stores: &CosmosStores, test: &str) {
    let _ = stores
        .client()
        .database_client(database(test))
        .delete(None)
        .await;
}

fn map(value: Value) -> ContextMap {
    context_from_value(value).expect("a JSON object")
}

/// A context with its values parsed: the service may format values
/// differently from how they were written.
fn parsed(context: &ContextMap) -> Map<String, Value> {
    context_to_object(context)
}

fn set(key: &str, value: Value) -> ContextChange {
    ContextChange::Set {
        key: key.into(),
        value: value.into(),
    }
}

fn delete(key: &str) -> ContextChange {
    ContextChange::Delete { key: key.into() }
}

async fn raw_documents(container: &ContainerClient) -> Vec<Map<String, Value>> {
    let items = container
        .query_items::<Value>("SELECT * FROM c", FeedScope::full_container(), None)
        .await
        .unwrap();
    let items: Vec<Value> = items.try_collect().await.unwrap();
    items
        .into_iter()
        .map(|item| item.as_object().cloned().expect("a JSON object"))
        .collect()
}

#[tokio::test]
async fn contexts_round_trip_with_dotted_slashed_and_tilde_keys() {
    let stores = stores("roundtrip").await;
    let store = &stores.context;
    let initial = map(json!({
        "blueprintId": "bp",
        "blueprintVersion": null,
        "_outputs.A": {"x": 1, "list": [1, "two", null]},
        "_inputs.B": "text",
        "path/with/slashes": 1,
        "tilde~key": 2,
        "~/": 3,
    }));
    assert!(store.load_context("run-1").await.unwrap().is_none());
    store
        .create_context("run-1", initial.clone())
        .await
        .unwrap();
    let loaded = store.load_context("run-1").await.unwrap().unwrap();
    assert_eq!(parsed(&loaded.values), parsed(&initial));

    let error = store
        .create_context("run-1", ContextMap::new())
        .await
        .unwrap_err();
    assert_eq!(error.service, "cosmos context");
    assert!(error.message.contains("run-1") && error.message.contains("exists"));

    let changes = vec![
        set("path/with/slashes", json!({"nested": true})),
        delete("tilde~key"),
        set("new/~key", json!([1])),
        delete("~/"),
        set("_outputs.B", Value::Null),
    ];
    store.apply_changes("run-1", &changes).await.unwrap();
    let mut expected = initial;
    for change in &changes {
        change.apply_to(&mut expected);
    }
    let loaded = store.load_context("run-1").await.unwrap().unwrap();
    assert_eq!(parsed(&loaded.values), parsed(&expected));
    drop_database(&stores, "roundtrip").await;
}

#[tokio::test]
async fn many_writes_are_chunked_and_absent_deletes_are_no_ops() {
    let stores = stores("chunks").await;
    let store = &stores.context;
    store
        .create_context("run-2", map(json!({"keep": 1, "old": 2, "old2": 3})))
        .await
        .unwrap();
    // 25 sets (3 patches) with deletes of absent and present keys mixed in.
    let mut changes: Vec<ContextChange> = (0..25)
        .map(|i| set(&format!("_batch.item_{i}"), json!(i)))
        .collect();
    changes.insert(3, delete("never-existed"));
    changes.insert(12, delete("old"));
    changes.push(delete("also-absent"));
    changes.push(delete("old2"));
    store.apply_changes("run-2", &changes).await.unwrap();

    let loaded = store.load_context("run-2").await.unwrap().unwrap();
    let mut expected = map(json!({"keep": 1}));
    for i in 0..25 {
        expected.insert(format!("_batch.item_{i}"), json!(i).into());
    }
    assert_eq!(parsed(&loaded.values), parsed(&expected));

    // A redelivered job applies the same changes again: still fine.
    store.apply_changes("run-2", &changes).await.unwrap();
    assert_eq!(
        parsed(&store.load_context("run-2").await.unwrap().unwrap().values),
        parsed(&expected)
    );
    // Nothing to write: nothing happens.
    store.apply_changes("run-2", &[]).await.unwrap();

    // A run without a document gets one, as in the in-memory store.
    store
        .apply_changes("run-new", &[set("a", json!(1)), delete("b")])
        .await
        .unwrap();
    assert_eq!(
        parsed(&store.load_context("run-new").await.unwrap().unwrap().values),
        parsed(&map(json!({"a": 1})))
    );
    drop_database(&stores, "chunks").await;
}

#[tokio::test]
async fn reserved_keys_and_bad_run_ids_are_refused() {
    let stores = stores("reserved").await;
    let store = &stores.context;
    store
        .create_context("run-3", ContextMap::new())
        .await
        .unwrap();
    for key in ["id", "runId", "_etag"] {
        let error = store
            .apply_changes("run-3", &[set("fine", json!(1)), set(key, json!("x"))])
            .await
            .unwrap_err();
        assert!(
            error.message.contains(&format!("'{key}' is reserved")),
            "{error}"
        );
    }
    // Refused before anything was written.
    assert!(
        store
            .load_context("run-3")
            .await
            .unwrap()
            .unwrap()
            .values
            .is_empty()
    );
    let error = store
        .create_context("run-4", map(json!({"runId": "other"})))
        .await
        .unwrap_err();
    assert!(error.message.contains("'runId' is reserved"), "{error}");
    let error = store.load_context("a/b").await.unwrap_err();
    assert!(
        error.message.contains("cannot be a Cosmos document id"),
        "{error}"
    );
    drop_database(&stores, "reserved").await;
}

#[tokio::test]
async fn terminal_statuses_are_never_overwritten() {
    let stores = stores("status").await;
    let store = &stores.status;
    assert!(store.read_status("run-5").await.unwrap().is_none());
    assert!(
        store
            .write_status("run-5", RunState::Running, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .write_status("run-5", RunState::Awaiting, None)
            .await
            .unwrap()
    );
    let final_status = json!({"status": "failed", "reason": "node B failed"});
    assert!(
        store
            .write_status("run-5", RunState::Failed, Some(final_status.clone()))
            .await
            .unwrap()
    );
    for late in [RunState::Running, RunState::Completed] {
        assert!(!store.write_status("run-5", late, None).await.unwrap());
    }
    let record = store.read_status("run-5").await.unwrap().unwrap();
    assert_eq!(record.status, RunState::Failed);
    assert_eq!(record.final_status, Some(final_status));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - record.last_updated).abs() < 60);

    // Racing writers: exactly one terminal write wins and sticks.
    let mut writers = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let state = match i % 3 {
                0 => RunState::Completed,
                1 => RunState::Cancelled,
                _ => RunState::Running,
            };
            let written = store
                .write_status("run-6", state, Some(json!({"writer": i})))
                .await
                .unwrap();
            (state, written, i)
        }));
    }
    let mut terminal_wins = Vec::new();
    for writer in writers {
        let (state, written, i) = writer.await.unwrap();
        if written && state.is_terminal() {
            terminal_wins.push((state, i));
        }
    }
    assert_eq!(terminal_wins.len(), 1, "{terminal_wins:?}");
    let record = store.read_status("run-6").await.unwrap().unwrap();
    assert_eq!(record.status, terminal_wins[0].0);
    assert_eq!(
        record.final_status,
        Some(json!({"writer": terminal_wins[0].1}))
    );
    drop_database(&stores, "status").await;
}

/// A small final status goes in with one PATCH, a large one (a completed
/// run's final context) by read and replace; both read back whole, on a
/// running run and on a run without a status document.
#[tokio::test]
async fn final_statuses_small_and_large_are_published_whole() {
    let stores = stores("publish").await;
    let store = &stores.status;
    let rows: Vec<Value> = (0..400)
        .map(|i| json!({"row": i, "text": "x".repeat(100)}))
        .collect();
    let large_context: ContextMap = [("rows".to_owned(), ContextValue::from(&Value::from(rows)))]
        .into_iter()
        .collect();
    let large = FinalOutcome::Completed(&large_context);
    assert!(large.size() > 32 << 10, "large enough for read and replace");
    for (run, outcome) in [
        ("small", FinalOutcome::Failed("node B failed")),
        ("large", large),
    ] {
        let expected: Value = serde_json::from_str(final_status::document(&outcome).get()).unwrap();
        for existing in [true, false] {
            let run_id = format!("{run}-{existing}");
            if existing {
                store
                    .write_status(&run_id, RunState::Running, None)
                    .await
                    .unwrap();
            }
            store.publish_terminal(&run_id, &outcome).await.unwrap();
            let record = store.read_status(&run_id).await.unwrap().unwrap();
            assert_eq!(record.status, outcome.state(), "{run_id}");
            assert_eq!(record.final_status.as_ref(), Some(&expected), "{run_id}");
        }
    }
    drop_database(&stores, "publish").await;
}

#[tokio::test]
async fn stalled_runs_are_old_running_and_awaiting_runs() {
    let stores = stores("stalled").await;
    let store = &stores.status;
    for run in [
        "old-running",
        "fresh-running",
        "old-awaiting",
        "old-completed",
        "touched",
    ] {
        store
            .write_status(run, RunState::Running, None)
            .await
            .unwrap();
    }
    store
        .write_status("old-completed", RunState::Completed, None)
        .await
        .unwrap();
    store
        .write_status("old-awaiting", RunState::Awaiting, None)
        .await
        .unwrap();
    // Age four documents by an hour, behind the store's back.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for run in ["old-running", "old-awaiting", "old-completed", "touched"] {
        let mut document = raw_documents(store.container())
            .await
            .into_iter()
            .find(|document| document["runId"] == run)
            .unwrap();
        document.insert("lastUpdated".into(), json!(now - 3600));
        store
            .container()
            .upsert_item(run.to_owned(), run, &document, None)
            .await
            .unwrap();
    }
    // An upstream-style item without runId is skipped.
    store
        .container()
        .upsert_item(
            "orphan".to_owned(),
            "orphan",
            json!({"id": "orphan", "status": "running", "lastUpdated": now - 3600}),
            None,
        )
        .await
        .unwrap();
    store.touch("touched").await.unwrap();
    store.touch("no-such-run").await.unwrap();

    let stalled = store.stalled_runs(300).await.unwrap();
    assert_eq!(stalled, vec!["old-running", "old-awaiting"]);
    assert!(store.stalled_runs(7200).await.unwrap().is_empty());
    drop_database(&stores, "stalled").await;
}

#[tokio::test]
async fn stored_documents_have_upstream_field_names_and_types() {
    let stores = stores("wire").await;
    stores
        .context
        .create_context(
            "run-7",
            map(json!({"blueprintId": "bp", "blueprintVersion": null})),
        )
        .await
        .unwrap();
    stores
        .context
        .apply_changes(
            "run-7",
            &[
                set("_outputs.A", json!({"ok": true})),
                set("_inputs.B", json!(1)),
                delete("absent"),
            ],
        )
        .await
        .unwrap();
    stores
        .status
        .write_status("run-7", RunState::Running, None)
        .await
        .unwrap();
    stores
        .status
        .write_status(
            "run-7",
            RunState::Completed,
            Some(json!({"status": "completed", "payload": {}})),
        )
        .await
        .unwrap();
    stores.status.touch("run-7").await.unwrap();

    let system: BTreeSet<&str> = ["_rid", "_self", "_etag", "_ts", "_attachments"].into();
    let contexts = raw_documents(stores.context.container()).await;
    assert_eq!(contexts.len(), 1);
    let context = &contexts[0];
    let fields: BTreeSet<&str> = context
        .keys()
        .map(String::as_str)
        .filter(|key| !system.contains(key))
        .collect();
    assert_eq!(
        fields,
        [
            "id",
            "runId",
            "blueprintId",
            "blueprintVersion",
            "_outputs.A",
            "_inputs.B"
        ]
        .into()
    );
    assert_eq!(context["id"], json!("run-7"));
    assert_eq!(context["runId"], json!("run-7"));
    assert_eq!(context["blueprintVersion"], Value::Null);
    assert_eq!(context["_outputs.A"], json!({"ok": true}));

    let statuses = raw_documents(stores.status.container()).await;
    assert_eq!(statuses.len(), 1);
    let status = &statuses[0];
    let fields: BTreeSet<&str> = status
        .keys()
        .map(String::as_str)
        .filter(|key| !system.contains(key))
        .collect();
    assert_eq!(
        fields,
        ["id", "runId", "status", "lastUpdated", "finalStatus"].into()
    );
    assert_eq!(status["id"], json!("run-7"));
    assert_eq!(status["runId"], json!("run-7"));
    assert_eq!(status["status"], json!("completed"));
    assert!(status["lastUpdated"].is_i64(), "{}", status["lastUpdated"]);
    assert_eq!(
        status["finalStatus"],
        json!({"status": "completed", "payload": {}})
    );
    drop_database(&stores, "wire").await;
}

#[tokio::test]
async fn setup_errors_are_one_clear_line() {
    let stores = stores("setup").await;
    let error = CosmosStores::connect(
        &connection(),
        &database("setup"),
        "workflow-contexts",
        "missing-status",
        false,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "Cosmos container 'missing-status' does not exist in database '{}'; create it (partition key /runId) or pass --create-resources",
            database("setup")
        )
    );
    let error = CosmosStores::connect(&connection(), &database("absent"), "c", "s", false)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, CosmosSetupError::MissingDatabase { .. }),
        "{error}"
    );
    drop_database(&stores, "setup").await;

    let error = CosmosConnection::parse(&format!("AccountKey={KEY};"))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        error,
        "COSMOS_DB_CONNECTION_STRING: missing AccountEndpoint"
    );
    let error = CosmosConnection::parse("AccountEndpoint=https://x.documents.azure.com:443/")
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        error,
        "COSMOS_DB_CONNECTION_STRING: missing AccountKey (for Entra ID auth set COSMOS_DB_ENDPOINT instead)"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named() {
    // Nothing listens on port 9 of loopback.
    let connection = CosmosConnection::parse(&format!(
        "AccountEndpoint=http://127.0.0.1:9/;AccountKey={KEY}"
    ))
    .unwrap();
    let started = Instant::now();
    let error = CosmosStores::connect(&connection, "db", "c", "s", false)
        .await
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(
        matches!(error, CosmosSetupError::Unreachable { .. }),
        "{message}"
    );
    assert!(message.contains("http://127.0.0.1:9/"), "{message}");
    assert!(
        !message.contains('\n') && !message.contains(KEY),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(40));
}
