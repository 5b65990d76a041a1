//! The decision as a value: what the pipeline returns for allow and deny alike, and
//! [`CallError`], the failures that are not decisions.

use serde::Serialize;
use serde_json::Value;

use crate::audit::{AuditError, Reason, Stage, Verdict};
use crate::auth::TokenError;
use crate::tools::{ArgumentError, DispatchError};

/// One recorded decision about a call, allow or deny, whatever stage decided it.
#[derive(Debug)]
pub struct Decision {
    /// The id of the decision record.
    pub id: String,
    /// Allow or deny.
    pub verdict: Verdict,
    /// The stage that decided.
    pub stage: Stage,
    /// The recorded reason code.
    pub reason: Reason,
    /// What came of it.
    pub outcome: Outcome,
    /// The policies behind the decision, when policy decided and the answer may name them
    /// (`[api] expose_determining_policies`).
    pub policies: Option<PolicyReasons>,
}

impl Decision {
    /// Whether the call was allowed and carried out (or, authorize-only, allowed).
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Authorized | Outcome::Answered { .. })
    }
}

/// What came of a decision.
#[derive(Debug)]
pub enum Outcome {
    /// Allowed; authorize-only, so nothing was dispatched.
    Authorized,
    /// Allowed, and the backend answered.
    Answered {
        /// The backend's result (its error result when `tool_error` is set).
        result: Value,
        /// The tool answered with this 4xx status.
        tool_error: Option<u16>,
    },
    /// A policy denied the call (or none permitted it).
    Denied,
    /// Refused before policy (token, scope, input), not evaluable, or allowed and the backend
    /// failed: why.
    Failed(CallError),
}

/// The policies behind a decision, as answers to agents may name them.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReasons {
    /// `@id`s of the policies that determined the decision (empty for the default deny).
    pub determining_policies: Vec<String>,
    /// `@id`s of the policies whose evaluation errored and were skipped.
    pub erroring_policies: Vec<String>,
}

/// Why a call failed: bad input, a bad credential, an unavailable log or store, a backend
/// failure. A policy deny is not an error but a [`Decision`]. Mapped to an HTTP status in exactly one place (`http::error`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The bearer token is missing or invalid.
    #[error("{0}")]
    Token(TokenError),
    /// The token lacks a scope the tool requires.
    #[error("insufficient scope: `{scope}` is required")]
    InsufficientScope {
        /// The scopes needed, space-separated.
        scope: String,
    },
    /// No tool with this id.
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    /// The request body is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request body exceeds the limit.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The request body did not arrive in time (`limits.body_read_timeout_ms`).
    #[error("request body not received within {0} ms")]
    BodyTimeout(u64),
    /// The arguments fail the tool's input schema or cannot be represented for policy.
    #[error("{0}")]
    InvalidArguments(ArgumentError),
    /// The authorization request could not be evaluated; the call is denied.
    #[error("authorization failed: {0}")]
    PolicyFailure(String),
    /// The decision could not be recorded; nothing was dispatched.
    #[error("{0}")]
    Audit(AuditError),
    /// The backend failed.
    #[error("{0}")]
    Dispatch(DispatchError),
    /// The state database (revocations) could not be read or written.
    #[error("the revocation store is unavailable")]
    StateUnavailable,
    /// The broker holds as many MCP sessions as it may; try again later.
    #[error("too many MCP sessions are open; try again later")]
    TooManySessions,
    /// An admin-requested policy reload was rejected; the last good set keeps serving.
    #[error("policy reload rejected, the last good set keeps serving: {0}")]
    PolicyReloadRejected(String),
}

impl CallError {
    /// The recorded reason for a request body that could not be read: the same on every
    /// endpoint, so a SIEM watching one reason sees every such request.
    pub fn body_reason(&self) -> Reason {
        match self {
            CallError::PayloadTooLarge(_) => Reason::PayloadTooLarge,
            CallError::BodyTimeout(_) => Reason::RequestTimeout,
            _ => Reason::BadRequest,
        }
    }
}
