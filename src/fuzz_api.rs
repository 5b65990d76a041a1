//! Entry points for the `cargo fuzz` targets in `fuzz/`: the parse functions the handlers
//! use, reachable without a server. Not a stable API; the targets are its only users.

use serde_json::Value;

use crate::app::CallError;
use crate::http::mcp::envelope::{EnvelopeHeaders, Message, check_envelope};
use crate::http::{AuthorizeBody, InvokeBody, parse_json};

/// Parses a `POST /v1/tools/{tool}/invoke` body as the handler does.
pub fn invoke_body(bytes: &[u8], max_depth: usize) -> Result<(), CallError> {
    parse_json::<InvokeBody>(bytes, max_depth).map(drop)
}

/// Parses a `POST /v1/authorize` body as the handler does.
pub fn authorize_body(bytes: &[u8], max_depth: usize) -> Result<(), CallError> {
    parse_json::<AuthorizeBody>(bytes, max_depth).map(drop)
}

/// Parses a `POST /mcp` body as the handler does: JSON within the limits, then the JSON-RPC
/// message, then (for a request) the stateless envelope against the given header values.
pub fn mcp_message(
    bytes: &[u8],
    max_depth: usize,
    protocol_version: Option<&str>,
    method_header: Option<&str>,
    name_header: Option<&str>,
) -> Result<(), String> {
    let value: Value = parse_json(bytes, max_depth).map_err(|e| e.to_string())?;
    let Message::Request { method, params, .. } = Message::parse(value)? else {
        return Ok(());
    };
    let headers = EnvelopeHeaders {
        protocol_version,
        method: method_header,
        name: name_header,
    };
    check_envelope(&method, &params, &headers).map_err(|e| e.to_string())
}
