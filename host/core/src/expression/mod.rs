//! Expressions: edge conditions, edge transforms and loop-controller conditions.
//!
//! Two evaluators are available, chosen per blueprint with [`EvaluatorMode`]:
//!
//! * [`EvaluatorMode::Safe`] (default): a small, bounded expression language
//!   over JSON with JavaScript semantics (described below).
//! * [`EvaluatorMode::Property`]: an exact reproduction of upstream's
//!   `PropertyEvaluator` (a single dotted path, no operators).
//!
//! An [`Expression`] is parsed once (when a blueprint is loaded) and evaluated
//! many times against a [`Scope`]. The result is `Option<Value>`, where `None`
//! is JavaScript `undefined`. Evaluation never fails loudly: anything that
//! would throw in JavaScript (reading a member of `null`/`undefined`) or that
//! exceeds a limit makes the *whole* expression `undefined`, as upstream's
//! evaluators catch every exception and return `undefined`.
//! [`Expression::try_evaluate`] exposes the reason for logging.
//!
//! # Safe language
//!
//! ```text
//! expression  := conditional
//! conditional := short ( "?" conditional ":" conditional )?
//! short       := equality ( "??" equality )*          // `??` chain, or
//!              | or                                    // `&&`/`||` chain (not mixed with `??`)
//! or          := and ( "||" and )*
//! and         := equality ( "&&" equality )*
//! equality    := relational ( ( "==" | "!=" | "===" | "!==" ) relational )*
//! relational  := additive ( ( "<" | "<=" | ">" | ">=" ) additive )*
//! additive    := multiplicative ( ( "+" | "-" ) multiplicative )*
//! multiplicative := unary ( ( "*" | "/" | "%" ) unary )*
//! unary       := ( "!" | "-" | "+" )* postfix
//! postfix     := primary ( "." name | "[" expression "]" )*
//! primary     := number | string | "true" | "false" | "null" | identifier
//!              | "(" expression ")" | "[" ( expression ( "," expression )* ","? )? "]"
//! name        := identifier characters, digits included (`items.0.ok`, `a.1x`)
//! number      := 12 | 1.5 | .5 | 1e3 | 2.5E-3 | 0x1F | 0o17 | 0b101
//! string      := '...' | "..." with JS escapes (\n \t \r \b \f \v \0 \xHH \uHHHH \u{H..})
//! ```
//!
//! Semantics follow JavaScript:
//!
//! * Identifiers are looked up in the scope. `undefined`, `NaN` and
//!   `Infinity` are the JS globals unless the scope defines them. **Choice:**
//!   an identifier the scope does not define is `undefined` (JS would throw a
//!   `ReferenceError`, which upstream turns into `undefined` for the whole
//!   expression); this makes `missing ?? "default"` and `!done` useful.
//! * Member access reads only *own JSON members*: object keys, array indices
//!   (`a[0]`, `a.0`, `a["0"]`), `length` of arrays and strings and string
//!   indices (UTF-16 code units, as JS). Prototype members (`constructor`,
//!   `__proto__`, `toString`, ...) are `undefined`. Reading a member of `null`
//!   or `undefined` is a `TypeError`: the whole expression is `undefined`.
//! * `+` concatenates when either operand (after `ToPrimitive`) is a string,
//!   using JS `ToString` (`1` → `"1"`, `1.5` → `"1.5"`, `1e21` → `"1e+21"`,
//!   `[1,2]` → `"1,2"`, objects → `"[object Object]"`); otherwise it adds.
//!   `- * / %` use JS `ToNumber` (`" 12 "` → 12, `""` → 0, `"0x10"` → 16,
//!   `"abc"` → NaN).
//! * `< <= > >=` compare two strings by UTF-16 code units, everything else
//!   numerically; any comparison involving NaN is false.
//! * `==`/`!=` are JS loose equality (`null == undefined`, `"1" == 1`,
//!   `true == 1`, `[] == false`); `===`/`!==` strict equality (`1 === 1.0`).
//!   **Choice:** objects and arrays compare by *identity*, as in JS: the same
//!   JSON node reached twice is equal to itself (`context.a === context.a`),
//!   two structurally equal but distinct nodes are not equal.
//! * `&&`, `||` and `??` short-circuit and return an operand (not a boolean);
//!   `c ? a : b` is right-associative; JS truthiness everywhere
//!   ([`is_truthy`]).
//! * There are no function calls, assignments, loops, `typeof`, `**`,
//!   bitwise operators, object literals or template strings.
//!
//! Numbers are IEEE doubles during evaluation (NaN stays NaN: `NaN < 1` is
//! false). Values selected unchanged from the scope are returned exactly as
//! stored. Computed numbers are returned as JSON integers when integral and
//! within ±2^53 (`21`, not `21.0`; `-0` becomes `0`); NaN and ±Infinity become
//! JSON `null`, as `JSON.stringify` does. An array literal element that is
//! `undefined` becomes `null`. Lone UTF-16 surrogates (from `\uD800` escapes or
//! indexing into a surrogate pair) become U+FFFD.
//!
//! # Property mode
//!
//! Upstream `PropertyEvaluator`, with the recommended restriction:
//! the source must match `^[A-Za-z0-9_$.]+$`; it is split on `.`; the first
//! segment must be a key the scope *owns* ([`Scope::lookup_property`], so
//! `constructor` is `undefined`); each further segment reads an own JSON
//! member, an array index or `length` of an array or string; `null` or
//! `undefined` anywhere gives `undefined`. `result.output > 1` is therefore not
//! a valid property expression.
//!
//! Upstream *logs and returns `undefined`* for an invalid property expression
//! instead of failing. [`Expression::parse`] reports the error (for blueprint
//! validation); [`Expression::parse_lenient`] reproduces upstream: it always
//! succeeds and an invalid expression evaluates to `undefined`, with the error
//! available from [`Expression::error`] for logging.
//!
//! # Limits
//!
//! Sources longer than [`MAX_SOURCE_LEN`] bytes and syntax nesting deeper than
//! [`MAX_NESTING`] are rejected at parse time. During evaluation a string
//! built by the expression may not exceed [`MAX_STRING_LEN`] bytes, all strings
//! built by one evaluation together may not exceed [`MAX_STRING_WORK`] bytes and
//! arrays are converted to strings only [`MAX_VALUE_DEPTH`] levels deep;
//! exceeding a limit makes the result `undefined`. Strings taken unchanged from
//! the scope are not limited. The work of one evaluation is linear in the size
//! of the expression plus the size of the strings it builds.

mod ast;
mod eval;
mod lexer;
mod parser;
mod property;
mod scope;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use scope::{ConditionScope, EmptyScope, PlainOutputs, Scope, ScopeValue, TransformScope};

/// Longest accepted expression source, in bytes.
pub const MAX_SOURCE_LEN: usize = 4096;
/// Deepest accepted syntactic nesting (parentheses, brackets, ternaries).
pub const MAX_NESTING: usize = 64;
/// Longest string an evaluation may build, in bytes (1 MiB).
pub const MAX_STRING_LEN: usize = 1 << 20;
/// Total bytes of strings one evaluation may build (8 MiB).
pub const MAX_STRING_WORK: usize = 8 << 20;
/// Deepest nesting of arrays converted to a string (`"" + [[1], [2]]`).
pub const MAX_VALUE_DEPTH: usize = 64;

/// JavaScript truthiness of a JSON value: `false`, `0`, `""` and `null` are
/// falsy; everything else (including `[]` and `{}`) is truthy.
pub fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// JavaScript truthiness of an evaluation result; `None` (`undefined`) is falsy.
pub fn truthy(value: Option<&Value>) -> bool {
    value.is_some_and(is_truthy)
}

/// Which evaluator a blueprint's expressions use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluatorMode {
    /// The safe expression language (default).
    #[default]
    Safe,
    /// Upstream's `PropertyEvaluator`: one dotted path.
    Property,
}

impl EvaluatorMode {
    /// `"safe"` or `"property"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EvaluatorMode::Safe => "safe",
            EvaluatorMode::Property => "property",
        }
    }
}

impl fmt::Display for EvaluatorMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EvaluatorMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "safe" => Ok(EvaluatorMode::Safe),
            "property" => Ok(EvaluatorMode::Property),
            other => Err(format!(
                "unknown evaluator `{other}` (expected `safe` or `property`)"
            )),
        }
    }
}

/// Why an expression could not be parsed. The message is one line and names
/// the 1-based column (in characters) and the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpressionError {
    /// The source exceeds [`MAX_SOURCE_LEN`].
    #[error("expression is {len} bytes long; the limit is {max} bytes")]
    TooLong { len: usize, max: usize },
    /// A syntax error in the safe language.
    #[error("{message} at column {column} in `{snippet}`")]
    Syntax {
        message: String,
        column: usize,
        snippet: String,
    },
    /// Nesting deeper than [`MAX_NESTING`].
    #[error("expression nests deeper than {max} levels at column {column} in `{snippet}`")]
    TooDeep {
        max: usize,
        column: usize,
        snippet: String,
    },
    /// Not a valid property-mode path (`^[A-Za-z0-9_$.]+$`).
    #[error(
        "invalid property expression: {message} at column {column} in `{snippet}` (only letters, digits, '_', '$' and '.' are allowed)"
    )]
    InvalidProperty {
        message: String,
        column: usize,
        snippet: String,
    },
}

impl ExpressionError {
    /// The 1-based column the error points at, when it has one.
    pub fn column(&self) -> Option<usize> {
        match self {
            ExpressionError::TooLong { .. } => None,
            ExpressionError::Syntax { column, .. }
            | ExpressionError::TooDeep { column, .. }
            | ExpressionError::InvalidProperty { column, .. } => Some(*column),
        }
    }

    pub(crate) fn syntax(source: &str, offset: usize, message: impl Into<String>) -> Self {
        ExpressionError::Syntax {
            message: message.into(),
            column: column_of(source, offset),
            snippet: snippet(source),
        }
    }

    pub(crate) fn too_deep(source: &str, offset: usize) -> Self {
        ExpressionError::TooDeep {
            max: MAX_NESTING,
            column: column_of(source, offset),
            snippet: snippet(source),
        }
    }

    pub(crate) fn invalid_property(
        source: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> Self {
        ExpressionError::InvalidProperty {
            message: message.into(),
            column: column_of(source, offset),
            snippet: snippet(source),
        }
    }
}

/// 1-based character column of byte `offset`.
fn column_of(source: &str, offset: usize) -> usize {
    let offset = offset.min(source.len());
    source
        .char_indices()
        .take_while(|(i, _)| *i < offset)
        .count()
        + 1
}

/// The source as shown in messages: one line, at most 100 characters.
fn snippet(source: &str) -> String {
    const MAX_CHARS: usize = 100;
    let one_line = |c: char| if c.is_control() { ' ' } else { c };
    if source.chars().count() <= MAX_CHARS {
        source.chars().map(one_line).collect()
    } else {
        let mut s: String = source.chars().take(MAX_CHARS - 1).map(one_line).collect();
        s.push('…');
        s
    }
}

/// Why an evaluation produced `undefined` (see [`Expression::try_evaluate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A member of `null` or `undefined` was read (a JS `TypeError`).
    #[error("cannot read property `{property}` of {base}")]
    NullMember {
        property: String,
        base: &'static str,
    },
    /// A built string would exceed [`MAX_STRING_LEN`].
    #[error("a string built by the expression would exceed {max} bytes")]
    StringTooLong { max: usize },
    /// The strings built by one evaluation exceed [`MAX_STRING_WORK`].
    #[error("the expression built more than {max} bytes of strings")]
    WorkExceeded { max: usize },
    /// An array converted to a string nests deeper than [`MAX_VALUE_DEPTH`].
    #[error("a value converted to a string nests deeper than {max} levels")]
    ValueTooDeep { max: usize },
    /// The expression did not parse (only from [`Expression::parse_lenient`]).
    #[error("{0}")]
    Invalid(ExpressionError),
}

/// A parsed expression: cheap to clone, `Send + Sync`, evaluated many times.
///
/// `Display` prints a canonical form (minimal parentheses) that parses back
/// to the same expression. Equality is semantic: same mode and same parsed
/// form (`a+b` equals `(a) + b`).
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    mode: EvaluatorMode,
    repr: Repr,
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && self.repr == other.repr
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Repr {
    Safe(ast::Expr),
    Property(Vec<String>),
    Invalid(ExpressionError),
}

impl Expression {
    /// Parses `source` for `mode`; errors name the offending column.
    pub fn parse(source: &str, mode: EvaluatorMode) -> Result<Expression, ExpressionError> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(ExpressionError::TooLong {
                len: source.len(),
                max: MAX_SOURCE_LEN,
            });
        }
        let repr = match mode {
            EvaluatorMode::Safe => Repr::Safe(parser::parse(source)?),
            EvaluatorMode::Property => Repr::Property(property::parse(source)?),
        };
        Ok(Expression {
            source: source.to_owned(),
            mode,
            repr,
        })
    }

    /// Upstream behaviour: never fails. An expression that does not parse
    /// evaluates to `undefined`; [`Expression::error`] returns the error so the
    /// caller can log it (upstream logs it at every evaluation).
    pub fn parse_lenient(source: &str, mode: EvaluatorMode) -> Expression {
        Expression::parse(source, mode).unwrap_or_else(|error| Expression {
            source: source.to_owned(),
            mode,
            repr: Repr::Invalid(error),
        })
    }

    /// The source text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The evaluator this expression was parsed for.
    pub fn mode(&self) -> EvaluatorMode {
        self.mode
    }

    /// The parse error of an expression from [`Expression::parse_lenient`]
    /// that did not parse (it evaluates to `undefined`).
    pub fn error(&self) -> Option<&ExpressionError> {
        match &self.repr {
            Repr::Invalid(error) => Some(error),
            _ => None,
        }
    }

    /// Whether the expression parsed (see [`Expression::error`]).
    pub fn is_valid(&self) -> bool {
        !matches!(self.repr, Repr::Invalid(_))
    }

    /// Evaluates against `scope`; `None` is JavaScript `undefined` (also the
    /// result of anything JavaScript would throw on, and of exceeded limits).
    pub fn evaluate<S: Scope + ?Sized>(&self, scope: &S) -> Option<Value> {
        self.try_evaluate(scope).unwrap_or(None)
    }

    /// JS truthiness of the result, without copying the selected value.
    /// Prefer this to `truthy(expr.evaluate(..))` for conditions: it is
    /// cheaper and exact for ±Infinity, which is truthy in JavaScript but
    /// becomes JSON `null` in [`Expression::evaluate`].
    pub fn evaluate_truthy<S: Scope + ?Sized>(&self, scope: &S) -> bool {
        self.with_value(scope, |value| value.truthy())
            .unwrap_or(false)
    }

    /// Like [`Expression::evaluate`] but says why the result is `undefined`
    /// when evaluation was aborted (for logging).
    pub fn try_evaluate<S: Scope + ?Sized>(&self, scope: &S) -> Result<Option<Value>, EvalError> {
        self.with_value(scope, |value| value.to_json())
    }

    fn with_value<'a, S: Scope + ?Sized, T>(
        &'a self,
        scope: &'a S,
        f: impl FnOnce(&value::Val<'a>) -> T,
    ) -> Result<T, EvalError> {
        match &self.repr {
            Repr::Safe(expr) => {
                let value = eval::Evaluator::new(scope).eval(expr)?;
                Ok(f(&value))
            }
            Repr::Property(segments) => Ok(f(&property::evaluate(segments, scope))),
            Repr::Invalid(error) => Err(EvalError::Invalid(error.clone())),
        }
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Safe(expr) => expr.fmt(f),
            Repr::Property(_) | Repr::Invalid(_) => f.write_str(&self.source),
        }
    }
}
