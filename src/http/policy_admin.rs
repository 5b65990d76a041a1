//! `POST /admin/policies/reload`: refresh upstream MCP tools and reload the policy set now
//! (admin token required). 200 with
//! the new set's hash when it was swapped in, 422 with the validation errors when it was
//! rejected (the last good set keeps serving).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::{App, CallError};

/// Reloads the policies and reports the outcome.
pub(super) async fn reload(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (decision_id, _) =
        match super::admin_guard::guard(&app, &headers, "admin:policies:reload").await {
            Ok(ok) => ok,
            Err(response) => return response,
        };
    // Upstream tool lists are refreshed first, so the reload validates against them.
    crate::reload::refresh_upstreams(&app).await;
    let worker = app.clone();
    let result = tokio::task::spawn_blocking(move || worker.reload_policies())
        .await
        .map_err(|e| format!("reload task failed: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    match result {
        Ok(outcome) => axum::Json(json!({
            "decision_id": decision_id,
            "reloaded": true,
            "changed": outcome.changed,
            "policy_count": outcome.policy_count,
            "policy_set_hash": outcome.policy_set_hash,
            "schema_hash": outcome.schema_hash,
        }))
        .into_response(),
        Err(message) => {
            super::error_with_id(&decision_id, &CallError::PolicyReloadRejected(message))
        }
    }
}
