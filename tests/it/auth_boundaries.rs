//! The token stage's boundaries over real HTTP: a token is an agent token or an admin token,
//! never both; one `Authorization` header per request; a JWKS file withdraws the keys it no
//! longer lists and reports a file it cannot read; `Ed25519` is read as `EdDSA`.

use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};
use toolgate::signing::SigningKey;

use crate::support::{AUDIENCE, ISSUER, Options, Reply, TestApp};

const ADMIN_AUDIENCE: &str = "toolgate-admin";
const OPS_ISSUER: &str = "https://ops.test";
const OPS_AUDIENCE: &str = "ops-agents";

/// A broker with a second issuer (`ops`, its own JWKS file) beside the test issuer, whose
/// JWKS file also lists `extra_jwks`.
async fn spawn_with_ops(
    ops: &SigningKey,
    extra_jwks: Vec<Value>,
    watch_interval_ms: Option<u64>,
) -> TestApp {
    TestApp::spawn_with(Options {
        files: vec![("ops-jwks.json".to_owned(), ops.jwks().to_string())],
        extra_config: format!(
            r#"
[[issuers]]
issuer = "{OPS_ISSUER}"
audiences = ["{OPS_AUDIENCE}"]
jwks_file = "ops-jwks.json"
algorithms = ["EdDSA"]
"#
        ),
        extra_jwks,
        watch_interval_ms,
        ..Options::default()
    })
    .await
}

/// An admin token from the ops issuer, which stays valid whatever happens to the test issuer's keys.
fn ops_admin_token(ops: &SigningKey) -> String {
    let now = toolgate::auth::unix_now();
    ops.sign(
        "at+jwt",
        &json!({
            "iss": OPS_ISSUER, "sub": "ops", "aud": ADMIN_AUDIENCE, "iat": now, "exp": now + 300,
            "scope": "toolgate:admin",
        }),
    )
    .unwrap()
}

/// The reason of the decision record with this reply's decision id.
#[track_caller]
fn reason_of(app: &TestApp, reply: &Reply) -> (String, String) {
    let id = reply
        .header("x-toolgate-decision-id")
        .expect("a decision id");
    let row = app
        .decisions()
        .into_iter()
        .find(|r| r.decision_id == id)
        .expect("a decision record");
    assert_eq!(row.decision, "deny");
    (
        row.record["endpoint"].as_str().unwrap().to_owned(),
        row.reason,
    )
}

#[tokio::test]
async fn a_token_naming_agent_and_admin_audiences_is_neither() {
    let (ops, _) = SigningKey::generate().unwrap();
    let app = spawn_with_ops(&ops, Vec::new(), None).await;
    let with_audiences = |aud: Value| {
        let mut claims = app.claims("mallory", "toolgate:admin files:read", &[]);
        claims["aud"] = aud;
        app.sign(&claims)
    };

    // Each audience alone is what it says.
    let agent = with_audiences(json!([AUDIENCE]));
    let reply = app
        .authorize(&agent, "demo___echo", json!({"message": "hi"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let admin = with_audiences(json!([ADMIN_AUDIENCE]));
    assert_eq!(app.get("/admin/status", Some(&admin)).await.status, 200);

    // Both in one token (as an IdP issuing for several resources would mint): refused
    // everywhere, whichever order, and for another issuer's agent audience too.
    for aud in [
        json!([AUDIENCE, ADMIN_AUDIENCE]),
        json!([ADMIN_AUDIENCE, AUDIENCE]),
        json!([ADMIN_AUDIENCE, OPS_AUDIENCE]),
    ] {
        let token = with_audiences(aud.clone());
        let mut replies = vec![
            app.authorize(&token, "demo___echo", json!({"message": "hi"}))
                .await,
            app.invoke(Some(&token), "demo___echo", json!({"message": "hi"}))
                .await,
            app.get("/v1/tools", Some(&token)).await,
            app.get("/admin/status", Some(&token)).await,
            app.get("/admin/revocations", Some(&token)).await,
            app.get("/admin/decisions", Some(&token)).await,
            app.post("/admin/policies/reload", &token).await,
        ];
        let revoke = app
            .client
            .post(app.url("/admin/revocations"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(json!({"subject": "bob"}).to_string())
            .send()
            .await
            .unwrap();
        replies.push(Reply::read(revoke).await);
        for reply in &replies {
            if aud[1] == OPS_AUDIENCE && reply.body["decision_id"].is_string() {
                // The test issuer does not accept the ops audience for agents: only the admin
                // routes tell anything about the mixed-audience rule.
                let (endpoint, reason) = reason_of(&app, reply);
                if endpoint != "admin" {
                    assert_eq!(reason, "audience_mismatch");
                    continue;
                }
            }
            assert_eq!(reply.status, 401, "{aud}: {:?}", reply.body);
            assert!(
                reply
                    .header("www-authenticate")
                    .unwrap()
                    .contains("invalid_token")
            );
            assert_eq!(reason_of(&app, reply).1, "mixed_audiences", "{aud}");
        }
    }
    assert!(app.backend.calls("/echo").is_empty());
    app.stop().await;
}

/// Asserts the refusal of a request with two authorization headers, and its record.
#[track_caller]
fn check_duplicate_refused(app: &TestApp, path: &str, endpoint: &str, reply: &Reply) {
    assert_eq!(reply.status, 400, "{path}: {:?}", reply.body);
    assert_eq!(reply.body["error"], "invalid_request", "{path}");
    assert_eq!(
        reply.body["message"], "send exactly one authorization header",
        "{path}"
    );
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_request""#),
        "{path}"
    );
    assert_eq!(
        reason_of(app, reply),
        (endpoint.to_owned(), "duplicate_authorization".to_owned()),
        "{path}"
    );
}

#[tokio::test]
async fn two_authorization_headers_are_refused_and_recorded_on_every_authenticated_route() {
    let app = TestApp::spawn().await;
    let agent = format!("Bearer {}", app.token("alice", "files:read", &[]));
    let admin = format!("Bearer {}", app.admin_token());
    let mcp_body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "t", "version": "0" } },
    });
    let cases = [
        ("POST", "/v1/tools/demo___echo/invoke", &agent, "invoke"),
        ("POST", "/v1/authorize", &agent, "authorize"),
        ("GET", "/v1/tools", &agent, "list"),
        ("POST", "/mcp", &agent, "mcp"),
        ("GET", "/admin/status", &admin, "admin"),
        ("POST", "/admin/policies/reload", &admin, "admin"),
    ];
    for (method, path, valid, endpoint) in cases {
        let send = |headers: &[&str]| {
            let mut request = match method {
                "GET" => app.client.get(app.url(path)),
                _ => app.client.post(app.url(path)),
            };
            if path == "/mcp" {
                request = request
                    .header("accept", "application/json, text/event-stream")
                    .body(mcp_body.to_string());
            } else if path.starts_with("/v1/") && method == "POST" {
                let body = json!({"tool": "demo___echo", "arguments": {"message": "hi"}});
                let body = if path == "/v1/authorize" {
                    body
                } else {
                    json!({"arguments": {"message": "hi"}})
                };
                request = request.body(body.to_string());
            }
            for value in headers {
                request = request.header(AUTHORIZATION, *value);
            }
            async move { Reply::read(request.send().await.unwrap()).await }
        };
        // One valid header is accepted, so the refusal below is the duplicate's doing.
        let one = send(&[valid.as_str()]).await;
        assert!(one.status < 300, "{path}: {} {:?}", one.status, one.body);
        for headers in [
            [valid.as_str(), "Bearer garbage"],
            ["Bearer garbage", valid.as_str()],
            [valid.as_str(), valid.as_str()],
        ] {
            check_duplicate_refused(&app, path, endpoint, &send(&headers).await);
        }
    }
    // Public routes do not read the header.
    let probe = app
        .client
        .get(app.url("/healthz"))
        .header(AUTHORIZATION, "Bearer a")
        .header(AUTHORIZATION, "Bearer b")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    // Only the single-header invoke reached the backend.
    assert_eq!(app.backend.calls("/echo").len(), 1);
    app.stop().await;
}

/// Replaces `path` whole (write, then rename), so the watcher never reads it half-written.
fn replace(path: &std::path::Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Polls `check` until it holds; the watcher runs every 100 ms, so 20 s is only a bound for a
/// broken build, never a measure.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_jwks_file_withdraws_what_it_no_longer_lists_and_reports_what_it_cannot_read() {
    let (ops, _) = SigningKey::generate().unwrap();
    let (second, _) = SigningKey::generate().unwrap();
    let app = spawn_with_ops(&ops, vec![second.public_jwk()], Some(100)).await;
    let jwks = app.dir.path().join("jwks.json");
    let admin = ops_admin_token(&ops);
    let sign = |key: &SigningKey| key.sign("at+jwt", &app.claims("alice", "", &[])).unwrap();
    let allowed = |token: String| {
        let app = &app;
        async move {
            app.authorize(&token, "demo___echo", json!({"message": "hi"}))
                .await
        }
    };
    let test_issuer = |status: &Value| {
        status["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["issuer"] == ISSUER)
            .unwrap()
            .clone()
    };
    assert_eq!(allowed(sign(&app.issuer_key)).await.status, 200);
    assert_eq!(allowed(sign(&second)).await.status, 200);

    // A key removed from the file stops verifying; the other keeps working.
    replace(&jwks, &second.jwks().to_string());
    eventually("the removed key is refused", || async {
        allowed(sign(&app.issuer_key)).await.status == 401
    })
    .await;
    let refused = allowed(sign(&app.issuer_key)).await;
    assert_eq!(reason_of(&app, &refused).1, "unknown_kid");
    assert_eq!(allowed(sign(&second)).await.status, 200);

    // A file that is not a JWKS keeps the last good set, and says so in /admin/status.
    replace(&jwks, "{ not json");
    eventually("the rejected reload is reported", || async {
        let status = app.get("/admin/status", Some(&admin)).await.body;
        test_issuer(&status)["reloads"]["last_error"].is_object()
    })
    .await;
    let status = app.get("/admin/status", Some(&admin)).await.body;
    let keys = test_issuer(&status);
    assert_eq!(keys["source"], "file");
    assert_eq!(keys["keys"], 1);
    assert_eq!(keys["reloads"]["rejected"], 1);
    let error = keys["reloads"]["last_error"]["error"].as_str().unwrap();
    assert!(error.contains("not a JWKS document"), "{error}");
    assert!(error.contains(ISSUER), "{error}");
    assert!(keys["reloads"]["last_error"]["at"].as_i64().unwrap() > 0);
    assert_eq!(allowed(sign(&second)).await.status, 200);
    assert_eq!(app.get("/readyz", None).await.status, 200);

    // An emptied file withdraws every key: the issuer's tokens are refused and the broker is
    // not ready; the error is cleared, since the file was read.
    replace(&jwks, r#"{"keys":[]}"#);
    eventually("the emptied file withdraws the last key", || async {
        allowed(sign(&second)).await.status == 401
    })
    .await;
    let refused = allowed(sign(&second)).await;
    assert_eq!(reason_of(&app, &refused).1, "keys_unavailable");
    assert_eq!(app.get("/readyz", None).await.status, 503);
    let status = app.get("/admin/status", Some(&admin)).await.body;
    assert_eq!(status["ready"], false);
    let keys = test_issuer(&status);
    assert_eq!(keys["keys"], 0);
    assert!(keys["reloads"]["last_error"].is_null());

    // Publishing a key again restores service.
    replace(&jwks, &second.jwks().to_string());
    eventually("the republished key verifies", || async {
        allowed(sign(&second)).await.status == 200
    })
    .await;
    assert_eq!(app.get("/readyz", None).await.status, 200);
    app.stop().await;
}

/// A compact JWS with the header `alg` given, signed with the Ed25519 key in `pkcs8`.
fn sign_ed25519(pkcs8: &[u8], alg: &str, kid: &str, claims: &Value) -> String {
    let key = Ed25519KeyPair::from_pkcs8(pkcs8).unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!(
        "{}.{}",
        b64(&json!({"alg": alg, "typ": "at+jwt", "kid": kid})),
        b64(claims)
    );
    let signature = URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).as_ref());
    format!("{message}.{signature}")
}

/// The public JWK of the Ed25519 key in `pkcs8`, declaring `alg`.
fn ed25519_jwk(pkcs8: &[u8], alg: &str, kid: &str) -> Value {
    let key = Ed25519KeyPair::from_pkcs8(pkcs8).unwrap();
    json!({
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": alg, "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
    })
}

#[tokio::test]
async fn the_rfc_9864_name_ed25519_is_read_as_eddsa_in_tokens_and_jwks() {
    let (_, declared_ed25519) = SigningKey::generate().unwrap();
    let (_, declared_eddsa) = SigningKey::generate().unwrap();
    let app = TestApp::spawn_with(Options {
        extra_jwks: vec![
            ed25519_jwk(&declared_ed25519, "Ed25519", "rfc9864"),
            ed25519_jwk(&declared_eddsa, "EdDSA", "classic"),
        ],
        ..Options::default()
    })
    .await;
    let claims = app.claims("alice", "", &[]);
    for (pkcs8, kid) in [(&declared_ed25519, "rfc9864"), (&declared_eddsa, "classic")] {
        for alg in ["Ed25519", "EdDSA"] {
            let token = sign_ed25519(pkcs8, alg, kid, &claims);
            let reply = app
                .authorize(&token, "demo___echo", json!({"message": "hi"}))
                .await;
            assert_eq!(reply.status, 200, "{kid} {alg}: {:?}", reply.body);
            // Recorded under the name toolgate emits.
            let id = reply.header("x-toolgate-decision-id").unwrap();
            let row = app
                .decisions()
                .into_iter()
                .find(|r| r.decision_id == id)
                .unwrap();
            assert_eq!(row.record["token"]["alg"], "EdDSA", "{:?}", row.record);
        }
    }
    // The alias names Ed25519 only: it does not fit an ES256 key's `kid`, nor a wrong key.
    let forged = sign_ed25519(&declared_eddsa, "Ed25519", "rfc9864", &claims);
    let reply = app
        .authorize(&forged, "demo___echo", json!({"message": "hi"}))
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reason_of(&app, &reply).1, "bad_signature");
    app.stop().await;
}
