//! `toolgate tools list`: the tool registry as the broker loads it.

use super::output::outln;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::tools::{Backend, DemoUrls, Registry};

/// Loads the registry from `config` (demo backends get placeholder URLs) and prints one JSON
/// object per tool: id, backend URL (never a credential), annotations, scopes.
pub fn list(config: &Path) -> anyhow::Result<()> {
    let config = super::load_config(config)?;
    let demo = DemoUrls::placeholder().context("placeholder URLs")?;
    let registry =
        Registry::from_config(&config, Some(&demo)).context("loading the tool registry")?;
    for line in listing(&registry) {
        outln!("{line}")?;
    }
    Ok(())
}

/// One JSON object per tool, ordered by id.
pub fn listing(registry: &Registry) -> Vec<Value> {
    registry
        .iter()
        .map(|tool| {
            let backend = match &tool.backend {
                Backend::Http(b) => {
                    let mut url = b.url.clone();
                    // Config validation refuses credentials in URLs; strip any anyway.
                    let _ = url.set_username("");
                    let _ = url.set_password(None);
                    json!({
                        "kind": "http",
                        "url": url.as_str(),
                        "audience": b.audience,
                        "timeout_ms": b.timeout.as_millis() as u64,
                        "max_response_bytes": b.max_response_bytes,
                        "max_concurrent": b.max_concurrent,
                        "retries": b.retries,
                        "credential": b.credential.is_some(),
                    })
                }
                Backend::Mcp(b) => json!({
                    "kind": "mcp",
                    "url": b.link.client.url().as_str(),
                    "tool": b.tool,
                    "audience": b.link.audience,
                }),
            };
            json!({
                "id": tool.id,
                "description": tool.description,
                "required_scopes": tool.required_scopes,
                "annotations": tool.annotations,
                "sensitive_arguments": tool.sensitive_arguments,
                "backend": backend,
            })
        })
        .collect()
}
