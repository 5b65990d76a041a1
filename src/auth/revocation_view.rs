//! The revocations in effect, held in memory so that a request's revocation check is a few
//! hash lookups instead of a read transaction on the state database (whose shared-memory
//! locks cost two `fcntl` calls per request).
//!
//! The view stays exact across processes through a change marker beside the database
//! (`state.revocations`): every revocation, by this server's API or by `toolgate revoke` in
//! another process, is committed first and then appends one byte to the marker. A request
//! reads the marker's metadata (one `fstat` of the open marker) and reloads the view if it
//! differs from the one the view was loaded under; the metadata is read *before* the reload,
//! so a revocation whose append came before a request's check is always in the view that
//! check uses. Without a marker (deleted, unreadable) every check queries the database, as it
//! did before the view.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::revoked::{Revocation, RevocationKind, TokenFacts};

/// Most revocations held in memory; above this, every check queries the database instead
/// (≈ 150 bytes each, so the view stays within ≈ 15 MB).
pub(super) const MAX_ENTRIES: usize = 100_000;

/// The marker of the state database at `db_path`: `state.db` -> `state.revocations`.
pub(super) fn marker_path(db_path: &Path) -> PathBuf {
    db_path.with_extension("revocations")
}

/// Opens the marker for appending, creating it if needed.
pub(super) fn open_marker(marker: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(marker)
}

/// The change marker, held open so that a check reads its metadata from the open file
/// (`fstat`) rather than resolving its path (`statx`, ≈ 3 µs under load). A held file that
/// is no longer linked (the marker was deleted or replaced) is dropped and the path opened
/// again, so a check never watches a file that revocations no longer append to.
#[derive(Debug)]
pub(super) struct Marker {
    path: PathBuf,
    held: ArcSwapOption<std::fs::File>,
}

impl Marker {
    /// The marker at `path`, opened on the first check.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            held: ArcSwapOption::empty(),
        }
    }

    /// Where the marker is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The marker's current stamp, or `None` if there is no marker to read.
    pub fn stamp(&self) -> Option<MarkerStamp> {
        if !cfg!(unix) {
            // No stamp can be read: every check queries, without opening the marker.
            return None;
        }
        if let Some(file) = self.held.load().as_deref()
            && let Some(stamp) = MarkerStamp::of_linked(file)
        {
            return Some(stamp);
        }
        let file = std::fs::File::open(&self.path).ok();
        let stamp = file.as_ref().and_then(MarkerStamp::of_linked);
        self.held
            .store(file.filter(|_| stamp.is_some()).map(Arc::new));
        stamp
    }
}

/// What identifies one state of the marker file: a revocation appends a byte (length), and
/// a replaced file has another inode or change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MarkerStamp {
    dev: u64,
    ino: u64,
    len: u64,
    ctime_ns: i128,
}

impl MarkerStamp {
    /// The stamp of an open marker, or `None` if its metadata cannot be read or it is no
    /// longer linked under any name.
    #[cfg(unix)]
    pub fn of_linked(file: &std::fs::File) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok().filter(|m| m.nlink() > 0)?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }

    /// Without Unix metadata the marker cannot tell a change apart: every check queries.
    #[cfg(not(unix))]
    pub fn of_linked(_file: &std::fs::File) -> Option<Self> {
        None
    }
}

/// A revocation's reach, under its `jti`, its subject, or issuer-wide.
#[derive(Debug)]
struct Cutoff {
    /// `None`: tokens of any issuer.
    issuer: Option<String>,
    /// Tokens issued at or before this time are revoked (subject and issuer kinds).
    before: i64,
    /// After this time the entry affects no valid token.
    expires_at: i64,
}

impl Cutoff {
    fn applies(&self, issuer: &str, now: i64) -> bool {
        self.expires_at >= now && self.issuer.as_deref().is_none_or(|i| i == issuer)
    }
}

/// The revocations in effect when the view was loaded, indexed for the per-request check.
#[derive(Debug)]
pub(super) struct RevocationView {
    /// The marker's stamp, read before the revocations were.
    pub stamp: MarkerStamp,
    by_jti: HashMap<String, Vec<Cutoff>>,
    by_subject: HashMap<String, Vec<Cutoff>>,
    issuer_wide: Vec<Cutoff>,
}

impl RevocationView {
    /// Indexes `revocations`, read from the database after `stamp`.
    pub fn new(stamp: MarkerStamp, revocations: Vec<Revocation>) -> Self {
        let mut view = Self {
            stamp,
            by_jti: HashMap::new(),
            by_subject: HashMap::new(),
            issuer_wide: Vec::new(),
        };
        for r in revocations {
            let cutoff = Cutoff {
                issuer: r.issuer,
                before: r.before,
                expires_at: r.expires_at,
            };
            match (r.kind, r.value) {
                (RevocationKind::Jti, Some(jti)) => {
                    view.by_jti.entry(jti).or_default().push(cutoff)
                }
                (RevocationKind::Subject, Some(sub)) => {
                    view.by_subject.entry(sub).or_default().push(cutoff)
                }
                (RevocationKind::Issuer, _) => view.issuer_wide.push(cutoff),
                // A jti or subject entry without its value matches nothing, as in SQL.
                (RevocationKind::Jti | RevocationKind::Subject, None) => {}
            }
        }
        view
    }

    /// Whether a token is revoked: the same rule as `RevocationStore::query_is_revoked`.
    pub fn is_revoked(&self, token: TokenFacts<'_>, now: i64) -> bool {
        let TokenFacts {
            issuer,
            subject,
            jti,
            issued_at,
        } = token;
        let iat = issued_at.unwrap_or(i64::MIN);
        let by_jti = jti
            .and_then(|j| self.by_jti.get(j))
            .is_some_and(|cs| cs.iter().any(|c| c.applies(issuer, now)));
        let cut_off = |c: &Cutoff| c.applies(issuer, now) && iat <= c.before;
        by_jti
            || self
                .by_subject
                .get(subject)
                .is_some_and(|cs| cs.iter().any(cut_off))
            || self.issuer_wide.iter().any(cut_off)
    }
}
