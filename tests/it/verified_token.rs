//! One builder for the `VerifiedToken`s that tests and benches make by hand: the integration
//! tests declare it as a module, the unit tests (`src/lib.rs`) and `benches/policy.rs` include
//! this file by `#[path]`, so every hand-made token starts from the same facts.

// Each crate that includes this file uses a different part of it.
#![allow(dead_code)]

use serde_json::Value;
use toolgate::auth::VerifiedToken;

/// Builds a `VerifiedToken` as if the broker had verified it.
pub struct TokenBuilder(VerifiedToken);

impl TokenBuilder {
    /// A token for `subject` from `https://idp.test` for `toolgate`, signed with EdDSA, with no
    /// scope, group, actor, claim, `jti` or `iat`, and `exp` 0 (nothing here reads the clock).
    pub fn new(subject: &str) -> Self {
        Self(VerifiedToken {
            issuer: "https://idp.test".to_owned(),
            subject: subject.to_owned(),
            audiences: vec!["toolgate".to_owned()],
            scopes: Default::default(),
            groups: Vec::new(),
            client_id: None,
            jti: None,
            kid: None,
            algorithm: "EdDSA".to_owned(),
            issued_at: None,
            expires_at: 0,
            actors: Vec::new(),
            claims: Default::default(),
            token_sha256: String::new(),
        })
    }

    /// Sets `iss`.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.0.issuer = issuer.to_owned();
        self
    }

    /// Sets `aud` to one audience.
    pub fn audience(mut self, audience: &str) -> Self {
        self.0.audiences = vec![audience.to_owned()];
        self
    }

    /// Sets the scopes.
    pub fn scopes<S: AsRef<str>>(mut self, scopes: &[S]) -> Self {
        self.0.scopes = scopes.iter().map(|s| s.as_ref().to_owned()).collect();
        self
    }

    /// Sets the groups.
    pub fn groups<S: AsRef<str>>(mut self, groups: &[S]) -> Self {
        self.0.groups = groups.iter().map(|g| g.as_ref().to_owned()).collect();
        self
    }

    /// Sets the delegation chain, the current actor first.
    pub fn actors<S: AsRef<str>>(mut self, actors: &[S]) -> Self {
        self.0.actors = actors.iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Sets `jti`.
    pub fn jti(mut self, jti: &str) -> Self {
        self.0.jti = Some(jti.to_owned());
        self
    }

    /// Sets the verified algorithm.
    pub fn algorithm(mut self, algorithm: &str) -> Self {
        self.0.algorithm = algorithm.to_owned();
        self
    }

    /// Sets `iat` and `exp`.
    pub fn times(mut self, issued_at: i64, expires_at: i64) -> Self {
        self.0.issued_at = Some(issued_at);
        self.0.expires_at = expires_at;
        self
    }

    /// Sets every claim (the principal tags) from a JSON object.
    pub fn claims(mut self, claims: Value) -> Self {
        let Value::Object(claims) = claims else {
            unreachable!("claims must be a JSON object, not `{claims}`")
        };
        self.0.claims = claims.into();
        self
    }

    /// Sets the token's hash, the key of the token-parts cache.
    pub fn token_sha256(mut self, hash: &str) -> Self {
        self.0.token_sha256 = hash.to_owned();
        self
    }

    /// The token.
    pub fn build(self) -> VerifiedToken {
        self.0
    }
}
