//! Unit tests for time helpers and the generated schema; policy behaviour is tested through the HTTP API in `tests/`.

use cedar_policy::{Entity, SchemaFragment, ValidationMode, Validator};
use serde_json::json;

use super::*;
use crate::verified_token::TokenBuilder;

#[test]
fn hour_and_weekday_of_known_dates() {
    // 1970-01-01 00:00 UTC was a Thursday.
    assert_eq!(hour_and_weekday(0), (0, 4));
    // 2026-11-23 16:42:17 UTC is a Monday.
    assert_eq!(hour_and_weekday(1_795_452_137), (16, 1));
    // A Sunday 23:59:59 (2026-11-22).
    assert_eq!(hour_and_weekday(1_795_391_999), (23, 7));
}

const STUB: &str = include_str!("../../schemas/toolgate.cedarschema");

fn strict_errors(schema: &Schema, policy: &str) -> Vec<String> {
    let set: PolicySet = policy.parse().unwrap();
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    result
        .validation_errors()
        .map(ToString::to_string)
        .chain(result.validation_warnings().map(ToString::to_string))
        .collect()
}

#[test]
fn tool_names_with_hyphens_and_dots_become_string_action_ids() {
    let input = InputType::from_tool_schema(&json!({
        "type": "object",
        "properties": { "issue-number": { "type": "integer" }, "repo.name": { "type": "string" } },
        "required": ["issue-number"]
    }))
    .unwrap();
    let actions = action_declaration("git-hub.v2___get-issue.v1", &input);
    let schema = schema_from_parts(STUB, &actions).unwrap();
    let ok = r#"permit (principal, action == Toolgate::Action::"git-hub.v2___get-issue.v1", resource)
        when { context.input["issue-number"] > 3 && context.input has "repo.name" && context.input["repo.name"] like "tool*" };"#;
    assert_eq!(strict_errors(&schema, ok), Vec::<String>::new());
    // A policy naming the tool by another spelling is an unknown action.
    let renamed =
        r#"permit (principal, action == Toolgate::Action::"git_hub_v2___get_issue_v1", resource);"#;
    assert!(!strict_errors(&schema, renamed).is_empty());
}

#[test]
fn nested_records_sets_enums_optionals_and_numbers_type_check() {
    let input = InputType::from_tool_schema(&json!({
        "type": "object",
        "properties": {
            "target": {
                "type": "object",
                "properties": { "owner": { "type": "string" }, "labels": { "type": "array", "items": { "type": "string" } } },
                "required": ["owner"]
            },
            "state": { "type": "string", "enum": ["open", "closed"] },
            "page": { "type": "number" },
            "amount": { "type": "number", "format": "decimal" },
            "draft": { "type": "boolean" }
        },
        "required": ["target", "state", "amount"]
    }))
    .unwrap();
    let schema = schema_from_parts(STUB, &action_declaration("s___t", &input)).unwrap();
    let ok = r#"permit (principal, action == Toolgate::Action::"s___t", resource) when {
        context.input.target.owner == "acme" &&
        (context.input.target has labels && context.input.target.labels.contains("bug")) &&
        context.input.state == "open" &&
        (context.input has page && context.input.page < 10) &&
        context.input.amount.lessThan(decimal("12.5")) &&
        !(context.input has draft && context.input.draft)
    };"#;
    assert_eq!(strict_errors(&schema, ok), Vec::<String>::new());
    for bad in [
        // A number compared with a string.
        r#"permit (principal, action == Toolgate::Action::"s___t", resource) when { context.input has page && context.input.page == "1" };"#,
        // An optional field read without `has`.
        r#"permit (principal, action == Toolgate::Action::"s___t", resource) when { context.input.page < 10 };"#,
        // A decimal compared with a Long.
        r#"permit (principal, action == Toolgate::Action::"s___t", resource) when { context.input.amount < 10 };"#,
        // A misspelt nested field.
        r#"permit (principal, action == Toolgate::Action::"s___t", resource) when { context.input.target.ownr == "x" };"#,
        // `action ==` on the group can never match a per-tool action: a warning, treated as an error.
        r#"permit (principal, action == Toolgate::Action::"call_tool", resource);"#,
    ] {
        assert!(!strict_errors(&schema, bad).is_empty(), "{bad}");
    }
}

#[test]
fn recorded_entities_json_decodes_to_the_entities_evaluated() {
    let token = TokenBuilder::new("alice")
        .issuer("https://idp")
        .audience("tg")
        .groups(&["g1", "g2"])
        .actors(&["agent-7"])
        .claims(json!({ "department": "finance", "level": 3 }))
        .build();
    let parts = token_parts::TokenPartsCache::new().get(&token).unwrap();
    let decoded: Vec<Entity> = parts
        .recorded_entities
        .iter()
        .map(|e| Entity::from_json_str(e.get(), None).unwrap())
        .collect();
    let evaluated = [
        principal_entity(&token).unwrap(),
        actor_entity(&token).unwrap().unwrap(),
    ];
    assert_eq!(decoded.len(), 2);
    for (d, e) in decoded.iter().zip(evaluated.iter()) {
        assert_eq!(d, e);
    }
}

#[test]
fn a_duplicate_id_names_both_places_in_one_file_and_across_files() {
    let policy = |id: &str| format!("@id(\"{id}\")\npermit (principal, action, resource);\n");
    let one_file = [(
        "a.cedar".to_owned(),
        format!("{}\n{}\n{}", policy("x"), policy("y"), policy("x")),
    )];
    match parse_policies(&one_file) {
        Err(PolicyLoadError::DuplicateId { id, first, second }) => {
            assert_eq!(
                (id.as_str(), first.as_str(), second.as_str()),
                ("x", "a.cedar:1", "a.cedar:7")
            );
        }
        other => panic!(
            "expected a duplicate id, got {:?}",
            other.map(|s| s.num_of_policies())
        ),
    }
    let two_files = [
        (
            "a.cedar".to_owned(),
            format!("{}\n{}", policy("y"), policy("x")),
        ),
        ("b.cedar".to_owned(), format!("\n{}", policy("x"))),
    ];
    match parse_policies(&two_files) {
        Err(PolicyLoadError::DuplicateId { first, second, .. }) => {
            assert_eq!(
                (first.as_str(), second.as_str()),
                ("a.cedar:4", "b.cedar:2")
            );
        }
        other => panic!(
            "expected a duplicate id, got {:?}",
            other.map(|s| s.num_of_policies())
        ),
    }
    let distinct = [(
        "a.cedar".to_owned(),
        format!("{}{}", policy("x"), policy("y")),
    )];
    assert_eq!(parse_policies(&distinct).unwrap().num_of_policies(), 2);
}

#[test]
fn the_generated_actions_go_inside_the_stubs_one_namespace_block() {
    let actions = "  action \"s___t\" in [call_tool];\n";
    let text = |stub: &str| {
        let (fragment, _) = SchemaFragment::from_cedarschema_str(stub).unwrap();
        schema_text_from_parts(stub, &fragment, actions)
    };
    // Braces in comments and strings after the namespace's own do not move the insertion.
    let stub =
        "namespace Toolgate {\n  entity E = { \"}\": String };\n  action call_tool;\n}\n// }\n";
    let merged = text(stub).unwrap();
    assert_eq!(merged.matches("namespace").count(), 1, "{merged}");
    let (schema, _) = Schema::from_cedarschema_str(&merged).unwrap();
    assert!(
        schema
            .actions()
            .any(|a| a.to_string() == "Toolgate::Action::\"s___t\"")
    );
    // A stub with declarations outside `namespace Toolgate` is refused, not half-merged.
    for stub in [
        "namespace Other { entity E; }\nnamespace Toolgate { action call_tool; }\n",
        "entity Outside;\nnamespace Toolgate { action call_tool; }\n",
    ] {
        let err = text(stub).unwrap_err();
        assert!(err.contains("one `namespace Toolgate"), "{err}");
    }
}

#[test]
fn an_unknown_annotation_is_refused_with_its_file_and_line() {
    let sources = |text: &str| vec![("a.cedar".to_owned(), text.to_owned())];
    let text = "@id(\"p\")\n@requireApproval(\"finance\")\npermit (principal, action, resource);\n";
    let err = parse_policies(&sources(text)).unwrap_err();
    assert!(
        matches!(&err, PolicyLoadError::UnknownAnnotation { line: 2, id, annotation, .. } if id == "p" && annotation == "requireApproval"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "a.cedar:2: policy `p` has annotation `@requireApproval`, which toolgate does not know (known: `@id`)"
    );
    // The line is that of the refused policy's annotation, not an earlier one's prefix.
    let text = "@id(\"a\")\n@shadowing\npermit (principal, action, resource);\n\n@id(\"b\")\n@shadow\nforbid (principal, action, resource);\n";
    let err = parse_policies(&sources(text)).unwrap_err();
    assert!(
        matches!(&err, PolicyLoadError::UnknownAnnotation { line: 2, id, .. } if id == "a"),
        "{err:?}"
    );
    let text = "@id(\"a\")\npermit (principal, action, resource);\n\n@shadow\n@id(\"b\")\nforbid (principal, action, resource);\n";
    let err = parse_policies(&sources(text)).unwrap_err();
    assert!(
        matches!(&err, PolicyLoadError::UnknownAnnotation { line: 4, id, .. } if id == "b"),
        "{err:?}"
    );
}
