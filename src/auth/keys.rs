//! Verification keys: a JWKS parsed once per key set into keys bound to the algorithms they may verify.

use std::str::FromStr;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};

use super::TokenError;

/// RSA keys below this modulus size are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

/// Longest `kid` we look up; longer ones are refused before any lookup.
pub const MAX_KID_LEN: usize = 256;

/// The RFC 9864 fully-specified name for EdDSA over Ed25519, which jsonwebtoken does not know.
/// It names exactly what `EdDSA` means here (Ed448 is not supported), so it is read as `EdDSA`;
/// toolgate itself keeps emitting `EdDSA`.
const ED25519: &str = "Ed25519";

/// Reads a JOSE algorithm name from a token header or a JWK `alg`, accepting [`ED25519`] as
/// an alias of `EdDSA`.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    if name == ED25519 {
        return Some(Algorithm::EdDSA);
    }
    Algorithm::from_str(name).ok()
}

/// An error loading a key set.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// The document is not a JWKS.
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    /// No usable key remained after filtering.
    #[error("no usable verification key in the key set ({skipped} skipped)")]
    Empty {
        /// How many keys were skipped.
        skipped: usize,
    },
}

/// One public key, parsed once, with the algorithms it may verify.
#[derive(Clone)]
pub struct VerificationKey {
    /// The key id, if the JWK had one.
    pub kid: Option<String>,
    /// The key as jsonwebtoken parsed it (validates the JWK; kept for comparison benches).
    key: DecodingKey,
    /// Algorithms this key may verify (from its `alg`, else from its type and curve), each
    /// with the key pre-parsed by aws-lc-rs for that algorithm, so verifying a token parses
    /// and allocates no key material.
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field(
                "algorithms",
                &self.verifiers.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// The parsed key.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Whether this key may verify `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Whether `signature` over `message` verifies with this key under `alg` (false when the
    /// key may not verify `alg`). aws-lc-rs does the work on the pre-parsed key.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }
}

/// A key set: the usable keys of one JWKS.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
    /// SHA-256 over the usable keys' JWKs, to tell whether a reloaded set differs.
    digest: [u8; 32],
}

impl KeySet {
    /// Parses a JWKS document, skipping (with a warning each) keys that cannot verify safely;
    /// a document left with no usable key is refused.
    pub fn from_jwks_str(text: &str) -> Result<(Self, Vec<String>), KeySetError> {
        let (keys, warnings) = Self::from_jwks_str_allow_empty(text)?;
        if keys.is_empty() {
            return Err(KeySetError::Empty {
                skipped: warnings.len(),
            });
        }
        Ok((keys, warnings))
    }

    /// [`Self::from_jwks_str`], but a well-formed document with no usable key gives an empty
    /// set: reloading a JWKS file that no longer lists a key must withdraw it.
    pub fn from_jwks_str_allow_empty(text: &str) -> Result<(Self, Vec<String>), KeySetError> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| KeySetError::NotJwks(e.to_string()))?;
        let entries = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| KeySetError::NotJwks("missing `keys` array".to_owned()))?;
        let mut keys = Vec::new();
        let mut warnings = Vec::new();
        let mut digest = Sha256::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => {
                    let jwk = entry.to_string();
                    digest.update((jwk.len() as u64).to_be_bytes());
                    digest.update(jwk.as_bytes());
                    keys.push(key);
                }
                Err(reason) => warnings.push(format!("key {i} skipped: {reason}")),
            }
        }
        Ok((
            Self {
                keys,
                digest: digest.finalize().into(),
            },
            warnings,
        ))
    }

    /// Finds the key for a token's `kid`. A token without `kid` is accepted only when the
    /// set holds exactly one key, so there is never a guess between keys.
    pub fn find(&self, kid: Option<&str>) -> Result<&VerificationKey, TokenError> {
        match kid {
            Some(kid) if kid.len() > MAX_KID_LEN => Err(TokenError::UnknownKid),
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(TokenError::UnknownKid),
            None if self.keys.len() == 1 => self.keys.first().ok_or(TokenError::UnknownKid),
            None => Err(TokenError::UnknownKid),
        }
    }

    /// Whether `other` holds the same usable keys (the same JWKs, in the same order).
    pub fn same_keys(&self, other: &KeySet) -> bool {
        self.digest == other.digest
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_key(entry: &serde_json::Value) -> Result<VerificationKey, String> {
    let mut entry = entry.clone();
    if entry.get("alg").and_then(serde_json::Value::as_str) == Some(ED25519) {
        // jsonwebtoken's JWK type refuses the RFC 9864 name; give it the one it knows.
        entry["alg"] = serde_json::Value::from("EdDSA");
    }
    let jwk: Jwk = serde_json::from_value(entry).map_err(|e| format!("not a JWK: {e}"))?;
    let kid = jwk.common.key_id.clone();
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("`use` is not `sig`".to_owned());
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("`key_ops` does not include `verify`".to_owned());
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = URL_SAFE_NO_PAD
                .decode(rsa.n.as_bytes())
                .map_err(|_| "RSA modulus is not base64url".to_owned())?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA key of about {bits} bits is below {MIN_RSA_BITS}"
                ));
            }
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported elliptic curve".to_owned()),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Err("unsupported OKP curve".to_owned()),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (`oct`) keys are never used".to_owned());
        }
        _ => return Err("unsupported key type".to_owned()),
    };
    let algorithms = match &jwk.common.key_algorithm {
        Some(declared) => {
            let alg = parse_algorithm(&declared.to_string())
                .ok_or_else(|| format!("unsupported `alg` `{declared}`"))?;
            if !by_type.contains(&alg) {
                return Err(format!("`alg` `{declared}` does not fit the key type"));
            }
            vec![alg]
        }
        None => by_type,
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key material: {e}"))?;
    let verifiers = algorithms
        .into_iter()
        .map(|alg| Ok((alg, parse_for(&jwk.algorithm, alg)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(VerificationKey {
        kid,
        key,
        verifiers,
    })
}

/// Parses the public key once for `alg` (whose fit with the key type is already checked).
fn parse_for(params: &AlgorithmParameters, alg: Algorithm) -> Result<ParsedPublicKey, String> {
    let decode = |field: &str, value: &str| {
        URL_SAFE_NO_PAD
            .decode(value.as_bytes())
            .map_err(|_| format!("`{field}` is not base64url"))
    };
    let rejected = |e: aws_lc_rs::error::KeyRejected| format!("unusable key material: {e}");
    match params {
        AlgorithmParameters::RSA(rsa) => {
            let components = RsaPublicKeyComponents {
                n: decode("n", &rsa.n)?,
                e: decode("e", &rsa.e)?,
            };
            let params: &'static sig::RsaParameters = match alg {
                Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                other => return Err(format!("`{other:?}` does not fit an RSA key")),
            };
            components.to_parsed_public_key(params).map_err(rejected)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let algorithm: &'static dyn sig::VerificationAlgorithm = match alg {
                Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
                Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
                other => return Err(format!("`{other:?}` does not fit an EC key")),
            };
            // SEC1 uncompressed point: 0x04 || x || y.
            let mut point = vec![0x04];
            point.extend(decode("x", &ec.x)?);
            point.extend(decode("y", &ec.y)?);
            ParsedPublicKey::new(algorithm, point).map_err(rejected)
        }
        AlgorithmParameters::OctetKeyPair(okp) if alg == Algorithm::EdDSA => {
            ParsedPublicKey::new(&sig::ED25519, decode("x", &okp.x)?).map_err(rejected)
        }
        _ => Err("unsupported key type".to_owned()),
    }
}
