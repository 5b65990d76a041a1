//! Stage 1, the compact JWS: splitting a token into header, claims and signature, refusing
//! headers that would let the token choose its own key, and checking a signature.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{KeySet, TokenError, json, keys};

/// Header parameters that would let the token choose its own key; never honoured, always refused.
const KEY_LOCATING_HEADERS: &[&str] = &["jku", "x5u", "jwk", "x5c"];

/// A compact JWS decoded for verification: header fields, claims and signature.
pub(super) struct TokenParts {
    pub(super) alg: String,
    pub(super) kid: Option<String>,
    pub(super) typ: Option<String>,
    pub(super) claims: Map<String, Value>,
    /// Byte length of `header.payload`, the signed message.
    pub(super) signed_len: usize,
    /// The decoded signature.
    pub(super) signature: Vec<u8>,
}

/// Splits a compact JWS no longer than `max_bytes` and checks its header as every
/// verification does: `jku`, `x5u`, `jwk`, `x5c` and `crit` are refused, `alg` must be a
/// string. The payload is left undecoded ([`Jws::payload`]).
pub fn decode_jws(token: &str, max_bytes: usize) -> Result<Jws<'_>, TokenError> {
    // Size first: nothing is decoded for a token over the limit.
    if token.len() > max_bytes {
        return Err(TokenError::TooLarge { limit: max_bytes });
    }
    let mut split = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (split.next(), split.next(), split.next(), split.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    if signature_b64.is_empty() {
        return Err(TokenError::Malformed("empty signature"));
    }
    let header = decode_json_object(header_b64, "header")?;
    // The signature must be canonical base64url too: no padding, no stray bits, no garbage.
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64.as_bytes())
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    for name in KEY_LOCATING_HEADERS {
        if header.contains_key(*name) {
            return Err(TokenError::HeaderRejected((*name).to_owned()));
        }
    }
    // We understand no critical extensions, so any `crit` means we must refuse (RFC 7515 §4.1.11).
    if header.contains_key("crit") {
        return Err(TokenError::HeaderRejected("crit".to_owned()));
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(TokenError::Malformed("header has no string `alg`")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::Malformed("`kid` is not a string")),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(TokenError::Malformed("`typ` is not a string")),
    };
    Ok(Jws {
        header: JwsHeader { alg, kid, typ },
        signing_input: &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()],
        payload_b64,
        signature,
    })
}

/// Splits and decodes a compact JWS of any size, claims included.
pub(super) fn decode_parts(token: &str) -> Result<TokenParts, TokenError> {
    let jws = decode_jws(token, usize::MAX)?;
    let claims = decode_json_object(jws.payload_b64, "claims")?;
    Ok(TokenParts {
        alg: jws.header.alg,
        kid: jws.header.kid,
        typ: jws.header.typ,
        claims,
        signed_len: jws.signing_input.len(),
        signature: jws.signature,
    })
}

/// The protected-header fields that verification reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JwsHeader {
    /// `alg`: honoured only if the issuer allows it and the key is bound to it.
    pub alg: String,
    /// `kid`, if present.
    pub kid: Option<String>,
    /// `typ`, if present.
    pub typ: Option<String>,
}

/// A compact JWS split into its parts, with its protected header checked; the payload is
/// never parsed here.
pub struct Jws<'a> {
    /// The protected header.
    pub header: JwsHeader,
    /// `header.payload` as sent: the bytes the signature covers (RFC 7515 §5.2).
    pub signing_input: &'a [u8],
    /// The payload, base64url as sent.
    payload_b64: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

impl Jws<'_> {
    /// The decoded payload: any bytes, JSON or not.
    pub fn payload(&self) -> Result<Vec<u8>, TokenError> {
        URL_SAFE_NO_PAD
            .decode(self.payload_b64.as_bytes())
            .map_err(|_| TokenError::Malformed("claims are not base64url"))
    }

    /// Verifies the signature with a key of `keys` under an algorithm of `allowed`
    /// (see [`verify_jws_signature`]).
    pub fn verify(&self, keys: &KeySet, allowed: &[Algorithm]) -> Result<(), TokenError> {
        verify_jws_signature(
            keys,
            allowed,
            &self.header.alg,
            self.header.kid.as_deref(),
            self.signing_input,
            &self.signature,
        )
    }
}

/// Verifies `signature` over `signing_input` with the key of `keys` that `kid` names (or,
/// without `kid`, the only key), under `alg` only if `allowed` lists it AND the key is bound
/// to it: the header alone never chooses how a signature is checked (RFC 8725 §3.1).
///
/// This is the whole of the signature check of every token, taken apart from the compact
/// form so that it can be checked against published signature test vectors (Wycheproof):
/// those sign arbitrary messages, which no `header.payload` signing input can equal, so the
/// vectors are fed here with their message as the signing input, through the same key
/// parsing and binding the broker uses.
pub fn verify_jws_signature(
    keys: &KeySet,
    allowed: &[Algorithm],
    alg: &str,
    kid: Option<&str>,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), TokenError> {
    // The algorithm comes from the header but must be on the allowed list AND fit the key:
    // the header alone never chooses how a signature is checked (RFC 8725 §3.1).
    let algorithm = keys::parse_algorithm(alg)
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| TokenError::AlgorithmNotAllowed(alg.chars().take(16).collect()))?;
    if keys.is_empty() {
        return Err(TokenError::KeysUnavailable);
    }
    let key = keys.find(kid)?;
    if !key.allows(algorithm) {
        return Err(TokenError::KeyMismatch);
    }
    if key.verify(algorithm, signing_input, signature) {
        Ok(())
    } else {
        Err(TokenError::BadSignature)
    }
}

fn decode_json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let header = what == "header";
    // The URL-safe no-padding engine rejects padding and non-canonical trailing bits.
    let bytes = URL_SAFE_NO_PAD.decode(part.as_bytes()).map_err(|_| {
        TokenError::Malformed(if header {
            "header is not base64url"
        } else {
            "claims are not base64url"
        })
    })?;
    match json::parse(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) | Err(json::StrictJsonError::Syntax) => Err(TokenError::Malformed(if header {
            "header is not a JSON object"
        } else {
            "claims are not a JSON object"
        })),
        Err(json::StrictJsonError::DuplicateKey) => {
            Err(TokenError::Malformed("duplicate JSON member name"))
        }
        Err(json::StrictJsonError::TooDeep | json::StrictJsonError::TooManyEntries) => Err(
            TokenError::Malformed("JSON nesting or member count over the limit"),
        ),
    }
}
