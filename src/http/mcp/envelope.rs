//! The JSON-RPC envelope of `/mcp`: parsing a message, the stateless (2026-07-28)
//! envelope checks, and the [`Reply`] every method answers with.

use serde_json::{Value, json};

use super::protocol::{
    CLIENT_CAPABILITIES_META_KEY, MODERN_PROTOCOL_VERSIONS, PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY, codes,
};
use crate::app::CallError;

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
pub(crate) fn decode_header_value(value: &str) -> Option<String> {
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
pub(crate) fn stamp_stateless(reply: Reply) -> Reply {
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

pub(crate) fn result(id: Value, result: Value, decision_id: Option<String>) -> Reply {
    Reply::Message {
        message: json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        decision_id,
        session_id: None,
    }
}

pub(crate) fn rpc_error(id: Value, code: i64, message: &str) -> Reply {
    Reply::Message {
        message: error_response(id, code, message),
        decision_id: None,
        session_id: None,
    }
}

pub(crate) fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
