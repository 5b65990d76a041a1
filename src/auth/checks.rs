//! Stage 1, the claims of a token whose signature has been verified: type, time claims,
//! audiences, subject, scopes, groups, and the delegation chain, checked in that order (the
//! first failure is the one reported).

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Claims, Issuer, MAX_DELEGATION_DEPTH, TokenError, TokenParts, VerifiedToken, keys};
use crate::config::IssuerConfig;

/// The audiences a token must name one of, and those it must name none of (the other kind of
/// token's: agent or admin).
#[derive(Clone, Copy)]
pub(super) struct Audiences<'a> {
    /// Audiences of which the token must name one.
    pub(super) accepted: &'a [String],
    /// Audiences the token must name none of.
    pub(super) refused: &'a [String],
}

/// Checks the claims of a token whose signature is verified, turning it into the facts the
/// later stages read.
pub(super) fn check_claims(
    issuer: &Issuer,
    parts: TokenParts,
    token: &str,
    now: i64,
    expected: Audiences<'_>,
) -> Result<VerifiedToken, TokenError> {
    let cfg = &issuer.config;
    let claims = parts.claims;
    if cfg.require_at_jwt_typ {
        check_at_jwt_typ(parts.typ.as_deref())?;
    }
    let (exp, iat) = time_claims(&claims, cfg, now)?;
    let audiences = audiences(&claims, expected)?;
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(TokenError::InvalidClaim("sub")),
        None => return Err(TokenError::MissingClaim("sub")),
    };
    let scopes = scopes(&claims)?;
    let groups = groups(&claims, &cfg.groups_claim)?;
    let client_id = optional_string(&claims, "client_id")?;
    let jti = optional_string(&claims, "jti")?;
    if jti.is_none() && (cfg.require_jti || cfg.jti_single_use) {
        return Err(TokenError::MissingClaim("jti"));
    }
    let actors = delegation_chain(claims.get("act"))?;

    Ok(VerifiedToken {
        issuer: cfg.issuer.clone(),
        subject,
        audiences,
        scopes,
        groups,
        client_id,
        jti,
        kid: parts.kid,
        // Recorded under the name toolgate emits (`Ed25519` is read as `EdDSA`).
        algorithm: keys::parse_algorithm(&parts.alg).map_or(parts.alg, |a| format!("{a:?}")),
        issued_at: iat,
        expires_at: exp,
        actors,
        claims: Claims::new(claims),
        token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
    })
}

/// RFC 9068 §2.1: access tokens are typed, so an ID token cannot be replayed as one.
fn check_at_jwt_typ(typ: Option<&str>) -> Result<(), TokenError> {
    let ok = typ.is_some_and(|t| {
        t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if ok {
        Ok(())
    } else {
        Err(TokenError::InvalidClaim("typ"))
    }
}

/// `exp`, `nbf` and `iat` against `now` with the issuer's leeway, and the lifetime against its
/// maximum; returns `exp` and `iat`.
fn time_claims(
    claims: &Map<String, Value>,
    cfg: &IssuerConfig,
    now: i64,
) -> Result<(i64, Option<i64>), TokenError> {
    let leeway = cfg.leeway_seconds as i64;
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if now > exp + leeway {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now + leeway
    {
        return Err(TokenError::NotYetValid);
    }
    let iat = numeric_date(claims, "iat")?;
    if let Some(iat) = iat {
        if iat > now + leeway {
            return Err(TokenError::IssuedInFuture);
        }
        if exp - iat > cfg.max_lifetime_seconds as i64 {
            return Err(TokenError::LifetimeTooLong);
        }
    } else if exp - now > cfg.max_lifetime_seconds as i64 {
        // Without `iat`, the remaining lifetime must still fit the maximum.
        return Err(TokenError::LifetimeTooLong);
    }
    Ok((exp, iat))
}

/// `aud`: one string or an array of strings, naming an accepted audience and no refused one.
fn audiences(
    claims: &Map<String, Value>,
    expected: Audiences<'_>,
) -> Result<Vec<String>, TokenError> {
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => string_items(items, "aud")?,
        Some(_) => return Err(TokenError::InvalidClaim("aud")),
        None => return Err(TokenError::MissingClaim("aud")),
    };
    if !audiences.iter().any(|a| expected.accepted.contains(a)) {
        return Err(TokenError::AudienceMismatch);
    }
    // An IdP issuing for several resources (RFC 8707) may put both kinds in one `aud`.
    if audiences.iter().any(|a| expected.refused.contains(a)) {
        return Err(TokenError::MixedAudiences);
    }
    Ok(audiences)
}

/// The union of `scope` (space-separated) and `scp` (an array, or space-separated).
fn scopes(claims: &Map<String, Value>) -> Result<BTreeSet<String>, TokenError> {
    let mut scopes = BTreeSet::new();
    match claims.get("scope") {
        None => {}
        Some(Value::String(s)) => scopes.extend(space_separated(s)),
        Some(_) => return Err(TokenError::InvalidClaim("scope")),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::Array(items)) => scopes.extend(string_items(items, "scp")?),
        Some(Value::String(s)) => scopes.extend(space_separated(s)),
        Some(_) => return Err(TokenError::InvalidClaim("scp")),
    }
    Ok(scopes)
}

/// The caller's groups from the issuer's groups claim: an array, or space-separated.
fn groups(claims: &Map<String, Value>, groups_claim: &str) -> Result<Vec<String>, TokenError> {
    match claims.get(groups_claim) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => string_items(items, "groups"),
        Some(Value::String(s)) => Ok(space_separated(s).collect()),
        Some(_) => Err(TokenError::InvalidClaim("groups")),
    }
}

/// An optional string claim.
fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::InvalidClaim(name)),
    }
}

/// Every item of a claim's array, which must all be strings.
fn string_items(items: &[Value], name: &'static str) -> Result<Vec<String>, TokenError> {
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or(TokenError::InvalidClaim(name))
        })
        .collect()
}

/// The non-empty words of a space-separated claim.
fn space_separated(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Largest NumericDate magnitude accepted (about 31 million years): nothing beyond is a date,
/// and the bound keeps the time arithmetic (`exp + leeway`, `exp - iat`) from overflowing.
const MAX_NUMERIC_DATE: i64 = 1_000_000_000_000_000;

/// A NumericDate claim: a JSON number (fractions truncated). Strings are refused.
pub(super) fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                if i.unsigned_abs() < MAX_NUMERIC_DATE.unsigned_abs() {
                    Ok(Some(i))
                } else {
                    Err(TokenError::InvalidClaim(name))
                }
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.abs() < MAX_NUMERIC_DATE as f64 => {
                        Ok(Some(f.trunc() as i64))
                    }
                    _ => Err(TokenError::InvalidClaim(name)),
                }
            }
        }
        Some(_) => Err(TokenError::InvalidClaim(name)),
    }
}

/// Walks nested RFC 8693 `act` claims into a list of actor subjects, refusing chains deeper
/// than [`MAX_DELEGATION_DEPTH`].
pub(super) fn delegation_chain(act: Option<&Value>) -> Result<Vec<String>, TokenError> {
    let mut actors = Vec::new();
    let mut current = act;
    while let Some(value) = current {
        let Value::Object(obj) = value else {
            return Err(TokenError::InvalidClaim("act"));
        };
        if actors.len() == MAX_DELEGATION_DEPTH {
            return Err(TokenError::DelegationTooDeep);
        }
        let sub = obj
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::InvalidClaim("act"))?;
        actors.push(sub.to_owned());
        current = obj.get("act");
    }
    Ok(actors)
}
