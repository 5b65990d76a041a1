//! The damaged end of the log: checked when the broker opens the log (it refuses to write onto
//! a chain it cannot extend), cut only on the operator's explicit `serve --repair-log`, which
//! records the cut as a record of its own so that `log verify` shows it. The rule is in
//! `docs/decision-log.md` ("A damaged log").

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

use super::checkpoint::{self, StoredCheckpoint};
use super::repair_record::{Cut, REPAIR_REASON, REPAIR_TOOL};
use super::verify::{self, ChainRow, VerifyError, explain_shortfall, file_shortfall};
use super::{AuditError, DecisionRecord, Head, Verdict, chain_hash, now_ms};
use crate::signing::SigningKey;

fn read(e: rusqlite::Error) -> VerifyError {
    VerifyError::Read(e.to_string())
}

/// Walks every record from the anchor, checking every checkpoint's hash (not signatures).
fn walk_all(conn: &Connection) -> Result<(), VerifyError> {
    let start = anchor(conn).map_err(read)?;
    let checkpoints = checkpoint::load_all(conn).map_err(read)?;
    walk(conn, start, &checkpoints)
}

/// Walks the records after `start`, streaming them (a log may be far larger than memory).
fn walk(
    conn: &Connection,
    start: Head,
    checkpoints: &[StoredCheckpoint],
) -> Result<(), VerifyError> {
    let mut stmt = conn
        .prepare("SELECT seq, prev_hash, hash, record FROM decisions WHERE seq > ?1 ORDER BY seq")
        .map_err(read)?;
    let rows = stmt
        .query_map([start.seq], |r| {
            Ok(ChainRow {
                seq: r.get(0)?,
                prev_hash: r.get(1)?,
                hash: r.get(2)?,
                record: r.get(3)?,
                columns: None,
            })
        })
        .map_err(read)?
        .map(|r| r.map_err(read));
    verify::verify_rows(start, false, rows, checkpoints, None).map(|_| ())
}

fn anchor(conn: &Connection) -> rusqlite::Result<Head> {
    super::chain_head_from_anchor(conn)
}

/// Checks the end of the chain before the broker writes onto it: from the newest checkpoint's
/// record forward (or from the anchor when there is none), every record must hash and link,
/// and no checkpoint may cover a record that is gone. Signatures are `log verify`'s job.
/// Returns the last record the newest checkpoint covers (the anchor's when there is none).
///
/// A file shorter than its header says may have lost records anywhere on its last pages
/// (SQLite fills a page from its end, so the last bytes hold a page's oldest cells): then the
/// whole chain is walked. A crash during a WAL checkpoint can also leave the file short while
/// the WAL still holds the missing pages; the walk reads through the WAL and passes then.
pub fn check_tail(conn: &Connection, path: &Path) -> Result<i64, VerifyError> {
    let anchor = anchor(conn).map_err(read)?;
    let checkpoints: Vec<StoredCheckpoint> =
        checkpoint::load_range(conn, anchor.seq, i64::MAX).map_err(read)?;
    let newest = checkpoints.iter().map(|c| c.seq).max();
    let covered = newest.unwrap_or(anchor.seq);
    if let Some(shortfall) = file_shortfall(path) {
        walk_all(conn).map_err(|e| explain_shortfall(Some(shortfall), e))?;
        tracing::warn!(
            path = %path.display(),
            declared = shortfall.0,
            actual = shortfall.1,
            "the decision log file is shorter than its header says, but its chain is whole; check it with `toolgate log verify`"
        );
        return Ok(covered);
    }
    let from_row = match newest {
        Some(seq) => conn
            .query_row(
                "SELECT prev_hash FROM decisions WHERE seq = ?1",
                [seq],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(read)?
            .map(|prev_hash| Head {
                seq: seq - 1,
                hash: prev_hash,
            }),
        None => None,
    };
    // Without the newest checkpoint's record (cut by a repair, or gone), walk from the anchor.
    let start = from_row.unwrap_or(anchor);
    let relevant: Vec<StoredCheckpoint> = checkpoints
        .into_iter()
        .filter(|c| c.seq > start.seq)
        .collect();
    walk(conn, start, &relevant)?;
    Ok(covered)
}

/// What a repair cut.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The cut, as its record declares it.
    pub cut: Cut,
    /// Records that were present and were deleted (the rest of the cut was already gone).
    pub deleted: u64,
    /// The file that keeps the deleted rows as they were.
    pub saved: PathBuf,
}

/// A cell as it is, whatever damage made of its type: text (invalid UTF-8 replaced), a
/// number, null, or a blob in hex.
fn cell(row: &rusqlite::Row<'_>, i: usize) -> Result<serde_json::Value, RepairError> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(i).map_err(io)? {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(n) => json!(n),
        ValueRef::Real(x) => json!(x),
        ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => json!(hex::encode(b)),
    })
}

/// Writes the rows about to be cut, as they are (damaged text included), to a new owner-only
/// JSONL file beside the log, fsynced before anything is deleted: a repair destroys nothing.
fn save_cut_rows(
    conn: &Connection,
    path: &Path,
    from: i64,
    to: i64,
) -> Result<PathBuf, RepairError> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".cut-{from}-{to}.jsonl"));
    let saved = PathBuf::from(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(&saved)
        .map_err(|e| io(format!("`{}`: {e}", saved.display())))?;
    let mut out = std::io::BufWriter::new(file);
    let mut stmt = conn
        .prepare("SELECT seq, prev_hash, hash, record FROM decisions WHERE seq >= ?1 ORDER BY seq")
        .map_err(io)?;
    let mut rows = stmt.query([from]).map_err(io)?;
    while let Some(r) = rows.next().map_err(io)? {
        let line = json!({
            "seq": cell(r, 0)?,
            "prev_hash": cell(r, 1)?,
            "hash": cell(r, 2)?,
            "record_text": cell(r, 3)?,
        });
        writeln!(out, "{line}").map_err(io)?;
    }
    out.into_inner().map_err(io)?.sync_all().map_err(io)?;
    Ok(saved)
}

/// Why a repair was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The damage is not a broken tail (a forged or rewritten history): cutting would launder
    /// it.
    #[error("refusing to repair, this is not a damaged end of the log: {0}")]
    NotATail(VerifyError),
    /// Reading or writing the log failed.
    #[error("repair failed: {0}")]
    Io(String),
}

fn io(e: impl std::fmt::Display) -> RepairError {
    RepairError::Io(e.to_string())
}

/// `serve --repair-log`: walks the whole chain and, if it breaks, deletes every record from
/// the first bad one to the end, then appends a repair record declaring the cut (linked to the
/// last good record) and a signed checkpoint of it, in one transaction. `None` when the chain
/// is whole.
pub fn repair(path: &Path, key: &SigningKey) -> Result<Option<RepairReport>, RepairError> {
    // A file cut short gets its lost bytes back as the zeros SQLite read there anyway, so that
    // it is whole again once the records they held are cut.
    let shortfall = file_shortfall(path);
    if let Some((declared, _)) = shortfall {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        file.set_len(declared).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    let mut conn = Connection::open(path).map_err(io)?;
    let error = match walk_all(&conn) {
        Ok(()) => return Ok(None),
        Err(e) => explain_shortfall(shortfall, e),
    };
    let Some(from) = error.first_bad_seq() else {
        return Err(RepairError::NotATail(error));
    };
    let Some((to, good)) = cut_end_and_last_good(&conn, from)? else {
        return Err(RepairError::NotATail(error));
    };
    let cause = error.to_string();
    let saved = save_cut_rows(&conn, path, from, to)?;
    let mut record = DecisionRecord::new(
        uuid::Uuid::now_v7().to_string(),
        String::new(),
        "admin",
        now_ms(),
    );
    record.request_id = record.decision_id.clone();
    record.stage = "admin".to_owned();
    record.reason = REPAIR_REASON.to_owned();
    record.decision = Verdict::Allow;
    record.tool = Some(REPAIR_TOOL.to_owned());
    record.arguments = Some(json!({
        "cut_from": from,
        "cut_to": to,
        "cause": cause,
        "saved_to": saved.display().to_string(),
    }));
    record.detail = Some(format!(
        "records {from} to {to} cut by `serve --repair-log`: {cause}"
    ));
    let text = serde_json::to_string(&record).map_err(io)?;
    let seq = to + 1;
    let hash = chain_hash(&good.hash, &text);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(io)?;
    let deleted = tx
        .execute("DELETE FROM decisions WHERE seq >= ?1", [from])
        .map_err(io)?;
    super::lookup::forget_from(&tx, from).map_err(io)?;
    tx.execute(
        "INSERT INTO decisions (seq, decision_id, kind, time_ms, stage, reason, decision, subject, tool, record, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, ?10, ?11)",
        params![
            seq,
            record.decision_id,
            record.kind.as_str(),
            record.time_ms,
            record.stage,
            record.reason,
            record.decision.as_str(),
            record.tool,
            text,
            good.hash,
            hash,
        ],
    )
    .map_err(io)?;
    checkpoint::store(&tx, key, &Head { seq, hash }, "repair").map_err(io)?;
    tx.commit().map_err(io)?;
    let cut = Cut {
        from,
        to,
        at: seq,
        cause,
    };
    Ok(Some(RepairReport {
        cut,
        deleted: deleted as u64,
        saved,
    }))
}

/// The last seq of the cut from `from` (records and checkpoints alike), and the last good
/// record before it (or the anchor when the cut starts right after it); `None` when the bad
/// record does not follow a good one, so the damage is not a tail.
fn cut_end_and_last_good(conn: &Connection, from: i64) -> Result<Option<(i64, Head)>, RepairError> {
    let last_row: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM decisions", [], |r| {
            r.get(0)
        })
        .map_err(io)?;
    let last_checkpoint: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM checkpoints", [], |r| {
            r.get(0)
        })
        .map_err(io)?;
    let to = last_row.max(last_checkpoint).max(from);
    let good = match conn
        .query_row(
            "SELECT seq, hash FROM decisions WHERE seq = ?1",
            [from - 1],
            |r| {
                Ok(Head {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(io)?
    {
        Some(head) => head,
        None => {
            let anchor = anchor(conn).map_err(io)?;
            if anchor.seq != from - 1 {
                return Ok(None);
            }
            anchor
        }
    };
    Ok(Some((to, good)))
}

/// Opening the log: refuse one whose end is damaged; else the last record a checkpoint covers.
pub(crate) fn refuse_damaged(conn: &Connection, path: &Path) -> Result<i64, AuditError> {
    check_tail(conn, path).map_err(|e| {
        AuditError::Damaged(format!(
            "{e}; nothing was written to it; keep a copy of the file, check it with `toolgate log verify`, then start once with `toolgate serve --repair-log` to cut the damaged records (the cut is recorded in the log)"
        ))
    })
}
