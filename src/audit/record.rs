//! The decision record: one per request, for every outcome at every stage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Reason, Stage};
use crate::auth::VerifiedToken;
use crate::policy::PolicyDecision;

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The decision for a request (exactly one per request).
    Decision,
    /// The outcome of dispatching an allowed call, appended after the backend answered.
    Dispatch,
}

impl RecordKind {
    /// `"decision"` or `"dispatch"`, as in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Decision => "decision",
            RecordKind::Dispatch => "dispatch",
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The call may proceed.
    Allow,
    /// The call was refused.
    Deny,
}

impl Verdict {
    /// `"allow"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// Who called, as far as the token was verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrincipalFacts {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `client_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The delegation chain, current actor first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub actors: Vec<String>,
    /// Groups from the token.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub groups: Vec<String>,
    /// Normalised scopes.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub scopes: Vec<String>,
}

/// Facts about the token, never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenFacts {
    /// SHA-256 of the compact token.
    pub sha256: String,
    /// Key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Verified algorithm.
    pub alg: String,
    /// `exp`.
    pub exp: i64,
}

/// The outcome of a dispatch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DispatchFacts {
    /// Backend HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time spent, in microseconds.
    pub duration_us: u64,
    /// Response bytes read.
    pub bytes: usize,
    /// Error class, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
}

/// One decision-log record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Record kind.
    pub kind: RecordKind,
    /// The decision id returned to the caller.
    pub decision_id: String,
    /// The request id.
    pub request_id: String,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// The API endpoint: `invoke`, `authorize` or `list`.
    pub endpoint: String,
    /// The stage that decided: `auth`, `tool`, `scope`, `arguments`, `policy`, `dispatch`.
    pub stage: String,
    /// Stable reason code (`allowed`, `policy_denied`, `token_expired`, ...).
    pub reason: String,
    /// Allow or deny.
    pub decision: Verdict,
    /// The caller, once the token verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalFacts>,
    /// Token facts, once the token verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenFacts>,
    /// The requested tool id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Arguments with sensitive fields redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// SHA-256 of the full arguments (canonical JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    /// Whether redaction removed an argument a policy could read (replay fidelity reduced).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub redacted: bool,
    /// The policy evaluation: Cedar request, determining policies, errors, hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyDecision>,
    /// Microseconds spent per stage.
    pub latency_us: BTreeMap<String, u64>,
    /// For dispatch records: the backend outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<DispatchFacts>,
    /// A short human-readable detail (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl DecisionRecord {
    /// A new deny record for `endpoint`, filled in by the pipeline as it goes.
    pub fn new(decision_id: String, request_id: String, endpoint: &str, time_ms: i64) -> Self {
        Self {
            kind: RecordKind::Decision,
            decision_id,
            request_id,
            time_ms,
            endpoint: endpoint.to_owned(),
            stage: "auth".to_owned(),
            reason: "pending".to_owned(),
            decision: Verdict::Deny,
            principal: None,
            token: None,
            tool: None,
            arguments: None,
            arguments_sha256: None,
            redacted: false,
            policy: None,
            latency_us: BTreeMap::new(),
            dispatch: None,
            detail: None,
        }
    }

    /// Sets who decided what: the verdict, the stage and the reason code.
    pub fn set_decision(&mut self, verdict: Verdict, stage: &Stage, reason: &Reason) {
        self.decision = verdict;
        self.stage = stage.as_str().to_owned();
        self.reason = reason.as_str().to_owned();
    }

    /// Records the verified token's facts.
    pub fn set_token(&mut self, token: &VerifiedToken) {
        self.principal = Some(PrincipalFacts {
            issuer: token.issuer.clone(),
            subject: token.subject.clone(),
            client_id: token.client_id.clone(),
            actors: token.actors.clone(),
            groups: token.groups.clone(),
            scopes: token.scopes.iter().cloned().collect(),
        });
        self.token = Some(TokenFacts {
            sha256: token.token_sha256.clone(),
            kid: token.kid.clone(),
            jti: token.jti.clone(),
            alg: token.algorithm.clone(),
            exp: token.expires_at,
        });
    }
}
