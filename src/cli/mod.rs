//! The command line: `serve`, `token mint|verify`, `revoke`, `policy validate|test`,
//! `schema print`, `tools list`, `keys rotate|jwks`, `log verify|archive|query|export`, `replay`.

pub mod keys;
pub mod log;
mod policy_test;
pub mod revoke;
pub mod tools;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::auth::Authenticator;
use crate::config::{Config, IssuerConfig, LimitsConfig};
use crate::dev::{DevIssuer, MintOptions};
use crate::policy::PolicyEngine;
use crate::tools::{DemoUrls, Registry};

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
        /// Dev mode: create a dev issuer key, start demo tools, print curl commands.
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
        /// A JWKS file to verify against instead of the config.
        #[arg(long, requires_all = ["issuer", "audience"])]
        jwks: Option<PathBuf>,
        /// Expected issuer (with `--jwks`).
        #[arg(long)]
        issuer: Option<String>,
        /// Expected audience (with `--jwks`).
        #[arg(long)]
        audience: Option<String>,
        /// Check only the signature and key binding, no claims.
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
        .with_writer(std::io::stderr);
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
            println!(
                "ok: {} policies valid against the schema for {} tools (policy set {})",
                snapshot.policy_count(),
                config.tools.len(),
                &snapshot.policy_set_hash[..16]
            );
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
            print!("{}", snapshot.schema_text());
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
    let config = load_config(config_path)?;
    let (demo, dev_issuer) = if dev {
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
    if let Some(issuer) = &dev_issuer {
        println!("{}", crate::dev::banner(&config, issuer, addr)?);
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
            let config = load_config(&config)?;
            let issuer = DevIssuer::ensure(&config)?;
            let token = issuer.mint(&MintOptions {
                sub,
                scope,
                aud,
                ttl,
                groups,
                act,
            })?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Verify {
            config,
            jwks,
            issuer,
            audience,
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
            let config = match (jwks, issuer, audience) {
                (Some(jwks), Some(issuer), Some(audience)) => {
                    standalone_config(jwks, issuer, audience)?
                }
                _ => load_config(&config)?,
            };
            let authenticator = Authenticator::from_config(&config)?;
            // Remote key sets are fetched once; file ones are already loaded.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(authenticator.refresh_remote());
            let result = if signature_only {
                authenticator
                    .verify_signature_only(&token)
                    .map(|claims| json!({ "claims": claims }))
            } else {
                authenticator
                    .verify(&token)
                    .map(|t| json!({ "claims": t.claims, "verified": t }))
            };
            match result {
                Ok(out) => {
                    let header = token
                        .split('.')
                        .next()
                        .and_then(|h| {
                            base64::Engine::decode(
                                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                                h,
                            )
                            .ok()
                        })
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                    let mut out = out;
                    out["header"] = header.unwrap_or_default();
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!(
                        "{}",
                        json!({ "valid": false, "reason": e.code(), "detail": e.to_string() })
                    );
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

fn standalone_config(jwks: PathBuf, issuer: String, audience: String) -> anyhow::Result<Config> {
    let config = Config {
        server: Default::default(),
        limits: LimitsConfig::default(),
        issuers: vec![IssuerConfig {
            issuer,
            audiences: vec![audience],
            jwks_file: Some(jwks),
            jwks_url: None,
            discovery: false,
            remote_keys: Default::default(),
            algorithms: crate::config::ASYMMETRIC_ALGORITHMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            leeway_seconds: 30,
            max_lifetime_seconds: 3600,
            groups_claim: "groups".to_owned(),
            require_at_jwt_typ: false,
            require_jti: false,
            jti_single_use: false,
        }],
        policy: Default::default(),
        audit: Default::default(),
        tools: Vec::new(),
        upstreams: Vec::new(),
        admin: Default::default(),
        mcp: Default::default(),
        base_dir: PathBuf::from("."),
    };
    config.validate()?;
    Ok(config)
}
