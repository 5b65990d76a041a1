//! Schema generation over a real corpus: the 117 tools of GitHub's MCP server, read from
//! `../shared/corpora/` (never copied into the repo). Every tool must come out typed (and the
//! whole generated schema must parse with Cedar) or refused with the tool and schema path.

use std::collections::BTreeMap;

use serde_json::Value;
use toolgate::policy::{InputType, action_declaration, schema_from_parts};

use crate::support::{repo, skip};

#[test]
fn every_github_mcp_tool_is_typed_or_refused_with_its_path() {
    let path = repo().join("../shared/corpora/github-mcp-tools.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return skip(
            "every_github_mcp_tool_is_typed_or_refused_with_its_path",
            &format!(
                "corpus `{}` is absent (it lives in ../shared beside the checkout)",
                path.display()
            ),
        );
    };
    let corpus: Value = serde_json::from_str(&text).unwrap();
    let tools = corpus["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 117);

    let mut actions = String::new();
    let mut typed = 0;
    let mut refused: BTreeMap<String, (String, String)> = BTreeMap::new();
    for tool in tools {
        let name = tool["name"].as_str().unwrap();
        match InputType::from_tool_schema(&tool["inputSchema"]) {
            Ok(input) => {
                actions.push_str(&action_declaration(&format!("github___{name}"), &input));
                typed += 1;
            }
            Err(e) => {
                refused.insert(name.to_owned(), (e.path, e.reason));
            }
        }
    }
    let stub = std::fs::read_to_string(repo().join("schemas/toolgate.cedarschema")).unwrap();
    let schema = schema_from_parts(&stub, &actions);
    assert!(schema.is_ok(), "{:?}", schema.err());

    let summary: Vec<(&str, &str, &str)> = refused
        .iter()
        .map(|(tool, (path, reason))| (tool.as_str(), path.as_str(), reason.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "actions_run_trigger",
                "/properties/inputs",
                "an object without declared `properties` cannot be mapped to a Cedar record"
            ),
            (
                "issue_write",
                "/properties/issue_fields/items/properties/value",
                "a union of types cannot be mapped to a Cedar type"
            ),
            (
                "projects_write",
                "/properties/filter",
                "`anyOf` cannot be mapped to a Cedar type"
            ),
            (
                "update_issue_assignees",
                "/properties/assignees/items",
                "`oneOf` cannot be mapped to a Cedar type"
            ),
            (
                "update_issue_labels",
                "/properties/labels/items",
                "`oneOf` cannot be mapped to a Cedar type"
            ),
            (
                "update_issue_type",
                "/properties/issue_type",
                "`anyOf` cannot be mapped to a Cedar type"
            ),
        ]
    );
    assert_eq!(typed + refused.len(), 117);

    // MCP annotations: read-only tools are never destructive; the rest keep their hints.
    let annotated: Vec<_> = tools
        .iter()
        .map(|t| toolgate::tools::annotations::from_mcp(t.get("annotations")))
        .collect();
    let read_only = annotated.iter().filter(|a| a.read_only).count();
    let expected_read_only = tools
        .iter()
        .filter(|t| t["annotations"]["readOnlyHint"] == true)
        .count();
    assert_eq!(read_only, expected_read_only);
    assert!(read_only > 0 && read_only < 117);
    assert!(annotated.iter().all(|a| !(a.read_only && a.destructive)));

    // The typed arguments are usable: `number` reads as Long, enums as strings, optional
    // fields need `has`, nested records and sets are reachable; a typo is a strict error.
    let schema = schema.unwrap();
    let check = |policy: &str| -> Vec<String> {
        // toolgate treats warnings (e.g. an impossible policy) as errors, and so does this.
        let set: cedar_policy::PolicySet = policy.parse().unwrap();
        let result = cedar_policy::Validator::new(schema.clone())
            .validate(&set, cedar_policy::ValidationMode::Strict);
        result
            .validation_errors()
            .map(ToString::to_string)
            .chain(result.validation_warnings().map(ToString::to_string))
            .collect()
    };
    let good = r#"permit (principal, action == Toolgate::Action::"github___list_issues", resource)
        when { context.input.owner == "acme" && context.input has perPage && context.input.perPage <= 50 &&
               context.input has direction && context.input.direction == "ASC" &&
               context.input has field_filters && context.input.field_filters.contains({field_name: "Priority", value: "P1"}) };"#;
    assert_eq!(check(good), Vec::<String>::new());
    let typo = r#"permit (principal, action == Toolgate::Action::"github___list_issues", resource)
        when { context.input has per_page && context.input.per_page <= 50 };"#;
    assert!(!check(typo).is_empty());
    let without_has = r#"permit (principal, action == Toolgate::Action::"github___list_issues", resource)
        when { context.input.perPage <= 50 };"#;
    assert!(!check(without_has).is_empty());
}
