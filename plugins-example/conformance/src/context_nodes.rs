//! Nodes that read and write the run context.

use flowcraft_sdk::{Context, Ignore, NodeError, Output};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::arithmetic::js_number;

#[derive(Deserialize)]
pub struct KeyParams {
    key: String,
}

/// `value` absent writes `null`.
#[derive(Deserialize)]
pub struct SetKeyParams {
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
pub struct LimitParams {
    limit: f64,
}

/// What a resumed wait recorded; absent keys stay absent (JavaScript `undefined`).
#[derive(Serialize)]
pub struct ResumeRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Value>,
}

pub fn set_key(
    ctx: &mut Context,
    _: Ignore,
    params: SetKeyParams,
) -> Result<Output<Value>, NodeError> {
    ctx.set(&params.key, &params.value)?;
    Ok(Output::new(params.value))
}

pub fn read_key(
    ctx: &mut Context,
    _: Ignore,
    params: KeyParams,
) -> Result<Output<Value>, NodeError> {
    Ok(Output::maybe(ctx.get(&params.key)?))
}

/// `c = (context.count ?? 0) + 1`; writes `count = c`, `keepGoing = c < limit`; outputs `c`.
pub fn inc(ctx: &mut Context, _: Ignore, params: LimitParams) -> Result<Output<Value>, NodeError> {
    let count = ctx.get::<Option<f64>>("count")?.flatten().unwrap_or(0.0) + 1.0;
    let count_json = js_number(count);
    ctx.set("count", &count_json)?;
    ctx.set("keepGoing", &(count < params.limit))?;
    Ok(Output::new(count_json))
}

/// Eleven writes (`k0` = 0 … `k10` = 10), e.g. for write-batching tests.
pub fn many(ctx: &mut Context, _: Ignore, _: Ignore) -> Result<Output<&'static str>, NodeError> {
    for index in 0..=10 {
        ctx.set(&format!("k{index}"), &index)?;
    }
    Ok(Output::new("many"))
}

pub fn del_tmp(ctx: &mut Context, _: Ignore, _: Ignore) -> Result<Output<&'static str>, NodeError> {
    ctx.delete("tmp");
    Ok(Output::new("deleted"))
}

pub fn read_resume(
    ctx: &mut Context,
    _: Ignore,
    _: Ignore,
) -> Result<Output<ResumeRecord>, NodeError> {
    Ok(Output::new(ResumeRecord {
        action: ctx.get("_resume.action")?,
        output: ctx.get("_resume.output")?,
    }))
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use crate::BUNDLE;

    #[test]
    fn set_key_then_read_key() {
        let host = TestHost::new();
        let set = Call::new("setKey").params(json!({"key": "shared", "value": 42}));
        assert_eq!(host.execute(&BUNDLE, set).unwrap().output, Some(json!(42)));
        let read = Call::new("readKey").params(json!({"key": "shared"}));
        assert_eq!(host.execute(&BUNDLE, read).unwrap().output, Some(json!(42)));
        let absent = Call::new("readKey").params(json!({"key": "nope"}));
        assert_eq!(host.execute(&BUNDLE, absent).unwrap().output, None);
    }

    #[test]
    fn inc_counts_and_says_whether_to_keep_going() {
        let host = TestHost::new().with_value("count", 0);
        let call = || Call::new("inc").params(json!({"limit": 3}));
        for expected in 1..=3 {
            assert_eq!(
                host.execute(&BUNDLE, call()).unwrap().output,
                Some(json!(expected))
            );
            assert_eq!(host.get("keepGoing"), Some(json!(expected < 3)));
        }
        assert_eq!(host.get("count").unwrap().to_string(), "3");
    }

    #[test]
    fn inc_starts_from_zero_without_a_count() {
        let host = TestHost::new();
        assert_eq!(
            host.execute(&BUNDLE, Call::new("inc").params(json!({"limit": 1})))
                .unwrap()
                .output,
            Some(json!(1))
        );
        assert_eq!(host.get("keepGoing"), Some(json!(false)));
    }

    #[test]
    fn many_writes_eleven_keys_and_del_tmp_deletes_tmp() {
        let host = TestHost::new().with_value("tmp", 1);
        host.execute(&BUNDLE, Call::new("many")).unwrap();
        assert_eq!(
            host.keys()
                .iter()
                .filter(|key| key.starts_with('k'))
                .count(),
            11
        );
        assert_eq!(host.get("k10"), Some(json!(10)));
        assert_eq!(
            host.execute(&BUNDLE, Call::new("delTmp")).unwrap().output,
            Some(json!("deleted"))
        );
        assert_eq!(host.get("tmp"), None);
    }

    #[test]
    fn read_resume_reports_the_resume_keys() {
        let host = TestHost::new()
            .with_value("_resume.action", "approve")
            .with_value("_resume.output", json!({"ok": true}));
        let output = host
            .execute(&BUNDLE, Call::new("readResume"))
            .unwrap()
            .output;
        assert_eq!(
            output,
            Some(json!({"action": "approve", "output": {"ok": true}}))
        );
        let empty = TestHost::new()
            .execute(&BUNDLE, Call::new("readResume"))
            .unwrap()
            .output;
        assert_eq!(empty, Some(json!({})));
    }
}
