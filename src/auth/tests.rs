//! Unit tests for header parsing helpers; token attacks are tested end to end in `tests/`.

use serde_json::json;

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
