//! `[policy]`: where the Cedar policies and schema stub live, and how often they are watched.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, check_range};

/// `[policy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory of `*.cedar` policy files.
    pub dir: PathBuf,
    /// The Cedar schema stub (entity types, common types, the `call_tool` group).
    pub schema: PathBuf,
    /// How often the policy directory is checked for changes, in ms; `0` turns the watcher
    /// off (SIGHUP and `POST /admin/policies/reload` still reload).
    pub watch_interval_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("policies"),
            schema: PathBuf::from("schemas/toolgate.cedarschema"),
            watch_interval_ms: 1000,
        }
    }
}

impl PolicyConfig {
    /// Checks `[policy]`: the watch interval is 0 (off) or within its range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.watch_interval_ms != 0 {
            check_range(
                "policy.watch_interval_ms",
                self.watch_interval_ms as usize,
                100,
                3_600_000,
            )?;
        }
        Ok(())
    }
}
