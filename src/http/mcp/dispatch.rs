//! The MCP methods: `initialize`, `ping`, `tools/list`, `tools/call` and the stateless
//! (2026-07-28) `server/discover`, each run against the pipeline; [`McpServer::post`] routes a
//! parsed message to them.
//!
//! Every HTTP request carries a bearer token verified by the token stage (once per request);
//! every `tools/call` runs the whole pipeline (tool, scope, arguments, Cedar, decision log,
//! dispatch) and every `tools/list` is filtered for the caller and recorded.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::envelope::{
    EnvelopeHeaders, Message, Reply, check_envelope, error_response, result, rpc_error,
    stamp_stateless, truncate,
};
use super::metadata_url;
use super::protocol::{
    LATEST_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSIONS, PROTOCOL_VERSION_META_KEY,
    PROTOCOL_VERSIONS, codes,
};
use super::session::{Sessions, missing_session, principal_key, unknown_session};
use crate::app::{App, CallError, CallRequest, Decision, Endpoint, Event, Outcome, ToolListing};
use crate::audit::{Reason, Stage, Verdict};
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
                verdict: Verdict::Deny,
                stage: Stage::Request,
                reason: Reason::OriginNotAllowed,
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
            Err(error) => return self.unreadable_body(app, &token, error).await,
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

    /// Answers a body that could not be read: a malformed one with a JSON-RPC parse error, an
    /// oversized or stalled one with its HTTP status; both recorded.
    async fn unreadable_body(&self, app: &App, token: &VerifiedToken, error: CallError) -> Reply {
        match error {
            // Recorded with the reason `/v1/...` records for the same body.
            error @ CallError::BadRequest(_) => {
                let detail = error.to_string();
                match record_refusal(app, token, error.body_reason(), detail.clone()).await {
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
                }
            }
            error => {
                let reason = error.body_reason();
                self.refuse(app, token, reason, error).await
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
                verdict: Verdict::Allow,
                stage: Stage::Session,
                reason: Reason::SessionClosed,
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
        reason: Reason,
        error: CallError,
    ) -> Reply {
        match record_refusal(app, token, reason, error.to_string()).await {
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
                .refuse(
                    app,
                    token,
                    Reason::TooManySessions,
                    CallError::TooManySessions,
                )
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
                verdict: Verdict::Allow,
                stage: Stage::Session,
                reason: Reason::SessionOpened,
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

/// Records a refused `/mcp` request of `token`'s (stage `request`): its decision id, or the
/// failure to record it.
async fn record_refusal(
    app: &App,
    token: &VerifiedToken,
    reason: Reason,
    detail: String,
) -> Result<String, CallError> {
    app.record_event(Event {
        endpoint: ENDPOINT,
        action: "mcp",
        token: Some(token),
        verdict: Verdict::Deny,
        stage: Stage::Request,
        reason,
        detail: Some(detail),
    })
    .await
}
/// Maps a pipeline outcome to MCP: a result (a tool's own error, a policy deny, invalid
/// arguments and a failed backend are `isError` results the agent can read and act on), a
/// JSON-RPC error (unknown tool, malformed params), or an HTTP-level failure (token, scope,
/// decision log).
fn call_reply(id: Value, decided: Result<Decision, CallError>) -> Reply {
    let Decision {
        id: decision_id,
        outcome,
        policies,
        ..
    } = match decided {
        Ok(decision) => decision,
        // Nothing was recorded: no decision id to name.
        Err(error) => {
            return Reply::Failed {
                decision_id: None,
                error,
            };
        }
    };
    let content = match outcome {
        Outcome::Answered { result, tool_error } => tool_result(result, tool_error.is_some()),
        Outcome::Authorized => tool_result(Value::Null, false),
        Outcome::Denied => error_result(&format!(
            "toolgate denied this call by policy (decision {decision_id})"
        )),
        Outcome::Failed(CallError::InvalidArguments(e)) => error_result(&e.to_string()),
        Outcome::Failed(CallError::Dispatch(e)) => {
            error_result(&format!("the tool backend failed: {e}"))
        }
        Outcome::Failed(CallError::UnknownTool(name)) => {
            return rpc_error(id, codes::INVALID_PARAMS, &format!("unknown tool `{name}`"));
        }
        Outcome::Failed(CallError::BadRequest(reason)) => {
            return rpc_error(id, codes::INVALID_PARAMS, &reason);
        }
        Outcome::Failed(CallError::PolicyFailure(_)) => {
            return rpc_error(
                id,
                codes::INTERNAL_ERROR,
                &format!("the call could not be authorized (decision {decision_id})"),
            );
        }
        Outcome::Failed(
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

fn failed(decision_id: String, error: CallError) -> Reply {
    let decision_id = (!matches!(error, CallError::Audit(_))).then_some(decision_id);
    Reply::Failed { decision_id, error }
}

#[cfg(test)]
mod tests {
    use super::*;

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
