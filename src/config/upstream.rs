//! `[[upstreams]]`: upstream MCP servers whose tools the broker discovers and registers as
//! `<name>___<tool>`, validated like every other section.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

use super::tools::{
    default_circuit_cooldown_ms, default_circuit_failures, default_max_concurrent,
    default_max_response_bytes, default_timeout_ms,
};
use super::{Config, ConfigError, check_name, check_range, invalid};

/// Most tools one upstream may list: every tool becomes a Cedar action and a schema entry.
pub const MAX_UPSTREAM_TOOLS: usize = 10_000;

/// `[[upstreams]]`: one upstream MCP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The `<server>` part of its tools' ids (`<name>___<tool>`).
    pub name: String,
    /// The transport: only `mcp` (Streamable HTTP).
    pub kind: UpstreamKind,
    /// The Streamable HTTP endpoint.
    pub url: String,
    /// Environment variable holding the broker's own credential, sent as `Authorization: Bearer`.
    pub credential_env: Option<String>,
    /// File holding the broker's own credential, sent as `Authorization: Bearer`.
    pub credential_file: Option<PathBuf>,
    /// `aud` of the broker's assertions for this upstream (default: the URL's origin).
    pub audience: Option<String>,
    /// Total time allowed for one request to the upstream (a call, a page of `tools/list`,
    /// or the handshake), in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response accepted, in bytes: a JSON body, or a whole SSE response stream.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Most calls in flight to this upstream; more are refused with 503.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_circuit_failures")]
    pub circuit_failures: u32,
    /// How long an open circuit refuses calls before letting one probe through, in ms.
    #[serde(default = "default_circuit_cooldown_ms")]
    pub circuit_cooldown_ms: u64,
    /// Scopes a token must carry to call any of this upstream's tools.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Per tool (the upstream's own name): top-level arguments redacted in the decision log.
    #[serde(default)]
    pub sensitive_arguments: BTreeMap<String, Vec<String>>,
    /// Most tools the upstream may list; a longer list is refused as a whole.
    #[serde(default = "default_max_tools")]
    pub max_tools: usize,
    /// Only these tools (the upstream's own names) are registered; absent means all.
    pub tools: Option<Vec<String>>,
    /// How often an unreachable upstream is retried, in ms.
    #[serde(default = "default_retry_interval_ms")]
    pub retry_interval_ms: u64,
    /// Believe the upstream's annotation hints (`readOnlyHint`, `destructiveHint`, …). MCP
    /// hints are untrusted unless the server is: by default every tool takes the cautious
    /// defaults (not read-only, destructive), so a server cannot talk its way past a policy
    /// on `resource.readOnly`.
    #[serde(default)]
    pub trust_annotations: bool,
    /// Per tool (the upstream's own name): annotations set by the operator. They override the
    /// upstream's hints and the defaults.
    #[serde(default)]
    pub annotations: BTreeMap<String, super::AnnotationsConfig>,
    /// The URL and audience as validation parsed them; `None` only before validation.
    #[serde(skip)]
    pub checked: Option<CheckedUpstream>,
}

/// An upstream's endpoint as validation parsed it once.
#[derive(Debug, Clone)]
pub struct CheckedUpstream {
    /// The Streamable HTTP endpoint, an http or https URL without credentials.
    pub url: reqwest::Url,
    /// `aud` of the broker's assertions: as configured, or the URL's origin.
    pub audience: String,
}

/// How the broker talks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// MCP over Streamable HTTP.
    Mcp,
}

fn default_max_tools() -> usize {
    1000
}

fn default_retry_interval_ms() -> u64 {
    30_000
}

/// Checks every `[[upstreams]]` entry and fills its `checked` endpoint; errors name the key.
pub(super) fn validate(config: &mut Config) -> Result<(), ConfigError> {
    let servers: BTreeSet<&str> = config.tools.iter().map(|t| t.server.as_str()).collect();
    let mut names = BTreeSet::new();
    for (i, up) in config.upstreams.iter_mut().enumerate() {
        let key = |field: &str| format!("upstreams[{i}].{field}");
        check_name(&key("name"), &up.name)?;
        if !names.insert(up.name.clone()) {
            return Err(invalid(
                key("name"),
                format!("upstream `{}` is listed twice", up.name),
            ));
        }
        if servers.contains(up.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!(
                    "`{}` is also the `server` of a `[[tools]]` entry; tool ids would collide",
                    up.name
                ),
            ));
        }
        let parsed = reqwest::Url::parse(&up.url)
            .map_err(|e| invalid(key("url"), format!("`{}`: {e}", up.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(key("url"), "must be an http or https URL"));
        }
        if parsed.username() != "" || parsed.password().is_some() {
            return Err(invalid(
                key("url"),
                "must not carry credentials; use `credential_env` or `credential_file`",
            ));
        }
        if up.credential_env.is_some() && up.credential_file.is_some() {
            return Err(invalid(
                key("credential_env"),
                "give `credential_env` or `credential_file`, not both",
            ));
        }
        if up.audience.as_ref().is_some_and(String::is_empty) {
            return Err(invalid(key("audience"), "must not be empty"));
        }
        check_range(&key("timeout_ms"), up.timeout_ms as usize, 1, 300_000)?;
        check_range(
            &key("max_response_bytes"),
            up.max_response_bytes,
            1024,
            64 * 1024 * 1024,
        )?;
        check_range(&key("max_concurrent"), up.max_concurrent, 1, 10_000)?;
        check_range(
            &key("circuit_failures"),
            up.circuit_failures as usize,
            1,
            1_000,
        )?;
        check_range(
            &key("circuit_cooldown_ms"),
            up.circuit_cooldown_ms as usize,
            1,
            3_600_000,
        )?;
        check_range(&key("max_tools"), up.max_tools, 1, MAX_UPSTREAM_TOOLS)?;
        check_range(
            &key("retry_interval_ms"),
            up.retry_interval_ms as usize,
            100,
            3_600_000,
        )?;
        if up.required_scopes.iter().any(String::is_empty) {
            return Err(invalid(key("required_scopes"), "scopes must not be empty"));
        }
        for tool in up.sensitive_arguments.keys() {
            check_name(&key("sensitive_arguments"), tool)?;
        }
        for tool in up.tools.iter().flatten() {
            check_name(&key("tools"), tool)?;
        }
        up.checked = Some(CheckedUpstream {
            audience: up
                .audience
                .clone()
                .unwrap_or_else(|| parsed.origin().ascii_serialization()),
            url: parsed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(upstreams: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[[tools]]\nserver = \"files\"\nname = \"read\"\ninput_schema = {{ type = \"object\" }}\nbackend = {{ kind = \"http\", url = \"http://127.0.0.1:1/\" }}\n{upstreams}"
        );
        Config::from_toml_str(&text, Path::new("t.toml"), Path::new("/base"), Vec::new())
    }

    #[track_caller]
    fn check_invalid(upstreams: &str, key: &str, reason_part: &str) {
        match parse(upstreams) {
            Err(ConfigError::Invalid { key: k, reason }) => {
                assert_eq!(k, key);
                assert!(reason.contains(reason_part), "{reason}");
            }
            other => panic!("expected invalid `{key}`, got {other:?}"),
        }
    }

    const GOOD: &str =
        "[[upstreams]]\nname = \"gh\"\nkind = \"mcp\"\nurl = \"https://mcp.example/mcp\"\n";

    #[test]
    fn upstreams_take_defaults_and_are_validated() {
        let config = parse(GOOD).unwrap();
        let up = &config.upstreams[0];
        assert_eq!(up.kind, UpstreamKind::Mcp);
        assert_eq!(
            (up.max_tools, up.timeout_ms, up.retry_interval_ms),
            (1000, 10_000, 30_000)
        );
        assert!(up.tools.is_none());

        let entry = |kind: &str, url: &str, extra: &str| {
            format!("[[upstreams]]\nname = \"gh\"\nkind = \"{kind}\"\nurl = \"{url}\"\n{extra}\n")
        };
        let url = "https://mcp.example/mcp";
        // stdio upstreams are not supported: an unknown kind is a parse error.
        assert!(matches!(
            parse(&entry("stdio", url, "")),
            Err(ConfigError::Parse { .. })
        ));
        let cases = [
            (entry("mcp", url, "max_tools = 0"), "max_tools", "outside"),
            (entry("mcp", url, "timeout_ms = 0"), "timeout_ms", "outside"),
            (entry("mcp", "ftp://x/", ""), "url", "http"),
            (entry("mcp", "https://u:p@x/", ""), "url", "credentials"),
            (
                entry(
                    "mcp",
                    url,
                    "credential_env = \"A\"\ncredential_file = \"b\"",
                ),
                "credential_env",
                "not both",
            ),
            (entry("mcp", url, "tools = [\"a___b\"]"), "tools", "___"),
        ];
        for (text, key, reason) in cases {
            check_invalid(&text, &format!("upstreams[0].{key}"), reason);
        }
        check_invalid(&format!("{GOOD}{GOOD}"), "upstreams[1].name", "twice");
        check_invalid(
            &GOOD.replace("\"gh\"", "\"files\""),
            "upstreams[0].name",
            "collide",
        );
        assert!(matches!(
            parse(&format!("{GOOD}colour = 1\n")),
            Err(ConfigError::Parse { .. })
        ));
    }
}
