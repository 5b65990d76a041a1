//! `log archive`: moves old records to a JSONL file that ends with a signed checkpoint, and
//! records where the remaining chain starts (the anchor), so what remains still verifies.

use std::io::Write;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;

use super::checkpoint::{self, StoredCheckpoint};
use super::lookup;
use super::query::{self, Filter, MAX_LIMIT};
use super::verify::{self, VerifyError};
use super::{Head, now_ms};
use crate::signing::SigningKey;

/// Why an archive was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The log does not verify: archiving would launder tampering.
    #[error("the log does not verify, nothing archived: {0}")]
    Unverified(VerifyError),
    /// Reading the log or writing the archive failed.
    #[error("archive failed: {0}")]
    Io(String),
}

/// What an archive moved.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    /// Records moved to the file.
    pub records: u64,
    /// The new anchor: the last archived record (seq 0 when nothing was archived).
    pub anchor_seq: i64,
    /// Its hash.
    pub anchor_hash: String,
}

fn io(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Io(e.to_string())
}

/// Moves every record older than `before_ms` (a prefix of the chain: it stops at the first
/// record at or after that time) to `out`, which must not exist yet.
pub fn archive(
    db: &Path,
    before_ms: i64,
    out: &Path,
    key: &SigningKey,
) -> Result<ArchiveReport, ArchiveError> {
    let jwks = checkpoint::jwks_of(key).map_err(io)?;
    verify::verify_db(db, Some(&jwks)).map_err(ArchiveError::Unverified)?;
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(io)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(io)?;
    let start = super::chain_head_from_anchor(&conn).map_err(io)?;
    let cut = last_archived_seq(&conn, before_ms, start.seq)?;
    if cut <= start.seq {
        return Ok(ArchiveReport {
            records: 0,
            anchor_seq: start.seq,
            anchor_hash: start.hash,
        });
    }
    let cut_hash: String = conn
        .query_row("SELECT hash FROM decisions WHERE seq = ?1", [cut], |r| {
            r.get(0)
        })
        .map_err(io)?;
    let anchor = Head {
        seq: cut,
        hash: cut_hash,
    };

    // Rows up to `cut` never change (the log is append-only), so the file is written
    // without holding the write lock; the broker keeps appending meanwhile.
    // An archive holds the same subjects and arguments as the log: owner-only, like it.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(out)
        .map_err(|e| io(format!("`{}`: {e}", out.display())))?;
    let mut writer = std::io::BufWriter::new(file);
    let written = write_records(&conn, &mut writer, start.seq, cut)?;
    let old: Vec<StoredCheckpoint> = checkpoint::load_all(&conn)
        .map_err(io)?
        .into_iter()
        .filter(|c| c.seq > start.seq && c.seq <= cut)
        .collect();
    let seal = checkpoint::sign(key, &anchor, "archive").map_err(io)?;
    for cp in old.iter().chain(std::iter::once(&seal)) {
        writeln!(writer, "{}", checkpoint::jsonl_line(cp)).map_err(io)?;
    }
    let file = writer.into_inner().map_err(io)?;
    file.sync_all().map_err(io)?;

    // Only once the file is durable are the rows removed.
    let mut conn = conn;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(io)?;
    checkpoint::insert(&tx, &seal).map_err(io)?;
    tx.execute("DELETE FROM decisions WHERE seq <= ?1", [cut])
        .map_err(io)?;
    lookup::forget_through(&tx, cut).map_err(io)?;
    tx.execute("DELETE FROM checkpoints WHERE seq < ?1", [cut])
        .map_err(io)?;
    tx.execute(
        "INSERT INTO chain_anchor (id, seq, hash, time_ms, archive) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, time_ms = excluded.time_ms, archive = excluded.archive",
        params![anchor.seq, anchor.hash, now_ms(), out.display().to_string()],
    )
    .map_err(io)?;
    tx.commit().map_err(io)?;
    Ok(ArchiveReport {
        records: written,
        anchor_seq: anchor.seq,
        anchor_hash: anchor.hash,
    })
}

/// The last record to archive: the one before the first at or after `before_ms`, else the
/// last record; `start_seq` (nothing to archive) when the log is empty.
fn last_archived_seq(
    conn: &Connection,
    before_ms: i64,
    start_seq: i64,
) -> Result<i64, ArchiveError> {
    let first_kept = query::query(
        conn,
        &Filter {
            since_ms: Some(before_ms),
            limit: 1,
            ..Filter::default()
        },
    )
    .map_err(io)?
    .decisions
    .first()
    .map(|r| r.seq);
    let last_seq: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM decisions", [], |r| r.get(0))
        .map_err(io)?;
    Ok(match (first_kept, last_seq) {
        (Some(first), _) => first - 1,
        (None, Some(last)) => last,
        (None, None) => start_seq,
    })
}

/// Writes the records after `start_seq` up to `cut` as JSON lines, page by page; returns
/// how many were written.
fn write_records(
    conn: &Connection,
    writer: &mut impl Write,
    start_seq: i64,
    cut: i64,
) -> Result<u64, ArchiveError> {
    let mut page_filter = Filter {
        after_seq: Some(start_seq),
        limit: MAX_LIMIT,
        ..Filter::default()
    };
    let mut written = 0u64;
    'pages: loop {
        let page = query::query(conn, &page_filter).map_err(io)?;
        for r in &page.decisions {
            if r.seq > cut {
                break 'pages;
            }
            writeln!(writer, "{}", serde_json::to_string(r).map_err(io)?).map_err(io)?;
            written += 1;
        }
        match page.decisions.last() {
            Some(last) if page.next_cursor.is_some() => page_filter.after_seq = Some(last.seq),
            _ => break,
        }
    }
    Ok(written)
}
