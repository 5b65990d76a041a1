//! `[admin]`, `[mcp]` and `[api]`: who may call the admin API, the MCP endpoint agents
//! connect to, and what answers to agents carry.

use serde::Deserialize;

use super::{ConfigError, check_range, invalid};

/// `[admin]`: admin-API tokens come from the trusted issuers but carry a separate audience
/// (never one of an issuer's agent `audiences`) and an admin scope, so no agent token can
/// satisfy both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The `aud` an admin token must carry.
    pub audience: String,
    /// The scope an admin token must carry.
    pub scope: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            audience: "toolgate-admin".to_owned(),
            scope: "toolgate:admin".to_owned(),
        }
    }
}

/// `[mcp]`: toolgate as an MCP server at `/mcp` (Streamable HTTP). Tokens are validated by
/// the same token stage as the JSON API, so `resource` belongs in the issuers' `audiences`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Serve `/mcp` and its protected-resource metadata.
    pub enabled: bool,
    /// The canonical URI of the MCP endpoint (RFC 8707 resource, RFC 9728 `resource`); by
    /// default `http://<listen address>/mcp`. Set it to the public URL behind a proxy.
    pub resource: Option<String>,
    /// Authorization servers named in the metadata (default: every issuer's `issuer`).
    pub authorization_servers: Vec<String>,
    /// Scopes named in the metadata (default: every scope a registered tool requires).
    pub scopes_supported: Vec<String>,
    /// Browser origins allowed to call `/mcp`; a request with any other `Origin` header is
    /// refused with 403 (DNS-rebinding defence). Requests without `Origin` are not affected.
    pub allowed_origins: Vec<String>,
    /// Most live sessions in all; `initialize` beyond it is refused with 503.
    pub max_sessions: usize,
    /// Most live sessions per principal; a new one evicts that principal's least recently used.
    pub max_sessions_per_principal: usize,
    /// A session unused for this long is forgotten, in seconds.
    pub session_idle_seconds: u64,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            resource: None,
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            allowed_origins: Vec::new(),
            max_sessions: 10_000,
            max_sessions_per_principal: 32,
            session_idle_seconds: 3600,
        }
    }
}

/// `[api]`: what answers to agents carry besides the decision.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Return the ids of the determining policies (and of policies whose evaluation errored)
    /// in `/v1/authorize`, `/v1/tools/{tool}/invoke` and MCP `tools/call` answers. Off unless
    /// set (on with `serve --dev`): an agent could use them to map the forbids. Records and
    /// the admin API always hold them.
    pub expose_determining_policies: Option<bool>,
}

impl ApiConfig {
    /// Whether answers to agents carry the determining policies.
    pub fn exposes_determining_policies(&self) -> bool {
        self.expose_determining_policies.unwrap_or(false)
    }
}

impl AdminConfig {
    /// Checks `[admin]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.audience.is_empty() || self.scope.is_empty() {
            return Err(invalid("admin", "`audience` and `scope` must not be empty"));
        }
        Ok(())
    }
}

impl McpConfig {
    /// Checks `[mcp]`: session bounds, and `resource` an absolute http(s) URL.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("mcp.max_sessions", self.max_sessions, 1, 1_000_000)?;
        check_range(
            "mcp.max_sessions_per_principal",
            self.max_sessions_per_principal,
            1,
            self.max_sessions,
        )?;
        check_range(
            "mcp.session_idle_seconds",
            self.session_idle_seconds as usize,
            10,
            7 * 86_400,
        )?;
        if let Some(resource) = &self.resource {
            match reqwest::Url::parse(resource) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.fragment().is_none() => {
                }
                _ => {
                    return Err(invalid(
                        "mcp.resource",
                        "must be an absolute http(s) URL without a fragment",
                    ));
                }
            }
        }
        Ok(())
    }
}
