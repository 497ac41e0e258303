//! How a run ended, and the `finalStatus` document a status store writes for
//! it in upstream's shape (`@flowcraft/azure-adapter`'s status documents).
//! The engine hands a typed [`FinalOutcome`] to
//! [`StatusStore::publish_terminal`](crate::store::StatusStore::publish_terminal);
//! the stores that keep upstream's documents (the embedded one and Cosmos DB)
//! turn it into JSON text here. The final context's values go in as the text
//! they are kept as, never parsed into a tree.

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::context::{ContextMap, ContextValue, IDENTITY_KEYS};
use crate::progress::RunState;

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub enum FinalOutcome<'a> {
    /// Completed with this final context.
    Completed(&'a ContextMap),
    /// Completed, but the final context is too large to be copied into the
    /// status document: the note says why and where to read it.
    CompletedWithoutContext(&'a str),
    /// Failed, with the run's first error.
    Failed(&'a str),
    Cancelled,
}

impl FinalOutcome<'_> {
    /// The run state this outcome ends the run in.
    pub fn state(&self) -> RunState {
        match self {
            Self::Completed(_) | Self::CompletedWithoutContext(_) => RunState::Completed,
            Self::Failed(_) => RunState::Failed,
            Self::Cancelled => RunState::Cancelled,
        }
    }

    /// About how many bytes [`document`] makes of this outcome: the final
    /// context's JSON length (give or take escapes in its keys), which is
    /// what dominates. Callers budget memory with it before serializing.
    pub fn size(&self) -> usize {
        match self {
            Self::Completed(context) => serialized_size(&final_context(context)),
            Self::CompletedWithoutContext(note) | Self::Failed(note) => note.len(),
            Self::Cancelled => 0,
        }
    }
}

/// Upstream's `finalStatus` for `outcome`, as JSON text. A completed run's
/// payload carries its final context twice, as upstream's does: as
/// `payload.context` and as the text `serializedContext`.
pub fn document(outcome: &FinalOutcome<'_>) -> Box<RawValue> {
    match outcome {
        FinalOutcome::Completed(context) => {
            let context = final_context(context);
            let mut serialized = Vec::with_capacity(serialized_size(&context));
            // Writing raw JSON values and string keys into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut serialized, &context);
            raw_json(&FinalStatus::Completed {
                payload: CompletedPayload {
                    context,
                    serialized_context: String::from_utf8(serialized).unwrap_or_default(),
                    status: "completed",
                },
            })
        }
        FinalOutcome::CompletedWithoutContext(note) => raw_json(&FinalStatus::Trimmed {
            payload: TrimmedPayload {
                status: "completed",
                context_omitted: note,
            },
        }),
        FinalOutcome::Failed(reason) => raw_json(&FinalStatus::Failed { reason }),
        FinalOutcome::Cancelled => raw_json(&FinalStatus::Cancelled),
    }
}

/// The final context as the status shows it: without the document's identity.
fn final_context(context: &ContextMap) -> IndexMap<&str, &ContextValue> {
    context
        .iter()
        .filter(|(key, _)| !IDENTITY_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key.as_str(), value))
        .collect()
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum FinalStatus<'a> {
    Completed {
        payload: CompletedPayload<'a>,
    },
    #[serde(rename = "completed")]
    Trimmed {
        payload: TrimmedPayload<'a>,
    },
    Failed {
        reason: &'a str,
    },
    Cancelled,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompletedPayload<'a> {
    context: IndexMap<&'a str, &'a ContextValue>,
    /// `context` as JSON text.
    serialized_context: String,
    status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TrimmedPayload<'a> {
    status: &'static str,
    context_omitted: &'a str,
}

/// `value` as JSON text. Serializing cannot fail here: every map key is a
/// string.
fn raw_json<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The length of `context` as JSON text, give or take escapes in its keys.
fn serialized_size(context: &IndexMap<&str, &ContextValue>) -> usize {
    // `{` and `}`, `"key":value` for each entry, commas between them.
    let entries: usize = context
        .iter()
        .map(|(key, value)| key.len() + value.json().len() + 3)
        .sum();
    2 + entries + context.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(entries: &[(&str, &str)]) -> ContextMap {
        entries
            .iter()
            .map(|(key, json)| {
                (
                    (*key).to_owned(),
                    ContextValue::parse((*json).to_owned()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_final_status_is_upstreams_shape_with_values_kept_verbatim() {
        let context = context(&[
            ("id", r#""r1""#),
            ("a", r#"{"x": 1}"#),
            ("_outputs.n", r#"[1,2]"#),
        ]);
        let completed = FinalOutcome::Completed(&context);
        let text = document(&completed);
        assert_eq!(
            text.get(),
            r#"{"status":"completed","payload":{"context":{"a":{"x": 1},"_outputs.n":[1,2]},"serializedContext":"{\"a\":{\"x\": 1},\"_outputs.n\":[1,2]}","status":"completed"}}"#
        );
        assert_eq!(
            completed.size(),
            r#"{"a":{"x": 1},"_outputs.n":[1,2]}"#.len()
        );
        assert_eq!(
            document(&FinalOutcome::Failed("node B failed")).get(),
            r#"{"status":"failed","reason":"node B failed"}"#
        );
        assert_eq!(
            document(&FinalOutcome::Cancelled).get(),
            r#"{"status":"cancelled"}"#
        );
        assert_eq!(
            document(&FinalOutcome::CompletedWithoutContext("too large")).get(),
            r#"{"status":"completed","payload":{"status":"completed","contextOmitted":"too large"}}"#
        );
    }
}
