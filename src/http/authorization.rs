//! The `Authorization` header of authenticated routes: a request carrying it more than once
//! is refused with 400 and recorded, before any handler reads the first one.
//!
//! Why: components that disagree on which copy counts (a proxy reading the last, the broker
//! the first) would authenticate different callers for one request.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::app::{App, CallError, Event};
use crate::audit::{Reason, Stage, Verdict};
use crate::auth::TokenError;

/// Route layer: refuses a request to an authenticated route that carries more than one
/// `Authorization` header.
pub async fn one_header(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let count = request
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .count();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| endpoint(path.as_str()));
    let Some(endpoint) = endpoint.filter(|_| count > 1) else {
        return next.run(request).await;
    };
    let error = TokenError::DuplicateAuthorization;
    let recorded = app
        .record_event(Event {
            endpoint,
            action: endpoint,
            token: None,
            verdict: Verdict::Deny,
            stage: Stage::Auth,
            reason: Reason::from(error.code()),
            detail: Some(format!("{count} authorization headers")),
        })
        .await;
    match recorded {
        Ok(decision_id) => super::error_with_id(&decision_id, &CallError::Token(error)),
        Err(e) => super::error_with_id("", &e),
    }
}

/// The record endpoint of a route that takes a bearer token; `None` for public routes.
fn endpoint(route: &str) -> Option<&'static str> {
    match route {
        "/v1/tools/{tool}/invoke" => Some("invoke"),
        "/v1/authorize" => Some("authorize"),
        "/v1/tools" => Some("list"),
        "/mcp" => Some("mcp"),
        admin if admin.starts_with("/admin/") => Some("admin"),
        _ => None,
    }
}
