//! `[[tools]]`: the registered tools, their input schemas, annotations and backends.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, check_name, check_range, invalid};

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

pub(super) fn default_timeout_ms() -> u64 {
    10_000
}
pub(super) fn default_max_response_bytes() -> usize {
    1024 * 1024
}
pub(super) fn default_max_concurrent() -> usize {
    64
}
pub(super) fn default_circuit_failures() -> u32 {
    5
}
pub(super) fn default_circuit_cooldown_ms() -> u64 {
    30_000
}

/// Most retries a tool may be configured with: each one is another call the backend must absorb.
pub const MAX_RETRIES: u32 = 5;

/// Checks `[[tools]]`: names, one input schema each, no id twice, and each backend.
pub(super) fn validate(tools: &[ToolConfig]) -> Result<(), ConfigError> {
    let mut ids = BTreeSet::new();
    for (i, tool) in tools.iter().enumerate() {
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
        tool.backend.validate(&key, tool.annotations.idempotent)?;
    }
    Ok(())
}

impl BackendConfig {
    /// Checks one tool's backend; `key` names a field of the tool, and only a tool annotated
    /// `idempotent` may retry.
    fn validate(
        &self,
        key: &dyn Fn(&str) -> String,
        idempotent: Option<bool>,
    ) -> Result<(), ConfigError> {
        match self {
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
                    if *n > 0 && idempotent != Some(true) {
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
        Ok(())
    }
}
