//! Stage 0: the configuration file `toolgate.toml`, environment overrides, and validation at load.
//!
//! Every section uses `#[serde(deny_unknown_fields)]`, so a typo is an error that names the key
//! rather than a setting silently ignored. Relative paths resolve against the directory of the
//! config file. Any key can be overridden from the environment with `TOOLGATE__SECTION__KEY`
//! (array elements by index: `TOOLGATE__ISSUERS__0__JWKS_FILE`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod api;
mod audit;
mod env;
mod issuers;
mod policy;
mod server;
mod tools;
mod upstream;
pub use api::{AdminConfig, ApiConfig, McpConfig};
pub use audit::{AuditConfig, Synchronous};
use env::apply_env_override;
pub use issuers::{
    ASYMMETRIC_ALGORITHMS, CheckedIssuer, IssuerConfig, IssuerKeySource, MAX_LEEWAY_SECONDS,
    RemoteKeysConfig,
};
pub use policy::PolicyConfig;
pub use server::{LimitsConfig, ServerConfig};
pub use tools::{
    Annotations, AnnotationsConfig, BackendConfig, BackendTarget, CheckedTool, DemoBackend,
    HttpTarget, InputSchemaSource, MAX_RETRIES, ToolConfig,
};
pub use upstream::{CheckedUpstream, UpstreamConfig, UpstreamKind};

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

    /// Checks ranges and consistency, section by section, and parses the tools' and upstreams'
    /// settings into their `checked` typed values; errors name the key. Run it again after
    /// editing the config, so the typed values follow the edit.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        self.policy.validate()?;
        self.server.validate()?;
        self.admin.validate()?;
        self.audit.validate()?;
        self.mcp.validate()?;
        issuers::validate(&mut self.issuers, &self.admin.audience)?;
        tools::validate(&mut self.tools)?;
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

/// Parses an http or https URL, or names `key` in the error.
fn check_http_url(key: &str, url: &str) -> Result<reqwest::Url, ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(key, format!("`{url}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(key, format!("`{url}` is not an http or https URL")));
    }
    Ok(parsed)
}

fn check_range(key: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(key, format!("{value} is outside {min}..={max}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
