//! MCP protocol constants that the upstream client and toolgate's own MCP server share.
//!
//! They live here, in the tool backend at the ground of the MCP code, so that the client
//! needs nothing from the server; `crate::http::mcp::protocol` re-exports them for the server.

/// Protocol versions toolgate speaks, newest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The version toolgate offers when a peer asks for one it does not speak.
pub const LATEST_PROTOCOL_VERSION: &str = PROTOCOL_VERSIONS[0];

/// The header naming the session after `initialize`.
pub const SESSION_HEADER: &str = "mcp-session-id";

/// The header naming the negotiated protocol version on every request after `initialize`.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
