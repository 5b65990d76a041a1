//! `[[tools]]`: the registered tools, their input schemas, annotations and backends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// The settings above as validation parsed them, with defaults applied; `None` only
    /// before validation, which every load runs (and `serve --dev` runs again after its edits).
    #[serde(skip)]
    pub checked: Option<CheckedTool>,
}

/// A tool's settings as validation parsed them once, for the registry to take as they are.
#[derive(Debug, Clone)]
pub struct CheckedTool {
    /// Where the input schema comes from.
    pub input_schema: InputSchemaSource,
    /// Behaviour hints, absent ones given the cautious default.
    pub annotations: Annotations,
    /// Where calls go.
    pub backend: BackendTarget,
}

/// Where a tool's input schema comes from: exactly one of `input_schema`, `input_schema_file`.
#[derive(Debug, Clone)]
pub enum InputSchemaSource {
    /// Given inline.
    Inline(serde_json::Value),
    /// Read from this file (relative to the config file's directory).
    File(PathBuf),
}

/// A tool backend, parsed.
#[derive(Debug, Clone)]
pub enum BackendTarget {
    /// An HTTP endpoint.
    Http(Box<HttpTarget>),
    /// A built-in demo backend.
    Demo(DemoBackend),
}

/// An HTTP tool backend: its URL parsed, its defaults applied.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The endpoint, an http or https URL without credentials.
    pub url: reqwest::Url,
    /// `aud` of the broker's assertions: as configured, or the URL's origin.
    pub audience: String,
    /// Total time allowed for one call.
    pub timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Most calls in flight.
    pub max_concurrent: usize,
    /// Consecutive failures that open the circuit breaker.
    pub circuit_failures: u32,
    /// How long an open circuit refuses calls.
    pub circuit_cooldown: Duration,
    /// Retries on connection errors: as configured (default 1) for idempotent tools, else 0.
    pub retries: u32,
    /// Environment variable holding the static credential.
    pub credential_env: Option<String>,
    /// File holding the static credential.
    pub credential_file: Option<PathBuf>,
}

/// The built-in demo backends (`serve --dev` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoBackend {
    /// `echo`: returns its arguments.
    Echo,
    /// `files`: reads demo files.
    Files,
    /// `payments`: a pretend payments API.
    Payments,
}

/// Behaviour hints about a tool, as the `Tool` entity's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    /// The tool modifies nothing.
    pub read_only: bool,
    /// The tool may destroy data.
    pub destructive: bool,
    /// Repeating a call has no further effect.
    pub idempotent: bool,
    /// The tool reaches outside systems.
    pub open_world: bool,
}

impl DemoBackend {
    /// The name the config gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Files => "files",
            Self::Payments => "payments",
        }
    }
}

impl Annotations {
    /// What an unannotated tool is taken to be: not read-only, destructive, not idempotent,
    /// open world; assuming less could let a tool past a policy on these attributes.
    pub const CAUTIOUS: Self = Self {
        read_only: false,
        destructive: true,
        idempotent: false,
        open_world: true,
    };
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

impl AnnotationsConfig {
    /// `base` with every hint the operator set replaced by the configured value.
    pub fn over(&self, base: Annotations) -> Annotations {
        Annotations {
            read_only: self.read_only.unwrap_or(base.read_only),
            destructive: self.destructive.unwrap_or(base.destructive),
            idempotent: self.idempotent.unwrap_or(base.idempotent),
            open_world: self.open_world.unwrap_or(base.open_world),
        }
    }
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

/// Checks `[[tools]]` (names, one input schema each, no id twice, and each backend) and
/// fills each tool's `checked` settings.
pub(super) fn validate(tools: &mut [ToolConfig]) -> Result<(), ConfigError> {
    let mut ids = BTreeSet::new();
    for (i, tool) in tools.iter_mut().enumerate() {
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
        let input_schema = match (&tool.input_schema, &tool.input_schema_file) {
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
            (Some(inline), None) => InputSchemaSource::Inline(inline.clone()),
            (None, Some(file)) => InputSchemaSource::File(file.clone()),
        };
        let annotations = tool.annotations.over(Annotations::CAUTIOUS);
        let backend = tool.backend.validate(&key, tool.annotations.idempotent)?;
        tool.checked = Some(CheckedTool {
            input_schema,
            annotations,
            backend,
        });
    }
    Ok(())
}

impl BackendConfig {
    /// Checks one tool's backend and parses it; `key` names a field of the tool, and only a
    /// tool annotated `idempotent` may retry.
    fn validate(
        &self,
        key: &dyn Fn(&str) -> String,
        idempotent: Option<bool>,
    ) -> Result<BackendTarget, ConfigError> {
        Ok(match self {
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
                BackendTarget::Http(Box::new(HttpTarget {
                    audience: audience
                        .clone()
                        .unwrap_or_else(|| parsed.origin().ascii_serialization()),
                    url: parsed,
                    timeout: Duration::from_millis(*timeout_ms),
                    max_response_bytes: *max_response_bytes,
                    max_concurrent: *max_concurrent,
                    circuit_failures: *circuit_failures,
                    circuit_cooldown: Duration::from_millis(*circuit_cooldown_ms),
                    retries: if idempotent == Some(true) {
                        retries.unwrap_or(1)
                    } else {
                        0
                    },
                    credential_env: credential_env.clone(),
                    credential_file: credential_file.clone(),
                }))
            }
            BackendConfig::Demo { name } => BackendTarget::Demo(match name.as_str() {
                "echo" => DemoBackend::Echo,
                "files" => DemoBackend::Files,
                "payments" => DemoBackend::Payments,
                _ => {
                    return Err(invalid(
                        key("backend.name"),
                        format!(
                            "unknown demo backend `{name}` (expected `echo`, `files` or `payments`)"
                        ),
                    ));
                }
            }),
        })
    }
}
