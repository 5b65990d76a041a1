//! `[audit]`: the decision log's file, durability, batching and checkpoints.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, check_range};

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The SQLite decision log; default `<state_dir>/decisions.db`.
    pub db: Option<PathBuf>,
    /// SQLite durability: `full` (survives power loss) or `normal` (survives a process crash).
    pub synchronous: Synchronous,
    /// How long a write waits for a lock held by another process before failing.
    pub busy_timeout_ms: u64,
    /// Most records committed in one transaction.
    pub max_batch: usize,
    /// A signed checkpoint after this many records (0: not by count).
    pub checkpoint_every: u64,
    /// A signed checkpoint after this many seconds with uncovered records (0: not by time).
    pub checkpoint_interval_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            db: None,
            synchronous: Synchronous::Full,
            busy_timeout_ms: 2000,
            max_batch: 256,
            checkpoint_every: 1000,
            checkpoint_interval_seconds: 60,
        }
    }
}

/// SQLite `synchronous` setting for the decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: survives power loss.
    Full,
    /// fsync at WAL checkpoints: survives a process crash, not power loss.
    Normal,
}

impl AuditConfig {
    /// The time between checkpoints, or `None` when `checkpoint_interval_seconds` is 0 (off).
    pub fn checkpoint_interval(&self) -> Option<Duration> {
        (self.checkpoint_interval_seconds > 0)
            .then(|| Duration::from_secs(self.checkpoint_interval_seconds))
    }

    /// Checks `[audit]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("audit.max_batch", self.max_batch, 1, 4096)?;
        check_range(
            "audit.busy_timeout_ms",
            self.busy_timeout_ms as usize,
            0,
            60_000,
        )
    }
}
