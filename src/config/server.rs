//! `[server]` and `[limits]`: where the broker listens and keeps its state, and the bounds on
//! everything an outsider controls.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, check_range, invalid};

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory for the decision log, dev keys and other state.
    pub state_dir: PathBuf,
    /// `iss` of the assertions the broker signs for tool backends.
    pub broker_issuer: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            state_dir: PathBuf::from(".toolgate"),
            broker_issuer: "toolgate".to_owned(),
        }
    }
}

/// `[limits]`: every size an outsider controls is bounded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted in a request body.
    pub max_json_depth: usize,
    /// Largest total size of request headers, in bytes.
    pub max_header_bytes: usize,
    /// Largest compact JWT accepted, checked before any decoding.
    pub max_token_bytes: usize,
    /// Verified tokens remembered (skipping signature checks, never time, revocation or
    /// replay checks); 0 turns the cache off.
    pub token_cache_entries: usize,
    /// Longest wait for a complete request head, from when a connection opens or ends its
    /// previous response: the idle keep-alive timeout.
    pub idle_timeout_ms: u64,
    /// Longest time from the first byte of a request head to its end.
    pub header_read_timeout_ms: u64,
    /// Longest time to receive a whole request body once its head has arrived.
    pub body_read_timeout_ms: u64,
    /// Most connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_json_depth: 32,
            max_header_bytes: 16 * 1024,
            // 8 KiB holds any sane access token; bigger ones are a parsing-cost attack.
            max_token_bytes: 8 * 1024,
            token_cache_entries: 10_000,
            // Short enough that stalled or idle sockets cannot pile up to `max_connections`
            // within a few seconds of an attack; long enough for any honest client.
            idle_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            // Well under the usual 1024 open-file limit, leaving room for the log, backends
            // and key fetches.
            max_connections: 512,
        }
    }
}

impl ServerConfig {
    /// Checks `[server]`; errors name the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.broker_issuer.is_empty() {
            return Err(invalid("server.broker_issuer", "must not be empty"));
        }
        Ok(())
    }
}

impl LimitsConfig {
    /// Checks `[limits]`: each bound within its range, and a token within the headers.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        check_range(
            "limits.max_body_bytes",
            l.max_body_bytes,
            1024,
            16 * 1024 * 1024,
        )?;
        check_range("limits.max_json_depth", l.max_json_depth, 2, 128)?;
        check_range(
            "limits.max_header_bytes",
            l.max_header_bytes,
            1024,
            256 * 1024,
        )?;
        check_range("limits.max_token_bytes", l.max_token_bytes, 512, 64 * 1024)?;
        check_range(
            "limits.idle_timeout_ms",
            l.idle_timeout_ms as usize,
            100,
            3_600_000,
        )?;
        check_range(
            "limits.header_read_timeout_ms",
            l.header_read_timeout_ms as usize,
            100,
            300_000,
        )?;
        check_range(
            "limits.body_read_timeout_ms",
            l.body_read_timeout_ms as usize,
            100,
            300_000,
        )?;
        check_range("limits.max_connections", l.max_connections, 1, 65_536)?;
        check_range(
            "limits.token_cache_entries",
            l.token_cache_entries,
            0,
            1_000_000,
        )?;
        if l.max_token_bytes + 64 > l.max_header_bytes {
            return Err(invalid(
                "limits.max_token_bytes",
                "must leave room within `limits.max_header_bytes`",
            ));
        }
        Ok(())
    }
}
