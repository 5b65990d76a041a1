//! The admin token check every admin endpoint starts with, apart from the admin router so
//! that the endpoints' files and the router do not import each other.

use axum::http::{HeaderMap, header};
use axum::response::Response;

use crate::app::App;
use crate::auth::VerifiedToken;

/// Checks the admin token for `action`; on failure returns the response to send.
pub async fn guard(
    app: &App,
    headers: &HeaderMap,
    action: &str,
) -> Result<(String, VerifiedToken), Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (decision_id, result) = app.authorize_admin(authorization, action).await;
    match result {
        Ok(token) => Ok((decision_id, token)),
        Err(e) => Err(super::error_with_id(&decision_id, &e)),
    }
}
