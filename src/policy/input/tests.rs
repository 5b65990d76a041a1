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

#[test]
fn decimal_literals() {
    assert_eq!(decimal_literal("3").as_deref(), Some("3.0"));
    assert_eq!(decimal_literal("-2.5000").as_deref(), Some("-2.5"));
    assert_eq!(decimal_literal("1.2345").as_deref(), Some("1.2345"));
    assert_eq!(decimal_literal("1.23456"), None);
    assert_eq!(decimal_literal("1e3"), None);
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
