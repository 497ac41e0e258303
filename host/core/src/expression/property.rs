//! Upstream's `PropertyEvaluator`: one dotted path, own members only.

use super::ExpressionError;
use super::scope::Scope;
use super::value::{Val, get_member};

/// Checks `^[A-Za-z0-9_$.]+$` and splits on `.` (empty segments are kept, as
/// JavaScript's `split` does: `a..b` reads key `""`).
pub(crate) fn parse(source: &str) -> Result<Vec<String>, ExpressionError> {
    if source.is_empty() {
        return Err(ExpressionError::invalid_property(
            source,
            0,
            "expression is empty",
        ));
    }
    if let Some((offset, c)) = source
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.')))
    {
        return Err(ExpressionError::invalid_property(
            source,
            offset,
            format!("unexpected character {c:?}"),
        ));
    }
    Ok(source.split('.').map(str::to_owned).collect())
}

pub(crate) fn evaluate<'a, S: Scope + ?Sized>(segments: &[String], scope: &'a S) -> Val<'a> {
    let Some((first, rest)) = segments.split_first() else {
        return Val::Undefined;
    };
    let Some(mut current) = scope.lookup_property(first).map(Val::from_scope) else {
        return Val::Undefined;
    };
    for segment in rest {
        if current.is_nullish() {
            return Val::Undefined;
        }
        current = get_member(current, segment);
    }
    current
}
