//! Fuzz target: the auth stage's token verification (`Authenticator::verify_at`, the admin
//! audience path, `verify_signature_only`, the `Authorization` header parse) over a fixed
//! Ed25519 key set and a fixed clock.
//!
//! Input: first byte even, the rest is a compact token as sent; odd, the rest is a claims
//! object signed with the trusted key, so the claim checks after the signature are reached.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate::auth::{Authenticator, bearer_token};
use toolgate::config::Config;
use toolgate::signing::SigningKey;

const ISSUER: &str = "https://idp.fuzz";
const AUDIENCE: &str = "toolgate";
const ADMIN_AUDIENCE: &str = "toolgate-admin";
/// A fixed clock (2027-01-15), so that a crash reproduces whatever the date.
const NOW: i64 = 1_800_000_000;
const LEEWAY: i64 = 30;

struct Fixture {
    authenticator: Authenticator,
    key: SigningKey,
    _dir: tempfile::TempDir,
}

/// The trusted key: a fixed Ed25519 seed in a PKCS#8 v1 wrapper (RFC 8410), test-only.
fn fixed_key() -> SigningKey {
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&[0x42; 32]);
    SigningKey::from_pkcs8(&pkcs8, "fuzz").expect("fixed fuzz key")
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = fixed_key();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("jwks.json"), key.jwks().to_string()).expect("jwks");
    // No token cache: each input is verified from scratch, so a crash reproduces alone.
    let config = Config::from_toml_str(
        &format!(
            r#"
[limits]
token_cache_entries = 0

[[issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "jwks.json"
algorithms = ["EdDSA"]
leeway_seconds = {LEEWAY}
max_lifetime_seconds = 3600
groups_claim = "groups"
"#
        ),
        Path::new("fuzz.toml"),
        dir.path(),
        std::iter::empty(),
    )
    .expect("fuzz config");
    let authenticator = Authenticator::from_config(&config).expect("authenticator");
    Fixture {
        authenticator,
        key,
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let _ = bearer_token(Some(text));
        let _ = f.authenticator.verify_signature_only(text);
        text.to_owned()
    } else {
        let Ok(claims) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        f.key.sign("at+jwt", &claims).expect("signing")
    };
    let as_agent = f.authenticator.verify_at(&token, NOW);
    if let Ok(verified) = &as_agent {
        // Whatever the claims, an accepted token is ours, for us, and current.
        assert_eq!(verified.issuer, ISSUER);
        assert!(verified.audiences.iter().any(|a| a == AUDIENCE));
        assert!(
            NOW <= verified.expires_at + LEEWAY,
            "expired token accepted"
        );
        assert!(
            !verified.subject.is_empty(),
            "token without a subject accepted"
        );
    }
    if let Ok(verified) = f.authenticator.verify_for_audience(&token, ADMIN_AUDIENCE) {
        assert!(verified.audiences.iter().any(|a| a == ADMIN_AUDIENCE));
        // No token is both an agent's and an admin's (issue 21, defect 1).
        assert!(
            as_agent.is_err(),
            "a token passed as an agent and as an admin token"
        );
    }
});
