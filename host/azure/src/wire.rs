//! Queue message text: upstream's job payload, base64-encoded.
//!
//! `@flowcraft/azure-adapter` sends standard base64 (with padding) of the
//! UTF-8 JSON `{"runId":…,"blueprintId":…,"nodeId":…}` — that key order, no
//! whitespace. [`encode`] produces exactly that, plus our optional `attempt`,
//! `signal` and `traceparent` (the W3C trace context of the span that
//! scheduled the job) fields only when they are set (upstream workers ignore
//! unknown fields). [`decode`] accepts base64 JSON and plain JSON (the Azure
//! guide's own snippet sends plain JSON), ignores unknown fields such as
//! `isLastAttempt`, and says which step failed.
//!
//! A worker that runs several jobs of one run under one message (a fan-out
//! it took on itself) rewrites that message into a *group*: the first job's
//! payload plus `"also": [node ids]`, the run's further jobs, and
//! `"lease"`, the id of the message it rewrote ([`encode_group`],
//! [`decode_group`]). A group message is only ever
//! written by the worker holding it, never sent, and not in a fleet shared
//! with upstream workers, which would run only `nodeId`.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use flowcraft_core::store::{Job, JobSignal};
use flowcraft_core::telemetry::TraceParent;
use serde::Deserialize;
use thiserror::Error;

/// Why a message text is not a job.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("message text is empty")]
    Empty,
    #[error("message text is neither JSON nor base64: {0}")]
    Base64(String),
    #[error("base64-decoded message is not UTF-8: {0}")]
    Utf8(String),
    #[error("message JSON is invalid: {0}")]
    Json(String),
    #[error("message JSON is not a job: {0}")]
    NotAJob(String),
}

/// Standard alphabet; padding optional on input (some producers strip it).
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The message text for `job`.
pub fn encode(job: &Job) -> String {
    base64::engine::general_purpose::STANDARD.encode(to_json(job))
}

pub use flowcraft_worker::Group;

/// The message text standing for `jobs` (at least one): `jobs[0]` with the
/// node ids of the rest as `also`, and the id of the message it is written
/// into as `lease`. The rest must be first attempts of `jobs[0]`'s run
/// without a signal: that is all a group can say of them.
pub fn encode_group(jobs: &[Job], lease: Option<&str>) -> String {
    #[derive(serde::Serialize)]
    struct Payload<'a> {
        #[serde(flatten)]
        first: &'a Job,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        also: Vec<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        lease: Option<&'a str>,
    }
    let (first, rest) = jobs.split_first().expect("a group has a first job");
    debug_assert!(rest.iter().all(|job| job.run_id == first.run_id
        && job.blueprint_id == first.blueprint_id
        && job.attempt.is_none()
        && job.signal.is_none()));
    let payload = Payload {
        first,
        also: rest.iter().map(|job| job.node_id.as_str()).collect(),
        lease,
    };
    let json = serde_json::to_string(&payload).expect("a Job always serializes");
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// What a message text stands for (see [`encode_group`]).
pub fn decode_group(text: &str) -> Result<Group, DecodeError> {
    let (job, payload) = decode_payload(text)?;
    let mut jobs = Vec::with_capacity(1 + payload.also.len());
    jobs.push(job);
    for node in payload.also {
        if node.is_empty() {
            return Err(DecodeError::NotAJob("an `also` node id is empty".into()));
        }
        jobs.push(Job::new(&jobs[0].run_id, &jobs[0].blueprint_id, &node));
    }
    Ok(Group {
        jobs,
        lease: payload.lease,
    })
}

/// The job's JSON in upstream's key order (`runId`, `blueprintId`, `nodeId`,
/// then our optional fields).
pub fn to_json(job: &Job) -> String {
    // `Job`'s field order is the wire order; the serializer cannot fail on it.
    serde_json::to_string(job).expect("a Job always serializes")
}

/// The job in a message text (base64 JSON or plain JSON).
pub fn decode(text: &str) -> Result<Job, DecodeError> {
    decode_payload(text).map(|(job, _)| job)
}

/// The job in a message text and what else the text says of its group.
fn decode_payload(text: &str) -> Result<(Job, GroupFields), DecodeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    if text.starts_with('{') {
        return parse_job(text);
    }
    let bytes = LENIENT_STANDARD
        .decode(text)
        .map_err(|e| DecodeError::Base64(e.to_string()))?;
    let json = String::from_utf8(bytes).map_err(|e| DecodeError::Utf8(e.to_string()))?;
    parse_job(json.trim())
}

/// What we read from a payload: upstream's fields strictly, ours leniently
/// where upstream uses the same name for something else (`attempt` is
/// "logging only" upstream and may not be a small integer).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    run_id: String,
    blueprint_id: String,
    node_id: String,
    #[serde(default)]
    attempt: Option<serde_json::Value>,
    #[serde(default)]
    signal: Option<JobSignal>,
    /// Ours only; one that does not parse is ignored (the job then joins
    /// its run's root span).
    #[serde(default)]
    traceparent: Option<serde_json::Value>,
    #[serde(flatten)]
    group: GroupFields,
}

/// A group message's fields beyond a job's.
#[derive(Deserialize)]
struct GroupFields {
    #[serde(default)]
    also: Vec<String>,
    #[serde(default)]
    lease: Option<String>,
}

fn parse_job(json: &str) -> Result<(Job, GroupFields), DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(DecodeError::NotAJob(format!(
            "expected an object, found {}",
            kind_of(&value)
        )));
    }
    let payload: Payload =
        serde_json::from_value(value).map_err(|e| DecodeError::NotAJob(e.to_string()))?;
    for (name, field) in [
        ("runId", &payload.run_id),
        ("blueprintId", &payload.blueprint_id),
        ("nodeId", &payload.node_id),
    ] {
        if field.is_empty() {
            return Err(DecodeError::NotAJob(format!("{name} is empty")));
        }
    }
    let attempt = payload
        .attempt
        .and_then(|a| a.as_u64())
        .and_then(|a| u32::try_from(a).ok())
        .filter(|a| *a >= 1);
    let job = Job {
        run_id: payload.run_id,
        blueprint_id: payload.blueprint_id,
        node_id: payload.node_id,
        attempt,
        signal: payload.signal,
        traceparent: payload
            .traceparent
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .and_then(TraceParent::parse),
    };
    Ok((job, payload.group))
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FC-51's exact message text.
    const FC51: &str = "eyJydW5JZCI6InJ1bi1henVyZS00NTYiLCJibHVlcHJpbnRJZCI6ImJwLWF6dXJlIiwibm9kZUlkIjoibm9kZS1henVyZS1zdGFydCJ9";

    #[test]
    fn fc51_round_trips_byte_for_byte() {
        let job = Job::new("run-azure-456", "bp-azure", "node-azure-start");
        assert_eq!(encode(&job), FC51);
        assert_eq!(decode(FC51).unwrap(), job);
        assert_eq!(encode(&decode(FC51).unwrap()), FC51);
    }

    #[test]
    fn optional_fields_follow_upstreams_and_only_when_set() {
        let mut job = Job::new("r", "b", "n");
        job.attempt = Some(2);
        job.signal = Some(JobSignal::Wake);
        assert_eq!(
            to_json(&job),
            r#"{"runId":"r","blueprintId":"b","nodeId":"n","attempt":2,"signal":"wake"}"#
        );
        assert_eq!(decode(&encode(&job)).unwrap(), job);
    }

    #[test]
    fn a_traceparent_follows_upstreams_fields_and_a_malformed_one_is_ignored() {
        let mut job = Job::new("r", "b", "n");
        let trace = TraceParent::new_trace();
        job.traceparent = Some(trace);
        assert_eq!(
            to_json(&job),
            format!(r#"{{"runId":"r","blueprintId":"b","nodeId":"n","traceparent":"{trace}"}}"#)
        );
        assert_eq!(decode(&encode(&job)).unwrap(), job);
        for malformed in [
            r#""00-zz-1-01""#,
            "7",
            r#""00-00000000000000000000000000000000-0000000000000001-01""#,
        ] {
            let text = format!(
                r#"{{"runId":"r","blueprintId":"b","nodeId":"n","traceparent":{malformed}}}"#
            );
            assert_eq!(
                decode(&text).unwrap(),
                Job::new("r", "b", "n"),
                "{malformed}"
            );
        }
    }

    #[test]
    fn plain_json_and_unknown_fields_are_accepted() {
        let job = decode(
            r#" {"runId":"r","blueprintId":"b","nodeId":"n","isLastAttempt":false,"extra":{"x":1}} "#,
        )
        .unwrap();
        assert_eq!(job, Job::new("r", "b", "n"));
        // Unpadded base64 too.
        let unpadded = FC51.trim_end_matches('=');
        assert_eq!(decode(unpadded).unwrap().run_id, "run-azure-456");
    }

    #[test]
    fn upstream_attempt_values_that_are_not_ours_are_ignored() {
        for attempt in ["1.5", "-1", "0", "\"3\"", "null", "99999999999"] {
            let text =
                format!(r#"{{"runId":"r","blueprintId":"b","nodeId":"n","attempt":{attempt}}}"#);
            assert_eq!(decode(&text).unwrap().attempt, None, "attempt {attempt}");
        }
    }

    #[test]
    fn a_group_names_its_further_nodes_and_its_message_after_upstreams_fields() {
        let jobs = vec![
            Job::new("r", "b", "B1"),
            Job::new("r", "b", "B2"),
            Job::new("r", "b", "B3"),
        ];
        let text = encode_group(&jobs, Some("m-1"));
        let json = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"runId":"r","blueprintId":"b","nodeId":"B1","also":["B2","B3"],"lease":"m-1"}"#
        );
        let group = decode_group(&text).unwrap();
        assert_eq!(group.jobs, jobs);
        assert_eq!(group.lease.as_deref(), Some("m-1"));
        // A worker that knows nothing of groups sees the first job.
        assert_eq!(decode(&text).unwrap(), jobs[0]);
        // A group of one without a lease is a plain message, and back.
        assert_eq!(encode_group(&jobs[..1], None), encode(&jobs[0]));
        let plain = decode_group(FC51).unwrap();
        assert_eq!(
            (plain.jobs, plain.lease),
            (vec![decode(FC51).unwrap()], None)
        );
        let empty = decode_group(r#"{"runId":"r","blueprintId":"b","nodeId":"n","also":[""]}"#);
        assert!(matches!(empty, Err(DecodeError::NotAJob(_))));
    }

    #[test]
    fn errors_say_which_step_failed() {
        assert_eq!(decode("  "), Err(DecodeError::Empty));
        assert!(matches!(decode("not base64!"), Err(DecodeError::Base64(_))));
        let latin1 = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b'{']);
        assert!(matches!(decode(&latin1), Err(DecodeError::Utf8(_))));
        let not_json = base64::engine::general_purpose::STANDARD.encode("hello");
        assert!(matches!(decode(&not_json), Err(DecodeError::Json(_))));
        let array = base64::engine::general_purpose::STANDARD.encode("[1,2]");
        assert_eq!(
            decode(&array).unwrap_err().to_string(),
            "message JSON is not a job: expected an object, found an array"
        );
        let missing = decode(r#"{"runId":"r","blueprintId":"b"}"#).unwrap_err();
        assert!(
            missing.to_string().contains("missing field `nodeId`"),
            "{missing}"
        );
        let empty = decode(r#"{"runId":"","blueprintId":"b","nodeId":"n"}"#).unwrap_err();
        assert_eq!(
            empty.to_string(),
            "message JSON is not a job: runId is empty"
        );
        let bad_signal = decode(r#"{"runId":"r","blueprintId":"b","nodeId":"n","signal":"bogus"}"#);
        assert!(matches!(bad_signal, Err(DecodeError::NotAJob(_))));
    }

    proptest::proptest! {
        /// Any queue message text decodes to jobs or to an error naming
        /// what is wrong; nothing panics, however deep or odd the JSON.
        #[test]
        fn any_message_text_decodes_or_is_refused(
            text in "\\PC{0,64}",
            json in "[\\[\\]{}\",:a-z0-9 ]{0,64}",
            depth in 0usize..400,
        ) {
            let nested = format!("{}{}{}", "[".repeat(depth), json, "]".repeat(depth));
            let encoded = base64::engine::general_purpose::STANDARD.encode(&nested);
            for candidate in [&text, &json, &nested, &encoded] {
                if let Err(error) = decode_group(candidate) {
                    proptest::prop_assert!(!error.to_string().is_empty());
                }
            }
        }
    }
}
