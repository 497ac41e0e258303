//! `AzureQueue` against a real Azure Queue Storage endpoint (Azurite locally):
//! start it with `scripts/azure-local.sh start` and export
//! `AZURE_STORAGE_CONNECTION_STRING` with `eval "$(scripts/azure-local.sh env)"`.
//! Every test uses its own queue.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use azure_core::credentials::Secret;
use base64::Engine as _;
use flowcraft_azure::queue::{
    AzureQueue, MAX_MESSAGE_BYTES, MAX_VISIBILITY, QueueErrorKind, ReceivedMessage,
};
use flowcraft_azure::storage_account::{StorageAccount, StorageAuth};
use flowcraft_azure::wire;
use flowcraft_core::store::{Job, JobQueue};

const FC51: &str = "eyJydW5JZCI6InJ1bi1henVyZS00NTYiLCJibHVlcHJpbnRJZCI6ImJwLWF6dXJlIiwibm9kZUlkIjoibm9kZS1henVyZS1zdGFydCJ9";

fn connection_string() -> String {
    std::env::var("AZURE_STORAGE_CONNECTION_STRING").unwrap_or_else(|_| {
        panic!(
            "AZURE_STORAGE_CONNECTION_STRING is not set: start the local services: \
             scripts/azure-local.sh start; eval \"$(scripts/azure-local.sh env)\""
        )
    })
}

fn account() -> StorageAccount {
    StorageAccount::parse(&connection_string()).expect("AZURE_STORAGE_CONNECTION_STRING parses")
}

/// A fresh queue name (short enough for its `-poison` twin).
fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t-{tag}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn fresh_queue(tag: &str) -> AzureQueue {
    AzureQueue::connect(&account(), &unique(tag), true)
        .await
        .expect("create queue")
}

/// Receives one message, polling up to `limit`.
async fn receive_within(
    queue: &AzureQueue,
    visibility: Duration,
    limit: Duration,
) -> ReceivedMessage {
    let start = Instant::now();
    loop {
        let mut got = queue.receive(1, visibility).await.unwrap();
        if let Some(message) = got.pop() {
            return message;
        }
        assert!(start.elapsed() < limit, "no message within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn send_receive_delete() {
    let queue = fresh_queue("srd").await;
    let id = queue.send("hello", Duration::ZERO).await.unwrap();
    let got = queue.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 1);
    let message = &got[0];
    assert_eq!(
        (message.id.as_str(), message.text.as_str()),
        (id.as_str(), "hello")
    );
    assert_eq!(message.dequeue_count, 1);
    assert!(message.inserted_on.is_some());
    queue.delete(message).await.unwrap();
    assert!(
        queue
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(queue.peek(32).await.unwrap().is_empty());
}

#[tokio::test]
async fn connect_without_create_requires_the_queue() {
    let account = account();
    let name = unique("missing");
    let err = AzureQueue::connect(&account, &name, false)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind, QueueErrorKind::QueueNotFound);
    let endpoint = account
        .queue_endpoint()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    assert!(
        err.message.starts_with(&format!(
            "queue '{name}' does not exist at {endpoint}; create it or pass --create-resources"
        )),
        "{err}"
    );
    AzureQueue::connect(&account, &name, true).await.unwrap();
    // Creating an existing queue, and checking it, both succeed.
    AzureQueue::connect(&account, &name, true).await.unwrap();
    AzureQueue::connect(&account, &name, false).await.unwrap();
}

#[tokio::test]
async fn initial_visibility_delays_delivery() {
    let queue = fresh_queue("delay").await;
    let sent = Instant::now();
    queue.send("later", Duration::from_secs(2)).await.unwrap();
    assert!(
        queue
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let message = receive_within(&queue, Duration::from_secs(30), Duration::from_secs(10)).await;
    assert_eq!(message.text, "later");
    assert!(
        sent.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn update_visibility_renews_the_lease_and_the_pop_receipt() {
    let queue = fresh_queue("renew").await;
    queue.send("lease", Duration::ZERO).await.unwrap();
    let old = receive_within(&queue, Duration::from_secs(2), Duration::from_secs(5)).await;
    let renewed = queue
        .update_visibility(&old, Duration::from_secs(60))
        .await
        .unwrap();
    assert_ne!(renewed.pop_receipt, old.pop_receipt);
    // Past the original 2 s lease, the renewed one keeps it hidden.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        queue
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );

    let err = queue.delete(&old).await.unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind, QueueErrorKind::PopReceiptMismatch, "{err}");
    assert!(err.message.contains("PopReceiptMismatch"), "{err}");
    assert!(
        err.message.contains(&format!("delete message {}", old.id)),
        "{err}"
    );
    assert!(err.message.contains(queue.name()), "{err}");

    let current = ReceivedMessage {
        pop_receipt: renewed.pop_receipt,
        ..old
    };
    queue.delete(&current).await.unwrap();
    assert!(queue.peek(32).await.unwrap().is_empty());
}

#[tokio::test]
async fn dequeue_count_grows_on_redelivery() {
    let queue = fresh_queue("redeliver").await;
    queue.send("again", Duration::ZERO).await.unwrap();
    let first = receive_within(&queue, Duration::from_secs(1), Duration::from_secs(5)).await;
    assert_eq!(first.dequeue_count, 1);
    let second = receive_within(&queue, Duration::from_secs(1), Duration::from_secs(10)).await;
    assert_eq!(
        (second.id.as_str(), second.dequeue_count),
        (first.id.as_str(), 2)
    );
    assert_ne!(second.pop_receipt, first.pop_receipt);
    queue.delete(&second).await.unwrap();
}

#[tokio::test]
async fn receives_at_most_32_per_request() {
    let queue = fresh_queue("batch").await;
    let sends = (0..40).map(|i| {
        let queue = queue.clone();
        async move { queue.send(&format!("m{i}"), Duration::ZERO).await }
    });
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    let first = queue.receive(100, Duration::from_secs(30)).await.unwrap();
    assert_eq!(first.len(), 32);
    let second = queue.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(second.len(), 8);
    let mut texts: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|m| m.text.clone())
        .collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 40);
}

#[tokio::test]
async fn poison_records_keep_reason_and_original_and_replay() {
    let queue = fresh_queue("poison").await;
    let original = "this is not base64 <&>";
    queue
        .send_poison(
            original,
            "undecodable after 5 deliveries: message text is neither JSON nor base64",
        )
        .await
        .unwrap();
    assert_eq!(
        queue.poison_queue().await.unwrap().name(),
        format!("{}-poison", queue.name())
    );

    let peeked = queue.peek_poison(32).await.unwrap();
    assert_eq!(peeked.len(), 1);
    let entry = &peeked[0].entry;
    assert_eq!(entry.original, original);
    assert_eq!(
        entry.reason.as_deref(),
        Some("undecodable after 5 deliveries: message text is neither JSON nor base64")
    );
    assert_eq!(entry.queue.as_deref(), Some(queue.name()));
    assert!(entry.failed_at.as_deref().is_some_and(|t| t.ends_with('Z')));
    // Human-readable: the stored text is base64 of JSON with the reason first.
    let json = base64::engine::general_purpose::STANDARD
        .decode(&peeked[0].message.text)
        .unwrap();
    assert!(
        String::from_utf8(json)
            .unwrap()
            .starts_with(r#"{"reason":"undecodable"#)
    );

    let taken = queue
        .receive_poison(32, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    queue.replay_poison(&taken[0]).await.unwrap();
    let replayed = receive_within(&queue, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(replayed.text, original);
    assert!(queue.peek_poison(32).await.unwrap().is_empty());
}

#[tokio::test]
async fn upstream_and_plain_json_messages_decode() {
    let queue = fresh_queue("wire").await;
    let job = Job::new("run-azure-456", "bp-azure", "node-azure-start");
    // Ours, through the engine's trait: byte-for-byte upstream's text.
    queue.enqueue(job.clone(), Duration::ZERO).await.unwrap();
    // Upstream's exact text and the Azure guide's plain JSON.
    queue.send(FC51, Duration::ZERO).await.unwrap();
    queue
        .send(
            r#"{"runId":"run-azure-456","blueprintId":"bp-azure","nodeId":"node-azure-start","isLastAttempt":false}"#,
            Duration::ZERO,
        )
        .await
        .unwrap();
    let got = queue.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got.iter().filter(|m| m.text == FC51).count(), 2);
    for message in &got {
        assert_eq!(wire::decode(&message.text).unwrap(), job);
    }
}

#[tokio::test]
async fn limits_are_checked_with_clear_errors() {
    let queue = fresh_queue("limits").await;
    // The largest text and the longest delay the service takes.
    let biggest = "A".repeat(MAX_MESSAGE_BYTES);
    queue.send(&biggest, Duration::ZERO).await.unwrap();
    assert_eq!(
        queue.receive(1, Duration::from_secs(30)).await.unwrap()[0]
            .text
            .len(),
        MAX_MESSAGE_BYTES
    );
    queue.send("a week", MAX_VISIBILITY).await.unwrap();

    let err = queue
        .send(&format!("{biggest}A"), Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.kind, QueueErrorKind::MessageTooLarge);
    assert!(err.message.contains("65537 bytes"), "{err}");
    // A job whose message is over the limit is refused for good: sending it
    // again cannot succeed.
    let err = queue
        .enqueue(
            Job::new("r", "b", &"n".repeat(MAX_MESSAGE_BYTES)),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{}", err.message);
    assert!(
        err.message
            .starts_with("the job message is over Queue Storage's 64 KiB message limit"),
        "{}",
        err.message
    );
    let err = queue
        .send("x", MAX_VISIBILITY + Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.message.contains("7-day"), "{err}");
    // The engine's trait cuts long delays to the limit instead.
    queue
        .enqueue(Job::new("r", "b", "n"), MAX_VISIBILITY * 3)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_auth_error() {
    let account = account();
    let StorageAuth::SharedKey { .. } = account.auth() else {
        panic!("this test needs an AccountKey connection string");
    };
    let wrong = format!(
        "AccountName={};AccountKey={};QueueEndpoint={}",
        account.account_name().unwrap(),
        base64::engine::general_purpose::STANDARD.encode([7u8; 64]),
        account.queue_endpoint()
    );
    let wrong = StorageAccount::parse(&wrong).unwrap();
    let err = AzureQueue::connect(&wrong, &unique("auth"), true)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind, QueueErrorKind::Auth, "{err}");
    assert!(err.message.contains("403"), "{err}");
    assert!(err.message.contains("AccountKey"), "{err}");
    assert!(
        !err.message
            .contains(&base64::engine::general_purpose::STANDARD.encode([7u8; 64]))
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_one_clear_line() {
    let unreachable = StorageAccount::parse(&format!(
        "AccountName=devstoreaccount1;AccountKey={};QueueEndpoint=http://127.0.0.1:1/devstoreaccount1",
        flowcraft_azure::storage_account::DEV_ACCOUNT_KEY
    ))
    .unwrap();
    let started = Instant::now();
    let err = AzureQueue::connect(&unreachable, "flowcraft-jobs", false)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind, QueueErrorKind::Unreachable, "{err}");
    assert!(
        err.message
            .starts_with("cannot reach the queue service at http://127.0.0.1:1/devstoreaccount1"),
        "{err}"
    );
    assert!(!err.message.contains('\n'), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// An account SAS from the connection string is used as is.
#[tokio::test]
async fn a_sas_connection_string_works() {
    let account = account();
    let StorageAuth::SharedKey { account_name, key } = account.auth() else {
        panic!("this test needs an AccountKey connection string to sign a SAS");
    };
    let sas = account_sas(account_name, key);
    let with_sas = StorageAccount::parse(&format!(
        "QueueEndpoint={};SharedAccessSignature={sas}",
        account.queue_endpoint()
    ))
    .unwrap();
    let queue = AzureQueue::connect(&with_sas, &unique("sas"), true)
        .await
        .unwrap();
    // A SAS with a forged signature is refused.
    let forged = sas.replace("sig=", "sig=AAAA");
    let forged = StorageAccount::parse(&format!(
        "QueueEndpoint={};SharedAccessSignature={forged}",
        account.queue_endpoint()
    ))
    .unwrap();
    let err = AzureQueue::connect(&forged, queue.name(), false)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.kind, QueueErrorKind::Auth, "{err}");
    queue.send(FC51, Duration::ZERO).await.unwrap();
    let got = receive_within(&queue, Duration::from_secs(30), Duration::from_secs(5)).await;
    let renewed = queue
        .update_visibility(&got, Duration::from_secs(30))
        .await
        .unwrap();
    queue
        .delete(&ReceivedMessage {
            pop_receipt: renewed.pop_receipt,
            ..got
        })
        .await
        .unwrap();
}

/// An account SAS (version 2020-12-06+ string-to-sign) for the queue service.
fn account_sas(account_name: &str, key: &Secret) -> String {
    let (permissions, services, types, expiry, protocol, version) = (
        "raupcdl",
        "q",
        "sco",
        "2099-01-01T00:00:00Z",
        "https,http",
        "2022-11-02",
    );
    let to_sign = format!(
        "{account_name}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n{protocol}\n{version}\n\n"
    );
    let signature = azure_core::hmac::hmac_sha256(&to_sign, key).unwrap();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("sv", version)
        .append_pair("ss", services)
        .append_pair("srt", types)
        .append_pair("sp", permissions)
        .append_pair("se", expiry)
        .append_pair("spr", protocol)
        .append_pair("sig", &signature);
    query.finish()
}
