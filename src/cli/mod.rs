//! The command line: `serve`, `token mint|verify`, `revoke`, `policy validate|test`,
//! `schema print`, `tools list`, `keys rotate|jwks`, `log verify|archive|query|export`, `replay`.

pub mod keys;
pub mod log;
pub mod output;
mod policy_test;
pub mod revoke;
pub mod tools;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::auth::{Authenticator, Jws, KeySet, decode_jws};
use crate::config::{Config, IssuerConfig, LimitsConfig};
use crate::dev::{DevIssuer, MintOptions};
use crate::policy::PolicyEngine;
use crate::tools::{DemoUrls, Registry};
use output::{out, outln};

/// toolgate: an authorization broker for AI-agent tool calls.
#[derive(Debug, Parser)]
#[command(name = "toolgate", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TOOLGATE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve {
        /// The config file.
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Dev mode: create a dev issuer key, start demo tools, print curl commands. Without
        /// ./toolgate.toml, runs on the built-in dev setup.
        #[arg(long)]
        dev: bool,
        /// Before starting, cut a damaged end of the decision log, recording the cut in it.
        #[arg(long)]
        repair_log: bool,
    },
    /// Mint or verify tokens.
    Token {
        /// The token action.
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Check policies.
    Policy {
        /// The policy action.
        #[command(subcommand)]
        action: PolicyCommand,
    },
    /// Revoke tokens (by `jti`, subject or issuer) or list revocations.
    Revoke(revoke::RevokeArgs),
    /// Print the generated Cedar schema.
    Schema {
        /// The schema action.
        #[command(subcommand)]
        action: SchemaCommand,
    },
    /// Inspect the tool registry.
    Tools {
        /// The tools action.
        #[command(subcommand)]
        action: ToolsCommand,
    },
    /// Manage the broker's own signing keys.
    Keys {
        /// The keys action.
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Verify, archive, query or export the decision log.
    Log {
        /// The log action.
        #[command(subcommand)]
        action: log::LogCommand,
    },
    /// Re-evaluate recorded decisions against a policy set.
    Replay(log::ReplayArgs),
}

/// `tools` subcommands.
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Print every registered tool: id, backend URL, annotations, scopes (one JSON per line).
    List {
        /// The config file.
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new broker key: published now, signing after `--delay-seconds`, the old key
    /// retired once its assertions have expired.
    Rotate {
        /// The config file.
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Seconds between publishing the new key and signing with it (at least the JWKS
        /// cache lifetime, so verifiers know the key before they see it).
        #[arg(long, default_value_t = crate::tools::broker_keys::DEFAULT_ROTATION_DELAY_SECS)]
        delay_seconds: u64,
    },
    /// Print the broker's JWKS as served at `/.well-known/jwks.json`.
    Jwks {
        /// The config file.
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
    },
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a token with the local dev issuer key (dev only).
    Mint {
        /// The config file naming the dev issuer.
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
        /// Subject.
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "")]
        scope: String,
        /// Audience (default: the issuer's first).
        #[arg(long)]
        aud: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 900)]
        ttl: i64,
        /// A group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Acting agent: the token says `--act` acts on behalf of `--sub` (RFC 8693).
        #[arg(long)]
        act: Option<String>,
    },
    /// Verify a token and print its header and claims, or the reason it fails.
    Verify {
        /// The config file whose issuers to trust.
        #[arg(long, default_value = "toolgate.toml", conflicts_with = "jwks")]
        config: PathBuf,
        /// A JWKS file to verify against instead of the config (with `--issuer` and
        /// `--audience`, checked as an issuer in the config with its defaults would check).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Expected issuer (with `--jwks`).
        #[arg(long, requires = "jwks")]
        issuer: Option<String>,
        /// Expected audience (with `--jwks`).
        #[arg(long, requires = "jwks")]
        audience: Option<String>,
        /// With `--jwks`: accept a token without the RFC 9068 `typ: at+jwt` header, like an
        /// issuer configured with `require_at_jwt_typ = false` (the broker refuses it otherwise).
        #[arg(long, requires = "jwks")]
        allow_any_typ: bool,
        /// Check only the signature and key binding of any JWS, reading no claims (the key by
        /// `kid`, or the only key; `--issuer` and `--audience` are then not needed).
        #[arg(long)]
        signature_only: bool,
        /// The token, or `-` to read it from standard input.
        token: String,
    },
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and strictly validate the policies against the generated schema.
    Validate {
        /// The config file.
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The policy directory (default: the config's `policy.dir`).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// Run policy test files (TOML, see docs/policy-tests.md); exits non-zero on a failure.
    Test {
        /// The config file (tools and schema stub).
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
        /// The policy directory (default: the config's `policy.dir`).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Also fail when a policy never determined a decision.
        #[arg(long)]
        require_coverage: bool,
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `schema` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Write the generated Cedar schema (stub plus one action per tool) to standard output.
    Print {
        /// The config file.
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
    },
}

/// Sets up `tracing` output: text or JSON, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its report of a failed write goes to stderr with `eprintln!`, which panics when
        // stderr is closed: a broker whose log reader went away keeps serving instead.
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            dev,
            repair_log,
        } => {
            if repair_log {
                log::repair(&config)?;
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(&config, dev))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { action } => token(action),
        Command::Revoke(args) => revoke::run(args),
        Command::Log { action } => log::run(action),
        Command::Replay(args) => log::replay(args),
        Command::Policy {
            action: PolicyCommand::Validate { config, policies },
        } => {
            let mut config = load_config(&config)?;
            if let Some(dir) = policies {
                // Relative to the working directory, like every other command-line path.
                config.policy.dir = std::path::absolute(&dir)
                    .with_context(|| format!("resolving `{}`", dir.display()))?;
            }
            let snapshot = load_policies(&config)?;
            outln!(
                "ok: {} policies valid against the schema for {} tools (policy set {})",
                snapshot.policy_count(),
                config.tools.len(),
                &snapshot.policy_set_hash[..16]
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tools {
            action: ToolsCommand::List { config },
        } => {
            tools::list(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { action } => {
            match action {
                KeysCommand::Rotate {
                    config,
                    delay_seconds,
                } => keys::rotate(&config, delay_seconds)?,
                KeysCommand::Jwks { config } => keys::jwks(&config)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            action:
                PolicyCommand::Test {
                    config,
                    policies,
                    require_coverage,
                    files,
                },
        } => policy_test::run(&config, policies, require_coverage, &files),
        Command::Schema {
            action: SchemaCommand::Print { config },
        } => {
            let config = load_config(&config)?;
            let snapshot = load_policies(&config)?;
            out!("{}", snapshot.schema_text())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("loading config `{}`", path.display()))
}

/// Loads the registry and policies as `serve` would. Demo backends get placeholder URLs,
/// since only their schemas matter here.
fn load_policies(config: &Config) -> anyhow::Result<crate::policy::PolicySnapshot> {
    let tools = check_registry(config)?;
    let stub = config.resolve(&config.policy.schema);
    let dir = config.resolve(&config.policy.dir);
    PolicyEngine::load(&stub, &dir, &tools)
        .with_context(|| format!("loading policies from `{}`", dir.display()))
}

/// The registry for offline checks: demo backends get placeholder URLs, since only the
/// tools' schemas matter.
fn check_registry(config: &Config) -> anyhow::Result<Registry> {
    let demo = DemoUrls::placeholder().context("placeholder URLs")?;
    Registry::from_config(config, Some(&demo)).context("loading the tool registry")
}

async fn serve(config_path: &Path, dev: bool) -> anyhow::Result<()> {
    let dev_config = if dev {
        Some(crate::dev::load_config(config_path)?)
    } else {
        None
    };
    let mut config = match &dev_config {
        Some(dev) => dev.config.clone(),
        None => load_config(config_path)?,
    };
    let (demo, dev_issuer) = if dev {
        // Trying out policies is easier when the answer names the policy that decided it.
        config.api.expose_determining_policies.get_or_insert(true);
        tracing::warn!("DEV MODE: dev issuer key and demo tools; for trying out only");
        let issuer = DevIssuer::ensure(&config)?;
        (Some(crate::dev::start_demo_backends().await?), Some(issuer))
    } else {
        (None, None)
    };
    let built = crate::server::build(config.clone(), demo.as_ref())?;
    let listener = crate::server::bind(&config).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "toolgate listening");
    if let (Some(dev), Some(issuer)) = (&dev_config, &dev_issuer) {
        // Best effort: a broker whose stdout reader went away keeps serving.
        let _ = outln!("{}", crate::dev::banner(dev, issuer, addr)?);
    }
    crate::server::run(listener, built, crate::server::shutdown_signal()).await
}

fn token(action: TokenCommand) -> anyhow::Result<ExitCode> {
    match action {
        TokenCommand::Mint {
            config,
            sub,
            scope,
            aud,
            ttl,
            groups,
            act,
        } => {
            let config = crate::dev::load_config(&config)?.config;
            let issuer = DevIssuer::ensure(&config)?;
            let token = issuer.mint(&MintOptions {
                sub,
                scope,
                aud,
                ttl,
                groups,
                act,
            })?;
            outln!("{token}")?;
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Verify {
            config,
            jwks,
            issuer,
            audience,
            allow_any_typ,
            signature_only,
            token,
        } => {
            let token = if token == "-" {
                let mut buf = String::new();
                std::io::stdin().take(1 << 20).read_to_string(&mut buf)?;
                buf.trim().to_owned()
            } else {
                token
            };
            let result = match (jwks, signature_only) {
                (Some(jwks), true) => signature_only_with_jwks(&jwks, &token)?,
                (jwks, signature_only) => {
                    let config = match (jwks, issuer, audience) {
                        (Some(jwks), Some(issuer), Some(audience)) => {
                            standalone_config(jwks, issuer, audience, allow_any_typ)?
                        }
                        (Some(_), _, _) => anyhow::bail!(
                            "`--jwks` needs `--issuer` and `--audience` (or `--signature-only`)"
                        ),
                        (None, _, _) => load_config(&config)?,
                    };
                    let authenticator = Authenticator::from_config(&config)?;
                    // Remote key sets are fetched once; file ones are already loaded.
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("starting the async runtime")?
                        .block_on(authenticator.refresh_remote());
                    if signature_only {
                        authenticator
                            .verify_signature_only(&token)
                            .and_then(|jws| signature_report(&jws))
                    } else {
                        authenticator.verify(&token).map(|t| {
                            json!({ "claims": t.claims, "verified": t, "header": header_json(&token) })
                        })
                    }
                }
            };
            match result {
                Ok(out) => {
                    outln!("{}", serde_json::to_string_pretty(&out)?)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    outln!(
                        "{}",
                        json!({ "valid": false, "reason": e.code(), "detail": e.to_string() })
                    )?;
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

/// `token verify --jwks FILE --signature-only`: the signature alone, against that key set,
/// under any algorithm the broker accepts (bound to the key as always).
fn signature_only_with_jwks(
    jwks: &Path,
    token: &str,
) -> anyhow::Result<Result<serde_json::Value, crate::auth::TokenError>> {
    let text = std::fs::read_to_string(jwks)
        .with_context(|| format!("reading JWKS file `{}`", jwks.display()))?;
    let (keys, skipped) =
        KeySet::from_jwks_str(&text).with_context(|| format!("JWKS file `{}`", jwks.display()))?;
    for warning in skipped {
        tracing::warn!(path = %jwks.display(), %warning, "verification key skipped");
    }
    let algorithms: Vec<_> = crate::config::ASYMMETRIC_ALGORITHMS
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    Ok(
        decode_jws(token, LimitsConfig::default().max_token_bytes).and_then(|jws| {
            jws.verify(&keys, &algorithms)?;
            signature_report(&jws)
        }),
    )
}

/// What `--signature-only` prints for a verified JWS: the header, and the payload as claims
/// when it is JSON (shown only, never checked), else as base64url.
fn signature_report(jws: &Jws<'_>) -> Result<serde_json::Value, crate::auth::TokenError> {
    let payload = jws.payload()?;
    let mut out = json!({ "signature": "valid", "header": jws.header });
    match serde_json::from_slice::<serde_json::Value>(&payload) {
        Ok(claims) => out["claims"] = claims,
        Err(_) => {
            out["payload"] =
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &payload)
                    .into()
        }
    }
    Ok(out)
}

/// The token's header as JSON, for display (`null` if it is not JSON).
fn header_json(token: &str) -> serde_json::Value {
    token
        .split('.')
        .next()
        .and_then(|h| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h).ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The config `token verify --jwks` checks against: one issuer with the same defaults as an
/// `[[issuers]]` entry in a config file (so `typ: at+jwt` is required unless
/// `--allow-any-typ`), accepting every asymmetric algorithm the broker accepts.
fn standalone_config(
    jwks: PathBuf,
    issuer: String,
    audience: String,
    allow_any_typ: bool,
) -> anyhow::Result<Config> {
    // Deserialised like a config file's entry, so every default is the config's own.
    let mut issuer: IssuerConfig = serde_json::from_value(json!({
        "issuer": issuer,
        "audiences": [audience],
        "jwks_file": jwks,
        "algorithms": crate::config::ASYMMETRIC_ALGORITHMS,
    }))
    .context("building the issuer for `--jwks`")?;
    if allow_any_typ {
        issuer.require_at_jwt_typ = false;
    }
    let mut config = Config {
        server: Default::default(),
        limits: LimitsConfig::default(),
        issuers: vec![issuer],
        policy: Default::default(),
        audit: Default::default(),
        tools: Vec::new(),
        upstreams: Vec::new(),
        admin: Default::default(),
        mcp: Default::default(),
        api: Default::default(),
        base_dir: PathBuf::from("."),
    };
    config.validate()?;
    Ok(config)
}
