//! The Model Context Protocol: toolgate as an MCP server to agents (`server`, mounted at
//! `/mcp` by the HTTP layer) and as an MCP client of upstream MCP servers (`upstream`).
//!
//! Both speak JSON-RPC 2.0 over Streamable HTTP with the `initialize` handshake (protocol
//! versions 2025-03-26 to 2025-11-25).

pub mod sse;
pub mod upstream;
pub mod upstreams;

/// Protocol versions toolgate speaks, newest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The version toolgate offers when a peer asks for one it does not speak.
pub const LATEST_PROTOCOL_VERSION: &str = PROTOCOL_VERSIONS[0];

/// The header naming the session after `initialize`.
pub const SESSION_HEADER: &str = "mcp-session-id";

/// The header naming the negotiated protocol version on every request after `initialize`.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";

/// JSON-RPC 2.0 error codes.
pub mod codes {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters (MCP also uses it for an unknown tool).
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
}
