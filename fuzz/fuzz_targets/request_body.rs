//! Fuzz target: the JSON request bodies of every endpoint that takes one, through the parse
//! functions the handlers use: `POST /v1/tools/{tool}/invoke`, `POST /v1/authorize`,
//! `POST /mcp` and `POST /admin/revocations`.
//!
//! Input: first byte picks the endpoint (modulo 4), the rest is the body as sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate::auth::revocation::RevocationRequest;
use toolgate::config::LimitsConfig;
use toolgate::fuzz_api;

fuzz_target!(|data: &[u8]| {
    let Some((&endpoint, body)) = data.split_first() else {
        return;
    };
    let limits = LimitsConfig::default();
    // The handlers read at most this much; a longer body never reaches the parser.
    if body.len() > limits.max_body_bytes {
        return;
    }
    let depth = limits.max_json_depth;
    match endpoint % 4 {
        0 => drop(fuzz_api::invoke_body(body, depth)),
        1 => drop(fuzz_api::authorize_body(body, depth)),
        2 => drop(fuzz_api::mcp_message(body, depth, None, None, None)),
        _ => drop(serde_json::from_slice::<RevocationRequest>(body)),
    }
});
