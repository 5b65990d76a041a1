//! Stage 0: the configuration file `toolgate.toml`, environment overrides, and validation at load.
//!
//! Every section uses `#[serde(deny_unknown_fields)]`, so a typo is an error that names the key
//! rather than a setting silently ignored. Relative paths resolve against the directory of the
//! config file. Any key can be overridden from the environment with `TOOLGATE__SECTION__KEY`
//! (array elements by index: `TOOLGATE__ISSUERS__0__JWKS_FILE`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod upstream;
pub use upstream::{UpstreamConfig, UpstreamKind};

/// Algorithms an issuer may be configured with: asymmetric signatures only (RFC 8725 §3.1).
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Clock-skew tolerance is capped: a larger leeway silently extends every token's life.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "TOOLGATE__";

/// An error loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected shape.
    #[error("invalid config `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, naming the key.
        message: String,
    },
    /// An environment override could not be applied.
    #[error("invalid environment override `{var}`: {reason}")]
    Env {
        /// The variable name.
        var: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config key `{key}`: {reason}")]
    Invalid {
        /// The key, e.g. `issuers[0].algorithms`.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and state directory.
    #[serde(default)]
    pub server: ServerConfig,
    /// Bounds on everything an outsider controls.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Trusted token issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Where the Cedar policies and schema live.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The decision log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Registered tools.
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
    /// Upstream MCP servers whose tools are registered behind the broker.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Who may call the admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The MCP endpoint (`/mcp`) agents connect to.
    #[serde(default)]
    pub mcp: McpConfig,
    /// What the JSON API and MCP answers tell the agent.
    #[serde(default)]
    pub api: ApiConfig,
    /// Directory that relative paths resolve against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

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

/// `[[issuers]]`: one trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; at least one is mandatory.
    pub audiences: Vec<String>,
    /// A JWKS file holding the issuer's public keys (one of `jwks_file`, `jwks_url`,
    /// `discovery`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched and refreshed in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Find the JWKS URL by OIDC discovery (`{issuer}/.well-known/openid-configuration`).
    #[serde(default)]
    pub discovery: bool,
    /// How remote keys are fetched and refreshed.
    #[serde(default)]
    pub remote_keys: RemoteKeysConfig,
    /// Accepted signature algorithms (asymmetric only).
    pub algorithms: Vec<String>,
    /// Clock-skew tolerance for `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Longest accepted token lifetime `exp - iat`, in seconds.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_seconds: u64,
    /// Claim holding the caller's groups (mapped to Cedar `Group` parents).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Require the RFC 9068 `typ: at+jwt` header (turn off only for IdPs that do not send it).
    #[serde(default = "default_true")]
    pub require_at_jwt_typ: bool,
    /// Refuse tokens without a `jti`.
    #[serde(default)]
    pub require_jti: bool,
    /// Accept each `jti` once (implies `require_jti`); a second use is `token_replayed`.
    #[serde(default)]
    pub jti_single_use: bool,
}

fn default_true() -> bool {
    true
}

/// `[issuers.remote_keys]`: refresh and fetch bounds for `jwks_url` and `discovery`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteKeysConfig {
    /// Shortest refresh interval, whatever `Cache-Control` says.
    pub min_refresh_seconds: u64,
    /// Longest refresh interval; also used when the response has no `max-age`.
    pub max_refresh_seconds: u64,
    /// Least time between two refetches caused by an unknown `kid`: attacker-chosen `kid`s
    /// cannot make us fetch more often than this.
    pub unknown_kid_min_interval_seconds: u64,
    /// How long the last good key set keeps serving while the IdP is unreachable; after
    /// that the issuer fails closed (`keys_unavailable`).
    pub max_staleness_seconds: u64,
    /// Total time allowed for one fetch.
    pub fetch_timeout_ms: u64,
    /// Largest discovery document or JWKS accepted, in bytes.
    pub max_response_bytes: usize,
}

impl Default for RemoteKeysConfig {
    fn default() -> Self {
        Self {
            min_refresh_seconds: 60,
            max_refresh_seconds: 3600,
            unknown_kid_min_interval_seconds: 10,
            // Long enough to ride out an IdP outage, short enough that a key removed for
            // compromise stops working within the day even if we cannot reach the IdP.
            max_staleness_seconds: 6 * 3600,
            fetch_timeout_ms: 5000,
            max_response_bytes: 256 * 1024,
        }
    }
}

fn default_leeway() -> u64 {
    30
}
fn default_max_lifetime() -> u64 {
    // Short-lived tokens limit what a stolen token is worth (OWASP NHI7).
    3600
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}

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

/// `[policy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory of `*.cedar` policy files.
    pub dir: PathBuf,
    /// The Cedar schema stub (entity types, common types, the `call_tool` group).
    pub schema: PathBuf,
    /// How often the policy directory is checked for changes, in ms; `0` turns the watcher
    /// off (SIGHUP and `POST /admin/policies/reload` still reload).
    pub watch_interval_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("policies"),
            schema: PathBuf::from("schemas/toolgate.cedarschema"),
            watch_interval_ms: 1000,
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

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The SQLite decision log; default `<state_dir>/decisions.db`.
    pub db: Option<PathBuf>,
    /// SQLite durability: `full` (survives power loss) or `normal` (survives a process crash).
    pub synchronous: Synchronous,
    /// How long a write waits for a lock held by another process before failing.
    pub busy_timeout_ms: u64,
    /// Most records committed in one transaction.
    pub max_batch: usize,
    /// A signed checkpoint after this many records (0: not by count).
    pub checkpoint_every: u64,
    /// A signed checkpoint after this many seconds with uncovered records (0: not by time).
    pub checkpoint_interval_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            db: None,
            synchronous: Synchronous::Full,
            busy_timeout_ms: 2000,
            max_batch: 256,
            checkpoint_every: 1000,
            checkpoint_interval_seconds: 60,
        }
    }
}

/// SQLite `synchronous` setting for the decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: survives power loss.
    Full,
    /// fsync at WAL checkpoints: survives a process crash, not power loss.
    Normal,
}

/// `[[tools]]`: one registered tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The tool's name within its server.
    pub name: String,
    /// The server (backend group) the tool belongs to; the public id is `<server>___<name>`.
    pub server: String,
    /// What the tool does, shown to agents.
    #[serde(default)]
    pub description: String,
    /// The input JSON Schema, inline.
    pub input_schema: Option<serde_json::Value>,
    /// The input JSON Schema, from a file.
    pub input_schema_file: Option<PathBuf>,
    /// Scopes the token must carry to call the tool.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Top-level argument names redacted in the decision log.
    #[serde(default)]
    pub sensitive_arguments: Vec<String>,
    /// Behaviour hints; absent ones take the cautious default.
    #[serde(default)]
    pub annotations: AnnotationsConfig,
    /// Where calls go.
    pub backend: BackendConfig,
}

/// MCP-style tool annotations.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationsConfig {
    /// The tool does not modify anything (default false).
    pub read_only: Option<bool>,
    /// The tool may destroy data (default true).
    pub destructive: Option<bool>,
    /// Repeating a call has no further effect (default false).
    pub idempotent: Option<bool>,
    /// The tool reaches outside systems (default true).
    pub open_world: Option<bool>,
}

/// A tool backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// An HTTP endpoint that receives the arguments as a JSON POST body.
    Http {
        /// Full URL of the endpoint.
        url: String,
        /// Total time allowed for the call, in milliseconds.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        /// Largest response body accepted, in bytes.
        #[serde(default = "default_max_response_bytes")]
        max_response_bytes: usize,
        /// Most calls in flight to this backend; more are refused with 503.
        #[serde(default = "default_max_concurrent")]
        max_concurrent: usize,
        /// Consecutive failures that open the circuit breaker.
        #[serde(default = "default_circuit_failures")]
        circuit_failures: u32,
        /// How long an open circuit refuses calls before letting one probe through, in ms.
        #[serde(default = "default_circuit_cooldown_ms")]
        circuit_cooldown_ms: u64,
        /// Retries on connection errors; only idempotent tools may retry (default 1 for them).
        retries: Option<u32>,
        /// Environment variable holding a static credential sent as `Authorization: Bearer`.
        credential_env: Option<String>,
        /// File holding a static credential sent as `Authorization: Bearer`.
        credential_file: Option<PathBuf>,
        /// `aud` of the broker's assertions for this backend (default: the URL's origin).
        audience: Option<String>,
    },
    /// One of the built-in demo backends; only with `serve --dev`.
    Demo {
        /// `echo` or `files`.
        name: String,
    },
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_response_bytes() -> usize {
    1024 * 1024
}
fn default_max_concurrent() -> usize {
    64
}
fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_cooldown_ms() -> u64 {
    30_000
}

/// Most retries a tool may be configured with: each one is another call the backend must absorb.
pub const MAX_RETRIES: u32 = 5;

impl Config {
    /// Reads, overrides from the environment, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_owned)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_toml_str(&text, path, &base_dir, std::env::vars())
    }

    /// Parses config text with the given environment, resolving paths against `base_dir`.
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (var, value) in overrides {
            apply_env_override(&mut table, &var, &value)?;
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        config.base_dir = base_dir.to_owned();
        config.validate()?;
        Ok(config)
    }

    /// Resolves a configured path against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The state directory, resolved.
    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.server.state_dir)
    }

    /// The decision log file, resolved.
    pub fn audit_db(&self) -> PathBuf {
        match &self.audit.db {
            Some(p) => self.resolve(p),
            None => self.state_dir().join("decisions.db"),
        }
    }

    /// Checks ranges and consistency; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
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
        if self.policy.watch_interval_ms != 0 {
            check_range(
                "policy.watch_interval_ms",
                self.policy.watch_interval_ms as usize,
                100,
                3_600_000,
            )?;
        }
        if l.max_token_bytes + 64 > l.max_header_bytes {
            return Err(invalid(
                "limits.max_token_bytes",
                "must leave room within `limits.max_header_bytes`",
            ));
        }
        if self.server.broker_issuer.is_empty() {
            return Err(invalid("server.broker_issuer", "must not be empty"));
        }
        if self.admin.audience.is_empty() || self.admin.scope.is_empty() {
            return Err(invalid("admin", "`audience` and `scope` must not be empty"));
        }
        check_range("audit.max_batch", self.audit.max_batch, 1, 4096)?;
        check_range("mcp.max_sessions", self.mcp.max_sessions, 1, 1_000_000)?;
        check_range(
            "mcp.max_sessions_per_principal",
            self.mcp.max_sessions_per_principal,
            1,
            self.mcp.max_sessions,
        )?;
        check_range(
            "mcp.session_idle_seconds",
            self.mcp.session_idle_seconds as usize,
            10,
            7 * 86_400,
        )?;
        if let Some(resource) = &self.mcp.resource {
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
        check_range(
            "audit.busy_timeout_ms",
            self.audit.busy_timeout_ms as usize,
            0,
            60_000,
        )?;

        let mut issuers = BTreeSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            let key = |field: &str| format!("issuers[{i}].{field}");
            if iss.issuer.is_empty() {
                return Err(invalid(key("issuer"), "must not be empty"));
            }
            if !issuers.insert(iss.issuer.as_str()) {
                return Err(invalid(
                    key("issuer"),
                    format!("`{}` is listed twice", iss.issuer),
                ));
            }
            if iss.audiences.is_empty() || iss.audiences.iter().any(String::is_empty) {
                return Err(invalid(
                    key("audiences"),
                    "at least one non-empty audience is required; there is no audience-optional mode",
                ));
            }
            if iss.algorithms.is_empty() {
                return Err(invalid(
                    key("algorithms"),
                    "at least one algorithm is required",
                ));
            }
            for alg in &iss.algorithms {
                if !ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
                    return Err(invalid(
                        key("algorithms"),
                        format!(
                            "`{alg}` is not allowed: only asymmetric algorithms ({}) are accepted; `none` and HMAC never are",
                            ASYMMETRIC_ALGORITHMS.join(", ")
                        ),
                    ));
                }
            }
            if iss.leeway_seconds > MAX_LEEWAY_SECONDS {
                return Err(invalid(
                    key("leeway_seconds"),
                    format!("must be at most {MAX_LEEWAY_SECONDS}"),
                ));
            }
            check_range(
                &key("max_lifetime_seconds"),
                iss.max_lifetime_seconds as usize,
                60,
                86_400,
            )?;
            if iss.audiences.contains(&self.admin.audience) {
                return Err(invalid(
                    key("audiences"),
                    format!(
                        "`{}` is the admin audience (`admin.audience`); agent audiences must differ",
                        self.admin.audience
                    ),
                ));
            }
            if iss.groups_claim.is_empty() {
                return Err(invalid(key("groups_claim"), "must not be empty"));
            }
            let sources = usize::from(iss.jwks_file.is_some())
                + usize::from(iss.jwks_url.is_some())
                + usize::from(iss.discovery);
            if sources != 1 {
                return Err(invalid(
                    key("jwks_file"),
                    "give exactly one key source: `jwks_file`, `jwks_url` or `discovery = true`",
                ));
            }
            if let Some(url) = &iss.jwks_url {
                check_http_url(&key("jwks_url"), url)?;
            }
            if iss.discovery {
                check_http_url(&key("issuer"), &iss.issuer)?;
            }
            let r = &iss.remote_keys;
            check_range(
                &key("remote_keys.min_refresh_seconds"),
                r.min_refresh_seconds as usize,
                1,
                86_400,
            )?;
            check_range(
                &key("remote_keys.max_refresh_seconds"),
                r.max_refresh_seconds as usize,
                r.min_refresh_seconds as usize,
                86_400,
            )?;
            check_range(
                &key("remote_keys.unknown_kid_min_interval_seconds"),
                r.unknown_kid_min_interval_seconds as usize,
                1,
                3600,
            )?;
            check_range(
                &key("remote_keys.max_staleness_seconds"),
                r.max_staleness_seconds as usize,
                r.min_refresh_seconds as usize,
                7 * 86_400,
            )?;
            check_range(
                &key("remote_keys.fetch_timeout_ms"),
                r.fetch_timeout_ms as usize,
                100,
                60_000,
            )?;
            check_range(
                &key("remote_keys.max_response_bytes"),
                r.max_response_bytes,
                1024,
                4 * 1024 * 1024,
            )?;
        }

        let mut ids = BTreeSet::new();
        for (i, tool) in self.tools.iter().enumerate() {
            let key = |field: &str| format!("tools[{i}].{field}");
            check_name(&key("name"), &tool.name)?;
            check_name(&key("server"), &tool.server)?;
            let id = format!("{}___{}", tool.server, tool.name);
            if !ids.insert(id.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("tool `{id}` is registered twice"),
                ));
            }
            match (&tool.input_schema, &tool.input_schema_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        key("input_schema"),
                        "give `input_schema` or `input_schema_file`, not both",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        key("input_schema"),
                        "an input schema is required (`input_schema` or `input_schema_file`)",
                    ));
                }
                _ => {}
            }
            match &tool.backend {
                BackendConfig::Http {
                    url,
                    timeout_ms,
                    max_response_bytes,
                    max_concurrent,
                    circuit_failures,
                    circuit_cooldown_ms,
                    retries,
                    credential_env,
                    credential_file,
                    audience,
                } => {
                    let parsed = reqwest::Url::parse(url)
                        .map_err(|e| invalid(key("backend.url"), format!("`{url}`: {e}")))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(invalid(key("backend.url"), "must be an http or https URL"));
                    }
                    check_range(&key("backend.timeout_ms"), *timeout_ms as usize, 1, 300_000)?;
                    check_range(
                        &key("backend.max_response_bytes"),
                        *max_response_bytes,
                        1,
                        64 * 1024 * 1024,
                    )?;
                    check_range(&key("backend.max_concurrent"), *max_concurrent, 1, 10_000)?;
                    check_range(
                        &key("backend.circuit_failures"),
                        *circuit_failures as usize,
                        1,
                        1_000,
                    )?;
                    check_range(
                        &key("backend.circuit_cooldown_ms"),
                        *circuit_cooldown_ms as usize,
                        1,
                        3_600_000,
                    )?;
                    if let Some(n) = retries {
                        check_range(
                            &key("backend.retries"),
                            *n as usize,
                            0,
                            MAX_RETRIES as usize,
                        )?;
                        if *n > 0 && tool.annotations.idempotent != Some(true) {
                            return Err(invalid(
                                key("backend.retries"),
                                "only tools annotated `idempotent = true` may retry",
                            ));
                        }
                    }
                    if credential_env.is_some() && credential_file.is_some() {
                        return Err(invalid(
                            key("backend.credential_env"),
                            "give `credential_env` or `credential_file`, not both",
                        ));
                    }
                    if parsed.username() != "" || parsed.password().is_some() {
                        return Err(invalid(
                            key("backend.url"),
                            "must not carry credentials; use `credential_env` or `credential_file`",
                        ));
                    }
                    if audience.as_ref().is_some_and(String::is_empty) {
                        return Err(invalid(key("backend.audience"), "must not be empty"));
                    }
                }
                BackendConfig::Demo { name } => {
                    if !matches!(name.as_str(), "echo" | "files" | "payments") {
                        return Err(invalid(
                            key("backend.name"),
                            format!(
                                "unknown demo backend `{name}` (expected `echo`, `files` or `payments`)"
                            ),
                        ));
                    }
                }
            }
        }
        upstream::validate(self)?;
        Ok(())
    }
}

/// Tool and server names: ASCII letters, digits, `_`, `-`, `.`; no `___` (the id separator).
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 64 {
        return Err(invalid(key, "must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid(
            key,
            format!("`{name}` may contain only ASCII letters, digits, `_`, `-` and `.`"),
        ));
    }
    if name.contains("___") {
        return Err(invalid(
            key,
            format!("`{name}` must not contain `___`, the server/tool separator"),
        ));
    }
    Ok(())
}

fn check_http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(key, format!("`{url}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(key, format!("`{url}` is not an http or https URL")));
    }
    Ok(())
}

fn check_range(key: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(key, format!("{value} is outside {min}..={max}")));
    }
    Ok(())
}

/// Applies `TOOLGATE__A__B=value` to `table["a"]["b"]`. The value is read as a TOML value
/// when it parses as one (numbers, booleans, arrays), otherwise as a string.
fn apply_env_override(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let env_error = |reason: &str| ConfigError::Env {
        var: var.to_owned(),
        reason: reason.to_owned(),
    };
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(env_error("empty key segment"));
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));

    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_path(&mut root, &path, value).map_err(env_error);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

fn set_path(
    node: &mut toml::Value,
    path: &[String],
    value: toml::Value,
) -> Result<(), &'static str> {
    let Some((head, rest)) = path.split_first() else {
        return Err("no key");
    };
    let child = match node {
        toml::Value::Table(t) => {
            if rest.is_empty() {
                t.insert(head.clone(), value);
                return Ok(());
            }
            t.entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        }
        toml::Value::Array(items) => {
            let index: usize = head
                .parse()
                .map_err(|_| "array elements are addressed by index")?;
            let item = items.get_mut(index).ok_or("array index out of range")?;
            if rest.is_empty() {
                *item = value;
                return Ok(());
            }
            item
        }
        _ => return Err("key path goes through a non-table value"),
    };
    set_path(child, rest, value)
}

#[cfg(test)]
mod tests;
