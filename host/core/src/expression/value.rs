//! Runtime values and the JavaScript abstract operations the evaluator needs
//! (`ToPrimitive`, `ToString`, `ToNumber`, equality, relational comparison).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::rc::Rc;

use serde_json::{Map, Number, Value};

use super::scope::ScopeValue;
use super::{EvalError, MAX_STRING_LEN, MAX_STRING_WORK, MAX_VALUE_DEPTH};

/// 2^53: the largest magnitude up to which every integer is an exact double.
const MAX_SAFE: f64 = 9_007_199_254_740_992.0;

/// A JavaScript value during evaluation. JSON from the scope is borrowed.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    /// A computed number.
    Num(f64),
    /// A number taken from JSON, kept exact until it takes part in arithmetic.
    JsonNum(Number),
    Str(Cow<'a, str>),
    Arr(Arr<'a>),
    Obj(Obj<'a>),
}

#[derive(Debug, Clone)]
pub(crate) enum Arr<'a> {
    Json(&'a Vec<Value>),
    Owned(Rc<Vec<Value>>),
    Literal(Rc<Vec<Val<'a>>>),
}

#[derive(Debug, Clone)]
pub(crate) enum Obj<'a> {
    Json(&'a Map<String, Value>),
    Owned(Rc<Map<String, Value>>),
}

/// JavaScript `typeof`-like classes used by equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Undefined,
    Null,
    Bool,
    Number,
    String,
    Object,
}

impl<'a> Val<'a> {
    pub(crate) fn from_json(value: &'a Value) -> Self {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::JsonNum(n.clone()),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(items) => Val::Arr(Arr::Json(items)),
            Value::Object(map) => Val::Obj(Obj::Json(map)),
        }
    }

    pub(crate) fn from_owned(value: Value) -> Self {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(b),
            Value::Number(n) => Val::JsonNum(n),
            Value::String(s) => Val::Str(Cow::Owned(s)),
            Value::Array(items) => Val::Arr(Arr::Owned(Rc::new(items))),
            Value::Object(map) => Val::Obj(Obj::Owned(Rc::new(map))),
        }
    }

    pub(crate) fn from_scope(value: ScopeValue<'a>) -> Self {
        match value {
            ScopeValue::Value(value) => Val::from_json(value),
            ScopeValue::Object(map) => Val::Obj(Obj::Json(map)),
            ScopeValue::Owned(value) => Val::from_owned(value),
        }
    }

    pub(crate) fn is_nullish(&self) -> bool {
        matches!(self, Val::Undefined | Val::Null)
    }

    /// JavaScript `ToBoolean`.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Undefined | Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(f) => *f != 0.0 && !f.is_nan(),
            Val::JsonNum(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
            Val::Str(s) => !s.is_empty(),
            Val::Arr(_) | Val::Obj(_) => true,
        }
    }

    fn ty(&self) -> Ty {
        match self {
            Val::Undefined => Ty::Undefined,
            Val::Null => Ty::Null,
            Val::Bool(_) => Ty::Bool,
            Val::Num(_) | Val::JsonNum(_) => Ty::Number,
            Val::Str(_) => Ty::String,
            Val::Arr(_) | Val::Obj(_) => Ty::Object,
        }
    }

    fn as_number(&self) -> Option<f64> {
        match self {
            Val::Num(f) => Some(*f),
            Val::JsonNum(n) => Some(json_number_to_f64(n)),
            _ => None,
        }
    }

    /// The result as JSON (`None` = `undefined`), as `JSON.stringify` would
    /// see it: NaN/±Infinity become `null`, integral doubles become integers.
    pub(crate) fn to_json(&self) -> Option<Value> {
        Some(match self {
            Val::Undefined => return None,
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(f) => number_to_json(*f),
            Val::JsonNum(n) => Value::Number(n.clone()),
            Val::Str(s) => Value::String(s.clone().into_owned()),
            Val::Arr(Arr::Json(items)) => Value::Array((*items).clone()),
            Val::Arr(Arr::Owned(items)) => Value::Array(items.as_ref().clone()),
            Val::Arr(Arr::Literal(items)) => Value::Array(
                items
                    .iter()
                    .map(|item| item.to_json().unwrap_or(Value::Null))
                    .collect(),
            ),
            Val::Obj(Obj::Json(map)) => Value::Object((*map).clone()),
            Val::Obj(Obj::Owned(map)) => Value::Object(map.as_ref().clone()),
        })
    }
}

fn json_number_to_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

/// A computed number as JSON.
pub(crate) fn number_to_json(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE {
        // Integral and exact: `as` is lossless here; `-0` becomes 0.
        Value::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// Canonical array index (`"0"`, `"17"`; not `"01"`, `"-1"`, `"1.0"`).
pub(crate) fn array_index(key: &str) -> Option<usize> {
    let bytes = key.as_bytes();
    if bytes.is_empty()
        || !bytes.iter().all(u8::is_ascii_digit)
        || (bytes.len() > 1 && bytes[0] == b'0')
    {
        return None;
    }
    let index: u64 = key.parse().ok()?;
    // JS array indices are below 2^32 - 1.
    if index >= u64::from(u32::MAX) {
        return None;
    }
    usize::try_from(index).ok()
}

/// The UTF-16 code unit `index` of `s` as a one-character string (a lone
/// surrogate becomes U+FFFD).
fn string_unit(s: &str, index: usize) -> Option<String> {
    let unit = s.encode_utf16().nth(index)?;
    Some(
        char::from_u32(u32::from(unit))
            .unwrap_or('\u{FFFD}')
            .to_string(),
    )
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

fn array_element<'a>(array: &Arr<'a>, index: usize) -> Val<'a> {
    match array {
        Arr::Json(items) => items.get(index).map_or(Val::Undefined, Val::from_json),
        Arr::Owned(items) => items
            .get(index)
            .map_or(Val::Undefined, |item| Val::from_owned(item.clone())),
        Arr::Literal(items) => items.get(index).cloned().unwrap_or(Val::Undefined),
    }
}

fn array_len(array: &Arr<'_>) -> usize {
    match array {
        Arr::Json(items) => items.len(),
        Arr::Owned(items) => items.len(),
        Arr::Literal(items) => items.len(),
    }
}

/// Own-member read `base[key]`; `base` must not be `null`/`undefined`.
/// Only own JSON members, array indices, string indices and `length` exist.
pub(crate) fn get_member<'a>(base: Val<'a>, key: &str) -> Val<'a> {
    match &base {
        Val::Obj(Obj::Json(map)) => map.get(key).map_or(Val::Undefined, Val::from_json),
        Val::Obj(Obj::Owned(map)) => map
            .get(key)
            .map_or(Val::Undefined, |value| Val::from_owned(value.clone())),
        Val::Arr(array) => {
            if key == "length" {
                Val::Num(array_len(array) as f64)
            } else {
                array_index(key).map_or(Val::Undefined, |i| array_element(array, i))
            }
        }
        Val::Str(s) => {
            if key == "length" {
                Val::Num(utf16_len(s) as f64)
            } else {
                array_index(key)
                    .and_then(|i| string_unit(s, i))
                    .map_or(Val::Undefined, |unit| Val::Str(Cow::Owned(unit)))
            }
        }
        _ => Val::Undefined,
    }
}

/// Own-member read with an integer key (`a[0]`).
pub(crate) fn get_index(base: Val<'_>, index: usize) -> Val<'_> {
    match &base {
        Val::Arr(array) => array_element(array, index),
        Val::Str(s) => {
            string_unit(s, index).map_or(Val::Undefined, |unit| Val::Str(Cow::Owned(unit)))
        }
        Val::Obj(_) => get_member(base, &index.to_string()),
        _ => Val::Undefined,
    }
}

/// The integer index a numeric key denotes, when it is an array index.
pub(crate) fn numeric_index(value: &Val<'_>) -> Option<usize> {
    let f = value.as_number()?;
    if f >= 0.0 && f.fract() == 0.0 && f < f64::from(u32::MAX) {
        Some(f as usize)
    } else {
        None
    }
}

/// JavaScript `Number::toString(10)`.
pub(crate) fn number_to_string(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f == 0.0 {
        return "0".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if f < 0.0 {
        return format!("-{}", number_to_string(-f));
    }
    // Shortest round-trip digits and exponent: "d.ddde±x".
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i64;
    let n = exponent + 1;
    if k <= n && n <= 21 {
        let mut s = digits;
        s.extend(std::iter::repeat_n('0', (n - k) as usize));
        s
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        format!("{int}.{frac}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign = if e < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        if rest.is_empty() {
            format!("{first}e{sign}{}", e.abs())
        } else {
            format!("{first}.{rest}e{sign}{}", e.abs())
        }
    }
}

fn json_number_to_string(n: &Number) -> String {
    if let Some(i) = n.as_i64()
        && i.unsigned_abs() <= MAX_SAFE as u64
    {
        return i.to_string();
    }
    number_to_string(json_number_to_f64(n))
}

/// JavaScript whitespace and line terminators (for `ToNumber` and the lexer).
pub(crate) fn is_js_whitespace(c: char) -> bool {
    c == '\u{FEFF}' || (c.is_whitespace() && c != '\u{85}')
}

/// JavaScript `StringToNumber`.
pub(crate) fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_whitespace);
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    let radix = |prefix_lower: &str, prefix_upper: &str, radix: u32| {
        t.strip_prefix(prefix_lower)
            .or_else(|| t.strip_prefix(prefix_upper))
            .map(|digits| parse_radix(digits, radix).unwrap_or(f64::NAN))
    };
    if let Some(value) = radix("0x", "0X", 16)
        .or_else(|| radix("0o", "0O", 8))
        .or_else(|| radix("0b", "0B", 2))
    {
        return value;
    }
    if is_decimal_literal(t) {
        t.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

/// Digits in `radix` (at least one) as a double.
pub(crate) fn parse_radix(digits: &str, radix: u32) -> Option<f64> {
    if digits.is_empty() {
        return None;
    }
    let mut value = 0.0f64;
    for c in digits.chars() {
        value = value * f64::from(radix) + f64::from(c.to_digit(radix)?);
    }
    Some(value)
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`
fn is_decimal_literal(t: &str) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut mantissa_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        mantissa_digits += i - frac_start;
    }
    if mantissa_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

fn same_array(a: &Arr<'_>, b: &Arr<'_>) -> bool {
    match (a, b) {
        (Arr::Json(a), Arr::Json(b)) => std::ptr::eq(*a, *b),
        (Arr::Owned(a), Arr::Owned(b)) => Rc::ptr_eq(a, b),
        (Arr::Literal(a), Arr::Literal(b)) => Rc::ptr_eq(a, b),
        _ => false,
    }
}

fn same_object(a: &Obj<'_>, b: &Obj<'_>) -> bool {
    match (a, b) {
        (Obj::Json(a), Obj::Json(b)) => std::ptr::eq(*a, *b),
        (Obj::Owned(a), Obj::Owned(b)) => Rc::ptr_eq(a, b),
        _ => false,
    }
}

/// JavaScript `IsStrictlyEqual` (objects by identity).
pub(crate) fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Undefined, Val::Undefined) | (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Arr(x), Val::Arr(y)) => same_array(x, y),
        (Val::Obj(x), Val::Obj(y)) => same_object(x, y),
        _ => match (a.as_number(), b.as_number()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// Conversions that may build strings, charged against the evaluation's
/// string budget.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    work: usize,
}

impl Budget {
    fn charge(&mut self, len: usize) -> Result<(), EvalError> {
        if len > MAX_STRING_LEN {
            return Err(EvalError::StringTooLong {
                max: MAX_STRING_LEN,
            });
        }
        self.work += len;
        if self.work > MAX_STRING_WORK {
            return Err(EvalError::WorkExceeded {
                max: MAX_STRING_WORK,
            });
        }
        Ok(())
    }

    /// JavaScript `ToPrimitive`: arrays and objects become strings.
    pub(crate) fn primitive_of<'a>(&mut self, value: Val<'a>) -> Result<Val<'a>, EvalError> {
        match value {
            Val::Arr(_) | Val::Obj(_) => Ok(Val::Str(self.string_of(value)?)),
            other => Ok(other),
        }
    }

    /// JavaScript `ToString`.
    pub(crate) fn string_of<'a>(&mut self, value: Val<'a>) -> Result<Cow<'a, str>, EvalError> {
        Ok(match value {
            Val::Undefined => Cow::Borrowed("undefined"),
            Val::Null => Cow::Borrowed("null"),
            Val::Bool(true) => Cow::Borrowed("true"),
            Val::Bool(false) => Cow::Borrowed("false"),
            Val::Num(f) => Cow::Owned(number_to_string(f)),
            Val::JsonNum(n) => Cow::Owned(json_number_to_string(&n)),
            Val::Str(s) => s,
            Val::Obj(_) => Cow::Borrowed("[object Object]"),
            Val::Arr(array) => {
                let mut out = String::new();
                self.join(&array, &mut out, 1)?;
                self.charge(out.len())?;
                Cow::Owned(out)
            }
        })
    }

    /// `Array.prototype.join(",")` into `out`.
    fn join(&mut self, array: &Arr<'_>, out: &mut String, depth: usize) -> Result<(), EvalError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(EvalError::ValueTooDeep {
                max: MAX_VALUE_DEPTH,
            });
        }
        match array {
            Arr::Json(items) => self.join_json(items, out, depth),
            Arr::Owned(items) => self.join_json(items, out, depth),
            Arr::Literal(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        push(out, ",")?;
                    }
                    match item {
                        Val::Undefined | Val::Null => {}
                        Val::Arr(inner) => self.join(inner, out, depth + 1)?,
                        other => {
                            let s = self.string_of(other.clone())?;
                            push(out, &s)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn join_json(
        &mut self,
        items: &[Value],
        out: &mut String,
        depth: usize,
    ) -> Result<(), EvalError> {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                push(out, ",")?;
            }
            match item {
                Value::Null => {}
                Value::Bool(b) => push(out, if *b { "true" } else { "false" })?,
                Value::Number(n) => push(out, &json_number_to_string(n))?,
                Value::String(s) => push(out, s)?,
                Value::Array(inner) => {
                    if depth + 1 > MAX_VALUE_DEPTH {
                        return Err(EvalError::ValueTooDeep {
                            max: MAX_VALUE_DEPTH,
                        });
                    }
                    self.join_json(inner, out, depth + 1)?;
                }
                Value::Object(_) => push(out, "[object Object]")?,
            }
        }
        Ok(())
    }

    /// JavaScript `ToNumber`.
    pub(crate) fn number_of(&mut self, value: Val<'_>) -> Result<f64, EvalError> {
        Ok(match value {
            Val::Undefined => f64::NAN,
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(b)),
            Val::Num(f) => f,
            Val::JsonNum(n) => json_number_to_f64(&n),
            Val::Str(s) => string_to_number(&s),
            Val::Arr(_) | Val::Obj(_) => {
                let s = self.string_of(value)?;
                string_to_number(&s)
            }
        })
    }

    /// JavaScript `IsLooselyEqual`.
    pub(crate) fn loose_eq<'a>(&mut self, a: Val<'a>, b: Val<'a>) -> Result<bool, EvalError> {
        let (ta, tb) = (a.ty(), b.ty());
        if ta == tb {
            return Ok(strict_eq(&a, &b));
        }
        Ok(match (ta, tb) {
            (Ty::Undefined | Ty::Null, Ty::Undefined | Ty::Null) => true,
            (Ty::Undefined | Ty::Null, _) | (_, Ty::Undefined | Ty::Null) => false,
            (Ty::Number, Ty::String) | (Ty::String, Ty::Number) => {
                self.number_of(a)? == self.number_of(b)?
            }
            (Ty::Bool, _) => {
                let a = Val::Num(self.number_of(a)?);
                self.loose_eq(a, b)?
            }
            (_, Ty::Bool) => {
                let b = Val::Num(self.number_of(b)?);
                self.loose_eq(a, b)?
            }
            (Ty::Object, Ty::Number | Ty::String) => {
                let a = self.primitive_of(a)?;
                self.loose_eq(a, b)?
            }
            (Ty::Number | Ty::String, Ty::Object) => {
                let b = self.primitive_of(b)?;
                self.loose_eq(a, b)?
            }
            _ => false,
        })
    }

    /// JavaScript `IsLessThan(a, b)`: `None` when either side is NaN.
    pub(crate) fn less_than<'a>(
        &mut self,
        a: Val<'a>,
        b: Val<'a>,
    ) -> Result<Option<bool>, EvalError> {
        let a = self.primitive_of(a)?;
        let b = self.primitive_of(b)?;
        if let (Val::Str(x), Val::Str(y)) = (&a, &b) {
            return Ok(Some(
                x.encode_utf16().cmp(y.encode_utf16()) == Ordering::Less,
            ));
        }
        let x = self.number_of(a)?;
        let y = self.number_of(b)?;
        if x.is_nan() || y.is_nan() {
            Ok(None)
        } else {
            Ok(Some(x < y))
        }
    }

    /// JavaScript binary `+`.
    pub(crate) fn add<'a>(&mut self, a: Val<'a>, b: Val<'a>) -> Result<Val<'a>, EvalError> {
        let a = self.primitive_of(a)?;
        let b = self.primitive_of(b)?;
        if matches!(a, Val::Str(_)) || matches!(b, Val::Str(_)) {
            let x = self.string_of(a)?;
            let y = self.string_of(b)?;
            self.charge(x.len() + y.len())?;
            let mut s = String::with_capacity(x.len() + y.len());
            s.push_str(&x);
            s.push_str(&y);
            return Ok(Val::Str(Cow::Owned(s)));
        }
        Ok(Val::Num(self.number_of(a)? + self.number_of(b)?))
    }
}

fn push(out: &mut String, s: &str) -> Result<(), EvalError> {
    if out.len() + s.len() > MAX_STRING_LEN {
        return Err(EvalError::StringTooLong {
            max: MAX_STRING_LEN,
        });
    }
    out.push_str(s);
    Ok(())
}
