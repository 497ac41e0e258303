//! The engine's bounds: every number a blueprint or a node hands the engine
//! that reaches a `Duration`, a date, a count or an allocation is checked
//! here, once, against a documented range (README, "Limits").
//!
//! Each check answers a [`LimitError`] naming the field, the value and the
//! allowed range, so that `validate` can report it for a blueprint and the
//! engine can fail a node with the same words when the value only appears at
//! run time (a `sleep` duration from an input, a dynamic node's config).
//! Nothing here panics on any input: conversions to [`Duration`] go through
//! `try_from_secs_f64` after the range check, and growth (exponential retry
//! delays) saturates at the documented maximum.

use std::fmt;
use std::time::Duration;

use serde_json::{Number, Value};
use thiserror::Error;

use crate::blueprint::NodeConfig;

/// Deepest nesting of arrays and objects a JSON value may have where it
/// crosses into the engine (context writes, outputs, params, dynamic nodes).
/// Below serde_json's parser limit of 128, so that a value can be wrapped
/// into the documents that carry it (a status's `finalStatus`, a store's
/// patch) and still be read back.
pub const MAX_JSON_DEPTH: usize = 64;

/// Largest `config.timeout`: one day, in milliseconds.
pub const MAX_TIMEOUT_MS: f64 = 86_400_000.0;
/// Largest `config.retryDelay`: one day, in milliseconds.
pub const MAX_RETRY_DELAY_MS: f64 = 86_400_000.0;
/// Largest `config.maxRetries` (total attempts).
pub const MAX_ATTEMPTS: u32 = 1_000;
/// Longest `sleep`: 365 days.
pub const MAX_SLEEP: Duration = Duration::from_secs(365 * 86_400);
/// Largest `metadata.stepLimit`.
pub const MAX_STEP_LIMIT: u64 = 1_000_000;
/// Largest `params.chunkSize` of a `batch-scatter` node.
pub const MAX_CHUNK_SIZE: u64 = 100_000;
/// Subflow nesting allowed by default (a run started by a run started by …).
pub const DEFAULT_SUBFLOW_DEPTH: u32 = 32;
/// Largest `metadata.maxSubflowDepth`.
pub const MAX_SUBFLOW_DEPTH: u32 = 256;
/// Child runs a run and all its descendants may start, by default.
pub const DEFAULT_SUBFLOW_RUNS: u32 = 1_000;
/// Largest `metadata.maxSubflowRuns`.
pub const MAX_SUBFLOW_RUNS: u32 = 100_000;
/// Dynamic nodes one node call may add to its run.
pub const MAX_DYNAMIC_NODES_PER_CALL: usize = 1_000;
/// Nodes of one blueprint.
pub const MAX_NODES: usize = 10_000;
/// Edges of one blueprint.
pub const MAX_EDGES: usize = 50_000;
/// Bytes of context writes (keys and JSON values) one node call may make.
pub const DEFAULT_WRITE_BYTES: usize = 1 << 20;
/// Bytes of one run's context: Cosmos DB's item limit, applied to every store.
pub const MAX_CONTEXT_BYTES: usize = 2 << 20;

/// A value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} {value} is out of range; allowed: {allowed}")]
pub struct LimitError {
    /// The field as a blueprint names it: `config.timeout`, `params.duration`.
    pub field: String,
    /// The value as written.
    pub value: String,
    /// The allowed range, in words.
    pub allowed: String,
}

impl LimitError {
    fn new(field: &str, value: impl fmt::Display, allowed: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}

/// A millisecond count as a [`Duration`]; the caller has checked that it is
/// finite, non-negative and within a documented maximum.
fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::ZERO)
}

/// A node's `config` numbers, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// Per-attempt time limit (`None`: the runner's default).
    pub timeout: Option<Duration>,
    /// Total attempts.
    pub attempts: u32,
    /// Delay before the second attempt.
    pub retry_delay: Duration,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            timeout: None,
            attempts: 1,
            retry_delay: Duration::ZERO,
        }
    }
}

impl NodeLimits {
    /// The checked numbers of `config` (defaults when absent).
    pub fn of(config: Option<&NodeConfig>) -> Result<Self, LimitError> {
        let Some(config) = config else {
            return Ok(Self::default());
        };
        Ok(Self {
            timeout: timeout(config.timeout.as_ref())?,
            attempts: attempts(config.max_retries.as_ref())?,
            retry_delay: retry_delay(config.retry_delay.as_ref())?,
        })
    }

    /// These limits asking for no more than `ceiling`: a shorter or equal
    /// time limit (`default_timeout` standing for an absent one), no more
    /// attempts and no longer delays.
    pub fn within(self, ceiling: &NodeLimits, default_timeout: Duration) -> Self {
        let most = ceiling.timeout.unwrap_or(default_timeout);
        Self {
            timeout: Some(self.timeout.unwrap_or(default_timeout).min(most)),
            attempts: self.attempts.min(ceiling.attempts),
            retry_delay: self.retry_delay.min(ceiling.retry_delay),
        }
    }

    /// Writes these limits into `config` as milliseconds and attempts.
    pub fn write_to(&self, config: &mut NodeConfig) {
        let ms = |duration: Duration| {
            Number::from(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
        };
        config.timeout = self.timeout.map(ms);
        config.max_retries = Some(Number::from(self.attempts));
        config.retry_delay = Some(ms(self.retry_delay));
    }
}

/// `number` as a duration of milliseconds in `range`, else the error for
/// `field` that states the range (`allowed`).
fn millis_in(
    field: &str,
    number: &Number,
    range: std::ops::RangeInclusive<f64>,
    allowed: &str,
) -> Result<Duration, LimitError> {
    match number.as_f64() {
        Some(ms) if range.contains(&ms) => Ok(millis(ms)),
        _ => Err(LimitError::new(field, number, allowed)),
    }
}

/// `config.timeout`: `None` when absent or 0 (the runner's default applies,
/// as upstream ignores a falsy timeout); else 1 ≤ ms ≤ [`MAX_TIMEOUT_MS`].
pub fn timeout(value: Option<&Number>) -> Result<Option<Duration>, LimitError> {
    match value {
        None => Ok(None),
        Some(number) if number.as_f64() == Some(0.0) => Ok(None),
        Some(number) => millis_in(
            "config.timeout",
            number,
            1.0..=MAX_TIMEOUT_MS,
            &format!("milliseconds from 1 to {MAX_TIMEOUT_MS} (one day), or 0 for the default"),
        )
        .map(Some),
    }
}

/// `config.retryDelay`: 0 ≤ ms ≤ [`MAX_RETRY_DELAY_MS`] (absent: 0).
pub fn retry_delay(value: Option<&Number>) -> Result<Duration, LimitError> {
    let Some(number) = value else {
        return Ok(Duration::ZERO);
    };
    millis_in(
        "config.retryDelay",
        number,
        0.0..=MAX_RETRY_DELAY_MS,
        &format!("milliseconds from 0 to {MAX_RETRY_DELAY_MS} (one day)"),
    )
}

/// `config.maxRetries` as total attempts: values below 1 mean 1 (upstream),
/// fractions are rounded down, more than [`MAX_ATTEMPTS`] is refused.
pub fn attempts(value: Option<&Number>) -> Result<u32, LimitError> {
    let Some(number) = value else {
        return Ok(1);
    };
    match number.as_f64().map(f64::floor) {
        Some(count) if count < 1.0 => Ok(1),
        Some(count) if count <= f64::from(MAX_ATTEMPTS) => Ok(count as u32),
        _ => Err(LimitError::new(
            "config.maxRetries",
            number,
            format!("a number of attempts up to {MAX_ATTEMPTS}"),
        )),
    }
}

/// The delay before attempt `attempt + 1`: `base` doubled for each attempt
/// after the first, never more than `cap`.
pub fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let factor = 2f64.powi(attempt.saturating_sub(1).min(1_000) as i32);
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).map_or(cap, |delay| delay.min(cap))
}

/// A `sleep` node's `params.duration`: milliseconds (a number ≥ 0) or a
/// string of digits followed by `s`, `m`, `h` or `d`; at most [`MAX_SLEEP`].
pub fn sleep_duration(value: Option<&Value>) -> Result<Duration, LimitError> {
    let allowed = format!(
        "milliseconds (a number ≥ 0) or a string like \"30s\", \"5m\", \"2h\", \"1d\", up to {} days",
        MAX_SLEEP.as_secs() / 86_400
    );
    let invalid = || {
        let shown = value.map_or_else(|| "(missing)".to_owned(), Value::to_string);
        LimitError::new("params.duration", shown, allowed.clone())
    };
    let duration = match value {
        Some(Value::Number(number)) => number
            .as_f64()
            .filter(|ms| (0.0..=MAX_SLEEP.as_millis() as f64).contains(ms))
            .map(millis),
        Some(Value::String(text)) => duration_text(text),
        _ => None,
    };
    duration.filter(|d| *d <= MAX_SLEEP).ok_or_else(invalid)
}

/// `"<digits><s|m|h|d>"` as a duration, `None` if malformed or overflowing.
fn duration_text(text: &str) -> Option<Duration> {
    let unit_at = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at_checked(unit_at)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    let amount: u64 = digits.parse().ok()?;
    amount
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
}

/// `value` as a whole number from 1 to `max`.
fn whole_number(field: &str, value: &Value, max: u64) -> Result<u64, LimitError> {
    // `60.0` is a whole number too, as in the JavaScript that writes blueprints.
    let whole = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|number| number.fract() == 0.0 && *number >= 0.0 && *number <= max as f64)
            .map(|number| number as u64)
    });
    whole
        .filter(|number| (1..=max).contains(number))
        .ok_or_else(|| LimitError::new(field, value, format!("a whole number from 1 to {max}")))
}

/// `metadata.stepLimit`: 1 to [`MAX_STEP_LIMIT`] node executions.
pub fn step_limit(value: &Value) -> Result<u64, LimitError> {
    whole_number("metadata.stepLimit", value, MAX_STEP_LIMIT)
}

/// `params.chunkSize` of a `batch-scatter` node: 1 to [`MAX_CHUNK_SIZE`].
pub fn chunk_size(value: &Value) -> Result<u64, LimitError> {
    whole_number("params.chunkSize", value, MAX_CHUNK_SIZE)
}

/// `metadata.maxSubflowDepth`: 1 to [`MAX_SUBFLOW_DEPTH`].
pub fn subflow_depth(value: &Value) -> Result<u32, LimitError> {
    whole_number(
        "metadata.maxSubflowDepth",
        value,
        u64::from(MAX_SUBFLOW_DEPTH),
    )
    .map(|depth| depth as u32)
}

/// `metadata.maxSubflowRuns`: 1 to [`MAX_SUBFLOW_RUNS`].
pub fn subflow_runs(value: &Value) -> Result<u32, LimitError> {
    whole_number(
        "metadata.maxSubflowRuns",
        value,
        u64::from(MAX_SUBFLOW_RUNS),
    )
    .map(|runs| runs as u32)
}

/// How deeply arrays and objects nest in the JSON text `json` (0 for a
/// scalar). Reads the text once without building anything, so it is safe
/// to run on untrusted input of any depth; the text is assumed to be JSON
/// (brackets inside strings are skipped).
pub fn json_depth(json: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Refuses JSON text nested deeper than [`MAX_JSON_DEPTH`]; `what` names
/// the value in the message (`the output`, `context key 'x'`).
pub fn check_json_depth(what: &str, json: &str) -> Result<(), LimitError> {
    let depth = json_depth(json);
    if depth <= MAX_JSON_DEPTH {
        return Ok(());
    }
    Err(LimitError::new(
        &format!("the nesting depth of {what}"),
        depth,
        format!("at most {MAX_JSON_DEPTH} levels of arrays and objects"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn number(value: Value) -> Number {
        match value {
            Value::Number(number) => number,
            other => panic!("not a number: {other}"),
        }
    }

    #[test]
    fn timeouts_are_positive_and_at_most_a_day() {
        assert_eq!(timeout(None), Ok(None));
        assert_eq!(timeout(Some(&number(json!(0)))), Ok(None));
        assert_eq!(
            timeout(Some(&number(json!(1500)))),
            Ok(Some(Duration::from_millis(1500)))
        );
        for bad in [json!(1e300), json!(-1), json!(86_400_001)] {
            let error = timeout(Some(&number(bad.clone()))).unwrap_err();
            assert_eq!(error.field, "config.timeout");
            assert_eq!(error.value, bad.to_string());
        }
    }

    #[test]
    fn attempts_below_one_mean_one_and_too_many_are_refused() {
        assert_eq!(attempts(None), Ok(1));
        assert_eq!(attempts(Some(&number(json!(-3)))), Ok(1));
        assert_eq!(attempts(Some(&number(json!(2.7)))), Ok(2));
        assert_eq!(attempts(Some(&number(json!(1000)))), Ok(1000));
        assert!(attempts(Some(&number(json!(1_000_000)))).is_err());
        assert!(attempts(Some(&number(json!(1e308)))).is_err());
    }

    #[test]
    fn dynamic_limits_never_exceed_their_ceiling() {
        let spawner = NodeLimits {
            timeout: Some(Duration::from_secs(5)),
            attempts: 3,
            retry_delay: Duration::from_millis(100),
        };
        let greedy = NodeLimits {
            timeout: Some(Duration::from_secs(3_600)),
            attempts: 1_000,
            retry_delay: Duration::from_secs(60),
        };
        let default = Duration::from_secs(30);
        assert_eq!(greedy.within(&spawner, default), spawner);
        let modest = NodeLimits::default().within(&NodeLimits::default(), default);
        assert_eq!(modest.timeout, Some(default));
        let mut config = NodeConfig::default();
        greedy
            .within(&NodeLimits::default(), default)
            .write_to(&mut config);
        assert_eq!(
            NodeLimits::of(Some(&config)).unwrap(),
            NodeLimits {
                timeout: Some(default),
                attempts: 1,
                retry_delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn retry_delays_and_backoff_never_overflow() {
        assert!(retry_delay(Some(&number(json!(1e308)))).is_err());
        let base = retry_delay(Some(&number(json!(86_400_000)))).unwrap();
        let cap = Duration::from_secs(3_600);
        assert_eq!(backoff(base, u32::MAX, cap), cap);
        assert_eq!(
            backoff(Duration::from_millis(100), 1, cap),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff(Duration::from_millis(100), 4, cap),
            Duration::from_millis(800)
        );
        assert_eq!(backoff(Duration::ZERO, 1_000_000, cap), Duration::ZERO);
    }

    #[test]
    fn sleep_durations_are_bounded() {
        assert_eq!(
            sleep_duration(Some(&json!("2s"))),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(
            sleep_duration(Some(&json!(1500))),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(sleep_duration(Some(&json!("365d"))), Ok(MAX_SLEEP));
        for bad in [
            json!("99999999999d"),
            json!("366d"),
            json!("99999999999999999999999s"),
            json!(1e300),
            json!(-1),
            json!("soon"),
            json!("5"),
            json!("s"),
            json!(""),
            json!("1w"),
            json!("é"),
            json!(null),
        ] {
            let error = sleep_duration(Some(&bad)).unwrap_err();
            assert_eq!(error.field, "params.duration", "{bad}");
        }
        assert!(sleep_duration(None).is_err());
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a": [1, {"b": "[[[["}]}"#), 3);
        assert_eq!(json_depth(r#"["\"[", ["x"]]"#), 2);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(json_depth(&deep), 200);
        assert!(check_json_depth("the output", &deep).is_err());
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(check_json_depth("the output", &ok).is_ok());
    }

    proptest! {
        #[test]
        fn depth_matches_serde_for_generated_values(depth in 0usize..100, text in "[a-z\\[\\]{}\"]{0,8}") {
            let mut value = json!(text);
            for level in 0..depth {
                value = if level % 2 == 0 { json!([value]) } else { json!({"k": value}) };
            }
            let json = serde_json::to_string(&value).unwrap();
            prop_assert_eq!(json_depth(&json), depth);
        }

        #[test]
        fn no_duration_input_panics(ms in proptest::num::f64::ANY, text in "\\PC{0,24}") {
            if let Some(number) = Number::from_f64(ms) {
                let _ = timeout(Some(&number));
                let _ = retry_delay(Some(&number));
                let _ = attempts(Some(&number));
                let _ = sleep_duration(Some(&Value::Number(number)));
            }
            let _ = sleep_duration(Some(&Value::String(text)));
        }
    }
}
