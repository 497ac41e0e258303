//! Unit tests of the queue client against a scripted loopback HTTP server,
//! and of the pieces that need no server: names, durations, poison records,
//! error classification.

use azure_core::http::StatusCode;
use base64::Engine as _;
use flowcraft_core::store::{Job, JobQueue, StoreError};

use super::error::{classify, xml_element};
use super::*;

/// What the scripted server does with one connection's request.
#[derive(Clone, Copy)]
enum Answer {
    /// Close the connection without answering (as Node does to an idle
    /// keep-alive connection, or a service that went away).
    Drop,
    /// Answer with these bytes.
    Send(&'static [u8]),
    /// Succeed: `200` with seven messages counted to a `GET`, [`SENT`]
    /// to a `POST`.
    Ok,
}

const OK: Answer = Answer::Ok;
const COUNTED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\
    x-ms-approximate-messages-count: 7\r\n\r\n";
/// The answer to a send: message `m-1` stored.
const SENT: &[u8] =
    b"HTTP/1.1 201 Created\r\nconnection: close\r\ncontent-type: application/xml\r\n\
      x-ms-approximate-messages-count: 7\r\ncontent-length: 224\r\n\r\n\
      <?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage><MessageId>m-1</MessageId>\
      <PopReceipt>r-1</PopReceipt><TimeNextVisible>Mon, 01 Jan 2024 00:00:00 GMT</TimeNextVisible>\
      </QueueMessage></QueueMessagesList>";

/// A loopback HTTP server answering its n-th connection's one request
/// with `script[n]` (the last entry for all later ones). Returns the
/// endpoint and the number of connections accepted.
fn scripted_server(script: Vec<Answer>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/devstoreaccount1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let bytes = match script[n.min(script.len() - 1)] {
                Answer::Drop => continue,
                Answer::Send(bytes) => bytes,
                Answer::Ok if request.starts_with(b"POST") => SENT,
                Answer::Ok => COUNTED,
            };
            let _ = stream.write_all(bytes);
        }
    });
    (endpoint, accepted)
}

fn queue_at(endpoint: &str) -> AzureQueue {
    let account = StorageAccount::parse(&format!(
        "AccountName=devstoreaccount1;AccountKey={};QueueEndpoint={endpoint}",
        crate::storage_account::DEV_ACCOUNT_KEY
    ))
    .unwrap();
    AzureQueue::open(&account, "jobs", http_transport(&account).unwrap()).unwrap()
}

fn connections(accepted: &std::sync::atomic::AtomicUsize) -> usize {
    accepted.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn requests_are_repeated_on_a_dropped_connection() {
    let (endpoint, accepted) = scripted_server(vec![Answer::Drop, OK]);
    let queue = queue_at(&endpoint);
    assert_eq!(queue.approximate_count().await.unwrap(), 7);
    assert_eq!(connections(&accepted), 2);
    // Sends too: a duplicate job is harmless, a failed job costs a
    // visibility timeout.
    let (endpoint, accepted) = scripted_server(vec![Answer::Drop, Answer::Drop, OK]);
    let queue = queue_at(&endpoint);
    assert_eq!(queue.send("x", Duration::ZERO).await.unwrap(), "m-1");
    assert_eq!(connections(&accepted), 3);
}

#[tokio::test]
async fn throttled_requests_wait_the_advised_time_then_repeat() {
    let busy = Answer::Send(
        b"HTTP/1.1 503 Server Busy\r\nconnection: close\r\nx-ms-error-code: ServerBusy\r\n\
          retry-after: 1\r\ncontent-length: 0\r\n\r\n",
    );
    let (endpoint, accepted) = scripted_server(vec![busy, OK]);
    let queue = queue_at(&endpoint);
    let started = std::time::Instant::now();
    assert_eq!(queue.approximate_count().await.unwrap(), 7);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(connections(&accepted), 2);
}

#[tokio::test]
async fn a_service_that_stays_away_is_reported_after_the_retry_budget() {
    let (endpoint, accepted) = scripted_server(vec![Answer::Drop]);
    let queue = queue_at(&endpoint);
    let err = queue.send("x", Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind, QueueErrorKind::Unreachable, "{err}");
    assert!(
        err.message.starts_with(&format!(
            "cannot reach the queue service at {endpoint} (queue 'jobs', send)"
        )),
        "{err}"
    );
    assert_eq!(
        connections(&accepted),
        RetryPolicy::DEFAULT.max_attempts as usize
    );
}

#[test]
fn queue_names_follow_the_service_rules() {
    for ok in ["flowcraft-jobs", "abc", "a1-b2", &"a".repeat(63)] {
        assert!(validate_queue_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "ab",
        "Jobs",
        "-jobs",
        "jobs-",
        "a--b",
        "a_b",
        &"a".repeat(64),
    ] {
        let err = validate_queue_name(bad).unwrap_err();
        assert_eq!(err.kind, QueueErrorKind::InvalidRequest);
        assert!(err.message.contains(&format!("'{bad}'")));
    }
}

#[test]
fn durations_round_up_to_whole_seconds() {
    assert_eq!(ceil_secs(Duration::ZERO), 0);
    assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
    assert_eq!(ceil_secs(Duration::from_millis(2_000)), 2);
    assert_eq!(ceil_secs(Duration::from_millis(2_001)), 3);
    assert_eq!(ceil_secs(Duration::MAX), i32::MAX);
}

#[test]
fn poison_records_keep_the_original_and_read_back() {
    let record = PoisonRecord {
        reason: "undecodable: message text is neither JSON nor base64".into(),
        failed_at: "2025-01-01T00:00:00Z".into(),
        queue: "flowcraft-jobs".into(),
        message: "not <base64> & \"quoted\"".into(),
    };
    let text = record.to_text();
    let json = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap(),
    )
    .unwrap();
    assert!(json.starts_with(r#"{"reason":"undecodable"#), "{json}");
    assert_eq!(PoisonRecord::from_text(&text), Some(record.clone()));
    let entry = PoisonEntry::parse(&text);
    assert_eq!(entry.original, record.message);
    assert_eq!(entry.reason.as_deref(), Some(record.reason.as_str()));
    // Plain-JSON records, and foreign messages stored unchanged.
    assert_eq!(PoisonEntry::parse(&json).original, record.message);
    let foreign = "eyJydW5JZCI6InIiLCJibHVlcHJpbnRJZCI6ImIiLCJub2RlSWQiOiJuIn0=";
    let entry = PoisonEntry::parse(foreign);
    assert_eq!((entry.reason, entry.original.as_str()), (None, foreign));
}

#[test]
fn xml_error_bodies_give_code_and_first_message_line() {
    let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>PopReceiptMismatch</Code><Message>The specified pop receipt did not match the pop receipt for a dequeued message.\nRequestId:1\nTime:2025</Message></Error>";
    assert_eq!(
        xml_element(body, "Code").as_deref(),
        Some("PopReceiptMismatch")
    );
    assert_eq!(
        xml_element(body, "Message").as_deref(),
        Some("The specified pop receipt did not match the pop receipt for a dequeued message.")
    );
    assert_eq!(xml_element(b"", "Code"), None);
}

#[test]
fn oversized_messages_are_a_permanent_refusal() {
    use QueueErrorKind as K;
    for (status, code) in [
        (StatusCode::PayloadTooLarge, "RequestBodyTooLarge"),
        (StatusCode::PayloadTooLarge, ""),
        (StatusCode::BadRequest, "MessageTooLarge"),
    ] {
        let (kind, hint) = classify(status, code, false);
        assert_eq!(kind, K::MessageTooLarge, "{status} {code}");
        assert!(hint.contains("64 KiB"), "{hint}");
    }
    let refused = StoreError::from(QueueError::new(K::MessageTooLarge, "m"));
    assert!(refused.is_permanent());
    assert_eq!(refused.service, "queue");
    // Other answers keep their kinds, and may pass.
    for (status, code, kind) in [
        (StatusCode::NotFound, "QueueNotFound", K::QueueNotFound),
        (StatusCode::NotFound, "", K::QueueNotFound),
        (StatusCode::NotFound, "MessageNotFound", K::MessageNotFound),
        (
            StatusCode::BadRequest,
            "PopReceiptMismatch",
            K::PopReceiptMismatch,
        ),
        (StatusCode::Forbidden, "AuthenticationFailed", K::Auth),
        (StatusCode::BadRequest, "InvalidXmlDocument", K::Service),
        (StatusCode::TooManyRequests, "", K::Service),
        (StatusCode::ServiceUnavailable, "ServerBusy", K::Service),
    ] {
        assert_eq!(classify(status, code, false).0, kind, "{status} {code}");
        assert!(!StoreError::from(QueueError::new(kind, "m")).is_permanent());
    }
}

#[tokio::test]
async fn a_job_message_over_the_size_limit_is_refused_not_retried() {
    let too_large = Answer::Send(
        b"HTTP/1.1 413 Request Body Too Large\r\nconnection: close\r\n\
          x-ms-error-code: RequestBodyTooLarge\r\ncontent-length: 0\r\n\r\n",
    );
    let (endpoint, accepted) = scripted_server(vec![too_large]);
    let queue = queue_at(&endpoint);
    let err = queue
        .enqueue(Job::new("r", "b", "n"), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{}", err.message);
    assert_eq!(err.service, "queue");
    assert!(
        err.message
            .starts_with("the job message is over Queue Storage's 64 KiB message limit")
            && err.message.contains("send failed: 413 RequestBodyTooLarge"),
        "{}",
        err.message
    );
    assert_eq!(connections(&accepted), 1);
    // Too large to send at all: the same refusal, without a request.
    let job = Job::new("r", "b", &"n".repeat(MAX_MESSAGE_BYTES));
    let err = queue.enqueue(job, Duration::ZERO).await.unwrap_err();
    assert!(err.is_permanent(), "{}", err.message);
    assert!(
        err.message
            .starts_with("the job message is over Queue Storage's 64 KiB message limit"),
        "{}",
        err.message
    );
    assert_eq!(connections(&accepted), 1);
}
