//! Stage 5 identity: the short-lived assertion the broker signs for every dispatched call,
//! and the verifier a backend runs on it (used by `examples/assertion_backend.rs` and tests).
//!
//! The backend learns who is calling (`sub`, the `act` chain), through which tool, for which
//! decision, and the SHA-256 of the exact body bytes it should have received, without ever
//! seeing the agent's own token (the MCP spec forbids token passthrough).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Request header carrying the assertion to the backend.
pub const ASSERTION_HEADER: &str = "x-toolgate-assertion";

/// JOSE `typ` of an assertion: stops an agent's access token (or any other JWT from the
/// same key) being accepted as an assertion, and the reverse.
pub const ASSERTION_TYP: &str = "toolgate-assertion+jwt";

/// An assertion lives this long: long enough for one call with its retries, short enough
/// that a leaked one is worth little.
pub const ASSERTION_LIFETIME_SECS: i64 = 60;

/// Clock-skew tolerance of the verifier; kept small because the lifetime is small.
pub const VERIFY_LEEWAY_SECS: u64 = 30;

/// Most bytes of a compact assertion the verifier parses.
pub const MAX_ASSERTION_BYTES: usize = 8 * 1024;

/// The claims of a broker assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The broker.
    pub iss: String,
    /// The backend.
    pub aud: String,
    /// The agent (or the user an agent acts for).
    pub sub: String,
    /// RFC 8693 delegation chain: `{ "sub": current actor, "act": { "sub": prior actor } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// The tool id.
    pub tool: String,
    /// SHA-256 (lowercase hex) of the exact request body bytes sent to the backend.
    pub body_sha256: String,
    /// The decision record authorizing this call.
    pub decision_id: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry, at most [`ASSERTION_LIFETIME_SECS`] after `iat`.
    pub exp: i64,
    /// Unique id, for replay detection by the backend.
    pub jti: String,
}

/// Why an assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not a well-formed assertion (shape, `typ`, algorithm, claims).
    #[error("malformed assertion: {0}")]
    Malformed(String),
    /// No key in the broker's JWKS has this id.
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("assertion expired")]
    Expired,
    /// `aud` is not this backend.
    #[error("assertion is for another audience")]
    WrongAudience,
    /// `iss` is not the expected broker.
    #[error("assertion is from another issuer")]
    WrongIssuer,
    /// `exp - iat` exceeds the maximum lifetime.
    #[error("assertion lifetime exceeds {ASSERTION_LIFETIME_SECS} s")]
    LifetimeTooLong,
    /// The body received is not the body the broker signed for.
    #[error("request body does not match the assertion's hash")]
    BodyMismatch,
    /// The broker's JWKS could not be fetched.
    #[error("cannot fetch the broker's jwks: {0}")]
    Jwks(String),
}

/// What the verifying backend expects.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The broker's issuer (`server.broker_issuer`).
    pub issuer: &'a str,
    /// This backend's audience.
    pub audience: &'a str,
    /// The exact body bytes received.
    pub body: &'a [u8],
}

/// SHA-256 of `body`, lowercase hex.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The nested RFC 8693 `act` claim for a chain given current actor first.
pub fn act_claim(actors: &[String]) -> Option<Value> {
    actors.iter().rev().fold(None, |inner, actor| {
        let mut node = json!({ "sub": actor });
        if let Some(inner) = inner {
            node["act"] = inner;
        }
        Some(node)
    })
}

/// Verifies a broker assertion against the broker's JWKS: EdDSA only, the key by `kid`,
/// `typ`, `iss`, `aud`, `exp` (with [`VERIFY_LEEWAY_SECS`]), the lifetime bound, and that
/// `body_sha256` matches the body received.
pub fn verify_assertion(
    token: &str,
    jwks: &JwkSet,
    expected: &Expected<'_>,
) -> Result<AssertionClaims, AssertionError> {
    if token.len() > MAX_ASSERTION_BYTES {
        return Err(AssertionError::Malformed("too large".to_owned()));
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| AssertionError::Malformed(e.to_string()))?;
    if header.alg != Algorithm::EdDSA {
        return Err(AssertionError::Malformed(format!(
            "algorithm `{:?}` is not EdDSA",
            header.alg
        )));
    }
    if header.typ.as_deref() != Some(ASSERTION_TYP) {
        return Err(AssertionError::Malformed(format!(
            "`typ` is not `{ASSERTION_TYP}`"
        )));
    }
    let kid = header
        .kid
        .ok_or_else(|| AssertionError::Malformed("no `kid`".to_owned()))?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| AssertionError::UnknownKey(kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| AssertionError::UnknownKey(kid.clone()))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.leeway = VERIFY_LEEWAY_SECS;
    let data = jsonwebtoken::decode::<AssertionClaims>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => AssertionError::BadSignature,
            ErrorKind::ExpiredSignature => AssertionError::Expired,
            ErrorKind::InvalidAudience => AssertionError::WrongAudience,
            ErrorKind::InvalidIssuer => AssertionError::WrongIssuer,
            other => AssertionError::Malformed(format!("{other:?}")),
        }
    })?;
    let claims = data.claims;
    if claims.exp - claims.iat > ASSERTION_LIFETIME_SECS {
        return Err(AssertionError::LifetimeTooLong);
    }
    if claims.body_sha256 != body_sha256(expected.body) {
        return Err(AssertionError::BodyMismatch);
    }
    Ok(claims)
}

/// Largest JWKS document a backend accepts from the broker.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// A backend's view of the broker's JWKS: fetched once, refetched when an assertion names an
/// unknown `kid` (the broker rotated), but at most once per `min_refetch` so that forged
/// `kid`s cannot make the backend hammer the broker.
pub struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    min_refetch: std::time::Duration,
    cache: tokio::sync::Mutex<(JwkSet, std::time::Instant)>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// Fetches the JWKS at `url` (the broker's `/.well-known/jwks.json`).
    pub async fn fetch(
        url: &str,
        min_refetch: std::time::Duration,
    ) -> Result<Self, AssertionError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AssertionError::Jwks(e.to_string()))?;
        let set = fetch_jwks(&client, url).await?;
        Ok(Self {
            url: url.to_owned(),
            client,
            min_refetch,
            cache: tokio::sync::Mutex::new((set, std::time::Instant::now())),
        })
    }

    /// [`verify_assertion`] against the cached keys, refetching once on an unknown `kid`.
    pub async fn verify(
        &self,
        token: &str,
        expected: &Expected<'_>,
    ) -> Result<AssertionClaims, AssertionError> {
        let mut cache = self.cache.lock().await;
        let result = verify_assertion(token, &cache.0, expected);
        if !matches!(result, Err(AssertionError::UnknownKey(_)))
            || cache.1.elapsed() < self.min_refetch
        {
            return result;
        }
        let fresh = fetch_jwks(&self.client, &self.url).await?;
        *cache = (fresh, std::time::Instant::now());
        verify_assertion(token, &cache.0, expected)
    }
}

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<JwkSet, AssertionError> {
    let error = |e: String| AssertionError::Jwks(e);
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| error(e.to_string()))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error(e.to_string()))? {
        if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(error(format!("larger than {MAX_JWKS_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_claim_nests_current_actor_outermost() {
        assert_eq!(act_claim(&[]), None);
        assert_eq!(
            act_claim(&["a".to_owned(), "b".to_owned()]),
            Some(json!({ "sub": "a", "act": { "sub": "b" } }))
        );
    }
}
