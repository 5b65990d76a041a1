//! Revocation and replay through the real API and CLI: effective on the next request,
//! persisted in the state database across restarts.

use serde_json::{Value, json};

use crate::support::{ISSUER, Options, Reply, TestApp};

async fn post_revocation(app: &TestApp, token: &str, body: Value) -> Reply {
    let response = app
        .client
        .post(app.url("/admin/revocations"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

fn admin_token(app: &TestApp) -> String {
    let mut claims = app.claims("ops", "toolgate:admin", &[]);
    claims["aud"] = json!("toolgate-admin");
    app.sign(&claims)
}

/// A token for `sub` issued `age` seconds ago.
fn token_issued(app: &TestApp, sub: &str, age: i64) -> (String, String) {
    let mut claims = app.claims(sub, "", &[]);
    let now = toolgate::auth::unix_now();
    claims["iat"] = json!(now - age);
    let jti = claims["jti"].as_str().unwrap().to_owned();
    (app.sign(&claims), jti)
}

async fn echo(app: &TestApp, token: &str) -> Reply {
    app.invoke(Some(token), "demo___echo", json!({ "message": "hi" }))
        .await
}

#[track_caller]
fn assert_refused(app: &TestApp, reply: &Reply, reason: &str) {
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    let description = if reason == "token_expired" {
        "the token has expired"
    } else {
        "the token is not valid"
    };
    let challenge = format!(
        "Bearer realm=\"toolgate\", error=\"invalid_token\", error_description=\"{description}\""
    );
    assert_eq!(reply.header("www-authenticate"), Some(challenge.as_str()));
    let id = reply.header("x-toolgate-decision-id").unwrap();
    let row = app
        .decisions()
        .into_iter()
        .find(|r| r.decision_id == id)
        .unwrap();
    assert_eq!((row.stage.as_str(), row.reason.as_str()), ("auth", reason));
}

#[tokio::test]
async fn admin_revocations_apply_at_once_and_survive_a_restart() {
    let app = TestApp::spawn().await;
    let admin = admin_token(&app);
    let (by_jti, jti) = token_issued(&app, "agent-a", 10);
    let (by_subject, _) = token_issued(&app, "agent-b", 10);
    let (bystander, _) = token_issued(&app, "agent-c", 10);
    for t in [&by_jti, &by_subject, &bystander] {
        assert_eq!(echo(&app, t).await.status, 200);
    }

    let reply = post_revocation(&app, &admin, json!({ "jti": jti, "reason": "leaked" })).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["revocation"]["kind"], "jti");
    let reply = post_revocation(
        &app,
        &admin,
        json!({ "subject": "agent-b", "issuer": ISSUER }),
    )
    .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    // Expiry: cut-off + max lifetime (3600) + 2 × leeway (30).
    let rev = &reply.body["revocation"];
    assert_eq!(
        rev["expires_at"].as_i64().unwrap() - rev["before"].as_i64().unwrap(),
        3660
    );

    assert_refused(&app, &echo(&app, &by_jti).await, "token_revoked");
    assert_refused(&app, &echo(&app, &by_subject).await, "token_revoked");
    assert_eq!(echo(&app, &bystander).await.status, 200);
    // A token the subject gets after the revocation works.
    let mut fresh = app.claims("agent-b", "", &[]);
    fresh["iat"] = json!(toolgate::auth::unix_now() + 1);
    let fresh = app.sign(&fresh);
    assert_eq!(echo(&app, &fresh).await.status, 200);

    // Bad requests are 400 and change nothing.
    for body in [
        json!({}),
        json!({ "jti": "x", "subject": "y" }),
        json!({ "jti": "x", "before": 1 }),
        json!({ "subject": "y", "before": toolgate::auth::unix_now() + 3600 }),
        json!({ "issuer": "https://unknown.test" }),
        json!({ "subject": "y", "surprise": true }),
        json!({ "subject": "" }),
    ] {
        let reply = post_revocation(&app, &admin, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        assert_eq!(reply.body["error"], "bad_request");
    }
    // Agent tokens cannot revoke, even with the admin scope.
    let agent = app.token("agent-c", "toolgate:admin", &[]);
    assert_eq!(
        post_revocation(&app, &agent, json!({ "subject": "agent-a" }))
            .await
            .status,
        401
    );

    let listed = app.get("/admin/revocations", Some(&admin)).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["revocations"].as_array().unwrap().len(), 2);

    // Restart on the same state: the revocations still hold.
    let kept = app.stop_keep().await;
    let app = TestApp::spawn_with(Options {
        reuse: Some(kept),
        ..Options::default()
    })
    .await;
    assert_refused(&app, &echo(&app, &by_jti).await, "token_revoked");
    assert_refused(&app, &echo(&app, &by_subject).await, "token_revoked");
    assert_eq!(echo(&app, &bystander).await.status, 200);
    let listed = app
        .get("/admin/revocations", Some(&admin_token(&app)))
        .await;
    assert_eq!(listed.body["revocations"].as_array().unwrap().len(), 2);
    let actions: Vec<(String, String)> = app
        .decisions()
        .into_iter()
        .filter(|r| r.record["endpoint"] == "admin")
        .map(|r| (r.record["tool"].as_str().unwrap_or("").to_owned(), r.reason))
        .collect();
    assert!(actions.contains(&("admin:revoke".to_owned(), "allowed".to_owned())));
    assert!(actions.contains(&("admin:revoke".to_owned(), "audience_mismatch".to_owned())));
}

#[tokio::test]
async fn single_use_jti_is_refused_on_replay_even_after_a_restart() {
    let options = || Options {
        issuer_extra: "jti_single_use = true".to_owned(),
        ..Options::default()
    };
    let app = TestApp::spawn_with(options()).await;
    let token = app.token("agent-a", "", &[]);
    assert_eq!(echo(&app, &token).await.status, 200);
    assert_refused(&app, &echo(&app, &token).await, "token_replayed");
    // Another token of the same subject is fine; one without `jti` is refused.
    assert_eq!(echo(&app, &app.token("agent-a", "", &[])).await.status, 200);
    let mut no_jti = app.claims("agent-a", "", &[]);
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_refused(&app, &echo(&app, &app.sign(&no_jti)).await, "missing_claim");
    // A refused token is not marked used: an expired token's jti does not burn a fresh one.
    let mut shared = app.claims("agent-a", "", &[]);
    let now = toolgate::auth::unix_now();
    shared["exp"] = json!(now - 100);
    shared["iat"] = json!(now - 200);
    assert_refused(&app, &echo(&app, &app.sign(&shared)).await, "token_expired");
    shared["exp"] = json!(now + 100);
    shared["iat"] = json!(now);
    let second = app.sign(&shared);
    assert_eq!(echo(&app, &second).await.status, 200);

    let kept = app.stop_keep().await;
    let app = TestApp::spawn_with(Options {
        reuse: Some(kept),
        ..options()
    })
    .await;
    assert_refused(&app, &echo(&app, &token).await, "token_replayed");
    assert_refused(&app, &echo(&app, &second).await, "token_replayed");
}

fn toolgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn cli_revoke_writes_the_state_the_running_server_reads() {
    let app = TestApp::spawn().await;
    let config = app.config_path();
    let config = config.to_str().unwrap();
    let (old_c, _) = token_issued(&app, "agent-c", 20);
    let (old_d, _) = token_issued(&app, "agent-d", 20);
    let (new_d, _) = token_issued(&app, "agent-d", 0);
    assert_eq!(echo(&app, &old_c).await.status, 200);

    let out = toolgate(&[
        "revoke",
        "--config",
        config,
        "--subject",
        "agent-c",
        "--reason",
        "test",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["kind"], "subject");
    assert_refused(&app, &echo(&app, &old_c).await, "token_revoked");

    // Issuer-wide cut-off in the past: older tokens go, newer ones stay.
    let before = (toolgate::auth::unix_now() - 10).to_string();
    let out = toolgate(&[
        "revoke", "--config", config, "--issuer", ISSUER, "--before", &before,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_refused(&app, &echo(&app, &old_d).await, "token_revoked");
    assert_eq!(echo(&app, &new_d).await.status, 200);

    let out = toolgate(&["revoke", "list", "--config", config]);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Refusals: `--jti` with `--before`, nothing to revoke, unknown issuer.
    for args in [
        vec!["revoke", "--config", config, "--jti", "j", "--before", "1"],
        vec!["revoke", "--config", config],
        vec![
            "revoke",
            "--config",
            config,
            "--issuer",
            "https://unknown.test",
        ],
    ] {
        let out = toolgate(&args);
        assert!(!out.status.success(), "{args:?}");
    }
    let out = toolgate(&["revoke", "list", "--config", config]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn unreadable_revocation_store_fails_closed_with_503_not_401() {
    let app = TestApp::spawn().await;
    let (token, _) = token_issued(&app, "agent-a", 0);
    assert_eq!(echo(&app, &token).await.status, 200);

    // The state database loses its revocation table, and a revocation is announced (the
    // change marker grows, as `toolgate revoke` makes it): the revocations in effect can no
    // longer be read. The call is refused, as an outage (retry later), not as a bad token.
    let state_dir = app.dir.path().join("state");
    let state = rusqlite::Connection::open(state_dir.join("state.db")).unwrap();
    state.execute_batch("DROP TABLE revocations").unwrap();
    let marker = state_dir.join("state.revocations");
    let mut announced = std::fs::read(&marker).unwrap();
    announced.push(b'\n');
    std::fs::write(&marker, announced).unwrap();
    let reply = echo(&app, &token).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(reply.header("www-authenticate").is_none());
    assert_eq!(reply.body["error"], "state_unavailable");
    let id = reply.header("x-toolgate-decision-id").unwrap();
    let row = app
        .decisions()
        .into_iter()
        .find(|r| r.decision_id == id)
        .unwrap();
    assert_eq!(
        (
            row.decision.as_str(),
            row.stage.as_str(),
            row.reason.as_str()
        ),
        ("deny", "auth", "revocation_unavailable")
    );
    assert_eq!(
        app.backend.calls("/echo").len(),
        1,
        "dispatched without a revocation check"
    );
    // Without the marker every check queries the database itself: refused the same way.
    std::fs::remove_file(&marker).unwrap();
    let reply = echo(&app, &token).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "state_unavailable");
    assert_eq!(app.backend.calls("/echo").len(), 1);
}
