//! The MCP server's protocol constants: versions, headers, `_meta` keys and JSON-RPC error
//! codes. The MCP client of upstream servers is a tool backend ([`crate::tools::upstream`]),
//! which holds the constants both share; they are re-exported here for the server.
//!
//! Both speak JSON-RPC 2.0 over Streamable HTTP. The server also speaks the stateless
//! 2026-07-28 revision (no handshake, no session: every request carries its version in
//! `params._meta`).

pub use crate::tools::upstream::protocol::{
    LATEST_PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, PROTOCOL_VERSIONS, SESSION_HEADER,
};

/// Stateless protocol versions (per-request envelope, `server/discover`) the server speaks.
pub const MODERN_PROTOCOL_VERSIONS: [&str; 1] = ["2026-07-28"];

/// The `params._meta` key carrying a stateless request's protocol version.
pub const PROTOCOL_VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";

/// The `params._meta` key carrying a stateless request's client capabilities.
pub const CLIENT_CAPABILITIES_META_KEY: &str = "io.modelcontextprotocol/clientCapabilities";

/// The `_meta` key naming the server on stateless results.
pub const SERVER_INFO_META_KEY: &str = "io.modelcontextprotocol/serverInfo";

/// The header mirroring a stateless request's method.
pub const METHOD_HEADER: &str = "mcp-method";

/// The header mirroring a stateless `tools/call`'s tool name.
pub const NAME_HEADER: &str = "mcp-name";

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
    /// A stateless request's headers disagree with its body (2026-07-28).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// A stateless request names a protocol version the server does not speak (2026-07-28).
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

    /// The HTTP status for an error on a stateless (2026-07-28) request.
    pub fn http_status(code: i64) -> u16 {
        match code {
            PARSE_ERROR
            | INVALID_REQUEST
            | INVALID_PARAMS
            | HEADER_MISMATCH
            | UNSUPPORTED_PROTOCOL_VERSION => 400,
            METHOD_NOT_FOUND => 404,
            _ => 200,
        }
    }
}
