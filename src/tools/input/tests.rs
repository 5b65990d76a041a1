//! Unit tests for the JSON Schema → Cedar type mapping and value conversion.

use serde_json::json;

use super::*;

#[track_caller]
fn refused(schema: serde_json::Value, path: &str, reason_part: &str) {
    let err = InputType::from_tool_schema(&schema).unwrap_err();
    assert_eq!(err.path, path, "{err}");
    assert!(err.reason.contains(reason_part), "{err}");
}

#[test]
fn maps_scalars_sets_records_and_optionality() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "enum": ["a", "b"] },
            "count": { "type": "integer" },
            "page": { "type": "number" },
            "amount": { "type": "number", "format": "decimal" },
            "flag": { "type": "boolean" },
            "labels": { "type": "array", "items": { "type": "string" } },
            "nested": { "type": "object", "properties": { "x-y": { "type": "string" } }, "required": ["x-y"] },
            "maybe": { "type": ["string", "null"] }
        },
        "required": ["name", "maybe"]
    });
    let ty = InputType::from_tool_schema(&schema).unwrap();
    assert_eq!(
        ty.cedar_type(),
        "{\"amount\"?: decimal, \"count\"?: Long, \"flag\"?: Bool, \"labels\"?: Set<String>, \"maybe\"?: String, \"name\": String, \"nested\"?: {\"x-y\": String}, \"page\"?: Long}"
    );
}

#[test]
fn refuses_what_cedar_cannot_type() {
    refused(
        json!({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}}),
        "/properties/a",
        "oneOf",
    );
    refused(
        json!({"type": "object", "properties": {"a": {"type": "object"}}}),
        "/properties/a",
        "without declared",
    );
    refused(
        json!({"type": "object", "properties": {"a": {"type": ["string", "number", "boolean"]}}}),
        "/properties/a",
        "union",
    );
    refused(
        json!({"type": "object", "properties": {"a": {"type": "array"}}}),
        "/properties/a",
        "items",
    );
    refused(
        json!({"type": "object", "properties": {"a": {}}}),
        "/properties/a",
        "without `type`",
    );
    refused(json!({"type": "string"}), "", "object schema");
}

#[test]
fn converts_values_and_refuses_unrepresentable_ones() {
    let ty = InputType::from_tool_schema(&json!({
        "type": "object",
        "properties": { "n": { "type": "number" }, "d": { "type": "number", "format": "decimal" } }
    }))
    .unwrap();
    assert!(ty.to_cedar(&json!({"n": 3}), "").is_ok());
    assert!(ty.to_cedar(&json!({"n": 3.0}), "").is_ok());
    let err = ty.to_cedar(&json!({"n": 3.5}), "").unwrap_err();
    assert_eq!(err.path, "/n");
    assert!(ty.to_cedar(&json!({"d": 12.25}), "").is_ok());
    assert_eq!(
        ty.to_cedar(&json!({"d": 1.00001}), "").unwrap_err().path,
        "/d"
    );
    assert_eq!(
        ty.to_cedar(&json!({"zzz": 1}), "").unwrap_err().message,
        "unknown field"
    );
}

/// What Cedar holds for an argument: the decimal `d` compared with `decimal(expected)`
/// by Cedar itself.
#[track_caller]
fn cedar_equals(arguments: &str, expected: &str) {
    let ty = decimal_type();
    let value: Value = serde_json::from_str(arguments).unwrap();
    let text = ArgumentsText {
        json: arguments.as_bytes(),
        at: &[],
    };
    let input = ty.to_cedar_exact(&value, "", Some(text)).unwrap();
    let context = cedar_policy::Context::from_pairs([("input".to_owned(), input)]).unwrap();
    let uid: cedar_policy::EntityUid = r#"E::"e""#.parse().unwrap();
    let request = cedar_policy::Request::new(uid.clone(), uid.clone(), uid, context, None).unwrap();
    let check: cedar_policy::Expression = format!(r#"context.input.d == decimal("{expected}")"#)
        .parse()
        .unwrap();
    let result = cedar_policy::eval_expression(&request, &cedar_policy::Entities::empty(), &check);
    assert!(
        matches!(result, Ok(cedar_policy::EvalResult::Bool(true))),
        "{arguments}: {result:?}"
    );
}

fn decimal_type() -> InputType {
    InputType::from_tool_schema(&json!({
        "type": "object",
        "properties": {
            "d": { "type": "number", "format": "decimal" },
            "n": { "type": "number" },
            "items": { "type": "array", "items": {
                "type": "object", "properties": { "d": { "type": "number", "format": "decimal" } }
            } }
        }
    }))
    .unwrap()
}

/// The decimal Cedar holds, or the problem's pointer and part of its reason.
type Decimal = Result<&'static str, (&'static str, &'static str)>;

/// Converts `arguments` (JSON text) with the decimal type, reading numbers from their literal,
/// and asserts what the case expects.
#[track_caller]
fn check_decimal(arguments: &str, expected: &Decimal) {
    let value: Value = serde_json::from_str(arguments).unwrap();
    let text = ArgumentsText {
        json: arguments.as_bytes(),
        at: &[],
    };
    match expected {
        Ok(decimal) => cedar_equals(arguments, decimal),
        Err((path, reason)) => {
            let problem = decimal_type()
                .to_cedar_exact(&value, "", Some(text))
                .unwrap_err();
            assert_eq!(problem.path, *path, "{arguments}");
            assert!(
                problem.message.contains(reason),
                "{arguments}: {}",
                problem.message
            );
        }
    }
}

#[test]
fn decimals_are_read_from_their_literal_and_never_rounded() {
    let places = "more than 4 fractional digits (refused, not rounded)";
    let range = "outside -922337203685477.5808 to 922337203685477.5807";
    let exponent = "without an exponent";
    // (arguments JSON, Ok(the decimal Cedar holds) or Err((pointer, part of the reason)))
    let cases: &[(&str, Decimal)] = &[
        (r#"{"d": 499.9999}"#, Ok("499.9999")),
        (r#"{"d": 499.99990000}"#, Ok("499.9999")),
        // Parses to the same f64 as 499.9999: only the literal shows the fifth place.
        (r#"{"d": 499.99990000000001}"#, Err(("/d", places))),
        (r#"{"d": 1.00001}"#, Err(("/d", places))),
        (r#"{"d": 12}"#, Ok("12.0")),
        (r#"{"d": -0.0}"#, Ok("0.0")),
        (r#"{"d": 922337203685477.5807}"#, Ok("922337203685477.5807")),
        (
            r#"{"d": -922337203685477.5808}"#,
            Ok("-922337203685477.5808"),
        ),
        (r#"{"d": 922337203685477.5808}"#, Err(("/d", range))),
        (r#"{"d": -922337203685477.5809}"#, Err(("/d", range))),
        (r#"{"d": 1000000000000000}"#, Err(("/d", range))),
        (
            r#"{"d": 123456789012345678901234567890123456789}"#,
            Err(("/d", range)),
        ),
        (r#"{"d": 1e2}"#, Err(("/d", exponent))),
        (r#"{"d": 1.5E-1}"#, Err(("/d", exponent))),
        // Inside sets and records, and with a duplicate key (the last one counts, as in the
        // parsed value).
        (
            r#"{"items": [{"d": 1.5}, {"d": 2.00000000000000001}]}"#,
            Err(("/items/1/d", places)),
        ),
        (
            r#"{"d": 1.5, "d": 1.00000000000000001}"#,
            Err(("/d", places)),
        ),
        (r#"{"d": 1.00000000000000001, "d": 1.5}"#, Ok("1.5")),
        (r#"{ "n" : 3, "d" : 0.1 }"#, Ok("0.1")),
    ];
    for (arguments, expected) in cases {
        check_decimal(arguments, expected);
    }
    let ty = decimal_type();
    // The arguments found inside a request body by member names.
    let body = r#"{"params": {"name": "t", "arguments": {"d": 0.99999000000000001}}}"#;
    let value = json!({ "d": 0.99999 });
    let text = ArgumentsText {
        json: body.as_bytes(),
        at: &["params", "arguments"],
    };
    assert_eq!(
        ty.to_cedar_exact(&value, "", Some(text)).unwrap_err().path,
        "/d"
    );
    // Text that does not hold the arguments is refused, not decided on the float.
    let text = ArgumentsText {
        json: br#"{"other": {}}"#,
        at: &["arguments"],
    };
    let problem = ty.to_cedar_exact(&value, "", Some(text)).unwrap_err();
    assert_eq!(problem.message, "cannot read the argument's JSON text");
}

#[test]
fn a_problem_is_located_by_an_escaped_pointer_through_records_and_sets() {
    let ty = InputType::from_tool_schema(&json!({
        "type": "object",
        "properties": {
            "a/b": {
                "type": "object",
                "properties": {
                    "n~": { "type": "array", "items": { "type": "integer" } },
                    "need": { "type": "string" }
                },
                "required": ["need"]
            }
        }
    }))
    .unwrap();
    let located = |value: serde_json::Value, prefix: &str| {
        let problem = ty.to_cedar(&value, prefix).unwrap_err();
        (problem.path, problem.message)
    };
    assert_eq!(
        located(json!({"a/b": {"need": "x", "n~": [1, 2.5]}}), ""),
        (
            "/a~1b/n~0/1".to_owned(),
            "not an integer: the policy sees this number as a Cedar Long".to_owned()
        )
    );
    assert_eq!(
        located(json!({"a/b": {"n~": []}}), "/input").0,
        "/input/a~1b/need"
    );
    assert_eq!(
        located(json!({"a/b": {"need": "x", "extra": 1}}), ""),
        ("/a~1b/extra".to_owned(), "unknown field".to_owned())
    );
    assert!(
        ty.to_cedar(&json!({"a/b": {"need": "x", "n~": [1, 2]}}), "")
            .is_ok()
    );
}
