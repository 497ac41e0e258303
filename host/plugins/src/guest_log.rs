//! Guest log records are data, not a channel into the host's log.
//!
//! - **Escaped.** A record's message (and the guest's captured stdout and
//!   stderr) is printed with every character that Rust's
//!   [`char::escape_debug`] escapes shown escaped — control characters
//!   (`\n`, `\r`, `\t`, `\u{1b}`, C1 controls), line and paragraph
//!   separators, bidirectional and other invisible format characters — and
//!   backslashes doubled; quotes stay as they are. A guest therefore cannot
//!   start a line of its own, forge a record or send terminal escape
//!   sequences.
//! - **Fields are a JSON object or a string.** `fields` that parse as a JSON
//!   object are printed as compact JSON, re-serialized by the host (so every
//!   string in them is JSON-escaped, and the invisible characters JSON
//!   leaves alone are written as `\uXXXX` too); anything else (not JSON, not
//!   an object, longer than [`LOG_MESSAGE_BYTES`], nested deeper than
//!   [`MAX_JSON_DEPTH`]) is printed as an escaped string after a note saying
//!   why.
//! - **Budgeted.** Messages and fields longer than [`LOG_MESSAGE_BYTES`] are
//!   cut with a note. A call emits at most [`LOG_LINES_PER_CALL`] records and
//!   [`LOG_BYTES_PER_CALL`] bytes; all calls of a run in this process at most
//!   [`LOG_LINES_PER_RUN`] and [`LOG_BYTES_PER_RUN`] (remembered for the
//!   latest [`LOG_RUNS_TRACKED`] runs). Records over a budget are dropped and
//!   counted; [`CallLog::report_dropped`] emits one warning per call saying
//!   how many.
//!
//! That a log call never blocks the guest is the process's part: the CLI
//! writes its log through a bounded, lossy, non-blocking queue.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use flowcraft_core::limits::{MAX_JSON_DEPTH, json_depth};
use serde_json::Value;

use crate::config::{
    LOG_BYTES_PER_CALL, LOG_BYTES_PER_RUN, LOG_LINES_PER_CALL, LOG_LINES_PER_RUN,
    LOG_MESSAGE_BYTES, LOG_RUNS_TRACKED,
};
use crate::sandbox::CallLabels;

/// The tracing target of everything a guest logs or prints.
pub(crate) const GUEST_TARGET: &str = flowcraft_core::telemetry::GUEST_LOG_TARGET;

/// `text` with the characters described in the module docs escaped, cut to
/// at most `max_bytes` (plus a note saying how many bytes of `text` were
/// left out).
pub(crate) fn escape(text: &str, max_bytes: usize) -> String {
    let mut escaped = String::with_capacity(text.len().min(max_bytes));
    for (at, c) in text.char_indices() {
        let before = escaped.len();
        match c {
            '"' | '\'' => escaped.push(c),
            _ => escaped.extend(c.escape_debug()),
        }
        if escaped.len() > max_bytes {
            escaped.truncate(before);
            escaped.push_str(&format!(" … [{} more bytes cut]", text.len() - at));
            break;
        }
    }
    escaped
}

/// Whether `escape_debug` would escape `c` for a reason other than quoting.
fn invisible(c: char) -> bool {
    !matches!(c, '"' | '\'' | '\\') && c.escape_debug().next() == Some('\\')
}

/// How a record's `fields` are printed: compact JSON when they are a JSON
/// object of acceptable size and depth, else an escaped string after a note.
pub(crate) fn render_fields(fields: &str) -> String {
    let problem = if fields.len() > LOG_MESSAGE_BYTES {
        format!("longer than {LOG_MESSAGE_BYTES} bytes")
    } else if json_depth(fields) > MAX_JSON_DEPTH {
        format!("nested deeper than {MAX_JSON_DEPTH} levels")
    } else {
        match serde_json::from_str::<Value>(fields) {
            Ok(object @ Value::Object(_)) => return compact_json(&object),
            Ok(_) => "not a JSON object".to_owned(),
            Err(_) => "not JSON".to_owned(),
        }
    };
    format!("({problem}) {}", escape(fields, LOG_MESSAGE_BYTES))
}

/// `value` as compact JSON with the characters JSON leaves as they are but
/// a terminal or reader would not show (DEL, C1 controls, invisible format
/// characters) written as `\uXXXX` escapes. Outside strings JSON text is
/// plain ASCII, so only characters inside strings are affected.
fn compact_json(value: &Value) -> String {
    let json = value.to_string();
    if !json.chars().any(invisible) {
        return json;
    }
    let mut escaped = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if invisible(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// What one record or line counts against the budgets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    lines: usize,
    bytes: usize,
}

impl Usage {
    /// Whether `self` plus one line of `bytes` stays within `lines`/`limit`.
    fn admits(&self, bytes: usize, lines: usize, limit: usize) -> bool {
        self.lines < lines && self.bytes + bytes <= limit
    }

    fn add(&mut self, bytes: usize) {
        self.lines += 1;
        self.bytes += bytes;
    }
}

/// Log usage per run across calls, for the per-run budget: a bounded map
/// that forgets the run that started logging longest ago.
#[derive(Default)]
pub(crate) struct RunLogBudgets {
    runs: Mutex<RunUsages>,
}

#[derive(Default)]
struct RunUsages {
    usage: HashMap<String, Usage>,
    /// Run ids in the order they first logged; the front is forgotten first.
    order: VecDeque<String>,
}

impl RunLogBudgets {
    /// Counts a record of `bytes` against `run_id`'s budget, or refuses it.
    fn admit(&self, run_id: &str, bytes: usize) -> bool {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(usage) = runs.usage.get_mut(run_id) {
            if !usage.admits(bytes, LOG_LINES_PER_RUN, LOG_BYTES_PER_RUN) {
                return false;
            }
            usage.add(bytes);
            return true;
        }
        if runs.order.len() >= LOG_RUNS_TRACKED
            && let Some(oldest) = runs.order.pop_front()
        {
            runs.usage.remove(&oldest);
        }
        let mut usage = Usage::default();
        usage.add(bytes);
        runs.usage.insert(run_id.to_owned(), usage);
        runs.order.push_back(run_id.to_owned());
        true
    }
}

/// Which budget refused a record first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Call,
    Run,
}

/// One call's log accounting.
pub(crate) struct CallLog {
    /// The per-run budgets and the run this call belongs to; `None` for a
    /// call outside a run (`describe()`), which has only the call budget.
    run: Option<(Arc<RunLogBudgets>, String)>,
    emitted: Usage,
    dropped: Usage,
    exhausted: Option<Budget>,
}

impl CallLog {
    /// Accounting for a call of `run_id`, charged to `budgets` as well.
    pub fn for_run(budgets: Arc<RunLogBudgets>, run_id: &str) -> Self {
        Self::new(Some((budgets, run_id.to_owned())))
    }

    /// Accounting with the call budget only.
    pub fn call_only() -> Self {
        Self::new(None)
    }

    fn new(run: Option<(Arc<RunLogBudgets>, String)>) -> Self {
        Self {
            run,
            emitted: Usage::default(),
            dropped: Usage::default(),
            exhausted: None,
        }
    }

    /// Whether the call budget has no line left: the record (of `size`
    /// bytes as the guest sent it) is counted as dropped without being
    /// rendered.
    pub fn drop_if_exhausted(&mut self, size: usize) -> bool {
        if self.emitted.lines < LOG_LINES_PER_CALL && self.exhausted != Some(Budget::Run) {
            return false;
        }
        self.exhausted.get_or_insert(Budget::Call);
        self.dropped.add(size);
        true
    }

    /// Counts a rendered record of `rendered` bytes (`size` bytes as the
    /// guest sent it) and says whether it may be emitted.
    pub fn admit(&mut self, rendered: usize, size: usize) -> bool {
        let refused = if !self
            .emitted
            .admits(rendered, LOG_LINES_PER_CALL, LOG_BYTES_PER_CALL)
        {
            Some(Budget::Call)
        } else if let Some((budgets, run_id)) = &self.run
            && !budgets.admit(run_id, rendered)
        {
            Some(Budget::Run)
        } else {
            None
        };
        match refused {
            None => {
                self.emitted.add(rendered);
                true
            }
            Some(budget) => {
                self.exhausted.get_or_insert(budget);
                self.dropped.add(size);
                false
            }
        }
    }

    /// Emits one warning when records of this call were dropped.
    pub fn report_dropped(&self, labels: &CallLabels) {
        let Some(budget) = self.exhausted else {
            return;
        };
        let budget = match budget {
            Budget::Call => {
                format!("{LOG_LINES_PER_CALL} records or {LOG_BYTES_PER_CALL} bytes per node call")
            }
            Budget::Run => {
                format!("{LOG_LINES_PER_RUN} records or {LOG_BYTES_PER_RUN} bytes per run")
            }
        };
        tracing::warn!(
            target: GUEST_TARGET,
            bundle = %labels.bundle,
            node_type = %labels.uses,
            run_id = %labels.run_id,
            node_id = %labels.node_id,
            "guest log budget of {budget} exceeded: dropped {} records ({} bytes) of this call",
            self.dropped.lines,
            self.dropped.bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        let forged = "done\n2025-01-01T00:00:00Z  INFO run finished\r\u{1b}]0;x\u{7}\u{9b}\u{202e}\u{2028}\\";
        let escaped = escape(forged, 1_000);
        assert_eq!(
            escaped,
            "done\\n2025-01-01T00:00:00Z  INFO run finished\\r\\u{1b}]0;x\\u{7}\\u{9b}\\u{202e}\\u{2028}\\\\"
        );
        assert!(escaped.chars().all(|c| !c.is_control()));
        assert_eq!(
            escape(r#"say "hi" it's ok: é ü 日本"#, 100),
            r#"say "hi" it's ok: é ü 日本"#
        );
    }

    #[test]
    fn long_text_is_cut_with_a_note() {
        let escaped = escape(&"é".repeat(5_000), 4_096);
        assert!(escaped.starts_with("éé"));
        assert!(
            escaped.ends_with(" … [5904 more bytes cut]"),
            "{}",
            &escaped[4_000..]
        );
        let kept = escaped.split(" … ").next().unwrap();
        assert_eq!(kept.len(), 4_096);
        // Escapes expand text; the cut applies to the escaped form.
        let escaped = escape(&"\n".repeat(3_000), 4_096);
        assert!(escaped.ends_with(" … [952 more bytes cut]"), "{escaped}");
    }

    #[test]
    fn fields_are_a_compact_json_object_or_an_escaped_string() {
        assert_eq!(render_fields(r#"{ "a" : [1, 2] }"#), r#"{"a":[1,2]}"#);
        assert_eq!(
            render_fields("{\"k\": \"a\\nb\\u001b[31m\u{9b}\u{202e}\u{7f}\"}"),
            r#"{"k":"a\nb\u001b[31m\u009b\u202e\u007f"}"#
        );
        assert_eq!(
            render_fields("not json\n\u{1b}[2J"),
            "(not JSON) not json\\n\\u{1b}[2J"
        );
        assert_eq!(render_fields("[1]"), "(not a JSON object) [1]");
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(render_fields(&deep).starts_with("(nested deeper than 64 levels) {"));
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(5_000));
        let rendered = render_fields(&long);
        assert!(rendered.starts_with("(longer than 4096 bytes) {\"a\""));
        assert!(rendered.ends_with("more bytes cut]"), "{rendered}");
    }

    #[test]
    fn characters_outside_the_basic_plane_use_surrogate_escapes() {
        // U+E0041 TAG LATIN CAPITAL LETTER A: an invisible format character.
        assert_eq!(
            render_fields("{\"k\":\"\u{e0041}\"}"),
            r#"{"k":"\udb40\udc41"}"#
        );
    }

    #[test]
    fn a_call_emits_at_most_its_line_and_byte_budget() {
        let mut log = CallLog::call_only();
        let mut emitted = 0;
        for _ in 0..LOG_LINES_PER_CALL + 500 {
            if !log.drop_if_exhausted(10) && log.admit(10, 10) {
                emitted += 1;
            }
        }
        assert_eq!(emitted, LOG_LINES_PER_CALL);
        assert_eq!(log.dropped.lines, 500);

        let mut log = CallLog::call_only();
        let record = LOG_MESSAGE_BYTES;
        let fitting = LOG_BYTES_PER_CALL / record;
        let admitted = (0..fitting + 3)
            .filter(|_| log.admit(record, record))
            .count();
        assert_eq!(admitted, fitting);
        assert_eq!(log.dropped.lines, 3);
    }

    #[test]
    fn the_run_budget_spans_calls_and_forgets_old_runs() {
        let budgets = Arc::new(RunLogBudgets::default());
        let calls = LOG_LINES_PER_RUN / LOG_LINES_PER_CALL;
        for _ in 0..calls {
            let mut log = CallLog::for_run(Arc::clone(&budgets), "run-1");
            assert!((0..LOG_LINES_PER_CALL).all(|_| log.admit(1, 1)));
        }
        let mut next = CallLog::for_run(Arc::clone(&budgets), "run-1");
        assert!(!next.admit(1, 1), "the run's budget is used up");
        assert!(
            next.drop_if_exhausted(1),
            "later records are dropped unseen"
        );
        assert_eq!(next.exhausted, Some(Budget::Run));
        let mut other = CallLog::for_run(Arc::clone(&budgets), "run-2");
        assert!(other.admit(1, 1), "another run has its own budget");

        for n in 0..LOG_RUNS_TRACKED {
            assert!(budgets.admit(&format!("filler-{n}"), 1));
        }
        let runs = budgets.runs.lock().unwrap();
        assert_eq!(runs.usage.len(), LOG_RUNS_TRACKED);
        assert!(
            !runs.usage.contains_key("run-1"),
            "the oldest run is forgotten"
        );
    }
}
