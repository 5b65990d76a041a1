//! Benchmarks of token verification per algorithm, keys pre-parsed once. Run with
//! `cargo bench --bench tokens`; compares the aws-lc-rs pre-parsed path with
//! `jsonwebtoken::crypto::verify` (which builds a verifier from the key on every call).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use serde_json::json;
use toolgate::auth::{Authenticator, KeySet};
use toolgate::config::Config;
use toolgate::signing::SigningKey;

/// The broker's allocator (see `src/main.rs`), so the work is timed as the broker does it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ISSUER: &str = "https://idp.bench";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Fixture {
    authenticator: Authenticator,
    keys: KeySet,
    tokens: Vec<(&'static str, Algorithm, &'static str, String)>,
    now: i64,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let (ed, _) = SigningKey::generate().unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let jwks = json!({ "keys": [
        ed.public_jwk(),
        { "kty": "RSA", "kid": "rsa", "alg": "RS256",
          "n": b64(rsa.public_key().modulus().big_endian_without_leading_zero()),
          "e": b64(rsa.public_key().exponent().big_endian_without_leading_zero()) },
        { "kty": "EC", "kid": "ec", "crv": "P-256", "alg": "ES256",
          "x": b64(&point[1..33]), "y": b64(&point[33..65]) },
    ]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let config = Config::from_toml_str(
        &format!(
            r#"
[[issuers]]
issuer = "{ISSUER}"
audiences = ["bench"]
jwks_file = "jwks.json"
algorithms = ["RS256", "ES256", "EdDSA"]
"#
        ),
        Path::new("bench.toml"),
        dir.path(),
        std::iter::empty(),
    )
    .unwrap();
    let now = toolgate::auth::unix_now();
    let claims = json!({
        "iss": ISSUER, "sub": "agent", "aud": "bench", "iat": now, "exp": now + 300,
        "jti": "j", "scope": "files:read files:write", "groups": ["reporting"],
    })
    .to_string();
    let raw = |alg: &str, kid: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>| {
        let message = format!(
            "{}.{}",
            b64(json!({ "alg": alg, "typ": "at+jwt", "kid": kid }).to_string()),
            b64(&claims)
        );
        let sig = sign(message.as_bytes());
        format!("{message}.{}", b64(sig))
    };
    let rs256 = raw("RS256", "rsa", &|m| {
        let mut sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
            .unwrap();
        sig
    });
    let es256 = raw("ES256", "ec", &|m| {
        ec.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()
    });
    let claims_value: serde_json::Value = serde_json::from_str(&claims).unwrap();
    let eddsa = ed.sign("at+jwt", &claims_value).unwrap();
    let ed_kid: &'static str = Box::leak(ed.kid().to_owned().into_boxed_str());
    let (keys, _) = KeySet::from_jwks_str(&jwks.to_string()).unwrap();
    Fixture {
        authenticator: Authenticator::from_config(&config).unwrap(),
        keys,
        tokens: vec![
            ("RS256", Algorithm::RS256, "rsa", rs256),
            ("ES256", Algorithm::ES256, "ec", es256),
            ("EdDSA", Algorithm::EdDSA, ed_kid, eddsa),
        ],
        now,
        _dir: dir,
    }
}

fn verify_per_algorithm(c: &mut Criterion) {
    let f = fixture();
    for (name, alg, kid, token) in &f.tokens {
        assert!(f.authenticator.verify_at(token, f.now).is_ok(), "{name}");
        c.bench_function(&format!("verify/{name}"), |b| {
            b.iter(|| f.authenticator.verify_at(black_box(token), f.now))
        });
        // The signature step alone, both ways, on the same pre-loaded key.
        let key = f.keys.find(Some(kid)).unwrap();
        let (message, signature) = token.rsplit_once('.').unwrap();
        let signature_bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        assert!(key.verify(*alg, message.as_bytes(), &signature_bytes));
        c.bench_function(&format!("signature/{name}/aws_lc_parsed"), |b| {
            b.iter(|| key.verify(*alg, black_box(message.as_bytes()), &signature_bytes))
        });
        c.bench_function(&format!("signature/{name}/jsonwebtoken"), |b| {
            b.iter(|| {
                jsonwebtoken::crypto::verify(
                    black_box(signature),
                    message.as_bytes(),
                    key.decoding_key(),
                    *alg,
                )
            })
        });
    }
}

criterion_group!(benches, verify_per_algorithm);
criterion_main!(benches);
