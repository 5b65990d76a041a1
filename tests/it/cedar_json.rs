//! Recorded Cedar requests are Cedar's own JSON: every decision of a live log is rebuilt and
//! decided again with the Cedar library's JSON entry points alone (not toolgate's replay), as
//! a security team's own Cedar binding would; and a log of the first record format (written
//! before it, `tests/fixtures/v1-decisions.jsonl`) still verifies and replays.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicyId, PolicySet, Request, Schema,
};
use serde_json::{Value, json};
use toolgate::audit::verify;
use toolgate::policy::{InputType, action_declaration, schema_from_parts};
use toolgate::replay;
use toolgate::tools::Registry;

use crate::support::{Row, TestApp, repo};

/// The broker's generated schema, from its stub and tools.
fn schema(app: &TestApp) -> Schema {
    let config = toolgate::config::Config::load(&app.config_path()).unwrap();
    let tools = Registry::from_config(&config, None).unwrap();
    let actions: String = tools
        .iter()
        .map(|t| {
            action_declaration(
                &t.id,
                &InputType::from_tool_schema(&t.input_schema).unwrap(),
            )
        })
        .collect();
    let stub = std::fs::read_to_string(repo().join("schemas/toolgate.cedarschema")).unwrap();
    schema_from_parts(&stub, &actions).unwrap()
}

/// The broker's policy files, each policy named by its `@id` as toolgate names them.
fn policies(app: &TestApp) -> PolicySet {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(app.policies_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cedar") {
            let set = PolicySet::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for policy in set.policies() {
                let id = policy.annotation("id").unwrap();
                all.push(policy.new_id(PolicyId::new(id)));
            }
        }
    }
    PolicySet::from_policies(all).unwrap()
}

/// Rebuilds one recorded request with Cedar's JSON entry points alone, decides it again, and
/// asserts the recorded decision and determining policies, with no evaluation error.
#[track_caller]
fn check_re_decides(schema: &Schema, policies: &PolicySet, extra: &[Value], row: &Row) {
    let record = &row.record;
    let request = &record["policy"]["request"];
    assert_eq!(request["version"], 2, "{request}");
    let uid = |key: &str| EntityUid::from_json(request[key].clone()).unwrap();
    let action = uid("action");
    let context = Context::from_json_value(request["context"].clone(), Some((schema, &action)))
        .unwrap_or_else(|e| panic!("{e}: {request}"));
    let cedar_request = Request::new(
        uid("principal"),
        action,
        uid("resource"),
        context,
        Some(schema),
    )
    .unwrap();
    let mut entities = request["entities"].as_array().unwrap().clone();
    entities.extend(extra.iter().cloned());
    let entities = Entities::from_json_value(Value::Array(entities), Some(schema))
        .unwrap_or_else(|e| panic!("{e}: {request}"));
    let response = Authorizer::new().is_authorized(&cedar_request, policies, &entities);
    let decision = match response.decision() {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
    };
    assert_eq!(decision, row.decision, "{request}");
    let mut determining: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    determining.sort();
    let mut recorded: Vec<String> =
        serde_json::from_value(record["policy"]["determining_policies"].clone()).unwrap();
    recorded.sort();
    assert_eq!(determining, recorded, "{request}");
    assert_eq!(response.diagnostics().errors().count(), 0);
}

#[tokio::test]
async fn recorded_requests_re_decide_through_cedar_json_alone() {
    let app = TestApp::spawn().await;
    let reporter = app.token("reporting-agent", "files:read", &["reporting"]);
    let mut delegated = app.claims("carol", "payments:write", &["finance"]);
    delegated["act"] = json!({ "sub": "payments-agent" });
    let payer = app.sign(&delegated);
    let transfer = |amount: Value| json!({ "to_account": "DE02100100109307118603", "amount": amount, "currency": "EUR" });
    let calls: &[(&str, &str, Value, u16)] = &[
        // A whole float where a Long is declared.
        (
            &reporter,
            "demo___echo",
            json!({ "message": "hi", "repeat": 2.0 }),
            200,
        ),
        (
            &reporter,
            "files___read_file",
            json!({ "path": "/srv/reports/q3.txt" }),
            200,
        ),
        (
            &reporter,
            "files___read_file",
            json!({ "path": "/etc/passwd" }),
            403,
        ),
        // Decimals and a delegated call: the two kinds an independent binding could not
        // rebuild from the first format.
        (&payer, "payments___transfer", transfer(json!(120.5)), 200),
        (
            &payer,
            "payments___transfer",
            transfer(json!(499.9999)),
            200,
        ),
        (&payer, "payments___transfer", transfer(json!(20000)), 403),
    ];
    for (token, tool, args, status) in calls {
        let reply = app.authorize(token, tool, args.clone()).await;
        assert_eq!(reply.status, *status, "{tool} {args}: {:?}", reply.body);
    }

    let schema = schema(&app);
    let policies = policies(&app);
    let extra: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(app.policies_dir().join("entities.json")).unwrap(),
    )
    .unwrap();
    let decisions = app.decisions();
    assert_eq!(decisions.len(), calls.len());
    for row in &decisions {
        check_re_decides(&schema, &policies, &extra, row);
    }

    // The decimal is Cedar's `__extn`, the actor an `__entity`, a whole float
    // an integer.
    let requests: Vec<Value> = app
        .decisions()
        .into_iter()
        .map(|d| d.record["policy"]["request"].clone())
        .collect();
    let payment = &requests[3]["context"];
    assert_eq!(
        payment["input"],
        json!({ "to_account": "DE02100100109307118603", "amount": { "__extn": { "fn": "decimal", "arg": "120.5" } }, "currency": "EUR" })
    );
    assert_eq!(
        payment["session"]["actor"],
        json!({ "__entity": { "type": "Toolgate::Agent", "id": "payments-agent" } })
    );
    assert_eq!(requests[0]["context"]["input"]["repeat"], json!(2));

    // And toolgate's own replay agrees.
    let snapshot = replay::load_policies(&app.config_path(), None, None).unwrap();
    let report = replay::replay(&snapshot, &replay::read_log(&app.db_path()).unwrap());
    assert!(report.is_identical(), "{}", report.summary());
    assert_eq!(report.replayed, calls.len(), "{}", report.summary());
    app.stop().await;
}

#[test]
fn a_log_of_the_first_format_still_verifies_and_replays() {
    let fixture = repo().join("tests/fixtures/v1-decisions.jsonl");
    let text = std::fs::read_to_string(&fixture).unwrap();
    // It is of the first format: plain-number decimals, the actor as a plain string.
    assert!(!text.contains("\"version\""));
    assert!(text.contains(r#""amount":120.5"#));
    assert!(text.contains(r#""actor":"payments-agent""#));

    assert_eq!(verify::verify_jsonl(&fixture, None).unwrap().records, 4);
    let snapshot = replay::load_policies(&repo().join("toolgate.toml"), None, None).unwrap();
    let report = replay::replay(&snapshot, &replay::read_log(&fixture).unwrap());
    assert!(report.is_identical(), "{}", report.summary());
    assert_eq!(report.replayed, 4, "{}", report.summary());

    // The same through the commands.
    let bin = env!("CARGO_BIN_EXE_toolgate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .arg(&fixture)
            .args(["--config", repo().join("toolgate.toml").to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, out) = run(&["replay", "--log"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("4 unchanged"), "{out}");
    let (code, out) = run(&["log", "verify", "--jsonl"]);
    assert_eq!(code, Some(0), "{out}");
}
