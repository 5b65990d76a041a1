//! Unit tests for config parsing, validation and environment overrides.

use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[[issuers]]
issuer = "https://idp.example"
audiences = ["toolgate"]
jwks_file = "jwks.json"
algorithms = ["RS256"]
"#;

fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Config::from_toml_str(text, Path::new("test.toml"), Path::new("/base"), env)
}

#[track_caller]
fn check_invalid(text: &str, key: &str, reason_part: &str) {
    match parse(text, &[]) {
        Err(ConfigError::Invalid { key: k, reason }) => {
            assert_eq!(k, key);
            assert!(
                reason.contains(reason_part),
                "reason `{reason}` lacks `{reason_part}`"
            );
        }
        other => panic!("expected invalid `{key}`, got {other:?}"),
    }
}

#[test]
fn minimal_config_takes_defaults() {
    let config = parse(MINIMAL, &[]).unwrap();
    assert_eq!(config.issuers[0].leeway_seconds, 30);
    assert_eq!(config.issuers[0].max_lifetime_seconds, 3600);
    assert!(config.issuers[0].require_at_jwt_typ);
    assert_eq!(config.limits.max_token_bytes, 8192);
    assert_eq!(config.audit.synchronous, Synchronous::Full);
    assert_eq!(config.audit_db(), Path::new("/base/.toolgate/decisions.db"));
    assert_eq!(
        config.resolve(Path::new("jwks.json")),
        Path::new("/base/jwks.json")
    );
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let err = parse(&format!("{MINIMAL}\n[server]\nlisten_addr = \"x\"\n"), &[]).unwrap_err();
    assert!(err.to_string().contains("listen_addr"), "{err}");
}

#[test]
fn hmac_none_and_unknown_algorithms_are_refused() {
    for alg in ["HS256", "none", "HS512", "RS1"] {
        check_invalid(
            &MINIMAL.replace("\"RS256\"", &format!("\"{alg}\"")),
            "issuers[0].algorithms",
            "not allowed",
        );
    }
}

#[test]
fn audience_is_mandatory() {
    check_invalid(
        &MINIMAL.replace("[\"toolgate\"]", "[]"),
        "issuers[0].audiences",
        "audience",
    );
}

#[test]
fn leeway_is_bounded() {
    check_invalid(
        &format!("{MINIMAL}leeway_seconds = 301\n"),
        "issuers[0].leeway_seconds",
        "at most 300",
    );
}

#[test]
fn tool_names_are_checked() {
    let tool = |name: &str| {
        format!(
            "{MINIMAL}\n[[tools]]\nserver = \"s\"\nname = \"{name}\"\ninput_schema = {{ type = \"object\" }}\nbackend = {{ kind = \"http\", url = \"http://127.0.0.1:1/x\" }}\n"
        )
    };
    assert!(parse(&tool("get-issue.v2"), &[]).is_ok());
    check_invalid(&tool("a___b"), "tools[0].name", "___");
    check_invalid(&tool("a b"), "tools[0].name", "only ASCII");
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let config = parse(
        MINIMAL,
        &[
            ("TOOLGATE__SERVER__LISTEN", "127.0.0.1:9999"),
            ("TOOLGATE__ISSUERS__0__LEEWAY_SECONDS", "10"),
            ("TOOLGATE__AUDIT__SYNCHRONOUS", "normal"),
            ("OTHER", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.listen.port(), 9999);
    assert_eq!(config.issuers[0].leeway_seconds, 10);
    assert_eq!(config.audit.synchronous, Synchronous::Normal);

    let err = parse(MINIMAL, &[("TOOLGATE__SERVER__NOPE", "1")]).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = parse(MINIMAL, &[("TOOLGATE__ISSUERS__5__LEEWAY_SECONDS", "1")]).unwrap_err();
    assert!(matches!(err, ConfigError::Env { .. }), "{err}");
}

#[test]
fn issuer_needs_exactly_one_key_source() {
    let without = MINIMAL.replace("jwks_file = \"jwks.json\"\n", "");
    check_invalid(&without, "issuers[0].jwks_file", "exactly one key source");
    let both = MINIMAL.replace(
        "jwks_file = \"jwks.json\"\n",
        "jwks_file = \"jwks.json\"\njwks_url = \"https://idp.example/jwks\"\n",
    );
    check_invalid(&both, "issuers[0].jwks_file", "exactly one key source");
    let url = MINIMAL.replace(
        "jwks_file = \"jwks.json\"\n",
        "jwks_url = \"file:///etc/jwks\"\n",
    );
    check_invalid(&url, "issuers[0].jwks_url", "not an http or https URL");
    let discovery = MINIMAL.replace("jwks_file = \"jwks.json\"\n", "discovery = true\n");
    let config = parse(&discovery, &[]).unwrap();
    assert_eq!(
        config.issuers[0]
            .remote_keys
            .unknown_kid_min_interval_seconds,
        10
    );
    let zero =
        format!("{discovery}\n[issuers.remote_keys]\nunknown_kid_min_interval_seconds = 0\n");
    check_invalid(
        &zero,
        "issuers[0].remote_keys.unknown_kid_min_interval_seconds",
        "outside",
    );
}

#[test]
fn policy_watch_interval_is_bounded_or_off() {
    let config = parse(MINIMAL, &[]).unwrap();
    assert_eq!(config.policy.watch_interval_ms, 1000);
    let off = parse(
        &format!("{MINIMAL}\n[policy]\nwatch_interval_ms = 0\n"),
        &[],
    )
    .unwrap();
    assert_eq!(off.policy.watch_interval_ms, 0);
    check_invalid(
        &format!("{MINIMAL}\n[policy]\nwatch_interval_ms = 5\n"),
        "policy.watch_interval_ms",
        "",
    );
}

#[test]
fn demo_backends_include_payments() {
    let tool = |name: &str| {
        format!(
            "{MINIMAL}\n[[tools]]\nserver = \"payments\"\nname = \"transfer\"\ninput_schema = {{ type = \"object\" }}\nbackend = {{ kind = \"demo\", name = \"{name}\" }}\n"
        )
    };
    let parsed = parse(&tool("payments"), &[]);
    assert!(parsed.is_ok(), "{parsed:?}");
    check_invalid(&tool("bank"), "tools[0].backend.name", "`payments`");
}

#[test]
fn mcp_section_is_validated() {
    let config = parse(MINIMAL, &[]).unwrap();
    assert!(config.mcp.enabled);
    assert_eq!(config.mcp.resource, None);
    let with = |extra: &str| format!("{MINIMAL}\n[mcp]\n{extra}\n");
    check_invalid(
        &with("resource = \"not a url\""),
        "mcp.resource",
        "absolute http(s) URL",
    );
    check_invalid(
        &with("resource = \"ftp://x/mcp\""),
        "mcp.resource",
        "absolute http(s) URL",
    );
    check_invalid(&with("max_sessions = 0"), "mcp.max_sessions", "outside");
    check_invalid(
        &with("max_sessions = 10\nmax_sessions_per_principal = 11"),
        "mcp.max_sessions_per_principal",
        "outside",
    );
    check_invalid(
        &with("session_idle_seconds = 1"),
        "mcp.session_idle_seconds",
        "outside",
    );
    let config = parse(&with("resource = \"https://gw.example.com/mcp\""), &[]).unwrap();
    assert_eq!(
        config.mcp.resource.as_deref(),
        Some("https://gw.example.com/mcp")
    );
    let config = parse(MINIMAL, &[("TOOLGATE__MCP__ENABLED", "false")]).unwrap();
    assert!(!config.mcp.enabled);
}

/// A tool entry with `backend` (an inline TOML table) and any `extra` keys.
fn tool_entry(backend: &str, extra: &str) -> String {
    format!(
        "{MINIMAL}\n[[tools]]\nserver = \"s\"\nname = \"t\"\ninput_schema = {{ type = \"object\" }}\n{extra}\nbackend = {backend}\n"
    )
}

fn checked_tool(config: &Config) -> &CheckedTool {
    config.tools[0].checked.as_ref().unwrap()
}

#[test]
fn http_backend_is_parsed_once_at_load_with_defaults() {
    let config = parse(
        &tool_entry(
            "{ kind = \"http\", url = \"https://tools.example:8443/run\" }",
            "",
        ),
        &[],
    )
    .unwrap();
    let checked = checked_tool(&config);
    let BackendTarget::Http(http) = &checked.backend else {
        panic!("expected an http backend, got {:?}", checked.backend);
    };
    assert_eq!(http.url.as_str(), "https://tools.example:8443/run");
    // The audience defaults to the URL's origin; a tool not annotated idempotent never retries.
    assert_eq!(http.audience, "https://tools.example:8443");
    assert_eq!(http.retries, 0);
    assert_eq!(http.timeout, std::time::Duration::from_millis(10_000));
    assert_eq!(http.max_concurrent, 64);
    assert_eq!(checked.annotations, Annotations::CAUTIOUS);
    assert!(matches!(checked.input_schema, InputSchemaSource::Inline(_)));

    let config = parse(
        &tool_entry(
            "{ kind = \"http\", url = \"http://127.0.0.1:1/x\", audience = \"svc\" }",
            "annotations = { idempotent = true, read_only = true }\ninput_schema_file = \"s.json\"",
        )
        .replace("input_schema = { type = \"object\" }\n", ""),
        &[],
    )
    .unwrap();
    let checked = checked_tool(&config);
    let BackendTarget::Http(http) = &checked.backend else {
        panic!("expected an http backend, got {:?}", checked.backend);
    };
    // An idempotent tool retries once by default; an explicit audience is kept as given.
    assert_eq!((http.retries, http.audience.as_str()), (1, "svc"));
    assert!(checked.annotations.idempotent && checked.annotations.read_only);
    assert!(checked.annotations.destructive && checked.annotations.open_world);
    assert!(
        matches!(&checked.input_schema, InputSchemaSource::File(p) if p == Path::new("s.json"))
    );
}

#[test]
fn invalid_backend_url_is_refused_naming_its_key() {
    let err = parse(
        &tool_entry("{ kind = \"http\", url = \"not a url\" }", ""),
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config key `tools[0].backend.url`: `not a url`: relative URL without a base"
    );
    check_invalid(
        &tool_entry("{ kind = \"http\", url = \"ftp://x/\" }", ""),
        "tools[0].backend.url",
        "http or https",
    );
}

#[test]
fn demo_backend_names_are_parsed_once() {
    for (name, which) in [
        ("echo", DemoBackend::Echo),
        ("files", DemoBackend::Files),
        ("payments", DemoBackend::Payments),
    ] {
        let config = parse(
            &tool_entry(&format!("{{ kind = \"demo\", name = \"{name}\" }}"), ""),
            &[],
        )
        .unwrap();
        assert!(
            matches!(checked_tool(&config).backend, BackendTarget::Demo(d) if d == which && d.name() == name)
        );
    }
}

#[test]
fn validating_again_follows_an_edit() {
    // `serve --dev` edits the loaded config and validates it again: the typed values follow.
    let mut config = parse(
        &tool_entry("{ kind = \"http\", url = \"http://127.0.0.1:1/x\" }", ""),
        &[],
    )
    .unwrap();
    config.tools[0].backend = BackendConfig::Demo {
        name: "files".to_owned(),
    };
    config.validate().unwrap();
    assert!(matches!(
        checked_tool(&config).backend,
        BackendTarget::Demo(DemoBackend::Files)
    ));
}

#[test]
fn upstream_url_and_audience_are_parsed_once() {
    let text = format!(
        "{MINIMAL}\n[[upstreams]]\nname = \"gh\"\nkind = \"mcp\"\nurl = \"https://mcp.example/v1/mcp\"\n"
    );
    let config = parse(&text, &[]).unwrap();
    let checked = config.upstreams[0].checked.as_ref().unwrap();
    assert_eq!(checked.url.as_str(), "https://mcp.example/v1/mcp");
    assert_eq!(checked.audience, "https://mcp.example");
    let err = parse(&text.replace("https://mcp.example/v1/mcp", "::"), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config key `upstreams[0].url`: `::`: relative URL without a base"
    );
}

#[test]
fn issuer_algorithms_and_key_source_are_parsed_once() {
    let config = parse(
        &MINIMAL.replace("[\"RS256\"]", "[\"RS256\", \"EdDSA\"]"),
        &[],
    )
    .unwrap();
    let checked = config.issuers[0].checked.as_ref().unwrap();
    assert_eq!(
        checked.algorithms,
        [
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::EdDSA
        ]
    );
    assert!(matches!(&checked.keys, IssuerKeySource::File(p) if p == Path::new("jwks.json")));

    let remote = |source: &str| MINIMAL.replace("jwks_file = \"jwks.json\"", source);
    let config = parse(&remote("jwks_url = \"https://idp.example/keys\""), &[]).unwrap();
    assert!(matches!(
        &config.issuers[0].checked.as_ref().unwrap().keys,
        IssuerKeySource::JwksUrl(u) if u.as_str() == "https://idp.example/keys"
    ));
    let config = parse(
        &remote("discovery = true").replace("\"https://idp.example\"", "\"https://idp.example/\""),
        &[],
    )
    .unwrap();
    assert!(matches!(
        &config.issuers[0].checked.as_ref().unwrap().keys,
        IssuerKeySource::Discovery(u)
            if u.as_str() == "https://idp.example/.well-known/openid-configuration"
    ));
    let err = parse(&remote("jwks_url = \"keys\""), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config key `issuers[0].jwks_url`: `keys`: relative URL without a base"
    );
}

#[test]
fn checkpoint_interval_zero_means_off() {
    let config = parse(MINIMAL, &[]).unwrap();
    assert_eq!(
        config.audit.checkpoint_interval(),
        Some(std::time::Duration::from_secs(60))
    );
    let config = parse(
        &format!("{MINIMAL}\n[audit]\ncheckpoint_interval_seconds = 0\n"),
        &[],
    )
    .unwrap();
    assert_eq!(config.audit.checkpoint_interval(), None);
}
