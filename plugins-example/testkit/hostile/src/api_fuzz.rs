//! `api-fuzz`: drives the host interface with whatever calls and arguments a
//! property test generates, at the JSON-text level (values may be invalid
//! JSON, fields anything), and reports which calls the host accepted.

use flowcraft_sdk::{Context, Ignore, Level, NodeError, Output};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct FuzzParams {
    calls: Vec<ApiCall>,
}

/// One call of the host interface.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ApiCall {
    Get {
        key: String,
    },
    /// `value` is sent as it is (JSON text or not), `times` times in a row
    /// (stopping at the first refusal).
    Set {
        key: String,
        value: String,
        #[serde(default = "once")]
        times: usize,
    },
    Has {
        key: String,
    },
    /// A refused delete traps: the call ends there.
    Delete {
        key: String,
    },
    Keys,
    /// `fields` are sent as they are, `times` times in a row.
    Log {
        level: LevelName,
        message: String,
        fields: String,
        #[serde(default = "once")]
        times: usize,
    },
    Now,
    Config {
        key: String,
    },
}

fn once() -> usize {
    1
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum LevelName {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl From<LevelName> for Level {
    fn from(level: LevelName) -> Self {
        match level {
            LevelName::Trace => Level::Trace,
            LevelName::Debug => Level::Debug,
            LevelName::Info => Level::Info,
            LevelName::Warn => Level::Warn,
            LevelName::Error => Level::Error,
        }
    }
}

/// What one call did: `ok` is false when the host refused a `set`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Done {
    ok: bool,
    /// For reads: whether the key was found / how many keys there are.
    #[serde(skip_serializing_if = "Option::is_none")]
    found: Option<usize>,
}

impl Done {
    fn ok() -> Self {
        Self {
            ok: true,
            found: None,
        }
    }

    fn found(count: usize) -> Self {
        Self {
            ok: true,
            found: Some(count),
        }
    }
}

/// Performs `params.calls` in order; outputs one [`Done`] per call.
pub fn api_fuzz(
    ctx: &mut Context,
    _: Ignore,
    params: FuzzParams,
) -> Result<Output<Vec<Done>>, NodeError> {
    let done = params
        .calls
        .into_iter()
        .map(|call| match call {
            ApiCall::Get { key } => Done::found(usize::from(ctx.get_raw(&key).is_some())),
            ApiCall::Set { key, value, times } => Done {
                ok: (0..times).all(|_| ctx.set_raw(&key, &value).is_ok()),
                found: None,
            },
            ApiCall::Has { key } => Done::found(usize::from(ctx.has(&key))),
            ApiCall::Delete { key } => Done::found(usize::from(ctx.delete(&key))),
            ApiCall::Keys => Done::found(ctx.keys().len()),
            ApiCall::Log {
                level,
                message,
                fields,
                times,
            } => {
                for _ in 0..times {
                    ctx.log_raw(level.into(), &message, &fields);
                }
                Done::ok()
            }
            ApiCall::Now => {
                ctx.now_ms();
                Done::ok()
            }
            ApiCall::Config { key } => Done::found(usize::from(ctx.config(&key).is_some())),
        })
        .collect();
    Ok(Output::new(done))
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use crate::BUNDLE;

    #[test]
    fn calls_run_in_order_and_report_what_happened() {
        let host = TestHost::new();
        let calls = json!([
            {"op": "set", "key": "a", "value": "[1]", "times": 2},
            {"op": "set", "key": "b", "value": "{not json"},
            {"op": "get", "key": "a"},
            {"op": "has", "key": "b"},
            {"op": "keys"},
            {"op": "log", "level": "warn", "message": "m", "fields": "x"},
            {"op": "now"},
            {"op": "config", "key": "c"},
            {"op": "delete", "key": "a"},
        ]);
        let call = Call::new("api-fuzz").params(json!({ "calls": calls }));
        let output = host.execute(&BUNDLE, call).unwrap().output.unwrap();
        assert_eq!(
            output,
            json!([
                {"ok": true},
                {"ok": false},
                {"ok": true, "found": 1},
                {"ok": true, "found": 0},
                {"ok": true, "found": 1},
                {"ok": true},
                {"ok": true},
                {"ok": true, "found": 0},
                {"ok": true, "found": 1},
            ])
        );
        assert_eq!(host.keys(), Vec::<String>::new());
        assert_eq!(host.logs().len(), 1);
    }
}
