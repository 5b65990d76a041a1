//! Dispatch against real loopback backends: failure modes (reset, saturation, circuit breaker,
//! retries), tool errors, the static backend credential, and the broker-signed assertion with
//! its JWKS and key rotation.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use toolgate::signing::SigningKey;
use toolgate::tools::assertion::{
    ASSERTION_HEADER, ASSERTION_TYP, AssertionClaims, AssertionError, Expected, RemoteJwks,
    verify_assertion,
};

use crate::support::{Options, Received, TestApp};

/// How a [`Recorder`] answers.
#[derive(Clone)]
enum Mode {
    /// 200 with `{"echo": arguments}`.
    Echo,
    /// This status with a JSON error body.
    Status(u16),
    /// Waits for the notify, then echoes.
    Gate(Arc<Notify>),
    /// 500 while the flag is false, echo once it is true.
    Healthy(Arc<AtomicBool>),
}

/// A loopback HTTP backend that records every request.
#[derive(Clone)]
struct Recorder {
    url: String,
    origin: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    async fn start(mode: Mode) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let rec = received.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let rec = rec.clone();
            let mode = mode.clone();
            async move {
                rec.lock().unwrap().push(Received {
                    path: "/".to_owned(),
                    headers,
                    body: body.clone(),
                });
                let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let echo = || axum::Json(json!({ "echo": args.clone() })).into_response();
                let status = |s: u16| -> Response {
                    (
                        StatusCode::from_u16(s).unwrap(),
                        axum::Json(json!({ "error": format!("status {s}") })),
                    )
                        .into_response()
                };
                match mode {
                    Mode::Echo => echo(),
                    Mode::Status(s) => status(s),
                    Mode::Gate(notify) => {
                        notify.notified().await;
                        echo()
                    }
                    Mode::Healthy(flag) if flag.load(Ordering::SeqCst) => echo(),
                    Mode::Healthy(_) => status(500),
                }
            }
        };
        let router = Router::new().fallback(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            url: format!("http://{addr}/tool"),
            origin: format!("http://{addr}"),
            received,
        }
    }

    fn calls(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// What a raw TCP backend does after reading a request's headers.
#[derive(Clone, Copy)]
enum Raw {
    /// Close without answering.
    Close,
    /// Write half a status line and some headers, then close.
    PartialHeaders,
    /// Write full headers promising 100 bytes, send 10, then close.
    PartialBody,
}

/// A raw TCP backend counting the requests it read.
async fn raw_backend(behaviour: Raw) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let reply: &[u8] = match behaviour {
                    Raw::Close => b"",
                    Raw::PartialHeaders => b"HTTP/1.1 200 OK\r\nContent-Ty",
                    Raw::PartialBody => {
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"partial\""
                    }
                };
                let _ = socket.write_all(reply).await;
                let _ = socket.flush().await;
                // Dropping the socket closes the connection mid-response.
            });
        }
    });
    (format!("http://{addr}/tool"), count)
}

/// A `[[tools]]` entry in the `test` server (callable by the `testers` group).
fn tool(name: &str, url: &str, idempotent: bool, backend_extra: &str) -> String {
    format!(
        r#"
[[tools]]
server = "test"
name = "{name}"
input_schema = {{ type = "object", properties = {{ q = {{ type = "string" }}, n = {{ type = "string" }}, id = {{ type = "integer" }} }} }}
annotations = {{ destructive = false, idempotent = {idempotent} }}
backend = {{ kind = "http", url = "{url}"{backend_extra} }}
"#
    )
}

async fn spawn(tools: &[String]) -> TestApp {
    TestApp::spawn_with(Options {
        extra_config: tools.concat(),
        ..Options::default()
    })
    .await
}

fn tester(app: &TestApp) -> String {
    app.token("tester", "", &["testers"])
}

/// Waits (bounded) until `cond` holds; not a timing assertion, a synchronisation point.
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

fn dispatch_reasons(app: &TestApp) -> Vec<String> {
    app.records()
        .into_iter()
        .filter(|r| r.kind == "dispatch")
        .map(|r| r.reason)
        .collect()
}

#[tokio::test]
async fn reset_mid_response_is_502_and_never_retried_once_headers_began() {
    let (headers_url, headers_count) = raw_backend(Raw::PartialHeaders).await;
    let (body_url, body_count) = raw_backend(Raw::PartialBody).await;
    let app = spawn(&[
        tool("reset_headers", &headers_url, false, ""),
        tool("reset_body", &body_url, true, ", retries = 3"),
    ])
    .await;
    let token = tester(&app);

    let reply = app
        .invoke(Some(&token), "test___reset_headers", json!({}))
        .await;
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "unreachable");
    assert_eq!(headers_count.load(Ordering::SeqCst), 1);

    // Headers arrived: the backend answered, so even an idempotent tool is not retried.
    let reply = app
        .invoke(Some(&token), "test___reset_body", json!({}))
        .await;
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "interrupted");
    assert_eq!(body_count.load(Ordering::SeqCst), 1);

    assert_eq!(dispatch_reasons(&app), ["unreachable", "interrupted"]);
}

#[tokio::test]
async fn idempotent_tools_retry_connection_errors_and_others_do_not() {
    let (url, count) = raw_backend(Raw::Close).await;
    let (url2, count2) = raw_backend(Raw::Close).await;
    let app = spawn(&[
        tool("idem", &url, true, ", retries = 2"),
        tool("nonidem", &url2, false, ""),
    ])
    .await;
    let token = tester(&app);

    let reply = app.invoke(Some(&token), "test___idem", json!({})).await;
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "unreachable");
    assert_eq!(count.load(Ordering::SeqCst), 3, "one call and two retries");

    let reply = app.invoke(Some(&token), "test___nonidem", json!({})).await;
    assert_eq!(reply.status, 502);
    assert_eq!(
        count2.load(Ordering::SeqCst),
        1,
        "a non-idempotent call is sent once"
    );
}

#[test]
fn backend_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            tool("x", "http://127.0.0.1:9/x", false, ", retries = 1"),
            "tools[0].backend.retries",
        ),
        (
            tool("x", "http://127.0.0.1:9/x", true, ", retries = 9"),
            "tools[0].backend.retries",
        ),
        (
            tool("x", "http://127.0.0.1:9/x", false, ", max_concurrent = 0"),
            "tools[0].backend.max_concurrent",
        ),
        (
            tool("x", "http://127.0.0.1:9/x", false, ", circuit_failures = 0"),
            "tools[0].backend.circuit_failures",
        ),
        (
            tool(
                "x",
                "http://127.0.0.1:9/x",
                false,
                ", credential_env = \"A\", credential_file = \"b\"",
            ),
            "tools[0].backend.credential_env",
        ),
        (
            tool("x", "http://user:pw@127.0.0.1:9/x", false, ""),
            "tools[0].backend.url",
        ),
    ];
    for (text, key) in cases {
        let err = toolgate::config::Config::from_toml_str(
            &text,
            Path::new("t.toml"),
            dir.path(),
            Vec::<(String, String)>::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

#[test]
fn a_missing_credential_is_a_registry_error_naming_the_source_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let load = |extra: &str| {
        let text = tool("x", "http://127.0.0.1:9/x", false, extra);
        let config = toolgate::config::Config::from_toml_str(
            &text,
            Path::new("t.toml"),
            dir.path(),
            Vec::<(String, String)>::new(),
        )
        .unwrap();
        toolgate::tools::Registry::from_config(&config, None)
    };
    let err = load(", credential_env = \"TOOLGATE_TEST_SURELY_UNSET_VAR\"").unwrap_err();
    assert!(
        err.to_string()
            .contains("env `TOOLGATE_TEST_SURELY_UNSET_VAR`"),
        "{err}"
    );
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let err = load(", credential_file = \"empty\"").unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
    std::fs::write(dir.path().join("spaced"), "two words").unwrap();
    let err = load(", credential_file = \"spaced\"").unwrap_err();
    assert!(!err.to_string().contains("two words"), "{err}");
}

#[tokio::test]
async fn saturated_backend_is_503_with_retry_after_and_recorded() {
    let gate = Arc::new(Notify::new());
    let backend = Recorder::start(Mode::Gate(gate.clone())).await;
    let app = Arc::new(spawn(&[tool("gated", &backend.url, false, ", max_concurrent = 1")]).await);
    let token = tester(&app);

    let first = {
        let app = app.clone();
        let token = token.clone();
        tokio::spawn(async move { app.invoke(Some(&token), "test___gated", json!({})).await })
    };
    until(|| backend.calls().len() == 1).await;

    let reply = app.invoke(Some(&token), "test___gated", json!({})).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "saturated");
    assert_eq!(reply.body["decision"], "allow");
    assert_eq!(reply.header("retry-after"), Some("1"));

    gate.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(
        backend.calls().len(),
        1,
        "the refused call never reached the backend"
    );
    let reasons = dispatch_reasons(&app);
    assert_eq!(reasons, ["saturated", "dispatched"]);
    let saturated = app
        .records()
        .into_iter()
        .find(|r| r.reason == "saturated")
        .unwrap();
    assert_eq!(saturated.record["dispatch"]["error_class"], "saturated");
}

#[tokio::test]
async fn circuit_breaker_opens_fails_fast_and_recovers_after_cooldown() {
    let healthy = Arc::new(AtomicBool::new(false));
    let backend = Recorder::start(Mode::Healthy(healthy.clone())).await;
    let app = spawn(&[tool(
        "flaky",
        &backend.url,
        false,
        // Long enough that a loaded machine cannot let the cool-down lapse between the calls
        // that must meet the open circuit.
        ", circuit_failures = 2, circuit_cooldown_ms = 1500",
    )])
    .await;
    let token = tester(&app);
    let call = || app.invoke(Some(&token), "test___flaky", json!({}));

    assert_eq!(call().await.status, 502);
    assert_eq!(call().await.status, 502);
    let open = call().await;
    assert_eq!(open.status, 503, "{:?}", open.body);
    assert_eq!(open.body["error"], "circuit_open");
    let retry_after: u64 = open.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&retry_after),
        "the rest of the cool-down, rounded up"
    );
    assert_eq!(backend.calls().len(), 2, "an open circuit sends nothing");

    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let probe = call().await;
    assert_eq!(
        probe.status, 200,
        "the half-open probe goes through: {:?}",
        probe.body
    );
    assert_eq!(call().await.status, 200, "the circuit closed again");
    assert_eq!(backend.calls().len(), 4);
    assert_eq!(
        dispatch_reasons(&app),
        [
            "bad_status",
            "bad_status",
            "circuit_open",
            "dispatched",
            "dispatched"
        ]
    );
}

#[tokio::test]
async fn a_failed_probe_reopens_the_circuit() {
    let backend = Recorder::start(Mode::Status(503)).await;
    let app = spawn(&[tool(
        "dead",
        &backend.url,
        false,
        // Long enough that a loaded machine cannot let the cool-down lapse between two calls
        // that must both meet the open circuit.
        ", circuit_failures = 1, circuit_cooldown_ms = 1500",
    )])
    .await;
    let token = tester(&app);
    let call = || app.invoke(Some(&token), "test___dead", json!({}));
    assert_eq!(call().await.status, 502);
    assert_eq!(call().await.status, 503);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        call().await.status,
        502,
        "the probe reaches the backend and fails"
    );
    assert_eq!(call().await.status, 503, "and the circuit is open again");
    assert_eq!(backend.calls().len(), 2);
}

#[tokio::test]
async fn tool_client_errors_are_200_with_is_error() {
    let backend = Recorder::start(Mode::Status(404)).await;
    let app = spawn(&[tool("missing", &backend.url, false, "")]).await;
    let reply = app
        .invoke(Some(&tester(&app)), "test___missing", json!({ "id": 7 }))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["decision"], "allow");
    assert_eq!(reply.body["is_error"], true);
    assert_eq!(reply.body["status"], 404);
    assert_eq!(reply.body["result"], json!({ "error": "status 404" }));
    let dispatch = app
        .records()
        .into_iter()
        .find(|r| r.kind == "dispatch")
        .unwrap();
    assert_eq!(dispatch.reason, "tool_error");
    assert_eq!(dispatch.record["dispatch"]["status"], 404);
}

async fn broker_jwks(app: &TestApp) -> JwkSet {
    let reply = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(reply.status, 200);
    serde_json::from_value(reply.body).unwrap()
}

fn broker_key(app: &TestApp) -> SigningKey {
    SigningKey::load(
        &app.dir
            .path()
            .join("state")
            .join("broker-signing-ed25519.pk8"),
    )
    .unwrap()
}

#[tokio::test]
async fn backend_verifies_the_brokers_assertion_and_refuses_forgeries() {
    let backend = Recorder::start(Mode::Echo).await;
    let app = spawn(&[tool("verified", &backend.url, false, "")]).await;
    let mut claims = app.claims("alice", "", &["testers"]);
    claims["act"] = json!({ "sub": "helper-agent", "act": { "sub": "planner-agent" } });
    let token = app.sign(&claims);
    let reply = app
        .invoke(Some(&token), "test___verified", json!({ "q": "hi" }))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let received = backend.calls().pop().unwrap();
    let assertion = received.headers[ASSERTION_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let jwks = broker_jwks(&app).await;
    let expected = Expected {
        issuer: "toolgate",
        audience: &backend.origin,
        body: &received.body,
    };
    let verified = verify_assertion(&assertion, &jwks, &expected).unwrap();
    assert_eq!(verified.sub, "alice");
    assert_eq!(
        verified.act,
        Some(json!({ "sub": "helper-agent", "act": { "sub": "planner-agent" } }))
    );
    assert_eq!(verified.tool, "test___verified");
    assert_eq!(
        verified.decision_id,
        reply.body["decision_id"].as_str().unwrap()
    );
    assert!(verified.exp - verified.iat <= 60);

    let now = toolgate::auth::unix_now();
    let good: AssertionClaims = verified.clone();
    let broker = broker_key(&app);
    // Forged: another key claiming the broker's kid.
    let (_, forger_bytes) = SigningKey::generate().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.typ = Some(ASSERTION_TYP.to_owned());
    header.kid = Some(broker.kid().to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &good,
        &jsonwebtoken::EncodingKey::from_ed_der(&forger_bytes),
    )
    .unwrap();
    let (stranger, _) = SigningKey::generate().unwrap();
    let by_broker = |claims: AssertionClaims| broker.sign(ASSERTION_TYP, &claims).unwrap();
    let unknown_key = || AssertionError::UnknownKey(String::new());
    // (case, assertion, what the backend expects, the refusal's variant: `None` for any)
    let refused = [
        (
            "tampered arguments: the body does not match the signed hash",
            assertion.clone(),
            Expected {
                body: br#"{"q":"bye"}"#,
                ..expected
            },
            Some(AssertionError::BodyMismatch),
        ),
        (
            "another backend replaying it",
            assertion.clone(),
            Expected {
                audience: "http://other.test",
                ..expected
            },
            Some(AssertionError::WrongAudience),
        ),
        (
            "another key claiming the broker's kid",
            forged.clone(),
            expected,
            Some(AssertionError::BadSignature),
        ),
        (
            "another key under its own kid, unknown to the broker's JWKS",
            stranger.sign(ASSERTION_TYP, &good).unwrap(),
            expected,
            Some(unknown_key()),
        ),
        (
            "expired, though signed by the broker's real key",
            by_broker(AssertionClaims {
                iat: now - 200,
                exp: now - 140,
                ..good.clone()
            }),
            expected,
            Some(AssertionError::Expired),
        ),
        (
            "too long-lived",
            by_broker(AssertionClaims {
                exp: now + 3600,
                ..good.clone()
            }),
            expected,
            Some(AssertionError::LifetimeTooLong),
        ),
        (
            "signed for another audience",
            by_broker(AssertionClaims {
                aud: "http://other.test".to_owned(),
                ..good.clone()
            }),
            expected,
            Some(AssertionError::WrongAudience),
        ),
        (
            "an access token's typ",
            broker.sign("at+jwt", &good).unwrap(),
            expected,
            Some(AssertionError::Malformed(String::new())),
        ),
        ("the agent's token", token.clone(), expected, None),
    ];
    for (case, assertion, expected, refusal) in &refused {
        check_refused(case, verify_assertion(assertion, &jwks, expected), refusal);
    }

    // The example backend's path (`RemoteJwks`) agrees, refetching on the unknown kid first.
    let remote = RemoteJwks::fetch(&app.url("/.well-known/jwks.json"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        remote.verify(&assertion, &expected).await.unwrap(),
        verified
    );
    for (case, assertion, refusal) in [
        ("forged", &forged, AssertionError::BadSignature),
        (
            "another key",
            &stranger.sign(ASSERTION_TYP, &good).unwrap(),
            unknown_key(),
        ),
    ] {
        let result = remote.verify(assertion, &expected).await;
        check_refused(case, result, &Some(refusal));
    }
}

/// Asserts that an assertion was refused with `refusal`'s variant (its text aside), or with
/// any error when `refusal` is `None`.
#[track_caller]
fn check_refused(
    case: &str,
    result: Result<AssertionClaims, AssertionError>,
    refusal: &Option<AssertionError>,
) {
    match (result, refusal) {
        (Err(got), Some(want)) => assert_eq!(
            std::mem::discriminant(&got),
            std::mem::discriminant(want),
            "{case}: {got:?}, not {want:?}"
        ),
        (Err(_), None) => {}
        (Ok(claims), _) => panic!("{case}: accepted {claims:?}"),
    }
}

#[tokio::test]
async fn no_backend_request_ever_carries_the_agents_token() {
    let backend = Recorder::start(Mode::Echo).await;
    let client_error = Recorder::start(Mode::Status(400)).await;
    let (raw_url, _) = raw_backend(Raw::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let cred_path = dir.path().join("cred");
    std::fs::write(&cred_path, "backend-secret-123\n").unwrap();
    let app = spawn(&[
        tool("plain", &backend.url, false, ""),
        tool(
            "with_cred",
            &backend.url,
            true,
            &format!(", credential_file = \"{}\"", cred_path.display()),
        ),
        tool("client_error", &client_error.url, false, ""),
        tool("raw", &raw_url, true, ""),
    ])
    .await;
    let token = tester(&app);
    for name in ["plain", "with_cred", "client_error", "raw"] {
        app.invoke(
            Some(&token),
            &format!("test___{name}"),
            json!({ "n": name }),
        )
        .await;
    }
    let calls: Vec<Received> = backend
        .calls()
        .into_iter()
        .chain(client_error.calls())
        .collect();
    assert_eq!(calls.len(), 3);
    for call in &calls {
        for (name, value) in call.headers.iter() {
            let value = value.to_str().unwrap_or_default();
            assert!(!value.contains(&token), "the agent's token in `{name}`");
        }
        assert!(!String::from_utf8_lossy(&call.body).contains(&token));
        assert!(call.headers.contains_key(ASSERTION_HEADER));
    }
    let auth: Vec<Option<&str>> = calls
        .iter()
        .map(|c| c.headers.get("authorization").map(|v| v.to_str().unwrap()))
        .collect();
    assert_eq!(
        auth,
        [None, Some("Bearer backend-secret-123"), None],
        "only the configured static credential, only to its backend"
    );
    let db = std::fs::read(app.db_path()).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("backend-secret-123"));
}

#[tokio::test]
async fn jwks_is_served_and_key_rotation_publishes_then_switches() {
    let backend = Recorder::start(Mode::Echo).await;
    let app = spawn(&[tool("rot", &backend.url, false, "")]).await;
    let token = tester(&app);
    let jwks = broker_jwks(&app).await;
    assert_eq!(jwks.keys.len(), 1);
    let first_kid = broker_key(&app).kid().to_owned();
    // A backend's JWKS cache, fetched before the rotation: it must pick up the new key.
    let remote = RemoteJwks::fetch(&app.url("/.well-known/jwks.json"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        jwks.keys[0].common.key_id.as_deref(),
        Some(first_kid.as_str())
    );
    let reply = app.get("/.well-known/jwks.json", None).await;
    assert!(
        reply
            .header("cache-control")
            .unwrap()
            .contains("max-age=300")
    );
    assert!(reply.body["keys"][0].get("d").is_none(), "no private part");

    // `toolgate keys rotate` with no delay: the new key signs at once, the old stays published.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["keys", "rotate", "--delay-seconds", "0", "--config"])
        .arg(app.dir.path().join("toolgate.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rotation: Value = serde_json::from_slice(&output.stdout).unwrap();
    let new_kid = rotation["new_kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, first_kid);

    let mut jwks = broker_jwks(&app).await;
    for _ in 0..300 {
        if jwks.keys.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        jwks = broker_jwks(&app).await;
    }
    assert_eq!(
        jwks.keys.len(),
        2,
        "both keys are published during the switch"
    );

    let reply = app.invoke(Some(&token), "test___rot", json!({})).await;
    assert_eq!(reply.status, 200);
    let received = backend.calls().pop().unwrap();
    let assertion = received.headers[ASSERTION_HEADER].to_str().unwrap();
    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    let expected = Expected {
        issuer: "toolgate",
        audience: &backend.origin,
        body: &received.body,
    };
    verify_assertion(assertion, &jwks, &expected).unwrap();
    let claims = remote.verify(assertion, &expected).await.unwrap();
    assert_eq!(claims.tool, "test___rot");
}

#[tokio::test]
async fn tools_list_prints_the_registry_without_credentials() {
    let backend = Recorder::start(Mode::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let cred_path = dir.path().join("cred");
    std::fs::write(&cred_path, "list-secret-456").unwrap();
    let app = spawn(&[tool(
        "listed",
        &backend.url,
        true,
        &format!(", credential_file = \"{}\"", cred_path.display()),
    )])
    .await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["tools", "list", "--config"])
        .arg(app.dir.path().join("toolgate.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains("list-secret-456"));
    let tools: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listed = tools.iter().find(|t| t["id"] == "test___listed").unwrap();
    assert_eq!(listed["backend"]["url"], backend.url);
    assert_eq!(listed["backend"]["credential"], true);
    assert_eq!(listed["backend"]["retries"], 1);
    assert_eq!(listed["annotations"]["idempotent"], true);
    let read_file = tools
        .iter()
        .find(|t| t["id"] == "files___read_file")
        .unwrap();
    assert_eq!(read_file["required_scopes"], json!(["files:read"]));
    assert_eq!(read_file["backend"]["retries"], 0);
}
