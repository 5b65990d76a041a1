//! The HTTP API (the only module that knows axum): router, body and header bounds, handlers.

pub mod admin;
mod admin_guard;
mod authorization;
pub mod decisions;
pub mod error;
pub mod listener;
pub mod mcp;
mod policy_admin;
pub mod revocations;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::app::{App, CallError, CallRequest, Decision, Endpoint, Outcome, PolicyReasons};
use crate::policy::ArgumentsText;

/// Header carrying the decision id on every pipeline response.
pub const DECISION_ID_HEADER: &str = "x-toolgate-decision-id";

/// Builds the router over `app`; `base_url` (`http://host:port`) is where it is reached when
/// `mcp.resource` does not say.
pub fn router(app: Arc<App>, base_url: &str) -> Router {
    let mut router = Router::new();
    if app.config.mcp.enabled {
        router = router.merge(mcp::router(app.clone(), &format!("{base_url}/mcp")));
    }
    router
        .route("/v1/tools/{tool}/invoke", post(invoke))
        .route("/v1/authorize", post(authorize))
        .route("/v1/tools", get(list_tools))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .nest("/admin", admin::router())
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            authorization::one_header,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), bound_headers))
        // The body is read by the handlers with their own limit, so that an oversized body
        // is still recorded as a decision; this is a backstop.
        .layer(axum::extract::DefaultBodyLimit::max(
            app.config.limits.max_body_bytes * 2,
        ))
        .with_state(app)
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let base_url = format!("http://{}", listener.local_addr()?);
    let limits = listener::ConnectionLimits {
        idle_timeout: Duration::from_millis(app.config.limits.idle_timeout_ms),
        header_read_timeout: Duration::from_millis(app.config.limits.header_read_timeout_ms),
        max_connections: app.config.limits.max_connections,
    };
    listener::serve(listener, router(app, &base_url), limits, shutdown).await
}

/// Refuses requests whose headers exceed the configured total size (431).
async fn bound_headers(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let total: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if total > app.config.limits.max_header_bytes {
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            axum::Json(
                json!({ "error": "headers_too_large", "message": "request headers are too large" }),
            ),
        )
            .into_response();
    }
    next.run(request).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InvokeBody {
    #[serde(default = "empty_object")]
    arguments: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthorizeBody {
    tool: String,
    #[serde(default = "empty_object")]
    arguments: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

async fn invoke(
    State(app): State<Arc<App>>,
    Path(tool): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (text, parsed) = read_json_text::<InvokeBody>(&app, body).await;
    let arguments = parsed.map(|b| b.arguments);
    let response = app
        .call(
            Endpoint::Invoke,
            CallRequest {
                authorization: header_str(&headers, header::AUTHORIZATION.as_str()),
                tool: &tool,
                arguments,
                arguments_text: Some(ArgumentsText {
                    json: &text,
                    at: &["arguments"],
                }),
                request_id: header_str(&headers, "x-request-id"),
            },
        )
        .await;
    call_response(response)
}

async fn authorize(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let (text, parsed) = read_json_text::<AuthorizeBody>(&app, body).await;
    let (tool, arguments) = match parsed {
        Ok(b) => (b.tool, Ok(b.arguments)),
        Err(e) => (String::new(), Err(e)),
    };
    let response = app
        .call(
            Endpoint::Authorize,
            CallRequest {
                authorization: header_str(&headers, header::AUTHORIZATION.as_str()),
                tool: &tool,
                arguments,
                arguments_text: Some(ArgumentsText {
                    json: &text,
                    at: &["arguments"],
                }),
                request_id: header_str(&headers, "x-request-id"),
            },
        )
        .await;
    call_response(response)
}

async fn list_tools(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (decision_id, result) = app
        .list_tools(header_str(&headers, header::AUTHORIZATION.as_str()))
        .await;
    match result {
        Ok(tools) => with_decision_id(
            &decision_id,
            (
                StatusCode::OK,
                axum::Json(json!({ "decision_id": decision_id, "tools": tools })),
            )
                .into_response(),
        ),
        Err(e) => error_with_id(&decision_id, &e),
    }
}

/// The broker's public keys, for backends verifying its assertions.
async fn jwks(State(app): State<Arc<App>>) -> Response {
    let mut response = axum::Json(app.dispatcher.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(crate::tools::broker_keys::JWKS_CACHE_CONTROL),
    );
    response
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Public, for load balancers and probes: readiness and the names of failing checks only.
/// Every detail (hashes, error texts, counts, upstream states) is for `/admin/status`.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let readiness = app.readiness();
    let status = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": readiness.ready(), "failing": readiness.failing() })),
    )
        .into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads a JSON body within the size, time and depth limits; also returns the body's bytes
/// (empty if it could not be read): the policy reads decimal arguments from the text, not from
/// a float.
pub(crate) async fn read_json_text<T: for<'de> Deserialize<'de>>(
    app: &App,
    body: Body,
) -> (Bytes, Result<T, CallError>) {
    match read_body(app, body, app.config.limits.max_body_bytes).await {
        Ok(bytes) => {
            let parsed = parse_json(&bytes, app.config.limits.max_json_depth);
            (bytes, parsed)
        }
        Err(e) => (Bytes::new(), Err(e)),
    }
}

/// Reads a whole body of at most `limit` bytes within `limits.body_read_timeout_ms`: a client
/// that declares a large body and sends it slowly holds a connection no longer than that.
pub(crate) async fn read_body(app: &App, body: Body, limit: usize) -> Result<Bytes, CallError> {
    let deadline = app.config.limits.body_read_timeout_ms;
    match tokio::time::timeout(
        Duration::from_millis(deadline),
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(CallError::PayloadTooLarge(limit)),
        Err(_) => Err(CallError::BodyTimeout(deadline)),
    }
}

/// Parses a body already read within the size limit (empty means `{}`), within the depth
/// limit; separate from the read so that the fuzz targets run it without a server.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<T, CallError> {
    let value: Value = if bytes.is_empty() {
        empty_object()
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| CallError::BadRequest(format!("body is not valid JSON: {e}")))?
    };
    let depth = json_depth(&value);
    if depth > max_depth {
        return Err(CallError::BadRequest(format!(
            "body nests {depth} levels deep; the limit is {max_depth}"
        )));
    }
    serde_json::from_value(value).map_err(|e| CallError::BadRequest(e.to_string()))
}

/// Nesting depth of a JSON value (a scalar is 1), computed without recursion.
pub fn json_depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    max
}

/// The one place a pipeline decision becomes an HTTP response.
fn call_response(decided: Result<Decision, CallError>) -> Response {
    let Decision {
        id,
        verdict,
        outcome,
        policies,
        ..
    } = match decided {
        Ok(decision) => decision,
        // Nothing was recorded (the log failed): no id that leads nowhere.
        Err(e) => {
            let (status, headers, body) = error::error_response(&e);
            return (status, headers, axum::Json(body)).into_response();
        }
    };
    let decision = verdict.as_str();
    let mut body = match outcome {
        // The tool's own error: the call was carried out, so 200 with an MCP-style `is_error`.
        Outcome::Answered {
            result,
            tool_error: Some(status),
        } => json!({
            "decision_id": id,
            "decision": decision,
            "is_error": true,
            "status": status,
            "result": result,
        }),
        Outcome::Answered {
            result,
            tool_error: None,
        } => json!({ "decision_id": id, "decision": decision, "result": result }),
        Outcome::Authorized => json!({ "decision_id": id, "decision": decision }),
        Outcome::Denied => {
            let (status, headers, body) = error::denied_response();
            return with_body(&id, status, headers, body, policies.as_ref());
        }
        Outcome::Failed(e) => return error_with_policies(&id, &e, policies.as_ref()),
    };
    add_policies(&mut body, policies.as_ref());
    with_decision_id(&id, axum::Json(body).into_response())
}

pub(crate) fn error_with_id(id: &str, e: &CallError) -> Response {
    error_with_policies(id, e, None)
}

fn error_with_policies(id: &str, e: &CallError, policies: Option<&PolicyReasons>) -> Response {
    let (status, headers, body) = error::error_response(e);
    if let CallError::Audit(_) = e {
        // No record holds this id: hand out no id that leads nowhere.
        return (status, headers, axum::Json(body)).into_response();
    }
    with_body(id, status, headers, body, policies)
}

/// A refusal's answer with its decision id in the body and the header.
fn with_body(
    id: &str,
    status: StatusCode,
    headers: HeaderMap,
    mut body: Value,
    policies: Option<&PolicyReasons>,
) -> Response {
    body["decision_id"] = json!(id);
    add_policies(&mut body, policies);
    with_decision_id(id, (status, headers, axum::Json(body)).into_response())
}

/// The determining (and erroring) policy ids, when the answer may name them.
fn add_policies(body: &mut Value, policies: Option<&PolicyReasons>) {
    if let Some(policies) = policies {
        body["determining_policies"] = json!(policies.determining_policies);
        body["erroring_policies"] = json!(policies.erroring_policies);
    }
}

fn with_decision_id(id: &str, mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert(DECISION_ID_HEADER, v);
    }
    response
}
