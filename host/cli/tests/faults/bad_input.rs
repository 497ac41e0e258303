//! Scenario 6, bad messages and data, on one worker that keeps serving
//! ordinary runs meanwhile:
//!
//! - messages: text that is no job, a job of a blueprint no worker has, a
//!   job naming a node its run's blueprint lacks: each ends in the poison
//!   queue with a reason naming the problem (the first two are covered in
//!   depth by `azure_worker.rs`; here they are counted in the row);
//! - context documents edited behind the engine's back: data of the wrong
//!   type (the node reading it fails the run, saying why), metadata removed
//!   or of the wrong type (the engine's own state is the progress record:
//!   the run completes), the document moved to another partition (the run
//!   fails naming the document and the way back; restored and retried, it
//!   completes);
//! - oversized data: a node whose output takes the run's context past
//!   Cosmos DB's 2 MB item limit fails at once (no retry, no fallback) with
//!   the reason, and a run whose final context is too large to be copied into
//!   its status document is still published as completed.
//!
//! Afterwards the queue is empty and the poison queue holds exactly the three
//! bad messages: nothing was dropped, nothing is being retried forever.

use std::time::Duration;

use flowcraft_azure::cosmos::{CosmosConnection, CosmosStores};
use flowcraft_azure::wire;
use flowcraft_core::context::{ContextMap, context_from_value};
use flowcraft_core::progress::RunState;
use flowcraft_core::store::{Job, StatusStore};
use serde_json::{Map, Value, json};

use crate::SERIAL;
use crate::harness::{Fleet, Reference, Row, Stand, differences, hostile_plugin_dir, unique};

/// Ordinary work (conformance nodes); its runs also receive the stray jobs.
fn serve_blueprint() -> Value {
    json!({"id": "serve", "nodes": [
        {"id": "start", "uses": "double"}, {"id": "end", "uses": "times10"}
    ], "edges": [{"source": "start", "target": "end"}]})
}

/// Reads context key `amount`: the document edits aim at it.
fn shape_blueprint() -> Value {
    json!({"id": "shape", "nodes": [
        {"id": "start", "uses": "double", "inputs": "amount"},
        {"id": "end", "uses": "times10"}
    ], "edges": [{"source": "start", "target": "end"}]})
}

/// `a` stores 0.9 MB twice (its output and `b`'s input); `b` adds 0.9 MB
/// more, past the item limit. `b` would be retried and has a fallback.
fn oversize_blueprint() -> Value {
    json!({"id": "oversize", "nodes": [
        {"id": "a", "uses": "big-output", "params": {"bytes": 900_000}},
        {"id": "b", "uses": "big-output", "params": {"bytes": 900_000},
         "config": {"maxRetries": 3, "retryDelay": 100, "fallback": "rescue"}},
        {"id": "rescue", "uses": "const", "params": {"value": "rescued"}}
    ], "edges": [{"source": "a", "target": "b"}]})
}

/// A final context of 1.2 MB: it fits a context document, but not twice
/// into the status document (upstream's `finalStatus` copies it twice).
fn big_result_blueprint() -> Value {
    json!({"id": "big-result", "nodes": [
        {"id": "a", "uses": "big-output", "params": {"bytes": 600_000}},
        {"id": "c", "uses": "const", "params": {"value": "done"}}
    ], "edges": [{"source": "a", "target": "c"}]})
}

/// Properties Cosmos adds to every document.
const SYSTEM_PROPERTIES: &[&str] = &["_rid", "_self", "_etag", "_attachments", "_ts", "_lsn"];

/// Records `problem` unless `ok`; answers `ok`.
fn check(problems: &mut Vec<String>, ok: bool, problem: impl FnOnce() -> String) -> bool {
    if !ok {
        problems.push(problem());
    }
    ok
}

fn context(pairs: Value) -> ContextMap {
    context_from_value(pairs).unwrap()
}

/// The context document of `run` stored in `partition` (Cosmos' own
/// properties removed).
async fn raw_document(stores: &CosmosStores, partition: &str, run: &str) -> Map<String, Value> {
    let mut document: Map<String, Value> = stores
        .context
        .container()
        .read_item(partition.to_owned(), run, None)
        .await
        .unwrap_or_else(|e| panic!("context of {run} readable: {e}"))
        .into_model()
        .expect("a JSON object");
    document.retain(|key, _| !SYSTEM_PROPERTIES.contains(&key.as_str()));
    document
}

/// Replaces the context document of `run` by `document` (`id` and `runId`
/// added), as an operator's edit or another client would.
async fn overwrite(stores: &CosmosStores, run: &str, mut document: Map<String, Value>) {
    document.insert("id".into(), json!(run));
    document.insert("runId".into(), json!(run));
    stores
        .context
        .container()
        .replace_item(run.to_owned(), run, document, None)
        .await
        .unwrap_or_else(|e| panic!("context of {run} replaced: {e}"));
}

/// Moves the context document of `run` into partition `partition` (its
/// `runId` edited): for the run, the document is gone.
async fn move_document(stores: &CosmosStores, run: &str, partition: &str) {
    let container = stores.context.container();
    let mut document = raw_document(stores, run, run).await;
    document.insert("runId".into(), json!(partition));
    container
        .delete_item(run.to_owned(), run, None)
        .await
        .expect("document deleted");
    container
        .create_item(partition.to_owned(), run, document, None)
        .await
        .expect("document created in the other partition");
}

/// Puts the document moved by [`move_document`] back where it belongs.
async fn restore_document(stores: &CosmosStores, run: &str, partition: &str) {
    let container = stores.context.container();
    let mut document = raw_document(stores, partition, run).await;
    document.insert("runId".into(), json!(run));
    container
        .delete_item(partition.to_owned(), run, None)
        .await
        .expect("moved document deleted");
    container
        .create_item(run.to_owned(), run, document, None)
        .await
        .expect("document restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_and_documents_end_visibly_and_the_worker_keeps_serving() {
    let _turn = SERIAL.lock().await;
    let plugins = hostile_plugin_dir();
    let blueprints = vec![
        serve_blueprint(),
        shape_blueprint(),
        oversize_blueprint(),
        big_result_blueprint(),
    ];
    let stand = Stand::new("badinput", &blueprints).await;
    let stores = CosmosStores::connect(
        &CosmosConnection::parse(stand.config.cosmos.text()).unwrap(),
        &stand.config.database,
        &stand.config.context_container,
        &stand.config.status_container,
        false,
    )
    .await
    .expect("cosmos containers");
    let reference = Reference::load_from(plugins.path()).await;
    let queue = stand.engine.backend().queue();
    let tag = unique();
    let run = |name: &str| format!("{name}-{tag}");

    // Before any worker runs: the bad messages, and the runs whose
    // documents are edited (so that no worker has read them yet).
    let garbage = format!("%% not a job {tag} %%");
    queue.send(&garbage, Duration::ZERO).await.unwrap();
    let host = run("serve-host");
    stand
        .start("serve", &host, &context(json!({"_inputs.start": 1})))
        .await;
    let ghost = wire::encode(&Job::new(&host, "ghost-bp", "start"));
    queue.send(&ghost, Duration::ZERO).await.unwrap();
    let stray = wire::encode(&Job::new(&host, "serve", "nosuch"));
    queue.send(&stray, Duration::ZERO).await.unwrap();

    // Data of the wrong type where the node reads it; metadata gone.
    let wrong_type = run("shape-wrong-type");
    stand
        .start("shape", &wrong_type, &context(json!({"amount": 21})))
        .await;
    overwrite(
        &stores,
        &wrong_type,
        json!({"amount": "twenty-one"})
            .as_object()
            .cloned()
            .unwrap(),
    )
    .await;
    // Metadata removed or of the wrong type; the data intact.
    let odd_metadata = run("shape-odd-metadata");
    stand
        .start("shape", &odd_metadata, &context(json!({"amount": 4})))
        .await;
    let odd = json!({"amount": 4, "blueprintVersion": {"not": "a version"},
                     "_awaitingNodeIds": "not a list", "_awaitingDetails": 7});
    overwrite(&stores, &odd_metadata, odd.as_object().cloned().unwrap()).await;
    // The document moved away (its runId edited).
    let moved = run("shape-moved");
    let elsewhere = format!("{moved}-elsewhere");
    stand
        .start("shape", &moved, &context(json!({"amount": 5})))
        .await;
    move_document(&stores, &moved, &elsewhere).await;

    let fleet = Fleet::spawn_with(
        &stand,
        1,
        &[
            "--concurrency",
            "8",
            "--visibility-timeout",
            "3",
            "--max-dequeue-count",
            "3",
        ],
        plugins.path(),
        &[],
    );
    // Meanwhile: oversized data and ordinary runs.
    let oversize = run("oversize");
    stand.start("oversize", &oversize, &ContextMap::new()).await;
    let big_result = run("big-result");
    stand
        .start("big-result", &big_result, &ContextMap::new())
        .await;
    let mut serve_runs = vec![(host.clone(), 1)];
    for i in 2..10 {
        let id = run(&format!("serve-{i}"));
        stand
            .start("serve", &id, &context(json!({"_inputs.start": i})))
            .await;
        serve_runs.push((id, i));
    }

    let mut ids: Vec<String> = serve_runs.iter().map(|(id, _)| id.clone()).collect();
    ids.extend([
        wrong_type.clone(),
        odd_metadata.clone(),
        moved.clone(),
        oversize.clone(),
        big_result.clone(),
    ]);
    let reports = stand
        .wait_all(&ids, Duration::from_secs(120), Some(&fleet))
        .await;
    let mut problems = Vec::new();
    let (mut completed, mut failed_as_designed) = (0, 0);

    // Ordinary runs: exactly their reference.
    for (id, i) in &serve_runs {
        let Some(report) = reports.get(id) else {
            continue;
        };
        let seed = context(json!({"_inputs.start": i}));
        let reference = reference.run(&blueprints, "serve", &seed).await;
        let diff = differences(report, &reference, &blueprints[0]);
        if check(&mut problems, diff.is_empty(), || {
            format!("run {id}: {}", diff.join("; "))
        }) {
            completed += 1;
        }
    }

    // Wrong type: the node reading it fails the run with its reason and
    // where it read the value ...
    let mut fixed = false;
    if let Some(report) = reports.get(&wrong_type) {
        let named = report.state == RunState::Failed
            && report.errors.iter().any(|e| {
                e.node_id == "start"
                    && e.message.contains("invalid type: string")
                    && e.message
                        .contains("context key '_outputs.amount', else 'amount'")
            });
        if check(&mut problems, named, || {
            format!("run {wrong_type}: {:?} {:?}", report.state, report.errors)
        }) {
            failed_as_designed += 1;
            // ... and retried with the value fixed, it completes.
            let fix = context(json!({"amount": 21}));
            stand
                .engine
                .retry(&wrong_type, fix.clone())
                .await
                .expect("retried");
            let again = stand
                .wait_all(
                    std::slice::from_ref(&wrong_type),
                    Duration::from_secs(60),
                    Some(&fleet),
                )
                .await;
            let mut expected = reference.run(&blueprints, "shape", &fix).await;
            expected.context.shift_remove("blueprintId");
            expected.context.shift_remove("blueprintVersion");
            fixed = match again.get(&wrong_type) {
                Some(report) => {
                    let diff = differences(report, &expected, &blueprints[1]);
                    check(&mut problems, diff.is_empty(), || {
                        format!("fixed run {wrong_type}: {}", diff.join("; "))
                    })
                }
                None => check(&mut problems, false, || {
                    format!("fixed run {wrong_type} did not end")
                }),
            };
        }
    }

    // Odd metadata: the run completes, the edited keys stay as they were.
    if let Some(report) = reports.get(&odd_metadata) {
        let seed = context(json!({"amount": 4}));
        let mut expected = reference.run(&blueprints, "shape", &seed).await;
        expected.context.shift_remove("blueprintId");
        for (key, value) in odd.as_object().unwrap() {
            expected.context.insert(key.clone(), value.into());
        }
        let diff = differences(report, &expected, &blueprints[1]);
        if check(&mut problems, diff.is_empty(), || {
            format!("run {odd_metadata}: {}", diff.join("; "))
        }) {
            completed += 1;
        }
    }

    // Moved document: failed, naming the document and the way back ...
    let moved_reason = reports.get(&moved).and_then(|report| {
        let error = report.errors.first()?;
        (report.state == RunState::Failed).then(|| error.message.clone())
    });
    let names_document = moved_reason.as_deref().is_some_and(|reason| {
        reason.contains(&format!("the context document of run '{moved}' is missing"))
            && reason.contains(&format!("flowcraft-host retry {moved}"))
    });
    check(&mut problems, names_document, || {
        format!("run {moved}: {moved_reason:?}")
    });
    // ... which works: restored and retried, it completes as its reference.
    let mut recovered = false;
    if names_document {
        failed_as_designed += 1;
        restore_document(&stores, &moved, &elsewhere).await;
        stand
            .engine
            .retry(&moved, ContextMap::new())
            .await
            .expect("the failed run can be retried");
        let again = stand
            .wait_all(
                std::slice::from_ref(&moved),
                Duration::from_secs(60),
                Some(&fleet),
            )
            .await;
        let seed = context(json!({"amount": 5}));
        let reference = reference.run(&blueprints, "shape", &seed).await;
        if let Some(report) = again.get(&moved) {
            let diff = differences(report, &reference, &blueprints[1]);
            recovered = check(&mut problems, diff.is_empty(), || {
                format!("retried run {moved}: {}", diff.join("; "))
            });
        } else {
            problems.push(format!("retried run {moved} did not end"));
        }
    }

    // Oversized output: `b` fails once, fatally, with the reason.
    {
        let ledger = fleet.ledger.lock().unwrap();
        let attempts = (
            ledger.executions(&oversize, "b", 1),
            ledger.executions(&oversize, "b", 2),
        );
        let rescued = ledger.executions(&oversize, "rescue", 1);
        check(&mut problems, attempts == (1, 0) && rescued == 0, || {
            format!("run {oversize}: b ran {attempts:?} (attempt 1, 2), rescue {rescued} times")
        });
    }
    if let Some(report) = reports.get(&oversize) {
        let named = report.state == RunState::Failed
            && report.errors.iter().any(|e| {
                e.node_id == "b"
                    && e.message.contains("2 MB item limit")
                    && e.message.contains("keep large data outside the context")
            })
            && report.context.contains_key("_outputs.a")
            && !report.context.contains_key("_outputs.b");
        if check(&mut problems, named, || {
            format!("run {oversize}: {:?} {:?}", report.state, report.errors)
        }) {
            failed_as_designed += 1;
        }
    }

    // A final context too large for the status: completed, without the copy.
    if let Some(report) = reports.get(&big_result) {
        let expected = reference
            .run(&blueprints, "big-result", &ContextMap::new())
            .await;
        let diff = differences(report, &expected, &blueprints[3]);
        let status = stand
            .engine
            .backend()
            .read_status(&big_result)
            .await
            .unwrap();
        let final_status = status.as_ref().and_then(|s| s.final_status.clone());
        let published = status
            .as_ref()
            .is_some_and(|s| s.status == RunState::Completed)
            && final_status
                .as_ref()
                .and_then(|f| f["payload"]["contextOmitted"].as_str())
                .is_some_and(|note| note.contains("2 MB item limit"));
        let ok = diff.is_empty() && published;
        let summary = final_status.map(|f| f.to_string().chars().take(300).collect::<String>());
        if check(&mut problems, ok, || {
            format!("run {big_result}: {} / status {summary:?}", diff.join("; "))
        }) {
            completed += 1;
        }
    }

    // The bad messages: each in the poison queue once, with its reason.
    stand.drained(Duration::from_secs(60), &fleet).await;
    let poisoned: Vec<(String, String)> = queue
        .peek_poison(32)
        .await
        .expect("poison queue readable")
        .into_iter()
        .map(|p| (p.entry.original, p.entry.reason.unwrap_or_default()))
        .collect();
    // The reason of the one record of `text` (empty unless exactly one).
    let reason_of = |text: &str| match poisoned
        .iter()
        .filter(|(t, _)| t == text)
        .collect::<Vec<_>>()[..]
    {
        [(_, reason)] => reason.clone(),
        _ => String::new(),
    };
    let (garbage_reason, ghost_reason, stray_reason) =
        (reason_of(&garbage), reason_of(&ghost), reason_of(&stray));
    check(
        &mut problems,
        garbage_reason.contains("undecodable"),
        || format!("undecodable: {garbage_reason:?}"),
    );
    check(
        &mut problems,
        ghost_reason.contains("'ghost-bp'") && ghost_reason.contains("delivered 3 times"),
        || format!("unknown blueprint: {ghost_reason:?}"),
    );
    check(
        &mut problems,
        stray_reason.contains("'nosuch'") && stray_reason.contains("has no node"),
        || format!("unknown node: {stray_reason:?}"),
    );
    check(&mut problems, poisoned.len() == 3, || {
        format!("poison queue: {poisoned:#?}")
    });

    // The reasons as a user sees them.
    let first_error = |run: &str| {
        reports
            .get(run)
            .and_then(|r| r.errors.first())
            .map(|e| format!("node '{}': {}", e.node_id, e.message))
    };
    for (what, reason) in [
        ("wrong type", first_error(&wrong_type)),
        ("moved document", moved_reason.clone()),
        ("oversized output", first_error(&oversize)),
        ("undecodable", Some(garbage_reason.clone())),
        ("unknown blueprint", Some(ghost_reason.clone())),
        ("unknown node", Some(stray_reason.clone())),
    ] {
        eprintln!("bad input: {what}: {}", reason.unwrap_or_default());
    }

    // A retried run runs its failed node's first attempt again (attempts
    // restart with the retry): that one repetition is the retry itself.
    let ledger = fleet.ledger.lock().unwrap();
    let retried = (wrong_type.clone(), "start".to_owned(), 1);
    let repeated: Vec<_> = ledger
        .repeated(&ids)
        .into_iter()
        .filter(|(key, count)| !(*key == retried && *count == 2))
        .collect();
    eprintln!("bad input: repeated node attempts: {repeated:?}");
    Row {
        scenario: "6 bad messages and data".into(),
        runs: ids.len(),
        faults_injected: 8,
        runs_completed: completed,
        runs_failed_as_designed: failed_as_designed,
        runs_lost: ids.len() - reports.len(),
        duplicate_effects: repeated.len(),
        notes: format!(
            "3 bad messages poisoned with their reason; context edits: wrong type failed the run naming the key (fixed + retried: {}), odd metadata completed, moved document failed it (restored + retried: {}); 0.9 MB outputs past the 2 MB item limit failed fatally; a 1.2 MB final context published without its copy",
            if fixed { "completed" } else { "NOT completed" },
            if recovered { "completed" } else { "NOT completed" }
        ),
    }
    .record();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(completed + failed_as_designed, ids.len());
    assert!(fixed && recovered);
}
