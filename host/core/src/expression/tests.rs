use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::value::{number_to_string, string_to_number};
use super::*;

fn parse(src: &str) -> Expression {
    Expression::parse(src, EvaluatorMode::Safe)
        .unwrap_or_else(|e| panic!("`{src}` should parse: {e}"))
}

fn eval_in(src: &str, scope: &Value) -> Option<Value> {
    parse(src).evaluate(scope)
}

fn eval(src: &str) -> Option<Value> {
    eval_in(src, &json!({}))
}

fn prop(src: &str, scope: &Value) -> Option<Value> {
    Expression::parse(src, EvaluatorMode::Property)
        .unwrap_or_else(|e| panic!("`{src}` should parse: {e}"))
        .evaluate(scope)
}

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

fn syntax_error(src: &str) -> String {
    match Expression::parse(src, EvaluatorMode::Safe) {
        Ok(e) => panic!("`{src}` should not parse, got {e:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------- conformance

#[test]
fn conformance_conditions() {
    let context = obj(json!({"seed": "S"}));
    let result = json!({"output": {"ok": true, "go": 1, "total": 1665}});
    let scope = ConditionScope::new(&context, Some(&result));
    let t = |src: &str| parse(src).evaluate_truthy(&scope);
    // FC-14
    assert!(t("result.output.ok"));
    assert!(!t("result.output.bad"));
    assert!(t("result.output.go"));
    // FC-17
    assert!(!t("result.output.total < 500"));
    assert!(t(
        "result.output.total >= 500 && result.output.total <= 2000"
    ));
    assert!(!t("result.output.total > 2000"));
    // FC-16 in safe mode: a valid comparison.
    let five = json!({"output": 5});
    let scope5 = ConditionScope::new(&context, Some(&five));
    assert!(parse("result.output > 1").evaluate_truthy(&scope5));
    assert_eq!(parse("true").evaluate(&scope5), Some(json!(true)));
}

#[test]
fn conformance_fc16_property_mode_rejects_operators() {
    let err = Expression::parse("result.output > 1", EvaluatorMode::Property).unwrap_err();
    assert_eq!(err.column(), Some(14));
    let lenient = Expression::parse_lenient("result.output > 1", EvaluatorMode::Property);
    assert!(!lenient.is_valid());
    assert!(lenient.error().is_some());
    let context = Map::new();
    let result = json!({"output": 5});
    let scope = ConditionScope::new(&context, Some(&result));
    assert_eq!(lenient.evaluate(&scope), None);
    assert!(!lenient.evaluate_truthy(&scope));
    assert!(!truthy(lenient.evaluate(&scope).as_ref()));
    assert!(matches!(
        lenient.try_evaluate(&scope),
        Err(EvalError::Invalid(_))
    ));
}

#[test]
fn conformance_transforms() {
    let context = obj(json!({"seed": "S", "k": 1, "my-node": {"v": 3}}));
    let output = json!({"x": {"y": 7}, "list": [{"ok": 1}]});
    let scope = TransformScope::new(Some(&output), &context);
    for mode in [EvaluatorMode::Safe, EvaluatorMode::Property] {
        let e = |src: &str| Expression::parse(src, mode).unwrap().evaluate(&scope);
        // FC-22
        assert_eq!(e("input.x.y"), Some(json!(7)));
        assert_eq!(e("context.seed"), Some(json!("S")));
        assert_eq!(e("input.list.length"), Some(json!(1)));
        assert_eq!(e("input.list.0.ok"), Some(json!(1)));
        assert_eq!(e("seed"), None, "transforms see only input and context");
    }
    // FC-23
    let ten = json!(10);
    let scope = TransformScope::new(Some(&ten), &context);
    assert_eq!(
        parse("input * 2 + context.k").evaluate(&scope),
        Some(json!(21))
    );
    assert!(
        parse("input * 2 + context.k")
            .evaluate(&scope)
            .unwrap()
            .is_i64()
    );
    assert_eq!(
        parse(r#"context["my-node"].v"#).evaluate(&scope),
        Some(json!(3))
    );
    assert_eq!(
        parse(r#"context["my-node"]"#).evaluate(&scope),
        Some(json!({"v": 3}))
    );
    // undefined input
    let scope = TransformScope::new(None, &context);
    assert_eq!(parse("input").evaluate(&scope), None);
    assert_eq!(parse("input.x").evaluate(&scope), None);
}

#[test]
fn conformance_loop_conditions() {
    // FC-35 / FC-37
    let context = obj(json!({"keepGoing": true, "result": 3}));
    let scope = ConditionScope::for_loop_controller(&context);
    assert!(parse("keepGoing").evaluate_truthy(&scope));
    assert!(parse("true").evaluate_truthy(&scope));
    assert_eq!(
        parse("result").evaluate(&scope),
        Some(json!(3)),
        "no result shadowing"
    );
    let stop = obj(json!({"keepGoing": false}));
    let scope = ConditionScope::new(&stop, None);
    assert!(!parse("keepGoing").evaluate_truthy(&scope));
    assert!(
        !Expression::parse("keepGoing", EvaluatorMode::Property)
            .unwrap()
            .evaluate_truthy(&scope)
    );
}

#[test]
fn strict_equality_with_string_literal() {
    let context = Map::new();
    let result = json!({"output": "OK", "action": "approve"});
    let scope = ConditionScope::new(&context, Some(&result));
    assert!(parse("result.output === 'OK'").evaluate_truthy(&scope));
    assert!(parse(r#"result.output === "OK""#).evaluate_truthy(&scope));
    assert!(!parse("result.output !== 'OK'").evaluate_truthy(&scope));
    assert!(parse("result.action == 'approve'").evaluate_truthy(&scope));
}

// ---------------------------------------------------------------- scopes

#[test]
fn condition_scope_resolution() {
    let context = obj(json!({
        "result": "ctx-result",
        "_outputs.A": {"ok": true},
        "_outputs.B": 1,
        "B": 2,
        "count": 4
    }));
    let result = json!({"output": 9});
    let scope = ConditionScope::new(&context, Some(&result));
    assert_eq!(parse("result.output").evaluate(&scope), Some(json!(9)));
    assert_eq!(parse("A.ok").evaluate(&scope), Some(json!(true)));
    assert_eq!(
        parse("B").evaluate(&scope),
        Some(json!(2)),
        "a real context key wins"
    );
    assert_eq!(parse("count").evaluate(&scope), Some(json!(4)));
    assert_eq!(parse("context.count").evaluate(&scope), Some(json!(4)));
    assert_eq!(
        parse("context.result").evaluate(&scope),
        Some(json!("ctx-result"))
    );
    assert_eq!(
        parse(r#"context["_outputs.A"].ok"#).evaluate(&scope),
        Some(json!(true))
    );
    assert_eq!(parse("C").evaluate(&scope), None);
    assert_eq!(parse("C.ok").evaluate(&scope), None);
    // The identity of a node reached through two names.
    assert!(parse(r#"A === context["_outputs.A"]"#).evaluate_truthy(&scope));

    // A context key named `context` wins over the alias.
    let context2 = obj(json!({"context": {"x": 1}, "x": 2}));
    let scope2 = ConditionScope::new(&context2, None);
    assert_eq!(parse("context.x").evaluate(&scope2), Some(json!(1)));

    // Property mode: no `context` alias, no prototype members.
    let p = |src: &str| {
        Expression::parse(src, EvaluatorMode::Property)
            .unwrap()
            .evaluate(&scope)
    };
    assert_eq!(p("context.count"), None);
    assert_eq!(p("count"), Some(json!(4)));
    assert_eq!(p("A.ok"), Some(json!(true)));
    assert_eq!(p("result.output"), Some(json!(9)));
    assert_eq!(p("constructor"), None);
    assert_eq!(p("result.constructor"), None);

    // Custom plain-output maps and lookups.
    let outputs = obj(json!({"X": 5}));
    let scope = ConditionScope::new(&context, None).with_outputs(PlainOutputs::Map(&outputs));
    assert_eq!(parse("X").evaluate(&scope), Some(json!(5)));
    assert_eq!(parse("A").evaluate(&scope), None);
    let fixed = json!("F");
    let lookup = |name: &str| (name == "Y").then_some(&fixed);
    let scope = ConditionScope::new(&context, None).with_outputs(PlainOutputs::Lookup(&lookup));
    assert_eq!(parse("Y").evaluate(&scope), Some(json!("F")));
    let scope = ConditionScope::new(&context, None).with_outputs(PlainOutputs::None);
    assert_eq!(parse("A").evaluate(&scope), None);
}

struct OwnedScope;

impl Scope for OwnedScope {
    fn lookup(&self, name: &str) -> Option<ScopeValue<'_>> {
        match name {
            "n" => Some(ScopeValue::Owned(json!(41))),
            "o" => Some(ScopeValue::Owned(json!({"list": [1, {"k": "v"}]}))),
            _ => None,
        }
    }
}

#[test]
fn owned_scope_values() {
    let e = |src: &str| parse(src).evaluate(&OwnedScope);
    assert_eq!(e("n + 1"), Some(json!(42)));
    assert_eq!(e("o.list[1].k"), Some(json!("v")));
    assert_eq!(e("o.list.length"), Some(json!(2)));
    assert_eq!(e("o"), Some(json!({"list": [1, {"k": "v"}]})));
    assert_eq!(
        e("o === o"),
        Some(json!(false)),
        "owned values are fresh per lookup"
    );
    assert_eq!(parse("n").evaluate(&EmptyScope), None);
}

// ---------------------------------------------------------------- language

#[test]
fn literals() {
    assert_eq!(eval("42"), Some(json!(42)));
    assert_eq!(eval("1.5"), Some(json!(1.5)));
    assert_eq!(eval(".5"), Some(json!(0.5)));
    assert_eq!(eval("1e3"), Some(json!(1000)));
    assert_eq!(eval("2.5E-1"), Some(json!(0.25)));
    assert_eq!(eval("1.e1"), Some(json!(10)));
    assert_eq!(eval("0x1F"), Some(json!(31)));
    assert_eq!(eval("0o17"), Some(json!(15)));
    assert_eq!(eval("0b101"), Some(json!(5)));
    assert_eq!(eval("true"), Some(json!(true)));
    assert_eq!(eval("false"), Some(json!(false)));
    assert_eq!(eval("null"), Some(Value::Null));
    assert_eq!(eval("undefined"), None);
    assert_eq!(eval("NaN"), Some(Value::Null));
    assert_eq!(eval("Infinity"), Some(Value::Null));
    assert_eq!(eval("'a\\'b'"), Some(json!("a'b")));
    assert_eq!(
        eval(r#""a\"b\\c\n\t\x41\u0042\u{43}\u{1F600}""#),
        Some(json!("a\"b\\c\n\tABC😀"))
    );
    assert_eq!(eval(r#""\uD83D\uDE00""#), Some(json!("😀")));
    assert_eq!(eval(r#""\uD83D""#), Some(json!("\u{FFFD}")));
    assert_eq!(eval(r#""\q""#), Some(json!("q")));
    assert_eq!(eval("[1, 'a', [true]]"), Some(json!([1, "a", [true]])));
    assert_eq!(eval("[1, 2,]"), Some(json!([1, 2])));
    assert_eq!(eval("[]"), Some(json!([])));
    assert_eq!(eval("[undefined, 0/0]"), Some(json!([null, null])));
    // Scope shadows the globals.
    assert_eq!(
        eval_in("undefined", &json!({"undefined": 1})),
        Some(json!(1))
    );
}

#[test]
fn member_access() {
    let scope = json!({
        "a": {"b": {"c": 1}, "list": [10, 20, {"ok": true}], "key-with-dash": 5, "x": "y"},
        "s": "héllo😀",
        "n": null,
        "num": 3
    });
    let e = |src: &str| eval_in(src, &scope);
    assert_eq!(e("a.b.c"), Some(json!(1)));
    assert_eq!(e("a . b . c"), Some(json!(1)));
    assert_eq!(e("a.list.0"), Some(json!(10)));
    assert_eq!(e("a.list.2.ok"), Some(json!(true)));
    assert_eq!(e("a.list[1]"), Some(json!(20)));
    assert_eq!(e("a.list['1']"), Some(json!(20)));
    assert_eq!(e("a.list[1.0]"), Some(json!(20)));
    assert_eq!(e("a.list[0.5]"), None);
    assert_eq!(e("a.list[-1]"), None);
    assert_eq!(e("a.list['01']"), None);
    assert_eq!(e("a.list[5]"), None);
    assert_eq!(e("a.list[1 + 1].ok"), Some(json!(true)));
    assert_eq!(e("a.list.length"), Some(json!(3)));
    assert_eq!(e("a['key-with-dash']"), Some(json!(5)));
    assert_eq!(e(r#"a["x"]"#), Some(json!("y")));
    assert_eq!(e("a[a.x]"), None);
    assert_eq!(e("s.length"), Some(json!(7)), "UTF-16 length");
    assert_eq!(e("s[1]"), Some(json!("é")));
    assert_eq!(e("s.0"), Some(json!("h")));
    assert_eq!(e("'abc'.length"), Some(json!(3)));
    assert_eq!(e("[1,2,3].length"), Some(json!(3)));
    assert_eq!(e("[1,2,3][2]"), Some(json!(3)));
    assert_eq!(e("(a.b).c"), Some(json!(1)));
    // Prototype members do not exist.
    assert_eq!(e("a.constructor"), None);
    assert_eq!(e("a.__proto__"), None);
    assert_eq!(e("a.toString"), None);
    assert_eq!(e("s.toUpperCase"), None);
    assert_eq!(e("num.toFixed"), None);
    assert_eq!(e("a.list.map"), None);
    assert_eq!(e("a['constructor']"), None);
    assert_eq!(e("constructor"), None);
    // Own members named like prototype members are found.
    assert_eq!(
        eval_in("o.constructor", &json!({"o": {"constructor": 1}})),
        Some(json!(1))
    );
    assert_eq!(
        eval_in("o.length", &json!({"o": {"length": 2}})),
        Some(json!(2))
    );
    // Member of null/undefined: the whole expression is undefined.
    assert_eq!(e("n.x"), None);
    assert_eq!(e("missing.x"), None);
    assert_eq!(e("a.nope.deeper"), None);
    assert_eq!(e("a.nope.deeper || true"), None);
    assert_eq!(e("missing && missing.x"), None);
    assert_eq!(e("n && n.x"), Some(Value::Null));
    assert_eq!(e("a.b && a.b.c"), Some(json!(1)));
    let err = parse("a.nope.deeper").try_evaluate(&scope).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read property `deeper` of undefined"
    );
    // Selected values are returned unchanged.
    let big = json!({"v": 18_446_744_073_709_551_615u64, "f": 1.0});
    assert_eq!(
        eval_in("v", &big),
        Some(json!(18_446_744_073_709_551_615u64))
    );
    assert_eq!(eval_in("f", &big), Some(json!(1.0)));
    assert_eq!(eval_in("+f", &big), Some(json!(1)));
}

#[test]
fn arithmetic_and_concatenation() {
    assert_eq!(eval("1 + 2 * 3"), Some(json!(7)));
    assert_eq!(eval("(1 + 2) * 3"), Some(json!(9)));
    assert_eq!(eval("7 % 3"), Some(json!(1)));
    assert_eq!(eval("-7 % 3"), Some(json!(-1)));
    assert_eq!(eval("7 / 2"), Some(json!(3.5)));
    assert_eq!(eval("0.5 * 4"), Some(json!(2)));
    assert!(eval("0.5 * 4").unwrap().is_i64());
    assert_eq!(eval("1 / 0"), Some(Value::Null));
    assert_eq!(eval("0 / 0"), Some(Value::Null));
    assert_eq!(eval("-0"), Some(json!(0)));
    assert_eq!(eval("0.1 + 0.2"), Some(json!(0.30000000000000004)));
    assert_eq!(eval("10 - 2 - 3"), Some(json!(5)));
    assert_eq!(eval("1 + '1'"), Some(json!("11")));
    assert_eq!(eval("'a' + 1.5"), Some(json!("a1.5")));
    assert_eq!(
        eval("'a' + true + null + undefined"),
        Some(json!("atruenullundefined"))
    );
    assert_eq!(eval("1 + 2 + 'x'"), Some(json!("3x")));
    assert_eq!(eval("'x' + 1 + 2"), Some(json!("x12")));
    assert_eq!(eval("'' + [1, [2, 3], null]"), Some(json!("1,2,3,")));
    assert_eq!(eval("'' + 1e21"), Some(json!("1e+21")));
    assert_eq!(eval("'' + 1/3"), Some(json!("0.3333333333333333")));
    assert_eq!(eval("'' + (0/0)"), Some(json!("NaN")));
    assert_eq!(
        eval_in("'' + o", &json!({"o": {}})),
        Some(json!("[object Object]"))
    );
    assert_eq!(eval("'3' * '4'"), Some(json!(12)));
    assert_eq!(eval("'3' - 1"), Some(json!(2)));
    assert_eq!(eval("true + 1"), Some(json!(2)));
    assert_eq!(eval("null + 1"), Some(json!(1)));
    assert_eq!(eval("undefined + 1"), Some(Value::Null), "NaN");
    assert_eq!(eval("[] + []"), Some(json!("")));
    assert_eq!(eval("[5] * 2"), Some(json!(10)));
    assert_eq!(eval("-'5'"), Some(json!(-5)));
    assert_eq!(eval("+''"), Some(json!(0)));
    assert_eq!(eval("+'abc'"), Some(Value::Null));
    assert_eq!(eval("- -1"), Some(json!(1)));
    assert_eq!(eval("!!'x'"), Some(json!(true)));
    assert_eq!(eval("!0"), Some(json!(true)));
    assert_eq!(eval("!-0"), Some(json!(true)));
    assert_eq!(eval("-!0"), Some(json!(-1)));
    assert!(syntax_error("2 ** 2").contains("unexpected '*' at column 4"));
}

#[test]
fn comparisons() {
    assert_eq!(eval("1 < 2"), Some(json!(true)));
    assert_eq!(eval("2 <= 2"), Some(json!(true)));
    assert_eq!(eval("3 > 2"), Some(json!(true)));
    assert_eq!(eval("2 >= 3"), Some(json!(false)));
    assert_eq!(
        eval("'10' < '9'"),
        Some(json!(true)),
        "strings compare lexicographically"
    );
    assert_eq!(
        eval("'10' < 9"),
        Some(json!(false)),
        "mixed compares numerically"
    );
    assert_eq!(eval("'a' < 'b'"), Some(json!(true)));
    assert_eq!(eval("'B' < 'a'"), Some(json!(true)));
    // UTF-16 order: U+FF61 > U+1F600's high surrogate 0xD83D.
    assert_eq!(eval("'\\u{FF61}' > '😀'"), Some(json!(true)));
    assert_eq!(eval("(0/0) < 1"), Some(json!(false)));
    assert_eq!(eval("(0/0) >= 1"), Some(json!(false)));
    assert_eq!(eval("(0/0) <= 1"), Some(json!(false)));
    assert_eq!(eval("NaN > NaN"), Some(json!(false)));
    assert_eq!(eval("null >= 0"), Some(json!(true)));
    assert_eq!(eval("undefined >= 0"), Some(json!(false)));
    assert_eq!(eval("'abc' < 1"), Some(json!(false)));
    assert_eq!(eval("[2] > 1"), Some(json!(true)));
    assert_eq!(eval("true > false"), Some(json!(true)));
    assert_eq!(eval("1 < 2 < 3"), Some(json!(true)));
    assert_eq!(
        eval("3 > 2 > 1"),
        Some(json!(false)),
        "JS: (3 > 2) > 1 is true > 1"
    );
}

#[test]
fn equality() {
    let t = |src: &str| eval(src) == Some(json!(true));
    assert!(t("null == undefined"));
    assert!(!t("null === undefined"));
    assert!(!t("null == 0"));
    assert!(!t("undefined == false"));
    assert!(t("'1' == 1"));
    assert!(!t("'1' === 1"));
    assert!(t("1 === 1.0"));
    assert!(t("0 == ''"));
    assert!(t("0 == ' \\n'"));
    assert!(t("true == 1"));
    assert!(!t("true == 2"));
    assert!(!t("'true' == true"));
    assert!(t("'1' == true"));
    assert!(t("[] == false"));
    assert!(t("[1] == 1"));
    assert!(t("[1,2] == '1,2'"));
    assert!(!t("NaN == NaN"));
    assert!(t("NaN != NaN"));
    assert!(t("0 === -0"));
    assert!(t("'a' !== 'b'"));
    assert!(t("'a' != 'b'"));
    assert!(!t("[] == []"), "distinct array literals");
    let scope = json!({"a": {"x": 1}, "b": {"x": 1}, "l": [1], "n": 1.0});
    let t = |src: &str| eval_in(src, &scope) == Some(json!(true));
    assert!(t("a === a"));
    assert!(t("a == a"));
    assert!(!t("a == b"), "objects compare by identity");
    assert!(!t("a === b"));
    assert!(t("a.x === b.x"));
    assert!(t("l == 1"));
    assert!(t("a == '[object Object]'"));
    assert!(t("n === 1"));
}

#[test]
fn logic_and_conditional() {
    assert_eq!(eval("0 || 'x'"), Some(json!("x")));
    assert_eq!(eval("1 || 'x'"), Some(json!(1)));
    assert_eq!(eval("0 && 'x'"), Some(json!(0)));
    assert_eq!(eval("1 && 'x'"), Some(json!("x")));
    assert_eq!(eval("'' || 0 || null"), Some(Value::Null));
    assert_eq!(eval("1 && 2 && 3"), Some(json!(3)));
    assert_eq!(eval("0 || 1 && 2"), Some(json!(2)));
    assert_eq!(eval("1 || 0 && 2"), Some(json!(1)));
    assert_eq!(eval("null ?? 'd'"), Some(json!("d")));
    assert_eq!(eval("undefined ?? null ?? 3"), Some(json!(3)));
    assert_eq!(eval("0 ?? 'd'"), Some(json!(0)));
    assert_eq!(eval("missing ?? 'd'"), Some(json!("d")));
    assert_eq!(eval("(0 || null) ?? 'd'"), Some(json!("d")));
    assert_eq!(eval("1 ? 'a' : 'b'"), Some(json!("a")));
    assert_eq!(eval("0 ? 'a' : 'b'"), Some(json!("b")));
    assert_eq!(eval("0 ? 'a' : 1 ? 'b' : 'c'"), Some(json!("b")));
    assert_eq!(eval("1 ? 0 ? 'a' : 'b' : 'c'"), Some(json!("b")));
    assert_eq!(eval("1 < 2 ? 'lt' : 'ge'"), Some(json!("lt")));
    assert_eq!(eval("!missing"), Some(json!(true)));
    // Short-circuit avoids the TypeError.
    assert_eq!(eval("false && missing.x"), Some(json!(false)));
    assert_eq!(eval("true || missing.x"), Some(json!(true)));
    assert_eq!(eval("1 ?? missing.x"), Some(json!(1)));
    assert_eq!(eval("1 ? 2 : missing.x"), Some(json!(2)));
}

#[test]
fn truthiness_helpers() {
    for (v, expected) in [
        (json!(null), false),
        (json!(false), false),
        (json!(0), false),
        (json!(0.0), false),
        (json!(""), false),
        (json!(true), true),
        (json!(-1), true),
        (json!("0"), true),
        (json!([]), true),
        (json!({}), true),
    ] {
        assert_eq!(is_truthy(&v), expected, "{v}");
        assert_eq!(truthy(Some(&v)), expected, "{v}");
    }
    assert!(!truthy(None));
}

#[test]
fn js_number_to_string() {
    for (f, s) in [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (-1.5, "-1.5"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (1.5e300, "1.5e+300"),
        (0.1, "0.1"),
        (1.0 / 3.0, "0.3333333333333333"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (9007199254740993.0, "9007199254740992"),
    ] {
        assert_eq!(number_to_string(f), s, "{f:e}");
    }
}

#[test]
fn js_string_to_number() {
    for (s, f) in [
        ("", 0.0),
        ("  ", 0.0),
        (" 12 ", 12.0),
        ("\n\t1.5\u{FEFF}", 1.5),
        ("0x10", 16.0),
        ("0b11", 3.0),
        ("0o10", 8.0),
        ("1e3", 1000.0),
        ("-1e-3", -0.001),
        ("+.5", 0.5),
        ("5.", 5.0),
        ("Infinity", f64::INFINITY),
        ("-Infinity", f64::NEG_INFINITY),
        ("007", 7.0),
    ] {
        assert_eq!(string_to_number(s), f, "{s:?}");
    }
    for s in [
        "abc", "1_000", "inf", "infinity", "nan", "NaN", "-0x10", "0x", "1e", ".", "+", "1 2",
        "\u{85}1",
    ] {
        assert!(string_to_number(s).is_nan(), "{s:?}");
    }
}

// ---------------------------------------------------------------- errors and limits

#[test]
fn syntax_errors_name_the_column() {
    assert_eq!(
        syntax_error("a > )"),
        "unexpected ')' at column 5 in `a > )`"
    );
    assert_eq!(syntax_error(""), "expression is empty at column 1 in ``");
    assert_eq!(
        syntax_error("a +"),
        "unexpected end of expression at column 4 in `a +`"
    );
    assert_eq!(
        syntax_error("a = 1"),
        "'=' (assignment) is not supported; use '==' or '===' at column 3 in `a = 1`"
    );
    assert!(syntax_error("(a").contains("expected ')' but found end of expression"));
    assert!(syntax_error("f(1)").contains("function calls are not supported at column 2"));
    assert!(syntax_error("a ?? b || c").contains("cannot be mixed"));
    assert!(syntax_error("a && b ?? c").contains("cannot be mixed"));
    assert!(syntax_error("a.").contains("expected a property name after '.'"));
    assert!(syntax_error("a.'x'").contains("expected a property name"));
    assert!(syntax_error("'abc").contains("unterminated string literal at column 1"));
    assert!(syntax_error("1x").contains("identifier starts immediately after number"));
    assert!(syntax_error("01").contains("leading zeros"));
    assert!(syntax_error("1e").contains("missing exponent"));
    assert!(syntax_error("a & b").contains("'&' is not supported"));
    assert!(syntax_error("a | b").contains("'|' is not supported"));
    assert!(syntax_error("a # b").contains("unexpected character '#' at column 3"));
    assert!(syntax_error("[1,,2]").contains("array holes"));
    assert!(syntax_error("a b").contains("unexpected identifier 'b' at column 3"));
    assert!(syntax_error("1 ? 2").contains("expected ':'"));
    assert!(
        syntax_error("é > )").contains("at column 5"),
        "columns count characters"
    );
    assert!(syntax_error("`x`").contains("template literals"));
    assert!(syntax_error("'\\1'").contains("octal"));
    let long = format!("{}+", "a".repeat(200));
    let message = syntax_error(&long);
    assert!(message.contains('…') && message.len() < 200, "{message}");
}

#[test]
fn property_mode() {
    let scope = json!({
        "a": {"b": [{"ok": 1}], "": {"e": 2}, "s": "xyz", "n": null},
        "$x": 1,
        "_y": 2
    });
    assert_eq!(prop("a.b.0.ok", &scope), Some(json!(1)));
    assert_eq!(prop("a.b.length", &scope), Some(json!(1)));
    assert_eq!(prop("a.s.length", &scope), Some(json!(3)));
    assert_eq!(prop("a.s.1", &scope), Some(json!("y")));
    assert_eq!(
        prop("a..e", &scope),
        Some(json!(2)),
        "empty segment is key \"\""
    );
    assert_eq!(prop("$x", &scope), Some(json!(1)));
    assert_eq!(prop("_y", &scope), Some(json!(2)));
    assert_eq!(prop("a.n", &scope), Some(Value::Null));
    assert_eq!(prop("a.n.x", &scope), None);
    assert_eq!(prop("a.missing.x", &scope), None);
    assert_eq!(prop("constructor", &scope), None);
    assert_eq!(prop("a.constructor", &scope), None);
    assert_eq!(prop("a.b.01", &scope), None);
    assert_eq!(prop("a", &scope), Some(scope["a"].clone()));
    for bad in ["", "a b", "a[0]", "a-b", "a > 1", "'x'", "a.b()", "é"] {
        let err = Expression::parse(bad, EvaluatorMode::Property).unwrap_err();
        assert!(
            matches!(err, ExpressionError::InvalidProperty { .. }),
            "{bad}: {err}"
        );
        let lenient = Expression::parse_lenient(bad, EvaluatorMode::Property);
        assert_eq!(lenient.evaluate(&scope), None);
        assert_eq!(lenient.to_string(), bad);
        assert_eq!(lenient.source(), bad);
        assert_eq!(lenient.mode(), EvaluatorMode::Property);
    }
    assert_eq!(
        Expression::parse("a-b", EvaluatorMode::Property)
            .unwrap_err()
            .to_string(),
        "invalid property expression: unexpected character '-' at column 2 in `a-b` (only letters, digits, '_', '$' and '.' are allowed)"
    );
    // Lenient parsing of valid expressions is the same as parsing.
    assert_eq!(
        Expression::parse_lenient("a.s", EvaluatorMode::Property),
        Expression::parse("a.s", EvaluatorMode::Property).unwrap()
    );
    assert!(Expression::parse_lenient("a.s", EvaluatorMode::Safe).is_valid());
    assert_eq!(
        Expression::parse_lenient("a >", EvaluatorMode::Safe).evaluate(&scope),
        None
    );
}

#[test]
fn limits() {
    let long = "1".repeat(MAX_SOURCE_LEN + 1);
    for mode in [EvaluatorMode::Safe, EvaluatorMode::Property] {
        let err = Expression::parse(&long, mode).unwrap_err();
        assert!(matches!(err, ExpressionError::TooLong { .. }), "{err}");
    }
    assert!(Expression::parse(&"1".repeat(MAX_SOURCE_LEN), EvaluatorMode::Property).is_ok());

    let nested = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
    assert!(Expression::parse(&nested(MAX_NESTING - 1), EvaluatorMode::Safe).is_ok());
    let err = Expression::parse(&nested(MAX_NESTING), EvaluatorMode::Safe).unwrap_err();
    assert!(matches!(err, ExpressionError::TooDeep { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("expression nests deeper than 64 levels at column")
    );
    let brackets = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    assert!(matches!(
        Expression::parse(&brackets, EvaluatorMode::Safe),
        Err(ExpressionError::TooDeep { .. })
    ));
    let ternaries = "1 ? ".repeat(100) + "1" + &" : 1".repeat(100);
    assert!(matches!(
        Expression::parse(&ternaries, EvaluatorMode::Safe),
        Err(ExpressionError::TooDeep { .. })
    ));
    // Long flat chains are fine (no nesting).
    let chain = vec!["1"; 1000].join(" + ");
    assert_eq!(eval(&chain), Some(json!(1000)));
    let unary = "!".repeat(1001) + "0";
    assert_eq!(eval(&unary), Some(json!(true)));

    // String limits.
    let half = "x".repeat(MAX_STRING_LEN / 2 + 1);
    let scope = json!({"s": half, "l": vec![half.clone(); 3]});
    assert_eq!(
        eval_in("s", &scope).map(|v| v.as_str().unwrap().len()),
        Some(half.len())
    );
    let e = parse("s + s");
    assert_eq!(e.evaluate(&scope), None);
    assert!(matches!(
        e.try_evaluate(&scope),
        Err(EvalError::StringTooLong { .. })
    ));
    assert_eq!(eval_in("'' + l", &scope), None);
    assert_eq!(eval_in("l == 1", &scope), None);
    let quarter = json!({"q": "y".repeat(MAX_STRING_LEN / 4)});
    let many = vec!["(q + q)"; 40].join(" && ");
    let e = parse(&many);
    assert!(matches!(
        e.try_evaluate(&quarter),
        Err(EvalError::WorkExceeded { .. })
    ));
    // Deeply nested arrays converted to strings.
    let mut deep = json!(1);
    for _ in 0..(MAX_VALUE_DEPTH + 2) {
        deep = json!([deep]);
    }
    let e = parse("'' + d");
    assert!(matches!(
        e.try_evaluate(&json!({ "d": deep })),
        Err(EvalError::ValueTooDeep { .. })
    ));
}

#[test]
fn display_is_canonical() {
    for (src, printed) in [
        ("a+b*c", "a + b * c"),
        ("(a+b)*c", "(a + b) * c"),
        ("(a+b)+c", "a + b + c"),
        ("a+(b+c)", "a + (b + c)"),
        ("a-(b-c)", "a - (b - c)"),
        ("!(!x)", "!!x"),
        ("-(-x)", "- -x"),
        ("-(a+b)", "-(a + b)"),
        ("(a ?? b) || c", "(a ?? b) || c"),
        ("(a || b) ?? c", "(a || b) ?? c"),
        ("a || b && c", "a || b && c"),
        ("(a || b) && c", "(a || b) && c"),
        ("a ? b : c ? d : e", "a ? b : c ? d : e"),
        ("(a ? b : c) ? d : e", "(a ? b : c) ? d : e"),
        ("a['x-y'][0].z.0", "a[\"x-y\"][0].z.0"),
        ("(1).x", "(1).x"),
        ("'it'", "\"it\""),
        ("'a\"\\n'", "\"a\\\"\\n\""),
        ("'a\\\\'", "\"a\\\\\""),
        ("[1,[2,3],]", "[1, [2, 3]]"),
        ("1e21 + 0.5e-7", "1e+21 + 5e-8"),
        ("1e999", "1e999"),
        (
            "result.output.total >= 500 && result.output.total <= 2000",
            "result.output.total >= 500 && result.output.total <= 2000",
        ),
    ] {
        let e = parse(src);
        assert_eq!(e.to_string(), printed, "{src}");
        assert_eq!(parse(printed), e, "{src}");
    }
}

#[test]
fn evaluator_mode_serde() {
    assert_eq!(
        serde_json::from_str::<EvaluatorMode>("\"safe\"").unwrap(),
        EvaluatorMode::Safe
    );
    assert_eq!(
        serde_json::from_str::<EvaluatorMode>("\"property\"").unwrap(),
        EvaluatorMode::Property
    );
    assert!(serde_json::from_str::<EvaluatorMode>("\"unsafe\"").is_err());
    assert_eq!(
        serde_json::to_string(&EvaluatorMode::Property).unwrap(),
        "\"property\""
    );
    assert_eq!(EvaluatorMode::default(), EvaluatorMode::Safe);
    assert_eq!(
        "property".parse::<EvaluatorMode>(),
        Ok(EvaluatorMode::Property)
    );
    assert!("x".parse::<EvaluatorMode>().is_err());
    assert_eq!(EvaluatorMode::Safe.to_string(), "safe");
}

#[test]
fn expression_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    check::<Expression>();
    check::<ExpressionError>();
    check::<EvalError>();
    let e = parse("a + 1");
    let handle = std::thread::spawn(move || e.evaluate(&json!({"a": 1})));
    assert_eq!(handle.join().unwrap(), Some(json!(2)));
}

// ---------------------------------------------------------------- properties

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z0-9 ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("[a-c0-2]{1,2}", inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Sources built from tokens of the language (mostly valid-ish).
fn arb_token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("a"),
        Just("b"),
        Just("c"),
        Just("a0"),
        Just("0"),
        Just("1"),
        Just("2.5"),
        Just("'s'"),
        Just("\"1\""),
        Just("true"),
        Just("null"),
        Just("undefined"),
        Just("NaN"),
        Just("."),
        Just("["),
        Just("]"),
        Just("("),
        Just(")"),
        Just(","),
        Just("?"),
        Just(":"),
        Just("??"),
        Just("&&"),
        Just("||"),
        Just("!"),
        Just("+"),
        Just("-"),
        Just("*"),
        Just("/"),
        Just("%"),
        Just("<"),
        Just("<="),
        Just(">"),
        Just(">="),
        Just("=="),
        Just("!="),
        Just("==="),
        Just("!=="),
        Just("length"),
        Just("constructor"),
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.join(" "))
}

/// Well-formed sources (every compound parenthesized).
fn arb_expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[abc]".prop_map(String::from),
        (0u32..1000).prop_map(|n| n.to_string()),
        (0.0f64..1e6).prop_map(number_to_string),
        Just("1e-9".to_owned()),
        "[a-z'\"\\\\ ]{0,4}".prop_map(|s| {
            let mut out = String::new();
            ast::write_string_literal(&mut out, &s).unwrap();
            out
        }),
        prop_oneof![Just("true"), Just("false"), Just("null"), Just("undefined")]
            .prop_map(String::from),
    ];
    leaf.prop_recursive(5, 48, 3, |inner| {
        let binop = prop_oneof![
            Just("*"),
            Just("/"),
            Just("%"),
            Just("+"),
            Just("-"),
            Just("<"),
            Just("<="),
            Just(">"),
            Just(">="),
            Just("=="),
            Just("!="),
            Just("==="),
            Just("!=="),
            Just("&&"),
            Just("||"),
            Just("??"),
        ];
        prop_oneof![
            (inner.clone(), binop, inner.clone()).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (prop_oneof![Just("!"), Just("-"), Just("+")], inner.clone())
                .prop_map(|(op, a)| format!("{op}({a})")),
            (inner.clone(), "[a-c0-2]").prop_map(|(a, name)| format!("({a}).{name}")),
            (inner.clone(), inner.clone()).prop_map(|(a, i)| format!("({a})[{i}]")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("(({c}) ? ({a}) : ({b}))")),
            prop::collection::vec(inner, 0..3).prop_map(|items| format!("[{}]", items.join(", "))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_never_panics(src in any::<String>()) {
        let _ = Expression::parse(&src, EvaluatorMode::Safe);
        let _ = Expression::parse(&src, EvaluatorMode::Property);
        let _ = Expression::parse_lenient(&src, EvaluatorMode::Safe).evaluate(&EmptyScope);
    }

    #[test]
    fn parse_never_panics_on_token_soup(src in arb_token_soup(), scope in arb_json()) {
        if let Ok(e) = Expression::parse(&src, EvaluatorMode::Safe) {
            let _ = e.evaluate(&scope);
            let printed = e.to_string();
            let reparsed = Expression::parse(&printed, EvaluatorMode::Safe);
            prop_assert!(reparsed.is_ok(), "{} printed as {}", src, printed);
            prop_assert_eq!(reparsed.unwrap().to_string(), printed);
        }
    }

    #[test]
    fn evaluation_never_panics(src in arb_expression(), a in arb_json(), b in arb_json(), c in arb_json()) {
        let e = Expression::parse(&src, EvaluatorMode::Safe);
        prop_assert!(e.is_ok(), "{}: {:?}", src, e);
        let e = e.unwrap();
        let scope = json!({"a": a, "b": b, "c": c});
        let value = e.evaluate(&scope);
        let is_true = e.evaluate_truthy(&scope);
        // JSON loses only the truthiness of ±Infinity (it becomes null).
        prop_assert!(is_true == truthy(value.as_ref()) || (is_true && value == Some(Value::Null)));
        if value.is_some() {
            prop_assert_eq!(eval_in(&format!("!!({src})"), &scope), Some(Value::Bool(is_true)));
        }
        let context = obj(scope.clone());
        let _ = e.evaluate(&ConditionScope::new(&context, Some(&scope)));
        let _ = e.evaluate(&TransformScope::new(Some(&scope), &context));
    }

    #[test]
    fn display_round_trips(src in arb_expression(), scope in arb_json()) {
        let e = parse(&src);
        let printed = e.to_string();
        let reparsed = parse(&printed);
        prop_assert_eq!(&reparsed, &e, "{} printed as {}", src, printed);
        prop_assert_eq!(reparsed.to_string(), printed);
        let scope = json!({"a": scope});
        prop_assert_eq!(reparsed.evaluate(&scope), e.evaluate(&scope));
    }

    #[test]
    fn double_not_is_truthiness(x in arb_json()) {
        let scope = json!({"x": x.clone()});
        prop_assert_eq!(eval_in("!!x", &scope), Some(Value::Bool(is_truthy(&x))));
        prop_assert_eq!(parse("x").evaluate_truthy(&scope), is_truthy(&x));
    }

    #[test]
    fn integer_addition(a in -(1i64 << 40)..(1i64 << 40), b in -(1i64 << 40)..(1i64 << 40)) {
        let result = eval(&format!("{a} + {b}"));
        prop_assert_eq!(result, Some(json!(a + b)));
        let scope = json!({"a": a, "b": b});
        prop_assert_eq!(eval_in("a - b", &scope), Some(json!(a - b)));
        prop_assert_eq!(eval_in("'' + a", &scope), Some(json!(a.to_string())));
    }

    #[test]
    fn numeric_comparisons_are_consistent(a in any::<f64>(), b in any::<f64>()) {
        let to_json = |f: f64| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
        let scope = json!({"a": to_json(a), "b": to_json(b)});
        let t = |src: &str| eval_in(src, &scope) == Some(json!(true));
        if !a.is_nan() && !b.is_nan() {
            prop_assert_eq!(t("a < b"), !t("a >= b"));
            prop_assert_eq!(t("a > b"), !t("a <= b"));
            let outcomes = [t("a < b"), t("a === b"), t("a > b")];
            prop_assert_eq!(outcomes.iter().filter(|x| **x).count(), 1);
            prop_assert_eq!(t("a == b"), t("a === b"));
        }
    }

    #[test]
    fn number_to_string_round_trips(f in any::<f64>()) {
        let s = number_to_string(f);
        if f.is_nan() {
            prop_assert_eq!(s, "NaN");
        } else {
            prop_assert_eq!(string_to_number(&s), f);
        }
    }

    #[test]
    fn property_mode_matches_safe_paths(
        first in "[a-c]",
        rest in prop::collection::vec("[a-c0-2]", 0..4),
        scope in arb_json(),
    ) {
        let src = std::iter::once(first).chain(rest).collect::<Vec<_>>().join(".");
        let property = Expression::parse(&src, EvaluatorMode::Property).unwrap();
        prop_assert_eq!(property.evaluate(&scope), parse(&src).evaluate(&scope));
    }

    #[test]
    fn property_mode_accepts_exactly_its_alphabet(src in "[A-Za-z0-9_$. \\-\\[\\]>]{0,12}") {
        let valid = !src.is_empty()
            && src.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'));
        prop_assert_eq!(Expression::parse(&src, EvaluatorMode::Property).is_ok(), valid);
    }
}
