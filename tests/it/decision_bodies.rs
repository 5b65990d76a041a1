//! The answers a decision becomes over HTTP, pinned whole: a policy deny, a deny at an earlier
//! stage, an authorize-only allow, a tool's answer, and a log that cannot record (no decision).

use serde_json::{Value, json};

use crate::support::{Options, Reply, TestApp};

/// Checks the status and the whole body; the decision id (random) must be the header's.
#[track_caller]
fn check(reply: Reply, status: u16, mut expected: Value) {
    let mut body = reply.body.clone();
    let id = body.as_object_mut().unwrap().remove("decision_id");
    assert_eq!(
        id.as_ref().and_then(Value::as_str),
        reply.header("x-toolgate-decision-id"),
        "the body names the decision the header names"
    );
    if let Some(object) = expected.as_object_mut()
        && object.remove("decision_id").is_some()
    {
        assert!(id.is_some(), "a recorded decision names its id: {body}");
    } else {
        assert!(id.is_none(), "no decision was recorded, so no id: {body}");
    }
    assert_eq!((reply.status, body), (status, expected));
}

#[tokio::test]
async fn each_kind_of_decision_has_its_answer() {
    let app = TestApp::spawn().await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    let escape = json!({ "path": "/srv/reports/../../etc/passwd" });
    let cases = [
        (
            app.invoke(Some(&token), "files___read_file", escape).await,
            403,
            json!({
                "decision_id": true,
                "decision": "deny",
                "error": "denied",
                "message": "denied by policy",
            }),
        ),
        (
            app.invoke(Some(&token), "nope___tool", json!({})).await,
            404,
            json!({
                "decision_id": true,
                "decision": "deny",
                "error": "unknown_tool",
                "message": "unknown tool `nope___tool`",
            }),
        ),
        (
            app.authorize(&token, "demo___echo", json!({ "message": "hi" }))
                .await,
            200,
            json!({ "decision_id": true, "decision": "allow" }),
        ),
        (
            app.invoke(Some(&token), "demo___echo", json!({ "message": "hi" }))
                .await,
            200,
            json!({
                "decision_id": true,
                "decision": "allow",
                "result": { "echo": { "message": "hi" } },
            }),
        ),
    ];
    for (reply, status, expected) in cases {
        check(reply, status, expected);
    }
}

#[tokio::test]
async fn a_log_that_cannot_record_is_an_error_with_no_decision() {
    let app = TestApp::spawn_with(Options {
        busy_timeout_ms: Some(100),
        ..Options::default()
    })
    .await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    let locker = rusqlite::Connection::open(app.db_path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let reply = app
        .invoke(Some(&token), "demo___echo", json!({ "message": "x" }))
        .await;
    check(
        reply,
        503,
        json!({
            "decision": "error",
            "error": "decision_log_unavailable",
            "message": "the decision log is unavailable; nothing was dispatched",
        }),
    );
}
