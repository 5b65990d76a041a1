//! `toolgate keys`: the broker's own signing keys (the assertions it sends to tool backends).

use super::output::outln;
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::tools::broker_keys::{self, BrokerKeys};

/// `keys rotate`: adds a key published now that signs after `delay_secs`; older keys leave
/// the JWKS once assertions they signed can no longer be valid. Prints what was done.
pub fn rotate(config: &Path, delay_secs: u64) -> anyhow::Result<()> {
    let config = super::load_config(config)?;
    let state_dir = config.state_dir();
    let rotation = broker_keys::rotate(&state_dir, delay_secs, crate::auth::unix_now())
        .with_context(|| format!("rotating broker keys in `{}`", state_dir.display()))?;
    outln!("{}", serde_json::to_string_pretty(&json!(rotation))?)?;
    Ok(())
}

/// `keys jwks`: prints the JWKS the broker serves now.
pub fn jwks(config: &Path) -> anyhow::Result<()> {
    let config = super::load_config(config)?;
    let keys = BrokerKeys::load_or_create(&config.state_dir())
        .context("loading the broker signing keys")?;
    outln!("{}", serde_json::to_string_pretty(&keys.jwks())?)?;
    Ok(())
}
