//! Guest logs are data: what the host's log shows when a guest forges log
//! lines, sends escape sequences and non-JSON fields, or floods the log.
//! Each test captures the formatted log output of its own thread (the tests
//! run on current-thread runtimes, and guest calls run on that thread).

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use common::*;
use flowcraft_core::runner::NodeCall;
use flowcraft_plugins::{
    LOG_BYTES_PER_CALL, LOG_LINES_PER_CALL, LOG_LINES_PER_RUN, LOG_MESSAGE_BYTES,
};
use serde_json::json;
use tracing::subscriber::DefaultGuard;

/// The formatted log output, as a terminal or log file would get it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures every record of this thread until the guard is dropped.
    fn start() -> (Self, DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::TRACE)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("the log is UTF-8")
    }

    /// Lines of the guest's records of node type `uses` (not the notice).
    fn records(&self, uses: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(&format!("node_type={uses}")))
            .filter(|line| !line.contains("guest log budget"))
            .map(str::to_owned)
            .collect()
    }

    fn notices(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains("guest log budget"))
            .map(str::to_owned)
            .collect()
    }
}

fn flood(lines: usize, bytes: usize) -> NodeCall {
    with_params("log-flood", json!({"lines": lines, "bytes": bytes}))
}

#[tokio::test]
async fn forged_lines_escape_sequences_and_bad_fields_stay_inside_one_record() {
    let (captured, _guard) = Captured::start();
    let (host, _dir, _) = hostile().await;
    assert_eq!(output(&host, call("log-forge")).await, None);

    let text = captured.text();
    assert!(
        !text.contains(['\u{1b}', '\u{7}']),
        "no escape or bell character reaches the log: {text:?}"
    );
    let records = captured.records("log-forge");
    assert_eq!(records.len(), 2, "{text}");
    let forged = &records[0];
    assert!(
        forged.contains(
            r"order 7 done\n2025-01-01T00:00:00.000000Z  INFO flowcraft: run finished status=completed\u{1b}[2J\u{1b}]0;pwned\u{7}"
        ),
        "{forged}"
    );
    assert!(
        forged.contains(r"fields=(not JSON) not json\nstatus=completed \u{1b}[31mred"),
        "{forged}"
    );
    assert!(
        !text.lines().any(|line| line.starts_with("2025-01-01")),
        "no line of the guest's making: {text}"
    );
    assert!(
        records[1].contains(r#"fields={"note":"not json\nstatus=completed \u001b[31mred"}"#),
        "object fields are re-serialized JSON: {}",
        records[1]
    );
    assert_eq!(captured.notices(), Vec::<String>::new());
}

#[tokio::test]
async fn a_call_emits_at_most_its_line_budget_and_one_notice() {
    let (captured, _guard) = Captured::start();
    let (host, _dir, _) = hostile().await;
    let lines = LOG_LINES_PER_CALL + 2_000;
    let logged = output(&host, flood(lines, 10)).await;
    assert_eq!(logged, Some(json!(lines)), "the guest was not stopped");

    assert_eq!(captured.records("log-flood").len(), LOG_LINES_PER_CALL);
    let notices = captured.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    // Each dropped record: a 10-byte message and `{}` as fields.
    assert!(
        notices[0].contains("dropped 2000 records (24000 bytes) of this call"),
        "{}",
        notices[0]
    );
    assert!(notices[0].contains("per node call"), "{}", notices[0]);
}

#[tokio::test]
async fn long_messages_are_cut_and_count_against_the_byte_budget() {
    let (captured, _guard) = Captured::start();
    let (host, _dir, _) = hostile().await;
    output(&host, flood(40, 50_000)).await;

    let records = captured.records("log-flood");
    // A cut message: its first LOG_MESSAGE_BYTES, then a note; fields `{}`.
    let cut = format!(" … [{} more bytes cut]", 50_000 - LOG_MESSAGE_BYTES);
    let record_bytes = LOG_MESSAGE_BYTES + cut.len() + 2;
    assert_eq!(records.len(), LOG_BYTES_PER_CALL / record_bytes);
    for record in &records {
        assert!(
            record.contains(&format!("{}{cut}", "x".repeat(100))),
            "{record}"
        );
        assert!(record.len() < LOG_MESSAGE_BYTES + 1_000, "{}", record.len());
    }
    let dropped = 40 - records.len();
    let notices = captured.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains(&format!("dropped {dropped} records")),
        "{}",
        notices[0]
    );
}

#[tokio::test]
async fn the_runs_calls_share_a_run_budget() {
    let (captured, _guard) = Captured::start();
    let (host, _dir, _) = hostile().await;
    let calls = LOG_LINES_PER_RUN / LOG_LINES_PER_CALL;
    for _ in 0..calls {
        output(&host, flood(LOG_LINES_PER_CALL, 1)).await;
    }
    assert_eq!(captured.records("log-flood").len(), LOG_LINES_PER_RUN);
    assert_eq!(captured.notices(), Vec::<String>::new());

    output(&host, flood(5, 1)).await;
    assert_eq!(captured.records("log-flood").len(), LOG_LINES_PER_RUN);
    let notices = captured.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("per run"), "{}", notices[0]);
    assert!(notices[0].contains("dropped 5 records"), "{}", notices[0]);

    let other_run = NodeCall {
        run_id: "run-2".into(),
        ..flood(5, 1)
    };
    output(&host, other_run).await;
    assert_eq!(
        captured.records("log-flood").len(),
        LOG_LINES_PER_RUN + 5,
        "another run has a budget of its own"
    );
}
