//! toolgate as an MCP server: the JSON-RPC methods of the Streamable HTTP transport at `/mcp`,
//! stateless (2026-07-28, the envelope checked on every request) or with the `initialize`
//! handshake and sessions bound to the authenticated principal (2025-03-26 to 2025-11-25). No axum types: `http::mcp` reads the
//! request and writes the [`Reply`] as JSON or as a one-event SSE stream.
//!
//! Every HTTP request carries a bearer token verified by the token stage (once per request);
//! every `tools/call` runs the whole pipeline (tool, scope, arguments, Cedar, decision log,
//! dispatch) and every `tools/list` is filtered for the caller and recorded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    CLIENT_CAPABILITIES_META_KEY, LATEST_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSIONS,
    PROTOCOL_VERSION_META_KEY, PROTOCOL_VERSIONS, SERVER_INFO_META_KEY, codes,
};
use crate::app::{App, CallError, CallRequest, CallResponse, Endpoint, Event, ToolListing};
use crate::auth::VerifiedToken;
use crate::config::McpConfig;
use crate::policy::ArgumentsText;

/// The `_meta` key carrying the decision id on results.
pub const DECISION_META_KEY: &str = "io.toolgate/decision-id";

/// The `_meta` key carrying the determining policy ids on `tools/call` results, when
/// `[api] expose_determining_policies` allows it.
pub const DETERMINING_POLICIES_META_KEY: &str = "io.toolgate/determining-policies";

/// The `_meta` key carrying the ids of policies whose evaluation errored, beside
/// [`DETERMINING_POLICIES_META_KEY`].
pub const ERRORING_POLICIES_META_KEY: &str = "io.toolgate/erroring-policies";

/// The endpoint name in decision records.
const ENDPOINT: &str = "mcp";

/// What toolgate tells a client about itself.
const INSTRUCTIONS: &str = "Every tool call is authorized by policy and recorded; a denied call returns isError with its decision id.";

/// One POST to `/mcp`, as read by the HTTP layer.
#[derive(Debug)]
pub struct PostRequest<'a> {
    /// The raw `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `Mcp-Session-Id` header.
    pub session_id: Option<&'a str>,
    /// The `MCP-Protocol-Version` header.
    pub protocol_version: Option<&'a str>,
    /// The `Mcp-Method` header (stateless requests mirror their method in it).
    pub method_header: Option<&'a str>,
    /// The `Mcp-Name` header (stateless `tools/call` mirrors the tool name in it).
    pub name_header: Option<&'a str>,
    /// The body as JSON (within the size and depth limits), or why it could not be read.
    pub message: Result<Value, CallError>,
    /// The body's bytes: the policy reads decimal arguments from them, not from a float.
    pub text: &'a [u8],
}

/// What to answer.
#[derive(Debug)]
pub enum Reply {
    /// HTTP 200 with one JSON-RPC response.
    Message {
        /// The JSON-RPC response.
        message: Value,
        /// The decision this request produced, if any.
        decision_id: Option<String>,
        /// A new session's id (on `initialize`).
        session_id: Option<String>,
    },
    /// HTTP 202 with no body: a notification or a response was accepted.
    Accepted,
    /// HTTP 204: the session was closed.
    Closed,
    /// A transport-level refusal (400 malformed, 404 unknown session) with a JSON-RPC error.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The JSON-RPC error response.
        message: Value,
    },
    /// A pipeline error with its own HTTP status (401, 403, 413, 503), mapped by `http::error`.
    Failed {
        /// The decision that recorded it (absent when the log itself failed).
        decision_id: Option<String>,
        /// Why.
        error: CallError,
    },
}

/// The MCP server: its sessions and the resource identity it advertises.
pub struct McpServer {
    sessions: Sessions,
    /// The canonical URI of `/mcp` (RFC 8707 resource).
    pub resource: String,
    /// The URL of this resource's RFC 9728 metadata, named in `WWW-Authenticate`.
    pub metadata_url: String,
    allowed_origins: Vec<String>,
}

impl McpServer {
    /// A server for `config`; `default_resource` is used when `config.resource` is unset.
    pub fn new(config: &McpConfig, default_resource: &str) -> Self {
        let resource = config
            .resource
            .clone()
            .unwrap_or_else(|| default_resource.to_owned());
        let metadata_url = metadata_url(&resource);
        Self {
            sessions: Sessions::new(
                config.max_sessions,
                config.max_sessions_per_principal,
                Duration::from_secs(config.session_idle_seconds),
            ),
            resource,
            metadata_url,
            allowed_origins: config.allowed_origins.clone(),
        }
    }

    /// Whether a request with this `Origin` header may proceed (absent: yes).
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        origin.is_none_or(|o| self.allowed_origins.iter().any(|a| a == o))
    }

    /// Records a request refused for its `Origin` before authentication.
    pub async fn refuse_origin(&self, app: &App) -> Reply {
        let recorded = app
            .record_event(Event {
                endpoint: ENDPOINT,
                action: "mcp",
                token: None,
                allowed: false,
                stage: "request",
                reason: "origin_not_allowed",
                detail: None,
            })
            .await;
        match recorded {
            Ok(decision_id) => Reply::Rejected {
                status: 403,
                message: error_response(
                    Value::Null,
                    codes::INVALID_REQUEST,
                    &format!("this Origin is not allowed (decision {decision_id})"),
                ),
            },
            Err(error) => Reply::Failed {
                decision_id: None,
                error,
            },
        }
    }

    /// Handles one POST.
    // split in the decision-as-value work (issue 26)
    #[allow(clippy::too_many_lines)]
    pub async fn post(&self, app: &App, request: PostRequest<'_>) -> Reply {
        let token = match app
            .authenticate_request(ENDPOINT, request.authorization)
            .await
        {
            Ok(token) => token,
            Err((decision_id, error)) => return failed(decision_id, error),
        };
        let message = match request.message {
            Ok(message) => message,
            // Recorded with the reason `/v1/...` records for the same body.
            Err(error @ CallError::BadRequest(_)) => {
                let detail = error.to_string();
                let recorded = app
                    .record_event(Event {
                        endpoint: ENDPOINT,
                        action: "mcp",
                        token: Some(&token),
                        allowed: false,
                        stage: "request",
                        reason: error.body_reason(),
                        detail: Some(detail.clone()),
                    })
                    .await;
                return match recorded {
                    Ok(decision_id) => Reply::Rejected {
                        status: 400,
                        message: error_response(
                            Value::Null,
                            codes::PARSE_ERROR,
                            &format!("{detail} (decision {decision_id})"),
                        ),
                    },
                    Err(error) => Reply::Failed {
                        decision_id: None,
                        error,
                    },
                };
            }
            Err(error) => {
                let reason = error.body_reason();
                return self.refuse(app, &token, reason, error).await;
            }
        };
        let message = match Message::parse(message) {
            Ok(m) => m,
            Err(reason) => {
                return Reply::Rejected {
                    status: 400,
                    message: error_response(Value::Null, codes::INVALID_REQUEST, reason),
                };
            }
        };
        let stateless_header = request
            .protocol_version
            .is_some_and(|v| MODERN_PROTOCOL_VERSIONS.contains(&v));
        let Message::Request { id, method, params } = message else {
            // Notifications (`notifications/initialized`, cancellations) and responses need
            // no answer: toolgate sends no requests of its own.
            if stateless_header && request.session_id.is_none() {
                return Reply::Accepted;
            }
            return match self.session(&token, request.session_id, request.protocol_version) {
                Ok(_) => Reply::Accepted,
                Err(reply) => reply,
            };
        };
        let envelope = params
            .get("_meta")
            .and_then(|meta| meta.get(PROTOCOL_VERSION_META_KEY));
        if stateless_header || envelope.is_some() {
            let headers = EnvelopeHeaders {
                protocol_version: request.protocol_version,
                method: request.method_header,
                name: request.name_header,
            };
            let reply = match check_envelope(&method, &params, &headers) {
                Ok(()) => {
                    self.stateless(app, &token, id, &method, params, request.text)
                        .await
                }
                Err(error) => Reply::Message {
                    message: json!({ "jsonrpc": "2.0", "id": id, "error": error }),
                    decision_id: None,
                    session_id: None,
                },
            };
            return stamp_stateless(reply);
        }
        match method.as_str() {
            "initialize" => self.initialize(app, &token, id, &params).await,
            // The 2026-07-28 discovery probe: answering "no such method" tells a client to
            // fall back to the `initialize` handshake.
            "server/discover" => rpc_error(id, codes::METHOD_NOT_FOUND, "use `initialize`"),
            _ => {
                if let Err(reply) =
                    self.session(&token, request.session_id, request.protocol_version)
                {
                    return reply;
                }
                match method.as_str() {
                    "ping" => result(id, json!({}), None),
                    "tools/list" => self.list_tools(app, &token, id).await,
                    "tools/call" => self.call_tool(app, &token, id, params, request.text).await,
                    other => rpc_error(
                        id,
                        codes::METHOD_NOT_FOUND,
                        &format!("method `{}` is not supported", truncate(other)),
                    ),
                }
            }
        }
    }

    /// Handles a DELETE: closes the caller's session.
    pub async fn delete(
        &self,
        app: &App,
        authorization: Option<&str>,
        session_id: Option<&str>,
    ) -> Reply {
        let token = match app.authenticate_request(ENDPOINT, authorization).await {
            Ok(token) => token,
            Err((decision_id, error)) => return failed(decision_id, error),
        };
        let Some(session_id) = session_id else {
            return missing_session();
        };
        if !self.sessions.close(session_id, &principal_key(&token)) {
            return unknown_session();
        }
        let recorded = app
            .record_event(Event {
                endpoint: ENDPOINT,
                action: "mcp/session/close",
                token: Some(&token),
                allowed: true,
                stage: "session",
                reason: "session_closed",
                detail: None,
            })
            .await;
        match recorded {
            Ok(_) => Reply::Closed,
            Err(error) => Reply::Failed {
                decision_id: None,
                error,
            },
        }
    }

    /// A stateless (2026-07-28) request whose envelope has been checked: no session, the
    /// token alone says who is calling.
    async fn stateless(
        &self,
        app: &App,
        token: &VerifiedToken,
        id: Value,
        method: &str,
        params: Value,
        text: &[u8],
    ) -> Reply {
        match method {
            "server/discover" => result(
                id,
                json!({
                    "supportedVersions": MODERN_PROTOCOL_VERSIONS,
                    "capabilities": { "tools": { "listChanged": false } },
                    "instructions": INSTRUCTIONS,
                    // The answer is the same for everyone, but nothing is gained by caching it.
                    "ttlMs": 0,
                    "cacheScope": "private",
                }),
                None,
            ),
            "tools/list" => {
                let mut reply = self.list_tools(app, token, id).await;
                if let Reply::Message { message, .. } = &mut reply
                    && let Some(result) = message.get_mut("result")
                {
                    // The list is this principal's: never for a shared cache, and stale at once
                    // so that a policy change shows on the next listing.
                    result["ttlMs"] = json!(0);
                    result["cacheScope"] = json!("private");
                }
                reply
            }
            "tools/call" => self.call_tool(app, token, id, params, text).await,
            other => rpc_error(
                id,
                codes::METHOD_NOT_FOUND,
                &format!("method `{}` is not supported", truncate(other)),
            ),
        }
    }

    /// Live sessions now.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    async fn refuse(
        &self,
        app: &App,
        token: &VerifiedToken,
        reason: &str,
        error: CallError,
    ) -> Reply {
        let recorded = app
            .record_event(Event {
                endpoint: ENDPOINT,
                action: "mcp",
                token: Some(token),
                allowed: false,
                stage: "request",
                reason,
                detail: Some(error.to_string()),
            })
            .await;
        match recorded {
            Ok(decision_id) => failed(decision_id, error),
            Err(error) => Reply::Failed {
                decision_id: None,
                error,
            },
        }
    }

    /// Checks the session header against the live sessions and the principal, and the
    /// protocol-version header against the session's version.
    fn session(
        &self,
        token: &VerifiedToken,
        session_id: Option<&str>,
        protocol_version: Option<&str>,
    ) -> Result<&'static str, Reply> {
        let Some(session_id) = session_id else {
            return Err(missing_session());
        };
        let Some(version) = self.sessions.touch(session_id, &principal_key(token)) else {
            return Err(unknown_session());
        };
        match protocol_version {
            Some(v) if v != version => Err(Reply::Rejected {
                status: 400,
                message: error_response(
                    Value::Null,
                    codes::INVALID_REQUEST,
                    &format!(
                        "MCP-Protocol-Version `{}` differs from the session's `{version}`",
                        truncate(v)
                    ),
                ),
            }),
            _ => Ok(version),
        }
    }

    async fn initialize(
        &self,
        app: &App,
        token: &VerifiedToken,
        id: Value,
        params: &Value,
    ) -> Reply {
        let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
            return rpc_error(
                id,
                codes::INVALID_PARAMS,
                "`params.protocolVersion` must be a string",
            );
        };
        // Version negotiation: the client's version if toolgate speaks it, else the latest
        // (the client then decides whether it can continue).
        let version = PROTOCOL_VERSIONS
            .iter()
            .copied()
            .find(|v| *v == requested)
            .unwrap_or(LATEST_PROTOCOL_VERSION);
        let Some(session_id) = self.sessions.open(principal_key(token), version) else {
            return self
                .refuse(app, token, "too_many_sessions", CallError::TooManySessions)
                .await;
        };
        let client = params
            .pointer("/clientInfo/name")
            .and_then(Value::as_str)
            .map(truncate);
        let recorded = app
            .record_event(Event {
                endpoint: ENDPOINT,
                action: "mcp/initialize",
                token: Some(token),
                allowed: true,
                stage: "session",
                reason: "session_opened",
                detail: Some(format!(
                    "protocol {version}, client {}",
                    client.as_deref().unwrap_or("unnamed")
                )),
            })
            .await;
        let decision_id = match recorded {
            Ok(id) => id,
            Err(error) => {
                self.sessions.close(&session_id, &principal_key(token));
                return Reply::Failed {
                    decision_id: None,
                    error,
                };
            }
        };
        Reply::Message {
            message: json!({
                "jsonrpc": "2.0",
                "id": id,
                "result": {
                    "protocolVersion": version,
                    "capabilities": { "tools": { "listChanged": false } },
                    "serverInfo": {
                        "name": "toolgate",
                        "version": env!("CARGO_PKG_VERSION"),
                    },
                    "instructions": INSTRUCTIONS,
                },
            }),
            decision_id: Some(decision_id),
            session_id: Some(session_id),
        }
    }

    async fn list_tools(&self, app: &App, token: &VerifiedToken, id: Value) -> Reply {
        let (decision_id, listed) = app.list_tools_for(ENDPOINT, token).await;
        match listed {
            Ok(tools) => {
                let tools: Vec<Value> = tools.into_iter().map(mcp_tool).collect();
                result(id, json!({ "tools": tools }), Some(decision_id))
            }
            Err(error) => failed(decision_id, error),
        }
    }

    async fn call_tool(
        &self,
        app: &App,
        token: &VerifiedToken,
        id: Value,
        params: Value,
        text: &[u8],
    ) -> Reply {
        let Value::Object(mut params) = params else {
            return rpc_error(id, codes::INVALID_PARAMS, "`params` must be an object");
        };
        let Some(Value::String(name)) = params.remove("name") else {
            return rpc_error(id, codes::INVALID_PARAMS, "`params.name` must be a string");
        };
        let arguments = match params.remove("arguments") {
            None | Some(Value::Null) => Ok(Value::Object(Map::new())),
            Some(Value::Object(map)) => Ok(Value::Object(map)),
            Some(_) => Err(CallError::BadRequest(
                "`params.arguments` must be an object".to_owned(),
            )),
        };
        let request_id = match &id {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        };
        let response = app
            .call_verified(
                Endpoint::Mcp,
                token,
                CallRequest {
                    authorization: None,
                    tool: &name,
                    arguments,
                    arguments_text: Some(ArgumentsText {
                        json: text,
                        at: &["params", "arguments"],
                    }),
                    request_id,
                },
            )
            .await;
        call_reply(id, response)
    }
}

/// Maps a pipeline outcome to MCP: a result (a tool's own error, a policy deny, invalid
/// arguments and a failed backend are `isError` results the agent can read and act on), a
/// JSON-RPC error (unknown tool, malformed params), or an HTTP-level failure (token, scope,
/// decision log).
fn call_reply(id: Value, response: CallResponse) -> Reply {
    let CallResponse {
        decision_id,
        outcome,
        tool_error,
        policies,
    } = response;
    let content = match outcome {
        Ok(value) => tool_result(value.unwrap_or(Value::Null), tool_error.is_some()),
        Err(CallError::Denied { .. }) => error_result(&format!(
            "toolgate denied this call by policy (decision {decision_id})"
        )),
        Err(CallError::InvalidArguments(e)) => error_result(&e.to_string()),
        Err(CallError::Dispatch(e)) => error_result(&format!("the tool backend failed: {e}")),
        Err(CallError::UnknownTool(name)) => {
            return rpc_error(id, codes::INVALID_PARAMS, &format!("unknown tool `{name}`"));
        }
        Err(CallError::BadRequest(reason)) => {
            return rpc_error(id, codes::INVALID_PARAMS, &reason);
        }
        Err(CallError::PolicyFailure(_)) => {
            return rpc_error(
                id,
                codes::INTERNAL_ERROR,
                &format!("the call could not be authorized (decision {decision_id})"),
            );
        }
        Err(
            error @ (CallError::Token(_)
            | CallError::InsufficientScope { .. }
            | CallError::PayloadTooLarge(_)
            | CallError::BodyTimeout(_)
            | CallError::Audit(_)
            | CallError::StateUnavailable
            | CallError::TooManySessions
            | CallError::PolicyReloadRejected(_)),
        ) => return failed(decision_id, error),
    };
    let mut content = content;
    content["_meta"] = json!({ DECISION_META_KEY: decision_id });
    if let Some(policies) = policies {
        content["_meta"][DETERMINING_POLICIES_META_KEY] = json!(policies.determining_policies);
        content["_meta"][ERRORING_POLICIES_META_KEY] = json!(policies.erroring_policies);
    }
    result(id, content, Some(decision_id))
}

/// A backend's answer as a `CallToolResult`: an upstream MCP server's result passes through;
/// any other JSON becomes text content plus `structuredContent` when it is an object.
fn tool_result(value: Value, is_error: bool) -> Value {
    if let Value::Object(map) = &value
        && map.get("content").is_some_and(Value::is_array)
    {
        let mut result = value;
        if is_error {
            result["isError"] = Value::Bool(true);
        }
        return result;
    }
    let text = match &value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut result = json!({
        "content": [{ "type": "text", "text": text }],
        "isError": is_error,
    });
    if value.is_object() {
        result["structuredContent"] = value;
    }
    result
}

fn error_result(text: &str) -> Value {
    json!({ "content": [{ "type": "text", "text": text }], "isError": true })
}

/// A listed tool in MCP's shape.
fn mcp_tool(tool: ToolListing) -> Value {
    let mut schema = tool.input_schema;
    if let Value::Object(map) = &mut schema
        && !map.contains_key("type")
    {
        // MCP requires an object schema; a tool configured with `{}` takes any object.
        map.insert("type".to_owned(), json!("object"));
    }
    let a = tool.annotations;
    json!({
        "name": tool.name,
        "description": tool.description,
        "inputSchema": schema,
        "annotations": {
            "readOnlyHint": a.read_only,
            "destructiveHint": a.destructive,
            "idempotentHint": a.idempotent,
            "openWorldHint": a.open_world,
        },
    })
}

/// A parsed JSON-RPC message.
pub(crate) enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification,
    Response,
}

impl Message {
    pub(crate) fn parse(value: Value) -> Result<Self, &'static str> {
        let Value::Object(mut map) = value else {
            return Err(if value.is_array() {
                "JSON-RPC batches are not supported"
            } else {
                "a JSON-RPC message must be an object"
            });
        };
        if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err("`jsonrpc` must be \"2.0\"");
        }
        let id = map.remove("id");
        if let Some(id) = &id
            && !(id.is_string() || id.is_i64() || id.is_u64())
        {
            return Err("`id` must be a string or an integer");
        }
        match (map.remove("method"), id) {
            (Some(Value::String(method)), Some(id)) => Ok(Message::Request {
                id,
                method,
                params: map.remove("params").unwrap_or(Value::Null),
            }),
            (Some(Value::String(_)), None) => Ok(Message::Notification),
            (Some(_), _) => Err("`method` must be a string"),
            (None, Some(_)) if map.contains_key("result") || map.contains_key("error") => {
                Ok(Message::Response)
            }
            (None, _) => Err("not a JSON-RPC request, notification or response"),
        }
    }
}

/// The headers a stateless request mirrors its envelope in.
pub(crate) struct EnvelopeHeaders<'a> {
    pub(crate) protocol_version: Option<&'a str>,
    pub(crate) method: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
}

/// The 2026-07-28 envelope checks, in the spec's order: `_meta` carries the protocol version
/// and client capabilities; the headers mirror the version, the method and (for
/// `tools/call`) the tool name; the version is one toolgate speaks.
pub(crate) fn check_envelope(
    method: &str,
    params: &Value,
    headers: &EnvelopeHeaders<'_>,
) -> Result<(), Value> {
    let error = |code: i64, message: &str| json!({ "code": code, "message": message });
    let meta = params.get("_meta").and_then(Value::as_object);
    let version = meta.and_then(|m| m.get(PROTOCOL_VERSION_META_KEY));
    let capabilities = meta.and_then(|m| m.get(CLIENT_CAPABILITIES_META_KEY));
    let (Some(version), Some(_)) = (version, capabilities) else {
        return Err(error(
            codes::INVALID_PARAMS,
            "params._meta must carry the protocol version and client capabilities",
        ));
    };
    if headers
        .protocol_version
        .is_none_or(|h| version.as_str() != Some(h))
    {
        return Err(error(
            codes::HEADER_MISMATCH,
            "MCP-Protocol-Version does not match the request's protocol version",
        ));
    }
    if headers.method != Some(method) {
        return Err(error(
            codes::HEADER_MISMATCH,
            "Mcp-Method does not match the request's method",
        ));
    }
    if method == "tools/call"
        && let Some(name) = params.get("name").and_then(Value::as_str)
        && headers.name.and_then(decode_header_value).as_deref() != Some(name)
    {
        return Err(error(
            codes::HEADER_MISMATCH,
            "Mcp-Name does not match the tool name",
        ));
    }
    let Some(version) = version.as_str() else {
        return Err(error(
            codes::INVALID_PARAMS,
            "the protocol version must be a string",
        ));
    };
    if !MODERN_PROTOCOL_VERSIONS.contains(&version) {
        let mut e = error(
            codes::UNSUPPORTED_PROTOCOL_VERSION,
            "unsupported protocol version",
        );
        e["data"] =
            json!({ "supported": MODERN_PROTOCOL_VERSIONS, "requested": truncate(version) });
        return Err(e);
    }
    Ok(())
}

/// An MCP header value: plain visible ASCII, or `=?base64?…?=` for anything else.
fn decode_header_value(value: &str) -> Option<String> {
    use base64::Engine;
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(value.to_owned()),
    }
}

/// A stateless reply: results say they are complete and name the server; errors take the
/// HTTP status the 2026-07-28 transport gives their code.
fn stamp_stateless(reply: Reply) -> Reply {
    let Reply::Message {
        mut message,
        decision_id,
        session_id,
    } = reply
    else {
        return reply;
    };
    if let Some(code) = message.pointer("/error/code").and_then(Value::as_i64) {
        let status = codes::http_status(code);
        if status != 200 {
            return Reply::Rejected { status, message };
        }
    }
    if let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) {
        result.insert("resultType".to_owned(), json!("complete"));
        let meta = result.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                SERVER_INFO_META_KEY.to_owned(),
                json!({ "name": "toolgate", "version": env!("CARGO_PKG_VERSION") }),
            );
        }
    }
    Reply::Message {
        message,
        decision_id,
        session_id,
    }
}

fn result(id: Value, result: Value, decision_id: Option<String>) -> Reply {
    Reply::Message {
        message: json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        decision_id,
        session_id: None,
    }
}

fn rpc_error(id: Value, code: i64, message: &str) -> Reply {
    Reply::Message {
        message: error_response(id, code, message),
        decision_id: None,
        session_id: None,
    }
}

fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn failed(decision_id: String, error: CallError) -> Reply {
    let decision_id = (!matches!(error, CallError::Audit(_))).then_some(decision_id);
    Reply::Failed { decision_id, error }
}

fn missing_session() -> Reply {
    Reply::Rejected {
        status: 400,
        message: error_response(
            Value::Null,
            codes::INVALID_REQUEST,
            "the `Mcp-Session-Id` header is required: call `initialize` first",
        ),
    }
}

/// Unknown, expired, or another principal's: the client must start a new session.
fn unknown_session() -> Reply {
    Reply::Rejected {
        status: 404,
        message: error_response(
            Value::Null,
            codes::INVALID_REQUEST,
            "session not found: call `initialize` again",
        ),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
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

/// Who a session belongs to: issuer, subject and the delegation chain.
fn principal_key(token: &VerifiedToken) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [&token.issuer, &token.subject]
        .into_iter()
        .chain(token.actors.iter())
    {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize().into()
}

struct Session {
    principal: [u8; 32],
    protocol_version: &'static str,
    last_used: Instant,
}

/// Live sessions, bounded in all and per principal, forgotten after an idle time.
struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    max: usize,
    per_principal: usize,
    idle: Duration,
}

impl Sessions {
    fn new(max: usize, per_principal: usize, idle: Duration) -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            max,
            per_principal,
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session; `None` when the broker holds `max` sessions already.
    fn open(&self, principal: [u8; 32], protocol_version: &'static str) -> Option<String> {
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, s| now.duration_since(s.last_used) < self.idle);
        let mut own: Vec<(&String, Instant)> = live
            .iter()
            .filter(|(_, s)| s.principal == principal)
            .map(|(id, s)| (id, s.last_used))
            .collect();
        if own.len() >= self.per_principal {
            own.sort_by_key(|(_, used)| *used);
            let evict: Vec<String> = own[..=own.len() - self.per_principal]
                .iter()
                .map(|(id, _)| (*id).clone())
                .collect();
            for id in evict {
                live.remove(&id);
            }
        }
        if live.len() >= self.max {
            return None;
        }
        // 122 random bits from the OS generator: not guessable, visible ASCII.
        let id = uuid::Uuid::new_v4().simple().to_string();
        live.insert(
            id.clone(),
            Session {
                principal,
                protocol_version,
                last_used: now,
            },
        );
        Some(id)
    }

    /// The session's protocol version if it is live and belongs to `principal`.
    fn touch(&self, id: &str, principal: &[u8; 32]) -> Option<&'static str> {
        let now = Instant::now();
        let mut live = self.lock();
        let session = live.get_mut(id)?;
        if now.duration_since(session.last_used) >= self.idle {
            live.remove(id);
            return None;
        }
        if session.principal != *principal {
            return None;
        }
        session.last_used = now;
        Some(session.protocol_version)
    }

    fn close(&self, id: &str, principal: &[u8; 32]) -> bool {
        let mut live = self.lock();
        match live.get(id) {
            Some(s) if s.principal == *principal => live.remove(id).is_some(),
            _ => false,
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
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

    #[test]
    fn sessions_are_bound_to_their_principal_and_bounded() {
        let sessions = Sessions::new(3, 2, Duration::from_secs(60));
        let (alice, bob) = ([1; 32], [2; 32]);
        let a1 = sessions.open(alice, "2025-11-25").unwrap();
        assert_eq!(sessions.touch(&a1, &alice), Some("2025-11-25"));
        assert_eq!(
            sessions.touch(&a1, &bob),
            None,
            "another principal's session"
        );
        assert!(!sessions.close(&a1, &bob));
        let a2 = sessions.open(alice, "2025-06-18").unwrap();
        // A third session for alice evicts her least recently used one.
        assert_eq!(sessions.touch(&a2, &alice), Some("2025-06-18"));
        let a3 = sessions.open(alice, "2025-11-25").unwrap();
        assert_eq!(sessions.touch(&a1, &alice), None);
        assert!(sessions.touch(&a3, &alice).is_some());
        let _b1 = sessions.open(bob, "2025-11-25").unwrap();
        // The broker-wide bound refuses a fourth.
        assert_eq!(sessions.len(), 3);
        assert!(sessions.open([3; 32], "2025-11-25").is_none());
        assert!(sessions.close(&a3, &alice));
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::new(10, 10, Duration::from_millis(0));
        let id = sessions.open([1; 32], "2025-11-25").unwrap();
        assert_eq!(sessions.touch(&id, &[1; 32]), None);
    }

    #[test]
    fn messages_are_classified_and_malformed_ones_refused() {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        assert!(matches!(
            Message::parse(request),
            Ok(Message::Request { .. })
        ));
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(matches!(Message::parse(note), Ok(Message::Notification)));
        let response = json!({"jsonrpc": "2.0", "id": "x", "result": {}});
        assert!(matches!(Message::parse(response), Ok(Message::Response)));
        for bad in [
            json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": 7}),
            json!("ping"),
        ] {
            assert!(Message::parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn backend_answers_become_call_tool_results() {
        let plain = tool_result(json!({"echo": "hi"}), false);
        assert_eq!(plain["isError"], false);
        assert_eq!(plain["structuredContent"], json!({"echo": "hi"}));
        assert_eq!(plain["content"][0]["text"], r#"{"echo":"hi"}"#);
        let upstream = json!({"content": [{"type": "text", "text": "x"}], "isError": false});
        assert_eq!(tool_result(upstream.clone(), false), upstream);
        assert_eq!(tool_result(upstream, true)["isError"], true);
        assert_eq!(
            tool_result(json!("oops"), true)["content"][0]["text"],
            "oops"
        );
    }
}
