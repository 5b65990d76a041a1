//! The admin API under `/admin`: operators' endpoints, guarded by an admin token (the admin
//! audience and scope, which no agent token carries). Every admin call is recorded.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::admin_guard::guard;
use crate::app::App;

/// The admin routes, nested under `/admin` by [`super::router`].
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/status", get(status))
        .route(
            "/revocations",
            get(super::revocations::list).post(super::revocations::create),
        )
        .route("/decisions", get(super::decisions::list))
        .route("/decisions/{id}", get(super::decisions::get_one))
        .route(
            "/policies/reload",
            axum::routing::post(super::policy_admin::reload),
        )
}

/// `GET /admin/status`: readiness, policy set, tool count and each issuer's keys.
async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (decision_id, _) = match guard(&app, &headers, "admin:status").await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let readiness = app.readiness();
    axum::Json(json!({
        "decision_id": decision_id,
        "ready": readiness.ready(),
        "checks": readiness,
        "tools": app.tools().len(),
        "keys": app.authenticator.key_status(),
        "dispatch_outcomes_unrecorded": app.audit.lost_outcomes(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}
