//! The HTTP API end to end: allowed calls, denials at every stage, backend failures, and the
//! decision log holding one record per request.

use serde_json::json;

use crate::support::{AUDIENCE, ISSUER, Options, Reply, TestApp};

#[tokio::test]
async fn allowed_call_reaches_backend_without_the_agents_token() {
    let app = TestApp::spawn().await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    let reply = app
        .invoke(
            Some(&token),
            "files___read_file",
            json!({ "path": "/srv/reports/q3.txt" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["decision"], "allow");
    assert_eq!(reply.body["result"]["content"], "report body");
    let id = reply.body["decision_id"].as_str().unwrap();
    assert_eq!(reply.header("x-toolgate-decision-id"), Some(id));

    let calls = app.backend.calls("/read_file");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert!(
        call.headers.get("authorization").is_none(),
        "the agent's token was forwarded"
    );
    assert!(!String::from_utf8_lossy(&call.body).contains(&token));
    for (_, value) in call.headers.iter() {
        assert!(!value.to_str().unwrap_or_default().contains(&token));
    }
    assert_eq!(call.headers["x-toolgate-decision-id"], id);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&call.body).unwrap(),
        json!({ "path": "/srv/reports/q3.txt" })
    );

    let records = app.records();
    assert_eq!(records.len(), 2, "a decision record and a dispatch record");
    assert_eq!(
        (records[0].kind.as_str(), records[0].decision.as_str()),
        ("decision", "allow")
    );
    assert_eq!(records[0].decision_id, id);
    assert_eq!(
        records[0].record["policy"]["determining_policies"],
        json!(["reporting-reads-reports"])
    );
    assert_eq!(records[0].record["principal"]["subject"], "reporting-agent");
    assert_eq!(records[1].kind, "dispatch");
    assert_eq!(records[1].record["dispatch"]["status"], 200);
    let db = std::fs::read(app.db_path()).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(&token),
        "the token is stored in the log"
    );
}

#[tokio::test]
async fn policy_deny_is_403_recorded_with_the_forbid_and_not_dispatched() {
    let app = TestApp::spawn().await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    let reply = app
        .invoke(
            Some(&token),
            "files___read_file",
            json!({ "path": "/srv/reports/../../etc/passwd" }),
        )
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body["decision"], "deny");
    assert_eq!(reply.body["error"], "denied");

    let reply2 = app
        .invoke(
            Some(&token),
            "files___read_file",
            json!({ "path": "/etc/passwd" }),
        )
        .await;
    assert_eq!(reply2.status, 403);
    assert!(app.backend.calls("/read_file").is_empty());

    let decisions = app.decisions();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0].reason, "policy_denied");
    assert_eq!(
        decisions[0].record["policy"]["determining_policies"],
        json!(["no-path-traversal"])
    );
    assert_eq!(
        decisions[1].record["policy"]["determining_policies"],
        json!([]),
        "default deny has no determining policy"
    );
    assert_eq!(decisions[0].decision_id, reply.body["decision_id"]);
}

/// Asserts a 401 whose RFC 6750 challenge names `invalid_token` exactly when `has_error`, and
/// that the last decision record is this reply's, an `auth` deny for `reason`.
#[track_caller]
fn check_unauthorized(app: &TestApp, name: &str, reply: &Reply, reason: &str, has_error: bool) {
    assert_eq!(reply.status, 401, "{name}");
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"toolgate\""),
        "{name}: {challenge}"
    );
    assert_eq!(
        challenge.contains("error=\"invalid_token\""),
        has_error,
        "{name}: {challenge}"
    );
    let last = app.decisions().pop().unwrap();
    assert_eq!(
        (last.stage.as_str(), last.reason.as_str()),
        ("auth", reason),
        "{name}"
    );
    assert_eq!(last.decision_id, reply.body["decision_id"], "{name}");
}

#[tokio::test]
async fn token_failures_are_401_with_rfc6750_challenges() {
    let app = TestApp::spawn().await;
    let now = toolgate::auth::unix_now();
    let base = app.claims("reporting-agent", "files:read", &["reporting"]);
    let with = |patch: serde_json::Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        app.sign(&c)
    };
    let (other_key, _) = toolgate::signing::SigningKey::generate().unwrap();
    let unsigned = {
        use base64::Engine;
        let e = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.",
            e(&json!({"alg": "none", "typ": "at+jwt"})),
            e(&base)
        )
    };
    let cases: Vec<(&str, Option<String>, &str, bool)> = vec![
        ("missing", None, "token_missing", false),
        (
            "expired",
            Some(with(json!({"exp": now - 120, "iat": now - 400}))),
            "token_expired",
            true,
        ),
        (
            "wrong audience",
            Some(with(json!({"aud": "someone-else"}))),
            "audience_mismatch",
            true,
        ),
        (
            "wrong issuer",
            Some(with(json!({"iss": "https://evil.test"}))),
            "unknown_issuer",
            true,
        ),
        ("alg none", Some(unsigned), "token_malformed", true),
        (
            "other key",
            Some(other_key.sign("at+jwt", &base).unwrap()),
            "unknown_kid",
            true,
        ),
        (
            "not yet valid",
            Some(with(json!({"nbf": now + 600}))),
            "token_not_yet_valid",
            true,
        ),
        (
            "too long-lived",
            Some(with(json!({"exp": now + 7200}))),
            "lifetime_too_long",
            true,
        ),
        (
            "garbage",
            Some("not.a.jwt".to_owned()),
            "token_malformed",
            true,
        ),
    ];
    for (name, token, reason, has_error) in &cases {
        let reply = app
            .invoke(token.as_deref(), "demo___echo", json!({ "message": "hi" }))
            .await;
        check_unauthorized(&app, name, &reply, reason, *has_error);
    }
    assert_eq!(app.decisions().len(), cases.len());
    assert!(app.backend.received.lock().unwrap().is_empty());
    let _ = (ISSUER, AUDIENCE);
}

#[tokio::test]
async fn unknown_tool_missing_scope_and_invalid_arguments() {
    let app = TestApp::spawn().await;
    let token = app.token("reporting-agent", "", &["reporting"]);

    let reply = app.invoke(Some(&token), "nope___nothing", json!({})).await;
    assert_eq!(reply.status, 404);

    let reply = app
        .invoke(
            Some(&token),
            "files___read_file",
            json!({ "path": "/srv/reports/a" }),
        )
        .await;
    assert_eq!(reply.status, 403);
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"files:read\""),
        "{challenge}"
    );

    let reply = app
        .invoke(Some(&token), "demo___echo", json!({ "message": 5 }))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["problems"][0]["path"], "/message");

    let reply = app
        .invoke(
            Some(&token),
            "demo___echo",
            json!({ "message": "hi", "extra": true }),
        )
        .await;
    assert_eq!(reply.status, 400, "undeclared arguments are refused");

    let reasons: Vec<String> = app.decisions().iter().map(|r| r.reason.clone()).collect();
    assert_eq!(
        reasons,
        [
            "unknown_tool",
            "insufficient_scope",
            "invalid_arguments",
            "invalid_arguments"
        ]
    );
    assert!(app.backend.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_bodies_are_400_and_recorded() {
    let app = TestApp::spawn().await;
    let token = app.token("a", "", &[]);
    let send = |body: String| {
        app.client
            .post(app.url("/v1/tools/demo___echo/invoke"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(send("{not json".to_owned()).await.unwrap().status(), 400);
    assert_eq!(
        send(r#"{"arguments": [1]}"#.to_owned())
            .await
            .unwrap()
            .status(),
        400
    );
    let deep = format!(
        "{{\"arguments\": {{\"message\": {}1{}}}}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    assert_eq!(send(deep).await.unwrap().status(), 400);
    let big = format!(
        "{{\"arguments\": {{\"message\": \"{}\"}}}}",
        "x".repeat(70_000)
    );
    assert_eq!(send(big).await.unwrap().status(), 413);
    let reasons: Vec<String> = app.decisions().iter().map(|r| r.reason.clone()).collect();
    assert_eq!(
        reasons,
        [
            "bad_request",
            "bad_request",
            "bad_request",
            "payload_too_large"
        ]
    );

    let huge_header = app
        .client
        .get(app.url("/v1/tools"))
        .header("x-padding", "p".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(huge_header.status(), 431);
}

#[tokio::test]
async fn backend_failures_map_to_502_and_504() {
    let app = TestApp::spawn().await;
    let token = app.token("tester", "", &["testers"]);
    let cases = [
        ("test___slow", 504, "timeout"),
        ("test___fail", 502, "bad_status"),
        ("test___down", 502, "unreachable"),
        ("test___huge", 502, "response_too_large"),
    ];
    for (tool, status, class) in cases {
        let reply = app.invoke(Some(&token), tool, json!({})).await;
        assert_eq!(reply.status, status, "{tool}: {:?}", reply.body);
        assert_eq!(reply.body["error"], class, "{tool}");
        assert_eq!(
            reply.body["decision"], "allow",
            "{tool}: the decision was allow; the backend failed"
        );
    }
    let records = app.records();
    let decisions: Vec<_> = records.iter().filter(|r| r.kind == "decision").collect();
    let dispatches: Vec<_> = records.iter().filter(|r| r.kind == "dispatch").collect();
    assert_eq!(decisions.len(), 4);
    assert_eq!(
        dispatches
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>(),
        ["timeout", "bad_status", "unreachable", "response_too_large"]
    );
}

#[tokio::test]
async fn authorize_decides_without_dispatch() {
    let app = TestApp::spawn().await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    let reply = app
        .authorize(
            &token,
            "files___read_file",
            json!({ "path": "/srv/reports/x" }),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["decision"], "allow");
    let reply = app
        .authorize(&token, "files___read_file", json!({ "path": "/home/x" }))
        .await;
    assert_eq!(reply.status, 403);
    assert!(app.backend.received.lock().unwrap().is_empty());
    let endpoints: Vec<String> = app
        .decisions()
        .iter()
        .map(|r| r.record["endpoint"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(endpoints, ["authorize", "authorize"]);
}

#[tokio::test]
async fn a_well_formed_request_id_is_recorded_and_otherwise_the_decision_id_stands_in() {
    let app = TestApp::spawn().await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    let body = json!({ "tool": "files___read_file", "arguments": { "path": "/srv/reports/x" } });
    for supplied in [Some("trace-42.a_b"), Some("bad id!"), None] {
        let mut request = app
            .client
            .post(app.url("/v1/authorize"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(id) = supplied {
            request = request.header("x-request-id", id);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), 200);
        let decision_id = reply.headers()["x-toolgate-decision-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let row = app
            .decisions()
            .into_iter()
            .find(|r| r.decision_id == decision_id)
            .unwrap();
        let expected = supplied
            .filter(|id| !id.contains(' '))
            .unwrap_or(&decision_id);
        assert_eq!(row.record["request_id"], expected);
        assert_eq!(
            row.record["policy"]["request"]["context"]["session"]["request_id"],
            expected
        );
    }
}

#[tokio::test]
async fn tool_listing_is_filtered_by_scope_and_policy() {
    let app = TestApp::spawn().await;
    let names = |reply: &crate::support::Reply| -> Vec<String> {
        reply.body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let reporting = app.token("reporting-agent", "files:read files:write", &["reporting"]);
    let reply = app.get("/v1/tools", Some(&reporting)).await;
    assert_eq!(reply.status, 200);
    // delete_file: scope held, but the unconditional forbid on destructive tools for agents hides it.
    assert_eq!(names(&reply), ["demo___echo", "files___read_file"]);

    let intern = app.token("intern-agent", "", &[]);
    assert_eq!(
        names(&app.get("/v1/tools", Some(&intern)).await),
        ["demo___echo"]
    );

    let tester = app.token("tester", "", &["testers"]);
    assert_eq!(
        names(&app.get("/v1/tools", Some(&tester)).await),
        [
            "demo___echo",
            "test___down",
            "test___fail",
            "test___huge",
            "test___slow"
        ]
    );

    assert_eq!(app.get("/v1/tools", None).await.status, 401);
    assert_eq!(app.decisions().len(), 4);
}

#[tokio::test]
async fn delegated_call_needs_the_right_actor_and_user_group() {
    let app = TestApp::spawn().await;
    let delegated = |actor: &str, groups: &[&str]| {
        let mut c = app.claims("alice", "files:write", groups);
        c["act"] = json!({ "sub": actor });
        app.sign(&c)
    };
    let ok = delegated("cleanup-agent", &["report-admins"]);
    let reply = app
        .invoke(
            Some(&ok),
            "files___delete_file",
            json!({ "path": "/srv/reports/tmp/old.txt" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let wrong_actor = delegated("rogue-agent", &["report-admins"]);
    assert_eq!(
        app.invoke(
            Some(&wrong_actor),
            "files___delete_file",
            json!({ "path": "/srv/reports/tmp/old.txt" })
        )
        .await
        .status,
        403
    );
    let wrong_group = delegated("cleanup-agent", &["reporting"]);
    assert_eq!(
        app.invoke(
            Some(&wrong_group),
            "files___delete_file",
            json!({ "path": "/srv/reports/tmp/old.txt" })
        )
        .await
        .status,
        403
    );
    let agent_itself = app.token("cleanup-agent", "files:write", &["report-admins"]);
    assert_eq!(
        app.invoke(
            Some(&agent_itself),
            "files___delete_file",
            json!({ "path": "/srv/reports/tmp/old.txt" })
        )
        .await
        .status,
        403
    );
    let first = &app.decisions()[0];
    assert_eq!(
        first.record["policy"]["request"]["principal"],
        json!({ "__entity": { "type": "Toolgate::User", "id": "alice" } })
    );
    assert_eq!(
        first.record["principal"]["actors"],
        json!(["cleanup-agent"])
    );
}

#[tokio::test]
async fn unwritable_log_fails_closed_with_503_and_recovers() {
    let app = TestApp::spawn_with(Options {
        busy_timeout_ms: Some(100),
        ..Options::default()
    })
    .await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    assert_eq!(
        app.invoke(Some(&token), "demo___echo", json!({ "message": "before" }))
            .await
            .status,
        200
    );

    // Another process holds the write lock: SQLite cannot commit, so nothing may be dispatched.
    let locker = rusqlite::Connection::open(app.db_path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let reply = app
        .invoke(Some(&token), "demo___echo", json!({ "message": "during" }))
        .await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(reply.header("x-toolgate-decision-id").is_none());
    let ready = app.get("/readyz", None).await;
    assert_eq!(
        (ready.status, ready.body),
        (503, json!({ "ready": false, "failing": ["log_writable"] }))
    );
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    let echoed: Vec<String> = app
        .backend
        .calls("/echo")
        .iter()
        .map(|c| String::from_utf8_lossy(&c.body).into_owned())
        .collect();
    assert_eq!(
        echoed.len(),
        1,
        "the backend was called while the log was unwritable: {echoed:?}"
    );

    let reply = app
        .invoke(Some(&token), "demo___echo", json!({ "message": "after" }))
        .await;
    assert_eq!(reply.status, 200, "the broker recovers by itself");
    assert_eq!(app.get("/readyz", None).await.status, 200);
    let messages: Vec<String> = app
        .decisions()
        .iter()
        .map(|r| {
            r.record["arguments"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(messages, ["before", "after"]);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz", None).await;
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, json!({ "ready": true, "failing": [] }));
    let status = app.status().await;
    assert_eq!(status.body["checks"]["keys_loaded"], true);
    assert_eq!(status.body["checks"]["log_writable"], true);
    app.stop().await;
}

#[tokio::test]
async fn admin_api_needs_the_admin_audience_and_scope() {
    let app = TestApp::spawn().await;
    let mut admin = app.claims("ops", "toolgate:admin", &[]);
    admin["aud"] = json!("toolgate-admin");
    let admin = app.sign(&admin);
    let reply = app.get("/admin/status", Some(&admin)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["ready"], true);

    // An agent token with the admin scope but the agent audience is refused...
    let agent_with_scope = app.token("agent", "toolgate:admin", &[]);
    assert_eq!(
        app.get("/admin/status", Some(&agent_with_scope))
            .await
            .status,
        401
    );
    // ...and an admin-audience token without the scope gets 403 insufficient_scope.
    let mut no_scope = app.claims("ops", "", &[]);
    no_scope["aud"] = json!("toolgate-admin");
    let reply = app.get("/admin/status", Some(&app.sign(&no_scope))).await;
    assert_eq!(reply.status, 403);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope")
    );
    // An admin token cannot call tools.
    assert_eq!(
        app.invoke(Some(&admin), "demo___echo", json!({ "message": "x" }))
            .await
            .status,
        401
    );

    let reasons: Vec<(String, String)> = app
        .decisions()
        .iter()
        .map(|r| {
            (
                r.record["endpoint"].as_str().unwrap().to_owned(),
                r.reason.clone(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("admin".to_owned(), "allowed".to_owned()),
            ("admin".to_owned(), "audience_mismatch".to_owned()),
            ("admin".to_owned(), "insufficient_scope".to_owned()),
            ("invoke".to_owned(), "audience_mismatch".to_owned()),
        ]
    );
}
