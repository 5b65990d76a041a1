//! `/mcp` (MCP Streamable HTTP) and its RFC 9728 protected-resource metadata: reads the
//! request, hands it to [`McpServer`], and writes the reply as JSON or as a one-event SSE
//! stream when the client accepts only `text/event-stream`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub mod dispatch;
pub(crate) mod envelope;
pub mod protocol;
mod session;

use super::{DECISION_ID_HEADER, error, header_str, read_json_text};
use crate::app::App;
pub use dispatch::{McpServer, PostRequest};
pub use envelope::Reply;
use protocol::{METHOD_HEADER, NAME_HEADER, PROTOCOL_VERSION_HEADER, SESSION_HEADER};

/// What the `/mcp` handlers share.
pub struct McpState {
    /// The pipeline.
    pub app: Arc<App>,
    /// Sessions and the advertised resource.
    pub server: McpServer,
}

/// The `/mcp` routes and the metadata documents; `default_resource` is the resource URI used
/// when `mcp.resource` is not configured.
pub fn router<S: Clone + Send + Sync + 'static>(
    app: Arc<App>,
    default_resource: &str,
) -> Router<S> {
    let server = McpServer::new(&app.config.mcp, default_resource);
    let state = Arc::new(McpState { app, server });
    Router::new()
        .route("/mcp", get(get_stream).post(post).delete(delete))
        .route("/.well-known/oauth-protected-resource", get(metadata))
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(metadata),
        )
        .with_state(state)
}

async fn post(State(state): State<Arc<McpState>>, headers: HeaderMap, body: Body) -> Response {
    let sse = wants_sse(&headers);
    let server = &state.server;
    let reply = if server.origin_allowed(header_str(&headers, header::ORIGIN.as_str())) {
        let (text, message) = read_json_text::<Value>(&state.app, body).await;
        server
            .post(
                &state.app,
                PostRequest {
                    authorization: header_str(&headers, header::AUTHORIZATION.as_str()),
                    session_id: header_str(&headers, SESSION_HEADER),
                    protocol_version: header_str(&headers, PROTOCOL_VERSION_HEADER),
                    method_header: header_str(&headers, METHOD_HEADER),
                    name_header: header_str(&headers, NAME_HEADER),
                    message,
                    text: &text,
                },
            )
            .await
    } else {
        server.refuse_origin(&state.app).await
    };
    respond(server, reply, sse)
}

async fn delete(State(state): State<Arc<McpState>>, headers: HeaderMap) -> Response {
    let server = &state.server;
    let reply = if server.origin_allowed(header_str(&headers, header::ORIGIN.as_str())) {
        server
            .delete(
                &state.app,
                header_str(&headers, header::AUTHORIZATION.as_str()),
                header_str(&headers, SESSION_HEADER),
            )
            .await
    } else {
        server.refuse_origin(&state.app).await
    };
    respond(server, reply, false)
}

/// toolgate sends no server-initiated messages, so it offers no GET stream (MCP allows 405).
async fn get_stream() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
    )
        .into_response()
}

/// RFC 9728 protected-resource metadata: the resource, who issues tokens for it, and scopes.
async fn metadata(State(state): State<Arc<McpState>>) -> Response {
    let config = &state.app.config;
    let authorization_servers: Vec<&str> = if config.mcp.authorization_servers.is_empty() {
        config.issuers.iter().map(|i| i.issuer.as_str()).collect()
    } else {
        config
            .mcp
            .authorization_servers
            .iter()
            .map(String::as_str)
            .collect()
    };
    let scopes: Vec<String> = if config.mcp.scopes_supported.is_empty() {
        let mut scopes: Vec<String> = state
            .app
            .tools()
            .iter()
            .flat_map(|t| t.required_scopes.iter().cloned())
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    } else {
        config.mcp.scopes_supported.clone()
    };
    let mut response = axum::Json(json!({
        "resource": state.server.resource,
        "authorization_servers": authorization_servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": "toolgate",
    }))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// SSE only for a client that accepts it and not JSON; MCP clients must accept both, and
/// then a single JSON response is the simpler answer.
fn wants_sse(headers: &HeaderMap) -> bool {
    let accept = header_str(headers, header::ACCEPT.as_str()).unwrap_or("");
    let media: Vec<&str> = accept
        .split(',')
        .map(|m| m.split(';').next().unwrap_or("").trim())
        .collect();
    media.contains(&"text/event-stream")
        && !media
            .iter()
            .any(|m| matches!(*m, "application/json" | "application/*" | "*/*"))
}

/// The RFC 9728 metadata URL for a resource: `/.well-known/oauth-protected-resource` inserted
/// between the origin and the path.
pub fn metadata_url(resource: &str) -> String {
    match reqwest::Url::parse(resource) {
        Ok(url) => {
            let path = url.path().trim_end_matches('/');
            format!(
                "{}/.well-known/oauth-protected-resource{path}",
                url.origin().ascii_serialization()
            )
        }
        Err(_) => format!("{resource}/.well-known/oauth-protected-resource"),
    }
}

fn respond(server: &McpServer, reply: Reply, sse: bool) -> Response {
    match reply {
        Reply::Message {
            message,
            decision_id,
            session_id,
        } => {
            let mut response = if sse {
                let event = format!("event: message\ndata: {message}\n\n");
                (
                    [
                        (header::CONTENT_TYPE, "text/event-stream"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    event,
                )
                    .into_response()
            } else {
                axum::Json(message).into_response()
            };
            let headers = response.headers_mut();
            if let Some(id) = session_id.and_then(|s| HeaderValue::from_str(&s).ok()) {
                headers.insert(SESSION_HEADER, id);
            }
            if let Some(id) = decision_id.and_then(|d| HeaderValue::from_str(&d).ok()) {
                headers.insert(DECISION_ID_HEADER, id);
            }
            response
        }
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Closed => StatusCode::NO_CONTENT.into_response(),
        Reply::Rejected { status, message } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            axum::Json(message),
        )
            .into_response(),
        Reply::Failed { decision_id, error } => {
            let (status, mut headers, mut body) = error::error_response(&error);
            error::add_resource_metadata(&mut headers, &server.metadata_url);
            if let Some(id) = &decision_id {
                body["decision_id"] = json!(id);
                if let Ok(v) = HeaderValue::from_str(id) {
                    headers.insert(DECISION_ID_HEADER, v);
                }
            }
            (status, headers, axum::Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_the_well_known_path_before_the_resource_path() {
        assert_eq!(
            metadata_url("https://gw.example.com/mcp"),
            "https://gw.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
    }
}
