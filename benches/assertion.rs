//! Cost of the per-call broker assertion: signing (on every dispatch) and a backend's
//! verification (on every call it receives).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::JwkSet;
use toolgate::signing::SigningKey;
use toolgate::tools::assertion::{
    ASSERTION_TYP, AssertionClaims, Expected, act_claim, body_sha256, verify_assertion,
};

/// The broker's allocator (see `src/main.rs`), so the work is timed as the broker does it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn assertion(c: &mut Criterion) {
    let Ok((key, _)) = SigningKey::generate() else {
        return;
    };
    let body = br#"{"path":"/srv/reports/q3.txt"}"#;
    let now = toolgate::auth::unix_now();
    let claims = AssertionClaims {
        iss: "toolgate".to_owned(),
        aud: "http://backend.test".to_owned(),
        sub: "alice".to_owned(),
        act: act_claim(&["helper-agent".to_owned()]),
        tool: "files___read_file".to_owned(),
        body_sha256: body_sha256(body),
        decision_id: "01a20967-fb55-76c9-bfa8-93502405a483".to_owned(),
        iat: now,
        exp: now + 60,
        jti: "b6c1f2d4-0000-4000-8000-000000000000".to_owned(),
    };
    c.bench_function("assertion/sign", |b| {
        b.iter(|| key.sign(ASSERTION_TYP, black_box(&claims)))
    });
    let Ok(token) = key.sign(ASSERTION_TYP, &claims) else {
        return;
    };
    let Ok(jwks) = serde_json::from_value::<JwkSet>(key.jwks()) else {
        return;
    };
    let expected = Expected {
        issuer: "toolgate",
        audience: "http://backend.test",
        body,
    };
    c.bench_function("assertion/verify", |b| {
        b.iter(|| verify_assertion(black_box(&token), &jwks, &expected))
    });
}

criterion_group!(benches, assertion);
criterion_main!(benches);
