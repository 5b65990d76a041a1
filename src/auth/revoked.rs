//! What a revocation is: its kind, the stored entry and the token facts it matches, shared by
//! the store (`revocation`) and the in-memory view (`revocation_view`), so that neither
//! imports the other.

use serde::{Deserialize, Serialize};

/// What a revocation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// One token, by `jti` (of one issuer, or of any issuer).
    Jti,
    /// Every token of a subject issued before the cut-off.
    Subject,
    /// Every token of an issuer issued before the cut-off.
    Issuer,
}

impl RevocationKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Jti => "jti",
            RevocationKind::Subject => "subject",
            RevocationKind::Issuer => "issuer",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "jti" => Some(RevocationKind::Jti),
            "subject" => Some(RevocationKind::Subject),
            "issuer" => Some(RevocationKind::Issuer),
            _ => None,
        }
    }
}

/// A stored revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// Row id.
    pub id: i64,
    /// What it covers.
    pub kind: RevocationKind,
    /// The issuer it is limited to (`None`: any trusted issuer).
    pub issuer: Option<String>,
    /// The `jti` or subject (`None` for an issuer-wide revocation).
    pub value: Option<String>,
    /// Tokens issued (`iat`) at or before this Unix time are revoked (subject and issuer kinds).
    pub before: i64,
    /// When it was recorded.
    pub created_at: i64,
    /// When every affected token has expired; the entry is dropped after that.
    pub expires_at: i64,
    /// Why.
    pub reason: Option<String>,
}

/// What a revocation can match in a token.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `sub`.
    pub subject: &'a str,
    /// `jti`, if the token has one.
    pub jti: Option<&'a str>,
    /// `iat`, if the token has one.
    pub issued_at: Option<i64>,
}
