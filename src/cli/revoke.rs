//! `toolgate revoke`: records a revocation in, or lists those in effect from, the state
//! database the server reads on every request (so it applies to a running server too).

use super::output::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::auth::RevocationStore;
use crate::auth::revocation::RevocationRequest;
use crate::auth::unix_now;

/// `revoke --jti J | --subject S | --issuer I [--before T]`, or `revoke list`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RevokeArgs {
    /// `list`: show the revocations in effect.
    #[command(subcommand)]
    pub action: Option<RevokeCommand>,
    /// The config file naming the state directory and trusted issuers.
    #[arg(long, default_value = "toolgate.toml")]
    pub config: PathBuf,
    /// Revoke the token with this `jti`.
    #[arg(long, conflicts_with = "subject")]
    pub jti: Option<String>,
    /// Revoke every token of this subject issued before now (or `--before`).
    #[arg(long)]
    pub subject: Option<String>,
    /// Limit to this issuer; alone, revoke every token it issued before now (or `--before`).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Cut-off as Unix seconds (default now; not in the future).
    #[arg(long, conflicts_with = "jti")]
    pub before: Option<i64>,
    /// Why, for the record.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `revoke` subcommands.
#[derive(Debug, Subcommand)]
pub enum RevokeCommand {
    /// Print the revocations in effect as JSON.
    List {
        /// The config file naming the state directory.
        #[arg(long, default_value = "toolgate.toml")]
        config: PathBuf,
    },
}

/// Runs `toolgate revoke`.
pub fn run(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    if let Some(RevokeCommand::List { config }) = args.action {
        let config = super::load_config(&config)?;
        let store = open(&config)?;
        let list = store.list(unix_now())?;
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = super::load_config(&args.config)?;
    let store = open(&config)?;
    let request = RevocationRequest {
        jti: args.jti,
        subject: args.subject,
        issuer: args.issuer,
        before: args.before,
        reason: args.reason,
    };
    let revocation = store.revoke(&config, &request, unix_now())?;
    outln!("{}", serde_json::to_string_pretty(&revocation)?)?;
    Ok(ExitCode::SUCCESS)
}

fn open(config: &crate::config::Config) -> anyhow::Result<RevocationStore> {
    let path = crate::auth::revocation::state_db_path(config);
    RevocationStore::open(&path)
        .with_context(|| format!("opening the state database `{}`", path.display()))
}
