//! The policy stage shows what it enforces: tool listings as exact as the known facts allow,
//! decimal arguments read from their literal, one valid printed schema, unknown policy
//! annotations refused.

use serde_json::{Value, json};

use crate::mcp_server::{mcp, open, rpc};
use crate::policy::toolgate;
use crate::support::{TestApp, repo};

/// A token for `user` (in `groups`) delegated to the agents of `chain`, outermost first.
fn delegated(app: &TestApp, user: &str, groups: &[&str], chain: &[&str]) -> String {
    let mut claims = app.claims(user, "payments:write", groups);
    let mut act = Value::Null;
    for agent in chain.iter().rev() {
        act = match act {
            Value::Null => json!({ "sub": agent }),
            inner => json!({ "sub": agent, "act": inner }),
        };
    }
    claims["act"] = act;
    app.sign(&claims)
}

fn names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_delegated_caller_is_listed_only_the_tools_it_can_call() {
    let app = TestApp::spawn().await;
    // (actor chain, listed over HTTP and MCP, status of a transfer the policy allows when
    // the actor is right). Only `payments-agent` as the only actor may transfer.
    let cases: &[(&[&str], &[&str], u16)] = &[
        (
            &["payments-agent"],
            &["demo___echo", "payments___transfer"],
            200,
        ),
        (&["other-agent"], &["demo___echo"], 403),
        (&["payments-agent", "planner-agent"], &["demo___echo"], 403),
    ];
    for (chain, listed, transfer) in cases {
        let bob = delegated(&app, "bob", &["finance"], chain);
        let reply = app.get("/v1/tools", Some(&bob)).await;
        assert_eq!(reply.status, 200, "{chain:?}: {:?}", reply.body);
        assert_eq!(names(&reply.body["tools"]), *listed, "{chain:?}");

        let session = open(&app, &bob).await;
        let reply = mcp(
            &app,
            Some(&bob),
            Some(&session),
            &rpc(2, "tools/list", json!({})),
        )
        .await;
        assert_eq!(reply.status, 200, "{chain:?}: {:?}", reply.body);
        assert_eq!(names(&reply.body["result"]["tools"]), *listed, "{chain:?}");

        // The listing agrees with what a call gets.
        let reply = app
            .authorize(
                &bob,
                "payments___transfer",
                json!({ "amount": 100, "currency": "EUR", "to_account": "DE1" }),
            )
            .await;
        assert_eq!(reply.status, *transfer, "{chain:?}: {:?}", reply.body);
    }
}

#[test]
fn schema_print_is_one_valid_cedar_schema_for_the_shipped_policies() {
    use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};

    let (ok, printed) = toolgate(&["schema", "print"]);
    assert!(ok, "{printed}");
    // As the cedar CLI reads a schema file and a policy file.
    let (schema, warnings) = Schema::from_cedarschema_str(&printed).unwrap_or_else(|e| {
        panic!("{:?}\n{printed}", miette::Report::new(e));
    });
    assert_eq!(warnings.count(), 0);
    assert!(
        schema
            .actions()
            .any(|a| a.to_string() == "Toolgate::Action::\"payments___transfer\"")
    );
    let mut files: Vec<_> = std::fs::read_dir(repo().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let text: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let policies: PolicySet = text.parse().unwrap();
    let result = Validator::new(schema).validate(&policies, ValidationMode::Strict);
    let problems: Vec<String> = result
        .validation_errors()
        .map(ToString::to_string)
        .chain(result.validation_warnings().map(ToString::to_string))
        .collect();
    assert_eq!(problems, Vec::<String>::new());
}

const APPROVAL_PERMIT: &str = "// From another gateway's policy set.\n@id(\"deletes-with-approval\")\n@requireApproval(\"security\")\npermit (principal, action == Toolgate::Action::\"files___delete_file\", resource);\n";

const SHADOW_PERMIT: &str = "@shadow\n@id(\"shadow-deletes\")\npermit (principal, action == Toolgate::Action::\"files___delete_file\", resource);\n";

#[test]
fn policy_validate_refuses_an_unknown_annotation_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("approval.cedar"), APPROVAL_PERMIT).unwrap();
    let (ok, out) = toolgate(&[
        "policy",
        "validate",
        "--policies",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("approval.cedar:3: policy `deletes-with-approval` has annotation `@requireApproval`, which toolgate does not know (known: `@id`)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_reload_with_an_unknown_annotation_is_refused_and_the_last_good_set_serves() {
    let app = TestApp::spawn().await;
    let deleter = app.token("deleter", "files:write", &[]);
    let delete = || {
        app.invoke(
            Some(&deleter),
            "files___delete_file",
            json!({ "path": "/tmp/x" }),
        )
    };
    assert_eq!(delete().await.status, 403);

    std::fs::write(app.policies_dir().join("shadow.cedar"), SHADOW_PERMIT).unwrap();
    let reply = app.post("/admin/policies/reload", &app.admin_token()).await;
    assert_eq!(reply.status, 422, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "policy_reload_rejected");
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("shadow.cedar:1: policy `shadow-deletes` has annotation `@shadow`"),
        "{message}"
    );
    // Not acted on as a plain permit: the delete is still denied.
    assert_eq!(delete().await.status, 403);
}

/// A test tool whose only argument is a decimal without bounds, so that the whole Cedar
/// range can be sent.
const AMOUNT_TOOL: &str = r#"
[[tools]]
server = "test"
name = "amount"
input_schema = { type = "object", properties = { amount = { type = "number", format = "decimal" } }, required = ["amount"], additionalProperties = false }
annotations = { destructive = false }
backend = { kind = "http", url = "http://127.0.0.1:9/amount" }
"#;

/// Pins the converted value: Cedar sees exactly 499.9999 only for that literal.
const AMOUNT_PROBE: &str = r#"
@id("amount-probe")
forbid (principal, action == Toolgate::Action::"test___amount", resource)
when { context.input.amount == decimal("499.9999") };
"#;

/// Sends `body` as it is written (a `Value` would already have rounded the number).
async fn post_text(app: &TestApp, path: &str, token: &str, body: &str) -> (u16, String) {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn decimal_arguments_are_checked_on_their_literal_over_http_and_mcp() {
    let app = TestApp::spawn_with(crate::support::Options {
        extra_config: AMOUNT_TOOL.to_owned(),
        extra_policies: Some(AMOUNT_PROBE.to_owned()),
        ..Default::default()
    })
    .await;
    let tester = app.token("tester", "", &["testers"]);
    let places = "more than 4 fractional digits (refused, not rounded)";
    let range = "outside -922337203685477.5808 to 922337203685477.5807";
    // (literal, status, part of the body)
    let cases = [
        ("499.9999", 403, "deny"),
        ("499.99990", 403, "deny"),
        ("499.99990000000001", 400, places),
        ("499.99991", 400, places),
        ("499.999", 200, "allow"),
        ("922337203685477.5807", 200, "allow"),
        ("-922337203685477.5808", 200, "allow"),
        ("922337203685477.5808", 400, range),
        ("-922337203685477.5809", 400, range),
        ("1e2", 400, "without an exponent"),
        ("-0.0", 200, "allow"),
    ];
    for (literal, status, part) in cases {
        let body = format!(r#"{{"tool": "test___amount", "arguments": {{"amount": {literal}}}}}"#);
        let (got, text) = post_text(&app, "/v1/authorize", &tester, &body).await;
        assert_eq!(got, status, "{literal}: {text}");
        assert!(text.contains(part), "{literal}: {text}");
    }
    let records = app.records();
    let count = |f: &dyn Fn(&crate::support::Row) -> bool| records.iter().filter(|r| f(r)).count();
    assert_eq!(count(&|r| r.reason == "argument_not_representable"), 5);
    assert_eq!(
        count(&|r| r.record["policy"]["determining_policies"] == json!(["amount-probe"])),
        2
    );

    // `/invoke` and MCP `tools/call` read the same literal.
    let (got, text) = post_text(
        &app,
        "/v1/tools/test___amount/invoke",
        &tester,
        r#"{"arguments": {"amount": 499.99990000000001}}"#,
    )
    .await;
    assert_eq!(got, 400, "{text}");
    assert!(text.contains(places), "{text}");
    let session = open(&app, &tester).await;
    let response = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(&tester)
        .header("mcp-session-id", &session)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "test___amount", "arguments": {"amount": 499.99990000000001}}}"#)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.contains(places), "{text}");
    assert!(text.contains(r#""isError":true"#), "{text}");
}
