//! Admin API for token revocation: `POST /admin/revocations` records one, `GET` lists those in
//! effect. Both are guarded by an admin token and recorded as admin decisions.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::{App, CallError};
use crate::auth::revocation::{RevocationError, RevocationRequest};
use crate::auth::unix_now;

/// Largest revocation request body accepted.
const MAX_BODY_BYTES: usize = 8 * 1024;

/// `POST /admin/revocations`: revoke by `jti`, by `subject`, or every token of an `issuer`
/// issued before `before`.
pub async fn create(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let (decision_id, _) = match super::admin_guard::guard(&app, &headers, "admin:revoke").await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let bad = |message: String| super::error_with_id(&decision_id, &CallError::BadRequest(message));
    let bytes: Bytes = match super::read_body(&app, body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => return super::error_with_id(&decision_id, &e),
    };
    let request: RevocationRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return bad(format!("body is not a revocation request: {e}")),
    };
    let Some(store) = app.authenticator.revocations() else {
        return unavailable(&decision_id);
    };
    match store.revoke(&app.config, &request, unix_now()) {
        Ok(revocation) => {
            tracing::info!(
                decision_id = %decision_id,
                kind = ?revocation.kind,
                id = revocation.id,
                "revocation recorded"
            );
            (
                StatusCode::CREATED,
                axum::Json(json!({ "decision_id": decision_id, "revocation": revocation })),
            )
                .into_response()
        }
        Err(RevocationError::Invalid(message)) => bad(message),
        Err(e @ RevocationError::Database { .. }) => {
            tracing::error!(error = %e, "revocation could not be stored");
            unavailable(&decision_id)
        }
    }
}

/// `GET /admin/revocations`: the revocations in effect.
pub async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (decision_id, _) =
        match super::admin_guard::guard(&app, &headers, "admin:revocations:list").await {
            Ok(ok) => ok,
            Err(response) => return response,
        };
    let Some(store) = app.authenticator.revocations() else {
        return unavailable(&decision_id);
    };
    match store.list(unix_now()) {
        Ok(revocations) => axum::Json(json!({
            "decision_id": decision_id,
            "revocations": revocations,
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "revocations could not be read");
            unavailable(&decision_id)
        }
    }
}

fn unavailable(decision_id: &str) -> Response {
    super::error_with_id(decision_id, &CallError::StateUnavailable)
}
