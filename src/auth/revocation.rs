//! Stage 1, last step: revocations and the single-use `jti` set, persisted in the state
//! database (`<state_dir>/state.db`) so they survive restarts and are shared by the server
//! and the `toolgate revoke` CLI (which may write while the server runs).
//!
//! A revocation written by any process takes effect on the next request: each check reads
//! the revocations in effect from memory, reloaded whenever the change marker beside the
//! database says a revocation was written (see `revocation_view.rs`). Entries carry an
//! expiry: the moment every token they could affect has expired anyway (cut-off + the
//! longest lifetime and leeway of the issuers concerned); expired entries are pruned.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rusqlite::{Connection, OpenFlags, params};
use serde::Deserialize;

use super::revocation_view::{self, Marker, MarkerStamp, RevocationView};
pub use super::revoked::{Revocation, RevocationKind, TokenFacts};
use crate::config::Config;

/// How long a request waits for the state database held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Expired seen-`jti` entries are pruned after this many insertions (and at open).
const PRUNE_EVERY: u64 = 1024;

/// Longest `jti`, subject, issuer or reason stored; longer input is refused.
pub const MAX_FIELD_LEN: usize = 1024;

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('jti', 'subject', 'issuer')),
    issuer TEXT,
    value TEXT,
    before INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS revocations_value ON revocations (kind, value);
CREATE INDEX IF NOT EXISTS revocations_issuer ON revocations (kind, issuer);
CREATE TABLE IF NOT EXISTS seen_jti (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_jti_expiry ON seen_jti (expires_at);
";

/// An error of the state database or of a revocation request.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The database could not be opened or queried.
    #[error("state database `{path}`: {message}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// The revocation request is not acceptable.
    #[error("invalid revocation: {0}")]
    Invalid(String),
}

/// A revocation request, from the admin API or the CLI.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// Revoke the token with this `jti`.
    pub jti: Option<String>,
    /// Revoke the tokens of this subject issued before `before` (default now).
    pub subject: Option<String>,
    /// Restrict to this issuer; alone, revoke every token of the issuer issued before `before`.
    pub issuer: Option<String>,
    /// Cut-off, Unix seconds (default now; never in the future).
    pub before: Option<i64>,
    /// Free-text reason for the record.
    pub reason: Option<String>,
}

/// The revocation list and single-use `jti` set in the state database.
pub struct RevocationStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    inserts: AtomicU64,
    /// The change marker every revocation appends to.
    marker: Marker,
    /// The revocations in effect, as of the marker stamp they were loaded under.
    view: ArcSwapOption<RevocationView>,
    /// Held while the view reloads, so concurrent requests reload it once.
    reloading: Mutex<()>,
}

impl std::fmt::Debug for RevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RevocationStore {
    /// Opens (creating if needed) the state database at `path`.
    pub fn open(path: &Path) -> Result<Self, RevocationError> {
        let db_error = |e: &dyn std::fmt::Display| RevocationError::Database {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            // The state directory: owner-only, like everything in it.
            crate::private_files::secure_dir(dir).map_err(|e| db_error(&e))?;
        }
        crate::private_files::secure_sqlite_file(path).map_err(|e| db_error(&e))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| db_error(&e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| db_error(&e))?;
        // WAL + NORMAL: a commit survives a process crash without an fsync per request; a
        // power loss may forget the last seen `jti`s, never a revocation written by the CLI
        // or API (those commit with FULL below).
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(|e| db_error(&e))?;
        conn.execute_batch(SCHEMA_SQL).map_err(|e| db_error(&e))?;
        let marker = revocation_view::marker_path(path);
        let marker_error =
            |e: std::io::Error| db_error(&format!("change marker `{}`: {e}", marker.display()));
        if !marker.exists() {
            // Whoever may write revocations to the database may announce them: the marker
            // gets the database file's permissions.
            revocation_view::open_marker(&marker).map_err(marker_error)?;
            std::fs::metadata(path)
                .and_then(|db| std::fs::set_permissions(&marker, db.permissions()))
                .map_err(marker_error)?;
        }
        crate::private_files::secure_file(&marker).map_err(marker_error)?;
        let store = Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            inserts: AtomicU64::new(0),
            marker: Marker::new(marker),
            view: ArcSwapOption::empty(),
            reloading: Mutex::new(()),
        };
        store.prune(crate::auth::unix_now())?;
        Ok(store)
    }

    /// Opens the state database named by `config`.
    pub fn open_for(config: &Config) -> Result<Self, RevocationError> {
        Self::open(&state_db_path(config))
    }

    fn db_error(&self, e: impl std::fmt::Display) -> RevocationError {
        RevocationError::Database {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, RevocationError> {
        self.conn
            .lock()
            .map_err(|_| self.db_error("connection lock poisoned"))
    }

    /// Validates and records a revocation as of `now`, for the issuers of `config`.
    pub fn revoke(
        &self,
        config: &Config,
        request: &RevocationRequest,
        now: i64,
    ) -> Result<Revocation, RevocationError> {
        let invalid = |m: &str| RevocationError::Invalid(m.to_owned());
        for field in [
            &request.jti,
            &request.subject,
            &request.issuer,
            &request.reason,
        ]
        .into_iter()
        .flatten()
        {
            if field.is_empty() || field.len() > MAX_FIELD_LEN {
                return Err(RevocationError::Invalid(format!(
                    "fields must be 1 to {MAX_FIELD_LEN} bytes"
                )));
            }
        }
        let (kind, value) = match (&request.jti, &request.subject, &request.issuer) {
            (Some(_), Some(_), _) => return Err(invalid("give `jti` or `subject`, not both")),
            (Some(jti), None, _) => (RevocationKind::Jti, Some(jti.clone())),
            (None, Some(sub), _) => (RevocationKind::Subject, Some(sub.clone())),
            (None, None, Some(_)) => (RevocationKind::Issuer, None),
            (None, None, None) => return Err(invalid("give `jti`, `subject` or `issuer`")),
        };
        if kind == RevocationKind::Jti && request.before.is_some() {
            return Err(invalid(
                "`before` applies to subject and issuer revocations",
            ));
        }
        let before = request.before.unwrap_or(now);
        if before > now {
            return Err(invalid("`before` must not be in the future"));
        }
        let issuers: Vec<_> = config
            .issuers
            .iter()
            .filter(|i| {
                request
                    .issuer
                    .as_deref()
                    .is_none_or(|want| i.issuer == want)
            })
            .collect();
        if issuers.is_empty() {
            return Err(match &request.issuer {
                Some(iss) => RevocationError::Invalid(format!("`{iss}` is not a trusted issuer")),
                None => invalid("no trusted issuers are configured"),
            });
        }
        // A token accepted at time t has exp ≤ t + leeway and exp − iat ≤ max lifetime, so
        // once `cut-off + lifetime + 2·leeway` has passed no token the entry covers is valid.
        let validity = issuers
            .iter()
            .map(|i| (i.max_lifetime_seconds + 2 * i.leeway_seconds) as i64)
            .max()
            .unwrap_or(0);
        let expires_at = before.max(now) + validity;
        let conn = self.lock()?;
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(|e| self.db_error(e))?;
        let result = conn.execute(
            "INSERT INTO revocations (kind, issuer, value, before, created_at, expires_at, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                kind.as_str(),
                request.issuer,
                value,
                before,
                now,
                expires_at,
                request.reason
            ],
        );
        let restore = conn.execute_batch("PRAGMA synchronous=NORMAL;");
        result.map_err(|e| self.db_error(e))?;
        restore.map_err(|e| self.db_error(e))?;
        // Committed first, then announced: a server that sees the marker change finds the row.
        self.announce_change()?;
        Ok(Revocation {
            id: conn.last_insert_rowid(),
            kind,
            issuer: request.issuer.clone(),
            value,
            before,
            created_at: now,
            expires_at,
            reason: request.reason.clone(),
        })
    }

    /// Appends a byte to the change marker, telling every server sharing this database to
    /// reload its view of the revocations.
    fn announce_change(&self) -> Result<(), RevocationError> {
        use std::io::Write;
        revocation_view::open_marker(self.marker.path())
            .and_then(|mut f| f.write_all(b"\n"))
            .map_err(|e| {
                self.db_error(format!(
                    "the revocation is stored, but a running server may not apply it until \
                     the change marker `{}` can be written: {e}",
                    self.marker.path().display()
                ))
            })
    }

    /// The revocations still in effect at `now`, oldest first.
    pub fn list(&self, now: i64) -> Result<Vec<Revocation>, RevocationError> {
        self.in_effect(now, None)
    }

    /// The revocations in effect at `now`, oldest first, at most `limit` of them.
    fn in_effect(
        &self,
        now: i64,
        limit: Option<usize>,
    ) -> Result<Vec<Revocation>, RevocationError> {
        let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, kind, issuer, value, before, created_at, expires_at, reason
                 FROM revocations WHERE expires_at >= ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map(params![now, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(|e| self.db_error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, issuer, value, before, created_at, expires_at, reason) =
                row.map_err(|e| self.db_error(e))?;
            let kind = RevocationKind::parse(&kind)
                .ok_or_else(|| self.db_error(format!("unknown revocation kind `{kind}`")))?;
            out.push(Revocation {
                id,
                kind,
                issuer,
                value,
                before,
                created_at,
                expires_at,
                reason,
            });
        }
        Ok(out)
    }

    /// Whether a token is revoked. `iat` is in whole seconds, so a token issued in the very
    /// second of the cut-off counts as before it (fail closed; the client just gets a new
    /// token). A token without `iat` counts as issued before any cut-off of its subject or
    /// issuer: we cannot show it was issued after.
    ///
    /// Answered from the view in memory, reloaded first if the change marker moved; with no
    /// readable marker, or more revocations than the view holds, from the database.
    pub fn is_revoked(&self, token: TokenFacts<'_>, now: i64) -> Result<bool, RevocationError> {
        let Some(stamp) = self.marker.stamp() else {
            return self.query_is_revoked(token, now);
        };
        match self.view_at(stamp, now)? {
            Some(view) => Ok(view.is_revoked(token, now)),
            None => self.query_is_revoked(token, now),
        }
    }

    /// The view loaded under `stamp`, reloading it if the marker moved since; `None` if the
    /// revocations in effect are too many to hold.
    fn view_at(
        &self,
        stamp: MarkerStamp,
        now: i64,
    ) -> Result<Option<Arc<RevocationView>>, RevocationError> {
        let current = |view: Option<Arc<RevocationView>>| view.filter(|v| v.stamp == stamp);
        if let Some(view) = current(self.view.load_full()) {
            return Ok(Some(view));
        }
        let _reloading = self
            .reloading
            .lock()
            .map_err(|_| self.db_error("view lock poisoned"))?;
        if let Some(view) = current(self.view.load_full()) {
            return Ok(Some(view));
        }
        // On a failure the old view stays out of use: every check retries the reload and
        // fails closed until the database can be read. Entries that expired a minute ago are
        // loaded too, for a concurrent check whose clock read came a little earlier; each
        // check compares expiries with its own time.
        let since = now.saturating_sub(60);
        let revocations = self.in_effect(since, Some(revocation_view::MAX_ENTRIES + 1))?;
        if revocations.len() > revocation_view::MAX_ENTRIES {
            self.view.store(None);
            return Ok(None);
        }
        let view = Arc::new(RevocationView::new(stamp, revocations));
        self.view.store(Some(view.clone()));
        Ok(Some(view))
    }

    /// Whether a token is revoked, by a query on the database.
    fn query_is_revoked(&self, token: TokenFacts<'_>, now: i64) -> Result<bool, RevocationError> {
        let conn = self.lock()?;
        // Cached: this runs on every request, and planning the query costs more than running it.
        let mut statement = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM revocations
               WHERE expires_at >= ?1 AND (issuer IS NULL OR issuer = ?2) AND (
                    (kind = 'jti' AND value = ?3)
                 OR (kind = 'subject' AND value = ?4 AND ?5 <= before)
                 OR (kind = 'issuer' AND ?5 <= before)))",
            )
            .map_err(|e| self.db_error(e))?;
        statement
            .query_row(
                params![
                    now,
                    token.issuer,
                    token.jti,
                    token.subject,
                    token.issued_at.unwrap_or(i64::MIN)
                ],
                |r| r.get::<_, bool>(0),
            )
            .map_err(|e| self.db_error(e))
    }

    /// Records a single-use `jti`; returns `false` if it was seen before (a replay). The
    /// entry lives until `expires_at` (the token's `exp` plus leeway), after which the token
    /// is refused as expired anyway, so the set is bounded by the tokens valid at one time.
    pub fn first_use(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, RevocationError> {
        let conn = self.lock()?;
        // One atomic statement, so two processes sharing the file cannot both see a first
        // use. An expired entry for the same jti is replaced: its token could not pass anyway.
        let changed = conn
            .prepare_cached(
                "INSERT INTO seen_jti (issuer, jti, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at
                 WHERE seen_jti.expires_at < ?4",
            )
            .and_then(|mut s| s.execute(params![issuer, jti, expires_at, now]))
            .map_err(|e| self.db_error(e))?;
        if changed == 0 {
            return Ok(false);
        }
        drop(conn);
        if self.inserts.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune(now)?;
        }
        Ok(true)
    }

    /// Drops revocations and seen `jti`s whose tokens have all expired.
    pub fn prune(&self, now: i64) -> Result<(), RevocationError> {
        let conn = self.lock()?;
        conn.execute(
            "DELETE FROM revocations WHERE expires_at < ?1",
            params![now],
        )
        .map_err(|e| self.db_error(e))?;
        conn.execute("DELETE FROM seen_jti WHERE expires_at < ?1", params![now])
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }
}

/// The state database of `config`: `<state_dir>/state.db`.
pub fn state_db_path(config: &Config) -> PathBuf {
    config.state_dir().join("state.db")
}

#[cfg(test)]
mod tests;
