//! Remote keys end to end: a JWKS server on loopback (found by OIDC discovery) rotates keys
//! while the broker runs; unknown `kid`s cannot make the broker hammer it; an unreachable IdP
//! ends in fail-closed once the last good set is too old. JWKS files rotate without a restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use toolgate::signing::SigningKey;

use crate::support::{Options, Reply, TestApp};

const REMOTE_AUDIENCE: &str = "remote-audience";

/// What the IdP serves now.
struct Published {
    keys: Vec<Value>,
    max_age: u64,
    down: bool,
}

/// A JWKS + discovery server on loopback that counts JWKS fetches.
struct Idp {
    base: String,
    published: Arc<Mutex<Published>>,
    jwks_fetches: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(keys: Vec<Value>, max_age: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let published = Arc::new(Mutex::new(Published {
            keys,
            max_age,
            down: false,
        }));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let (p1, p2, count) = (published.clone(), published.clone(), jwks_fetches.clone());
        let issuer = base.clone();
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move {
                    if p1.lock().unwrap().down {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    axum::Json(json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") }))
                        .into_response()
                }),
            )
            .route(
                "/jwks",
                get(move || async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    let p = p2.lock().unwrap();
                    if p.down {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    (
                        [(
                            header::CACHE_CONTROL,
                            format!("public, max-age={}", p.max_age),
                        )],
                        axum::Json(json!({ "keys": p.keys })),
                    )
                        .into_response()
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            base,
            published,
            jwks_fetches,
        }
    }

    fn publish(&self, keys: Vec<Value>, max_age: u64) {
        let mut p = self.published.lock().unwrap();
        p.keys = keys;
        p.max_age = max_age;
    }

    fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    async fn broker(&self, remote_keys: &str) -> TestApp {
        TestApp::spawn_with(Options {
            extra_config: format!(
                r#"
[[issuers]]
issuer = "{base}"
audiences = ["{REMOTE_AUDIENCE}"]
discovery = true
algorithms = ["EdDSA"]

[issuers.remote_keys]
{remote_keys}
"#,
                base = self.base
            ),
            ..Options::default()
        })
        .await
    }

    fn token(&self, key: &SigningKey) -> String {
        let now = toolgate::auth::unix_now();
        key.sign(
            "at+jwt",
            &json!({
                "iss": self.base, "sub": "remote-agent", "aud": REMOTE_AUDIENCE,
                "iat": now, "exp": now + 300,
            }),
        )
        .unwrap()
    }
}

async fn echo(app: &TestApp, token: &str) -> Reply {
    app.invoke(Some(token), "demo___echo", json!({ "message": "hi" }))
        .await
}

fn reason(app: &TestApp, reply: &Reply) -> String {
    let id = reply.header("x-toolgate-decision-id").unwrap();
    app.decisions()
        .into_iter()
        .find(|r| r.decision_id == id)
        .unwrap()
        .reason
}

/// Polls until `token` is refused (the next scheduled refresh has happened), for at most 5 s.
async fn refused_after_refresh(app: &TestApp, token: &str) -> Reply {
    for _ in 0..50 {
        let reply = echo(app, token).await;
        if reply.status == 401 {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("token still accepted after 5 s");
}

#[tokio::test]
async fn key_rotation_through_discovery() {
    let (key_a, _) = SigningKey::generate().unwrap();
    let (key_b, _) = SigningKey::generate().unwrap();
    // Phase 1: A only, cacheable for a minute.
    let idp = Idp::start(vec![key_a.public_jwk()], 60).await;
    let app = idp
        .broker("min_refresh_seconds = 1\nmax_refresh_seconds = 60")
        .await;
    let token_a = idp.token(&key_a);
    let reply = echo(&app, &token_a).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    // Phase 2: B is added (and the IdP now asks for 1 s caching). The first B token makes the
    // broker refetch once, then passes.
    idp.publish(vec![key_a.public_jwk(), key_b.public_jwk()], 1);
    let before = idp.fetches();
    let token_b = idp.token(&key_b);
    let reply = echo(&app, &token_b).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(idp.fetches(), before + 1);
    assert_eq!(echo(&app, &token_a).await.status, 200);

    // 50 invented kids: all refused, and no unknown-kid refetch within the minimum interval
    // (10 s default). Only scheduled refreshes (one per second now) may happen meanwhile.
    let after_b = idp.fetches();
    let started = std::time::Instant::now();
    for _ in 0..50 {
        let (stranger, _) = SigningKey::generate().unwrap();
        let reply = echo(&app, &idp.token(&stranger)).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reason(&app, &reply), "unknown_kid");
    }
    let scheduled = started.elapsed().as_secs() as usize + 1;
    assert!(
        idp.fetches() - after_b <= scheduled,
        "50 unknown kids caused {} fetches",
        idp.fetches() - after_b
    );

    // Phase 3: A is removed; after the next scheduled refresh (due 1 s after the last fetch)
    // A tokens are refused and B tokens still pass.
    idp.publish(vec![key_b.public_jwk()], 1);
    let reply = refused_after_refresh(&app, &token_a).await;
    assert_eq!(reason(&app, &reply), "unknown_kid");
    assert_eq!(echo(&app, &token_b).await.status, 200);
}

#[tokio::test]
async fn unreachable_idp_serves_last_good_keys_then_fails_closed() {
    let (key, _) = SigningKey::generate().unwrap();
    let idp = Idp::start(vec![key.public_jwk()], 1).await;
    let app = idp
        .broker(
            "min_refresh_seconds = 1\nmax_refresh_seconds = 1\nmax_staleness_seconds = 2\nunknown_kid_min_interval_seconds = 1",
        )
        .await;
    let token = idp.token(&key);
    assert_eq!(echo(&app, &token).await.status, 200);
    assert_eq!(app.get("/readyz", None).await.status, 200);

    idp.published.lock().unwrap().down = true;
    // Still served from the last good set right after the IdP goes down...
    assert_eq!(echo(&app, &token).await.status, 200);
    // ...until it is older than the maximum staleness: then the issuer fails closed.
    let reply = refused_after_refresh(&app, &token).await;
    assert_eq!(reason(&app, &reply), "keys_unavailable");
    assert_eq!(app.get("/readyz", None).await.status, 503);

    // The IdP comes back: keys are fetched again and tokens pass.
    idp.published.lock().unwrap().down = false;
    let mut status = 0;
    for _ in 0..50 {
        status = echo(&app, &token).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn jwks_file_rotation_is_picked_up_without_a_restart() {
    let app = TestApp::spawn_with(Options {
        watch_interval_ms: Some(100),
        ..Options::default()
    })
    .await;
    let old = app.token("agent-a", "", &[]);
    assert_eq!(echo(&app, &old).await.status, 200);
    assert_eq!(
        echo(&app, &old).await.status,
        200,
        "now from the token cache"
    );

    // The operator replaces the JWKS file (a new key only): the watcher swaps it in, and the
    // old key's tokens, cached ones included, stop working.
    let (new_key, _) = SigningKey::generate().unwrap();
    let jwks = app.dir.path().join("jwks.json");
    std::fs::write(&jwks, new_key.jwks().to_string()).unwrap();
    let refused = refused_after_refresh(&app, &old).await;
    assert_eq!(reason(&app, &refused), "unknown_kid");
    let new = new_key
        .sign("at+jwt", &app.claims("agent-a", "", &[]))
        .unwrap();
    assert_eq!(echo(&app, &new).await.status, 200);

    // A broken file is refused and the last good set keeps serving.
    std::fs::write(&jwks, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = new_key
        .sign("at+jwt", &app.claims("agent-a", "", &[]))
        .unwrap();
    assert_eq!(echo(&app, &again).await.status, 200);
    assert_eq!(app.get("/readyz", None).await.status, 200);
}
