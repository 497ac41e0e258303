//! Numeric nodes with JavaScript number semantics: an integral result is
//! written as a JSON integer (21 × 2 is `42`, not `42.0`), as `JSON.stringify`
//! would.

use flowcraft_sdk::{Context, Ignore, NodeError, Output};
use serde_json::{Number, Value};

/// The largest integer a JavaScript number represents exactly (2^53).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

pub fn double(_: &mut Context, input: f64, _: Ignore) -> Result<Output<Value>, NodeError> {
    Ok(Output::new(js_number(input * 2.0)))
}

pub fn times10(_: &mut Context, input: f64, _: Ignore) -> Result<Output<Value>, NodeError> {
    Ok(Output::new(js_number(input * 10.0)))
}

pub fn sum(
    _: &mut Context,
    input: Option<Vec<f64>>,
    _: Ignore,
) -> Result<Output<Value>, NodeError> {
    Ok(Output::new(js_number(
        input.unwrap_or_default().iter().sum(),
    )))
}

/// `value` as `JSON.stringify` writes it: integral values without a fraction,
/// non-finite values as `null`.
pub fn js_number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() <= MAX_SAFE_INTEGER {
        // Exact: an integral f64 within ±2^53 converts to i64 without loss.
        Value::from(value as i64)
    } else {
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::NodeError;
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use super::js_number;
    use crate::BUNDLE;

    fn output(call: Call) -> serde_json::Value {
        TestHost::new()
            .execute(&BUNDLE, call)
            .unwrap()
            .output
            .unwrap()
    }

    #[test]
    fn integers_stay_integral() {
        assert_eq!(
            output(Call::new("double").input(json!(21))).to_string(),
            "42"
        );
        assert_eq!(
            output(Call::new("times10").input(json!(4))).to_string(),
            "40"
        );
        assert_eq!(output(Call::new("double").input(json!(1.25))), json!(2.5));
    }

    #[test]
    fn sum_adds_the_array_and_treats_no_input_as_zero() {
        assert_eq!(
            output(Call::new("sum").input(json!([1, 2, 3.5]))),
            json!(6.5)
        );
        assert_eq!(output(Call::new("sum")).to_string(), "0");
    }

    #[test]
    fn a_non_numeric_input_is_invalid() {
        let error = TestHost::new()
            .execute(&BUNDLE, Call::new("double").input(json!("x")))
            .unwrap_err();
        assert!(matches!(error, NodeError::InvalidInput(m) if m.starts_with("node `double`")));
    }

    #[test]
    fn non_finite_numbers_become_null() {
        assert_eq!(js_number(f64::INFINITY), json!(null));
        assert_eq!(js_number(-0.0).to_string(), "0");
    }
}
