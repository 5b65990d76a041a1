//! The one place that maps pipeline errors to HTTP status, headers and body.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::app::CallError;
use crate::audit::query::QueryError;
use crate::audit::{AuditError, Verdict};
use crate::auth::TokenError;
use crate::tools::DispatchError;

/// The realm named in `WWW-Authenticate` challenges.
pub const REALM: &str = "toolgate";

/// Status, extra headers and JSON body for a failed call.
pub fn error_response(error: &CallError) -> (StatusCode, HeaderMap, Value) {
    let mut headers = HeaderMap::new();
    let (status, code, decision) = match error {
        CallError::Token(e) => token_status(e, &mut headers),
        CallError::InsufficientScope { scope } => {
            let value = format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
                quoted_safe(scope)
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
            (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                Some(Verdict::Deny),
            )
        }
        CallError::UnknownTool(_) => (StatusCode::NOT_FOUND, "unknown_tool", Some(Verdict::Deny)),
        CallError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", Some(Verdict::Deny)),
        CallError::PayloadTooLarge(_) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            Some(Verdict::Deny),
        ),
        CallError::BodyTimeout(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            Some(Verdict::Deny),
        ),
        CallError::InvalidArguments(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_arguments",
            Some(Verdict::Deny),
        ),
        CallError::PolicyFailure(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "policy_error",
            Some(Verdict::Deny),
        ),
        CallError::PolicyReloadRejected(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_reload_rejected",
            None,
        ),
        CallError::Audit(e) => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            let code = match e {
                AuditError::Unavailable(_)
                | AuditError::Closed
                | AuditError::Timeout
                | AuditError::Damaged(_) => "decision_log_unavailable",
            };
            (StatusCode::SERVICE_UNAVAILABLE, code, None)
        }
        CallError::TooManySessions => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                Some(Verdict::Deny),
            )
        }
        CallError::StateUnavailable => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable", None)
        }
        CallError::Dispatch(e) => (
            dispatch_status(e, &mut headers),
            e.class(),
            Some(Verdict::Allow),
        ),
    };
    let message = match error {
        // The caller learns that the token failed, not why: the reason is in the log.
        CallError::Token(e) => e.public_description().to_owned(),
        // Internal detail of a failed evaluation or log write stays in the server log.
        CallError::PolicyFailure(_) => "the request could not be authorized".to_owned(),
        CallError::Audit(_) => "the decision log is unavailable; nothing was dispatched".to_owned(),
        other => other.to_string(),
    };
    // No verdict: the failure is not a decision about a call (or none could be recorded).
    let decision = decision.map_or("error", Verdict::as_str);
    let mut body = json!({ "decision": decision, "error": code, "message": message });
    if let CallError::InvalidArguments(e) = error {
        body["problems"] = json!(e.problems);
    }
    (status, headers, body)
}

/// Status and code of a token failure: 401 with a challenge, but 400 for a malformed request
/// and 503 when the revocation store could not answer.
fn token_status(
    error: &TokenError,
    headers: &mut HeaderMap,
) -> (StatusCode, &'static str, Option<Verdict>) {
    match error {
        // The token may be fine: the revocation store could not say. Fail closed, but as an
        // outage the caller can retry, not as a bad credential.
        TokenError::StateUnavailable => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                Some(Verdict::Deny),
            )
        }
        // RFC 6750 §3.1: a malformed request, not a bad credential.
        e @ TokenError::DuplicateAuthorization => {
            headers.insert(header::WWW_AUTHENTICATE, challenge(e));
            (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some(Verdict::Deny),
            )
        }
        e => {
            headers.insert(header::WWW_AUTHENTICATE, challenge(e));
            (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                Some(Verdict::Deny),
            )
        }
    }
}

/// Status of a backend failure after an allow (the decision stands: it was recorded).
fn dispatch_status(error: &DispatchError, headers: &mut HeaderMap) -> StatusCode {
    let status = match error {
        DispatchError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        DispatchError::Unreachable
        | DispatchError::Interrupted
        | DispatchError::Status(_)
        | DispatchError::ResponseTooLarge(_)
        | DispatchError::InvalidResponse => StatusCode::BAD_GATEWAY,
        DispatchError::Saturated(_) | DispatchError::CircuitOpen { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        DispatchError::Signing => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if let Some(secs) = error.retry_after_secs() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    status
}

/// Status, headers and JSON body for a call a policy denied (or none permitted).
pub fn denied_response() -> (StatusCode, HeaderMap, Value) {
    let body = json!({
        "decision": Verdict::Deny.as_str(),
        "error": "denied",
        "message": "denied by policy",
    });
    (StatusCode::FORBIDDEN, HeaderMap::new(), body)
}

/// Adds RFC 9728's `resource_metadata` to a `WWW-Authenticate` challenge, so that an MCP
/// client can find which authorization servers issue tokens for this resource.
pub fn add_resource_metadata(headers: &mut HeaderMap, metadata_url: &str) {
    let Some(challenge) = headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let value = format!(
        "{challenge}, resource_metadata=\"{}\"",
        quoted_safe(metadata_url)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::WWW_AUTHENTICATE, v);
    }
}

/// Status and body for a failed decision-log query (admin API).
pub fn query_error_response(error: &QueryError) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (status, code) = match error {
        QueryError::Invalid { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        QueryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        QueryError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "decision_log_unavailable"),
    };
    let message = match error {
        // Internal detail (paths, SQLite messages) stays in the server log.
        QueryError::Unavailable(detail) => {
            tracing::error!(error = %detail, "decision log query failed");
            "the decision log is unavailable".to_owned()
        }
        other => other.to_string(),
    };
    (
        status,
        axum::Json(json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// RFC 6750 §3: a request without credentials gets a bare challenge; a bad token gets
/// `error="invalid_token"` with a coarse description; a malformed request `invalid_request`.
fn challenge(error: &TokenError) -> HeaderValue {
    let value = match error {
        TokenError::Missing | TokenError::NotBearer => format!("Bearer realm=\"{REALM}\""),
        TokenError::DuplicateAuthorization => format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_request\", error_description=\"{}\"",
            error.public_description()
        ),
        other => format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            other.public_description()
        ),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// Keeps a value safe inside a quoted-string.
fn quoted_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}
