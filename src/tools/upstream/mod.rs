//! Tools learned from upstream MCP servers: each `tools/list` entry becomes a registry tool
//! `<upstream>___<tool>` whose backend is the upstream's MCP client.
//!
//! A listed tool is registered only if its name is a valid id part, its input schema is a
//! JSON Schema that compiles and that Cedar can type (otherwise the whole policy set would
//! fail to load); the others are skipped with the reason.

pub mod client;
pub mod manager;
pub mod protocol;
mod sse;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::input::InputType;
use super::{Annotations, Backend, Registry, Tool, breaker::CircuitBreaker};
use crate::config::UpstreamConfig;
use client::McpClient;

/// Longest tool description kept from an upstream; it is shown to agents.
const MAX_DESCRIPTION_CHARS: usize = 8 * 1024;

/// Longest tool name accepted from an upstream (as for configured tools).
const MAX_NAME_LEN: usize = 64;

/// A tool on an upstream MCP server, with the upstream's shared client and limits.
#[derive(Debug)]
pub struct McpBackend {
    /// The upstream's own name for the tool.
    pub tool: String,
    /// The upstream's client and limits, shared by all its tools.
    pub link: Arc<UpstreamLink>,
}

/// What all tools of one upstream share: the client, the concurrency limit, the breaker.
#[derive(Debug)]
pub struct UpstreamLink {
    /// The MCP client (and its session).
    pub client: McpClient,
    /// `aud` of the broker's assertions for this upstream.
    pub audience: String,
    /// Calls in flight are bounded by this semaphore's permits.
    pub concurrency: tokio::sync::Semaphore,
    /// Most calls in flight.
    pub max_concurrent: usize,
    /// Fails calls fast while the upstream is down.
    pub breaker: CircuitBreaker,
}

/// Why a listed tool was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The entry has no usable name.
    #[error("the tool has no name")]
    NoName,
    /// The name cannot be part of a tool id.
    #[error("name `{0}` is not 1 to 64 ASCII letters, digits, `_`, `-`, `.` without `___`")]
    BadName(String),
    /// The name is not in the upstream's allow-list.
    #[error("not in the allow-list")]
    NotAllowed,
    /// The input schema is missing or not an object schema.
    #[error("the input schema is missing or not an object")]
    NoSchema,
    /// The input schema does not compile.
    #[error("invalid input schema: {0}")]
    InvalidSchema(String),
    /// Cedar cannot type the input schema.
    #[error("input schema cannot be typed for Cedar: {0}")]
    Untypable(String),
}

/// Whether `name` can be the `<tool>` part of an id.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.contains("___")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The upstream's own name of a listed tool, if any.
pub fn listed_name(listed: &Value) -> Option<&str> {
    listed.get("name").and_then(Value::as_str)
}

/// Maps one `tools/list` entry of `config`'s upstream to a registry tool.
pub fn upstream_tool(
    config: &UpstreamConfig,
    link: &Arc<UpstreamLink>,
    listed: &Value,
) -> Result<Tool, SkipReason> {
    let name = listed_name(listed).ok_or(SkipReason::NoName)?;
    if !valid_name(name) {
        return Err(SkipReason::BadName(name.chars().take(80).collect()));
    }
    if config
        .tools
        .as_ref()
        .is_some_and(|allowed| !allowed.iter().any(|a| a == name))
    {
        return Err(SkipReason::NotAllowed);
    }
    let input_schema = match listed.get("inputSchema") {
        Some(schema @ Value::Object(_)) => schema.clone(),
        _ => return Err(SkipReason::NoSchema),
    };
    InputType::from_tool_schema(&input_schema).map_err(|e| SkipReason::Untypable(e.to_string()))?;
    let validator = jsonschema::validator_for(&input_schema)
        .map_err(|e| SkipReason::InvalidSchema(e.to_string()))?;
    let description = listed
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(MAX_DESCRIPTION_CHARS)
        .collect();
    let hints = listed
        .get("annotations")
        .filter(|_| config.trust_annotations);
    let mut annotations: Annotations = super::annotations::from_mcp(hints);
    if let Some(set) = config.annotations.get(name) {
        annotations = set.over(annotations);
    }
    Ok(Tool {
        id: format!("{}___{name}", config.name),
        name: name.to_owned(),
        server: config.name.clone(),
        description,
        input_schema,
        validator,
        required_scopes: config.required_scopes.clone(),
        sensitive_arguments: config
            .sensitive_arguments
            .get(name)
            .cloned()
            .unwrap_or_default(),
        annotations,
        backend: Backend::Mcp(McpBackend {
            tool: name.to_owned(),
            link: link.clone(),
        }),
    })
}

/// Reads an upstream's credential like a backend's (environment or file, visible ASCII).
pub fn load_credential(
    config: &crate::config::Config,
    upstream: &str,
    env: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> Result<Option<super::Credential>, super::RegistryError> {
    super::load_credential(config, upstream, env, file)
}

impl Registry {
    /// This registry's configured tools (the upstream ones dropped) plus `upstream` tools.
    /// An upstream tool whose id is already taken is left out (config validation keeps
    /// upstream names apart from configured servers, so this does not happen).
    pub fn with_upstream_tools(&self, upstream: impl IntoIterator<Item = Arc<Tool>>) -> Registry {
        let mut tools: BTreeMap<String, Arc<Tool>> = self
            .tools
            .iter()
            .filter(|(_, t)| !matches!(t.backend, Backend::Mcp(_)))
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        for tool in upstream {
            tools.entry(tool.id.clone()).or_insert(tool);
        }
        Registry { tools }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_must_be_id_parts() {
        for good in ["get_weather", "a", "x-1.2", &"n".repeat(64)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "a___b", "has space", "slash/", "é", &"n".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
