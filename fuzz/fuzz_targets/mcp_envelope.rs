//! Fuzz target: the MCP JSON-RPC envelope (`POST /mcp`): the message parse and the stateless
//! envelope check against the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers.
//!
//! Input: three header lines (an empty line is an absent header), then the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate::config::LimitsConfig;
use toolgate::fuzz_api;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let mut header = || parts.next().filter(|h| !h.is_empty());
    let (version, method, name) = (header(), header(), header());
    let body = parts.next().unwrap_or("");
    let limits = LimitsConfig::default();
    if body.len() > limits.max_body_bytes {
        return;
    }
    let _ = fuzz_api::mcp_message(
        body.as_bytes(),
        limits.max_json_depth,
        version,
        method,
        name,
    );
});
