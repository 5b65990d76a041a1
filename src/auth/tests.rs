//! Unit tests for header parsing helpers; token attacks are tested end to end in `tests/`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::checks::delegation_chain;
use super::*;

#[test]
fn bearer_scheme_is_case_insensitive_and_required() {
    assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
    assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
    assert_eq!(bearer_token(Some("Basic abc")), Err(TokenError::NotBearer));
    assert_eq!(bearer_token(Some("Bearer ")), Err(TokenError::Missing));
    assert_eq!(bearer_token(None), Err(TokenError::Missing));
}

#[test]
fn delegation_chain_is_walked_and_bounded() {
    let chain = json!({"sub": "a", "act": {"sub": "b"}});
    assert_eq!(delegation_chain(Some(&chain)).unwrap(), vec!["a", "b"]);
    let mut deep = json!({"sub": "last"});
    for i in 0..MAX_DELEGATION_DEPTH {
        deep = json!({"sub": format!("a{i}"), "act": deep});
    }
    assert_eq!(
        delegation_chain(Some(&deep)),
        Err(TokenError::DelegationTooDeep)
    );
    assert_eq!(
        delegation_chain(Some(&json!("x"))),
        Err(TokenError::InvalidClaim("act"))
    );
}

#[test]
fn parts_must_be_three_canonical_base64url_json_objects() {
    assert!(matches!(decode_parts("a.b"), Err(TokenError::Malformed(_))));
    assert!(matches!(
        decode_parts("a.b.c.d"),
        Err(TokenError::Malformed(_))
    ));
    let header = "eyJhbGciOiJFZERTQSJ9"; // {"alg":"EdDSA"}
    let claims = "e30"; // {}
    assert!(decode_parts(&format!("{header}.{claims}.sig")).is_ok());
    assert!(matches!(
        decode_parts(&format!("{header}=.{claims}.sig")),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(
        decode_parts(&format!("{header}.WzFd.sig")),
        Err(TokenError::Malformed(_))
    ));
}

/// An authenticator over a fresh Ed25519 issuer key, with a token cache of `capacity`.
fn authenticator(
    capacity: usize,
) -> (tempfile::TempDir, Authenticator, crate::signing::SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = crate::signing::SigningKey::generate().unwrap();
    std::fs::write(dir.path().join("jwks.json"), key.jwks().to_string()).unwrap();
    let text = format!(
        "[limits]\ntoken_cache_entries = {capacity}\n[[issuers]]\nissuer = \"https://idp\"\naudiences = [\"tg\"]\njwks_file = \"jwks.json\"\nalgorithms = [\"EdDSA\"]\n"
    );
    let config = Config::from_toml_str(&text, dir.path(), dir.path(), Vec::new()).unwrap();
    (dir, Authenticator::from_config(&config).unwrap(), key)
}

fn signed(key: &crate::signing::SigningKey, sub: &str, iat: i64) -> String {
    key.sign(
        "at+jwt",
        &json!({"iss": "https://idp", "aud": "tg", "sub": sub, "iat": iat, "exp": iat + 300}),
    )
    .unwrap()
}

#[test]
fn cache_hits_skip_the_signature_but_never_the_clock() {
    let (_dir, auth, key) = authenticator(10);
    let now = unix_now();
    let token = signed(&key, "a", now);
    assert_eq!(auth.verify_at(&token, now).unwrap().subject, "a");
    assert_eq!(auth.cached_tokens(), 1);
    assert_eq!(auth.verify_at(&token, now + 10).unwrap().subject, "a");
    // Expiry is checked on a hit, with the issuer's leeway (30 s).
    assert_eq!(
        auth.verify_at(&token, now + 331).unwrap_err(),
        TokenError::Expired
    );
    assert_eq!(auth.cached_tokens(), 0, "an expired entry is dropped");
    // A tampered token hashes differently: no hit, full verification, refused.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert!(auth.verify_at(&tampered, now).is_err());
}

#[test]
fn a_key_set_change_invalidates_cached_tokens() {
    let (dir, auth, key) = authenticator(10);
    let now = unix_now();
    let token = signed(&key, "a", now);
    auth.verify_at(&token, now).unwrap();
    // Rotate to another key: the cached verification must not outlive the key that made it.
    let (other, _) = crate::signing::SigningKey::generate().unwrap();
    std::fs::write(dir.path().join("jwks.json"), other.jwks().to_string()).unwrap();
    assert!(auth.reload_keys().is_empty());
    assert_eq!(
        auth.verify_at(&token, now).unwrap_err(),
        TokenError::UnknownKid
    );
}

#[test]
fn cache_is_bounded_and_can_be_off() {
    let (_dir, auth, key) = authenticator(3);
    let now = unix_now();
    for i in 0..10 {
        auth.verify_at(&signed(&key, &format!("s{i}"), now), now)
            .unwrap();
        assert!(auth.cached_tokens() <= 3);
    }
    let (_dir, off, key) = authenticator(0);
    off.verify_at(&signed(&key, "a", now), now).unwrap();
    assert_eq!(off.cached_tokens(), 0);
}

#[test]
fn ed25519_is_an_alias_of_eddsa_and_of_nothing_else() {
    assert_eq!(keys::parse_algorithm("Ed25519"), Some(Algorithm::EdDSA));
    assert_eq!(keys::parse_algorithm("EdDSA"), Some(Algorithm::EdDSA));
    assert_eq!(keys::parse_algorithm("ed25519"), None);
    assert_eq!(keys::parse_algorithm("Ed448"), None);
    // A JWK declaring `Ed25519` on a key of another type does not fit, as `EdDSA` would not.
    let (key, _) = crate::signing::SigningKey::generate().unwrap();
    let mut jwk = key.public_jwk();
    jwk["alg"] = json!("Ed25519");
    let (set, warnings) = KeySet::from_jwks_str(&json!({ "keys": [jwk] }).to_string()).unwrap();
    assert_eq!((set.len(), warnings.len()), (1, 0));
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = ec.public_key().as_ref();
    let p256 = json!({
        "kty": "EC", "crv": "P-256", "alg": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    let (set, warnings) =
        KeySet::from_jwks_str_allow_empty(&json!({ "keys": [p256] }).to_string()).unwrap();
    assert!(set.is_empty());
    assert!(
        warnings[0].contains("does not fit the key type"),
        "{warnings:?}"
    );
}

#[test]
fn an_empty_jwks_is_refused_at_start_but_loads_as_a_withdrawal() {
    let empty = r#"{"keys":[]}"#;
    assert!(matches!(
        KeySet::from_jwks_str(empty),
        Err(KeySetError::Empty { skipped: 0 })
    ));
    assert!(
        KeySet::from_jwks_str_allow_empty(empty)
            .unwrap()
            .0
            .is_empty()
    );
    assert!(matches!(
        KeySet::from_jwks_str_allow_empty("{ not json"),
        Err(KeySetError::NotJwks(_))
    ));
}

#[test]
fn an_unvalidated_issuer_is_refused_not_guessed() {
    let text = "[[issuers]]\nissuer = \"https://idp\"\naudiences = [\"tg\"]\njwks_url = \"https://idp/keys\"\nalgorithms = [\"EdDSA\"]\n";
    let dir = std::path::Path::new(".");
    let mut config = Config::from_toml_str(text, dir, dir, Vec::new()).unwrap();
    assert!(Authenticator::from_config(&config).is_ok());
    // Without `validate` there are no parsed algorithms or key URL: fail closed at start.
    config.issuers[0].checked = None;
    let err = Authenticator::from_config(&config).err().unwrap();
    assert!(matches!(err, AuthSetupError::Unvalidated { .. }), "{err}");
}
