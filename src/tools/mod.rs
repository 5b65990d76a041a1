//! Stages 2 and 5: the tool registry (lookup and argument check) and dispatch to backends.
//!
//! A tool's public id is `<server>___<name>`; the same id names its Cedar action and resource.

pub mod annotations;
pub mod assertion;
pub mod breaker;
pub mod broker_keys;
pub mod dispatch;
pub mod input;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use dispatch::{Caller, DispatchError, DispatchOutcome, Dispatcher};

pub use crate::config::Annotations;
use crate::config::{BackendTarget, Config, DemoBackend, InputSchemaSource, ToolConfig};

/// Most argument-validation errors reported for one call.
const MAX_REPORTED_ARGUMENT_ERRORS: usize = 5;

/// An error building the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The schema file could not be read or parsed.
    #[error("tool `{tool}`: cannot read input schema `{path}`: {reason}")]
    SchemaFile {
        /// The tool id.
        tool: String,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The input schema is not a valid JSON Schema.
    #[error("tool `{tool}`: invalid input schema: {reason}")]
    InvalidSchema {
        /// The tool id.
        tool: String,
        /// What the validator said.
        reason: String,
    },
    /// The config was not validated, so its typed settings are missing; refused, not guessed.
    #[error("tool `{tool}`: config not validated")]
    Unvalidated {
        /// The tool id.
        tool: String,
    },
    /// The backend credential could not be read.
    #[error("tool `{tool}`: backend credential from {source_name}: {reason}")]
    Credential {
        /// The tool id.
        tool: String,
        /// `env `NAME`` or `file `PATH``.
        source_name: String,
        /// What went wrong (never the credential itself).
        reason: String,
    },
    /// A demo backend outside dev mode, or an unknown one.
    #[error("tool `{tool}`: demo backend `{name}` is only available with `serve --dev`")]
    DemoBackend {
        /// The tool id.
        tool: String,
        /// The demo backend name.
        name: String,
    },
}

/// The arguments of a call do not satisfy the tool's input schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid arguments: {}", .problems.iter().map(|p| format!("at `{}`: {}", p.path, p.message)).collect::<Vec<_>>().join("; "))]
pub struct ArgumentError {
    /// Each failing JSON pointer with its reason.
    pub problems: Vec<ArgumentProblem>,
}

/// One failing location in the arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgumentProblem {
    /// JSON pointer into the arguments (`""` is the whole object).
    pub path: String,
    /// Why it failed.
    pub message: String,
}

/// Where a tool's calls go.
#[derive(Debug)]
pub enum Backend {
    /// An HTTP endpoint receiving the arguments as a JSON POST body.
    Http(HttpBackend),
    /// A tool of an upstream MCP server, called with `tools/call`.
    Mcp(upstream::McpBackend),
}

/// An HTTP tool backend with its limits and its own concurrency limit and circuit breaker.
#[derive(Debug)]
pub struct HttpBackend {
    /// The endpoint.
    pub url: reqwest::Url,
    /// Total time allowed for one call, retries included.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// Retries after a connection error (0 unless the tool is idempotent).
    pub retries: u32,
    /// `aud` of the broker's assertions for this backend.
    pub audience: String,
    /// A static credential the broker presents to this backend.
    pub credential: Option<Credential>,
    /// Calls in flight are bounded by this semaphore's permits.
    pub concurrency: Arc<tokio::sync::Semaphore>,
    /// Most calls in flight.
    pub max_concurrent: usize,
    /// Fails calls fast while the backend is down.
    pub breaker: breaker::CircuitBreaker,
}

/// A static secret the broker presents to a backend; never printed, logged or stored.
#[derive(Clone)]
pub struct Credential(String);

impl Credential {
    /// The secret, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential([redacted])")
    }
}

/// A registered tool.
pub struct Tool {
    /// `<server>___<name>`: the API name, the Cedar action id and the Cedar resource id.
    pub id: String,
    /// The tool's own name.
    pub name: String,
    /// The server it belongs to.
    pub server: String,
    /// What it does.
    pub description: String,
    /// The input JSON Schema.
    pub input_schema: Value,
    validator: jsonschema::Validator,
    /// Scopes a token must carry to call it.
    pub required_scopes: Vec<String>,
    /// Top-level arguments redacted in the decision log.
    pub sensitive_arguments: Vec<String>,
    /// Behaviour hints.
    pub annotations: Annotations,
    /// Where calls go.
    pub backend: Backend,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Tool {
    /// Checks `arguments` against the input schema, reporting the failing paths.
    pub fn check_arguments(&self, arguments: &Value) -> Result<(), ArgumentError> {
        let problems: Vec<ArgumentProblem> = self
            .validator
            .iter_errors(arguments)
            .take(MAX_REPORTED_ARGUMENT_ERRORS)
            .map(|e| ArgumentProblem {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ArgumentError { problems })
        }
    }

    /// The scopes this tool requires that `held` lacks, in the tool's order.
    pub fn missing_scopes<'a>(
        &'a self,
        held: &'a std::collections::BTreeSet<String>,
    ) -> impl Iterator<Item = &'a str> {
        self.required_scopes
            .iter()
            .filter(|s| !held.contains(*s))
            .map(String::as_str)
    }

    /// The arguments with sensitive fields replaced by `"[redacted]"`, for the decision log.
    pub fn redact(&self, arguments: &Value) -> (Value, bool) {
        let mut copy = arguments.clone();
        let mut redacted = false;
        if let Value::Object(map) = &mut copy {
            for name in &self.sensitive_arguments {
                if let Some(v) = map.get_mut(name) {
                    *v = Value::String("[redacted]".to_owned());
                    redacted = true;
                }
            }
        }
        (copy, redacted)
    }
}

/// Base URLs of the in-process demo backends, known only once `serve --dev` has bound them.
#[derive(Debug, Clone)]
pub struct DemoUrls {
    /// The echo backend's base URL.
    pub echo: reqwest::Url,
    /// The files backend's base URL.
    pub files: reqwest::Url,
    /// The payments backend's base URL.
    pub payments: reqwest::Url,
}

impl DemoUrls {
    /// Placeholder URLs for offline commands (validation, schema, replay, listings), where
    /// only the demo tools' schemas matter and nothing is ever dispatched.
    pub fn placeholder() -> Option<Self> {
        let url = reqwest::Url::parse("http://127.0.0.1:9/").ok()?;
        Some(Self {
            echo: url.clone(),
            files: url.clone(),
            payments: url,
        })
    }
}

/// All registered tools, by id.
#[derive(Debug, Default)]
pub struct Registry {
    tools: BTreeMap<String, Arc<Tool>>,
}

impl Registry {
    /// Builds the registry from the config. Demo backends resolve only when `demo` is given.
    pub fn from_config(config: &Config, demo: Option<&DemoUrls>) -> Result<Self, RegistryError> {
        let mut tools = BTreeMap::new();
        for tc in &config.tools {
            let tool = build_tool(config, tc, demo)?;
            tools.insert(tool.id.clone(), Arc::new(tool));
        }
        Ok(Self { tools })
    }

    /// Looks up a tool by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Tool>> {
        self.tools.get(id)
    }

    /// Every tool, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tool>> {
        self.tools.values()
    }

    /// Number of tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether no tool is registered.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

fn build_tool(
    config: &Config,
    tc: &ToolConfig,
    demo: Option<&DemoUrls>,
) -> Result<Tool, RegistryError> {
    let id = format!("{}___{}", tc.server, tc.name);
    let checked = tc
        .checked
        .as_ref()
        .ok_or_else(|| RegistryError::Unvalidated { tool: id.clone() })?;
    let input_schema = match &checked.input_schema {
        InputSchemaSource::Inline(inline) => inline.clone(),
        InputSchemaSource::File(file) => {
            let path = config.resolve(file);
            let schema_error = |reason: String| RegistryError::SchemaFile {
                tool: id.clone(),
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| schema_error(e.to_string()))?;
            serde_json::from_str(&text).map_err(|e| schema_error(e.to_string()))?
        }
    };
    let validator =
        jsonschema::validator_for(&input_schema).map_err(|e| RegistryError::InvalidSchema {
            tool: id.clone(),
            reason: e.to_string(),
        })?;
    let backend = Backend::Http(http_backend(config, &checked.backend, tc, &id, demo)?);
    Ok(Tool {
        id,
        name: tc.name.clone(),
        server: tc.server.clone(),
        description: tc.description.clone(),
        input_schema,
        validator,
        required_scopes: tc.required_scopes.clone(),
        sensitive_arguments: tc.sensitive_arguments.clone(),
        annotations: checked.annotations,
        backend,
    })
}

/// The HTTP backend a tool's calls go to: its configured endpoint, or a demo backend.
fn http_backend(
    config: &Config,
    target: &BackendTarget,
    tc: &ToolConfig,
    id: &str,
    demo: Option<&DemoUrls>,
) -> Result<HttpBackend, RegistryError> {
    Ok(match target {
        BackendTarget::Http(http) => HttpBackend {
            url: http.url.clone(),
            audience: http.audience.clone(),
            timeout: http.timeout,
            max_response_bytes: http.max_response_bytes,
            retries: http.retries,
            credential: load_credential(config, id, &http.credential_env, &http.credential_file)?,
            concurrency: Arc::new(tokio::sync::Semaphore::new(http.max_concurrent)),
            max_concurrent: http.max_concurrent,
            breaker: breaker::CircuitBreaker::new(http.circuit_failures, http.circuit_cooldown),
        },
        BackendTarget::Demo(which) => {
            let demo_error = || RegistryError::DemoBackend {
                tool: id.to_owned(),
                name: which.name().to_owned(),
            };
            let urls = demo.ok_or_else(demo_error)?;
            let base = match which {
                DemoBackend::Echo => &urls.echo,
                DemoBackend::Files => &urls.files,
                DemoBackend::Payments => &urls.payments,
            };
            let url = base.join(&tc.name).map_err(|_| demo_error())?;
            HttpBackend {
                audience: url.origin().ascii_serialization(),
                url,
                timeout: Duration::from_secs(5),
                max_response_bytes: 1024 * 1024,
                retries: 0,
                credential: None,
                concurrency: Arc::new(tokio::sync::Semaphore::new(64)),
                max_concurrent: 64,
                breaker: breaker::CircuitBreaker::new(5, Duration::from_secs(5)),
            }
        }
    })
}

/// Reads a backend's static credential from the environment or a file, trimming one
/// trailing newline. Errors name the source, never the value.
fn load_credential(
    config: &Config,
    tool: &str,
    env: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> Result<Option<Credential>, RegistryError> {
    let (source_name, value) = match (env, file) {
        (Some(var), _) => (
            format!("env `{var}`"),
            std::env::var(var).map_err(|e| e.to_string()),
        ),
        (None, Some(path)) => {
            let path = config.resolve(path);
            (
                format!("file `{}`", path.display()),
                std::fs::read_to_string(&path).map_err(|e| e.to_string()),
            )
        }
        (None, None) => return Ok(None),
    };
    let error = |reason: String| RegistryError::Credential {
        tool: tool.to_owned(),
        source_name: source_name.clone(),
        reason,
    };
    let value = value.map_err(error)?;
    let value = value.strip_suffix('\n').unwrap_or(&value);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(error("is empty".to_owned()));
    }
    // It goes into a header: refuse anything that is not a visible ASCII token.
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(error("must be visible ASCII without spaces".to_owned()));
    }
    Ok(Some(Credential(value.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_debug_is_redacted() {
        let c = Credential("s3cret-value".to_owned());
        assert_eq!(format!("{c:?}"), "Credential([redacted])");
        assert_eq!(c.expose(), "s3cret-value");
    }

    #[test]
    fn demo_backends_exist_only_in_dev_mode() {
        let text = "[[tools]]\nserver = \"demo\"\nname = \"echo\"\ninput_schema = { type = \"object\" }\nbackend = { kind = \"demo\", name = \"echo\" }\n";
        let dir = std::path::Path::new(".");
        let config = Config::from_toml_str(text, dir, dir, Vec::new()).unwrap();
        // `serve --config` (production) passes no demo URLs: the tool is refused, not dropped.
        let err = Registry::from_config(&config, None).unwrap_err();
        assert!(matches!(err, RegistryError::DemoBackend { .. }), "{err}");
        assert!(err.to_string().contains("demo___echo"), "{err}");
        let demo = DemoUrls::placeholder().unwrap();
        assert_eq!(
            Registry::from_config(&config, Some(&demo)).unwrap().len(),
            1
        );
    }

    #[test]
    fn an_unvalidated_tool_is_refused_not_guessed() {
        let text = "[[tools]]\nserver = \"s\"\nname = \"t\"\ninput_schema = { type = \"object\" }\nbackend = { kind = \"http\", url = \"http://127.0.0.1:1/\" }\n";
        let dir = std::path::Path::new(".");
        let mut config = Config::from_toml_str(text, dir, dir, Vec::new()).unwrap();
        assert_eq!(Registry::from_config(&config, None).unwrap().len(), 1);
        // A config built or edited without `validate` has no typed settings: no tool is built.
        config.tools[0].checked = None;
        let err = Registry::from_config(&config, None).unwrap_err();
        assert!(matches!(err, RegistryError::Unvalidated { .. }), "{err}");
    }
}
