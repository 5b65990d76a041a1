//! Errors of the token stage, each with a stable reason code for the decision log.

/// Why a bearer token was refused.
///
/// The caller sees only RFC 6750 `invalid_token` and a short description; the
/// reason code goes to the decision log, so the detail is not an oracle for attackers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization` header.
    #[error("no bearer token")]
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("authorization header is not a bearer token")]
    NotBearer,
    /// More than one `Authorization` header: components that read the first and the last
    /// would authenticate different callers, so neither is read.
    #[error("more than one authorization header")]
    DuplicateAuthorization,
    /// The compact token is longer than the configured limit.
    #[error("token is larger than {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Not three base64url parts of JSON objects.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// A header parameter we never honour (`jku`, `x5u`, `jwk`, `x5c`) or an unknown `crit`.
    #[error("token header parameter `{0}` is not accepted")]
    HeaderRejected(String),
    /// `iss` names no trusted issuer.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// `alg` is not in the issuer's allow-list.
    #[error("algorithm `{0}` is not allowed for this issuer")]
    AlgorithmNotAllowed(String),
    /// No key with this `kid` (or no `kid` where one is needed).
    #[error("unknown key id")]
    UnknownKid,
    /// The key's type or declared algorithm does not fit the token's `alg`.
    #[error("key does not match the token algorithm")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// `exp - iat` exceeds the issuer's maximum lifetime.
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    /// `aud` holds none of our audiences.
    #[error("token audience does not match")]
    AudienceMismatch,
    /// `aud` names both an agent audience and the admin audience: such a token would be an
    /// agent and an admin token at once, so it is neither.
    #[error("token names both an agent and the admin audience")]
    MixedAudiences,
    /// A required claim is absent.
    #[error("missing claim `{0}`")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or shape.
    #[error("invalid claim `{0}`")]
    InvalidClaim(&'static str),
    /// The delegation (`act`) chain is deeper than allowed.
    #[error("delegation chain is too deep")]
    DelegationTooDeep,
    /// The issuer's keys are not available.
    #[error("issuer keys are unavailable")]
    KeysUnavailable,
    /// The token, its subject or its issuer was revoked.
    #[error("token has been revoked")]
    Revoked,
    /// A single-use `jti` was presented again.
    #[error("token has already been used")]
    Replayed,
    /// The revocation state could not be read; the token is refused.
    #[error("revocation state is unavailable")]
    StateUnavailable,
}

impl TokenError {
    /// The stable reason code recorded in the decision log.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::NotBearer => "token_not_bearer",
            TokenError::DuplicateAuthorization => "duplicate_authorization",
            TokenError::TooLarge { .. } => "token_too_large",
            TokenError::Malformed(_) => "token_malformed",
            TokenError::HeaderRejected(_) => "header_rejected",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::KeyMismatch => "key_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "iat_in_future",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::AudienceMismatch => "audience_mismatch",
            TokenError::MixedAudiences => "mixed_audiences",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::InvalidClaim(_) => "invalid_claim",
            TokenError::DelegationTooDeep => "delegation_too_deep",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::Revoked => "token_revoked",
            TokenError::Replayed => "token_replayed",
            TokenError::StateUnavailable => "revocation_unavailable",
        }
    }

    /// The short description sent to the caller in `error_description`: deliberately coarse.
    pub fn public_description(&self) -> &'static str {
        match self {
            TokenError::Missing | TokenError::NotBearer => "a bearer token is required",
            TokenError::DuplicateAuthorization => "send exactly one authorization header",
            TokenError::Expired => "the token has expired",
            TokenError::TooLarge { .. } => "the token is too large",
            _ => "the token is not valid",
        }
    }
}
