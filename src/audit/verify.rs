//! `log verify`: walks the hash chain and reports the first edited, deleted, inserted or
//! reordered record, index columns that disagree with their record, and signed checkpoints
//! the chain no longer matches (a truncated tail or a rewritten history).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::checkpoint::{self, StoredCheckpoint};
use super::query::{LogLine, LoggedRecord};
use super::repair_record::{Cut, declared_cut};
use super::{GENESIS_HASH, Head, chain_hash};
use crate::audit::{DecisionRecord, RecordKind, Verdict};

/// Why a log fails verification. The first problem found is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The log could not be read.
    #[error("cannot read the log: {0}")]
    Read(String),
    /// The lookup table that queries use does not mirror `decisions` (see
    /// [`super::lookup`]): queries could miss or misfile the record.
    #[error(
        "record {seq}: its row in the lookup table is missing or disagrees with the log (queries could miss it); drop the `decisions_lookup` table and the broker rebuilds it when it starts"
    )]
    Lookup {
        /// The first record concerned.
        seq: i64,
    },
    /// A record's content does not hash to its stored hash.
    #[error("record {seq}: content does not match its hash (the record was edited)")]
    Edited {
        /// The record.
        seq: i64,
    },
    /// A record's `prev_hash` is not its predecessor's hash.
    #[error(
        "record {seq}: does not follow record {prev} (a record was deleted, inserted or reordered)"
    )]
    Link {
        /// The record.
        seq: i64,
        /// The record before it.
        prev: i64,
    },
    /// Sequence numbers skip.
    #[error("records {from} to {to} are missing (deleted)")]
    Missing {
        /// First missing.
        from: i64,
        /// Last missing.
        to: i64,
    },
    /// A sequence number goes backwards or repeats.
    #[error("record {seq}: out of order after record {prev} (inserted or reordered)")]
    Order {
        /// The record.
        seq: i64,
        /// The record before it.
        prev: i64,
    },
    /// An index column (outside the hash) disagrees with the record JSON.
    #[error("record {seq}: column `{column}` disagrees with the record (the row was edited)")]
    Column {
        /// The record.
        seq: i64,
        /// The column.
        column: &'static str,
    },
    /// The record text is not a decision record.
    #[error("record {seq}: not a valid record: {message}")]
    Malformed {
        /// The record.
        seq: i64,
        /// What is wrong.
        message: String,
    },
    /// A signed checkpoint covers more records than the log holds.
    #[error(
        "the log ends at record {last} but a signed checkpoint covers record {seq} (the tail was truncated)"
    )]
    Truncated {
        /// Last record present.
        last: i64,
        /// The checkpoint's record.
        seq: i64,
    },
    /// The SQLite file is shorter than its header declares: its end was cut off (its
    /// missing pages read as zeros, so the records there no longer hash).
    #[error(
        "the log file was truncated: it has {actual} of the {declared} bytes its header declares{}",
        .seq.map(|s| format!(", and the chain breaks at record {s}")).unwrap_or_default()
    )]
    FileTruncated {
        /// Bytes the header declares.
        declared: u64,
        /// Bytes the file has.
        actual: u64,
        /// The first record that fails, if one does.
        seq: Option<i64>,
    },
    /// A checkpoint does not match the chain, or its signature does not verify.
    #[error("checkpoint at record {seq} ({reason}): {problem}")]
    Checkpoint {
        /// The checkpoint's record.
        seq: i64,
        /// Its reason.
        reason: String,
        /// What is wrong.
        problem: String,
    },
    /// The archive anchor (where the chain restarts after archiving) is not covered by a
    /// checkpoint, so the removal of old records cannot be told from a legitimate archive.
    #[error("the chain starts at record {seq} but no checkpoint covers that anchor")]
    Anchor {
        /// The anchor's record.
        seq: i64,
    },
}

impl VerifyError {
    /// The first record from which the chain cannot be trusted, when the problem is in the
    /// records themselves (not in a checkpoint, the anchor or the lookup table).
    pub fn first_bad_seq(&self) -> Option<i64> {
        match self {
            Self::Edited { seq }
            | Self::Link { seq, .. }
            | Self::Order { seq, .. }
            | Self::Column { seq, .. }
            | Self::Malformed { seq, .. } => Some(*seq),
            Self::FileTruncated { seq, .. } => *seq,
            Self::Missing { from, .. } => Some(*from),
            Self::Truncated { last, .. } => Some(last + 1),
            Self::Read(_) | Self::Lookup { .. } | Self::Checkpoint { .. } | Self::Anchor { .. } => {
                None
            }
        }
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Where the chain starts: genesis (seq 0) or the archive anchor.
    pub anchor_seq: i64,
    /// The last record's sequence number and hash.
    pub head_seq: i64,
    /// The last record's hash.
    pub head_hash: String,
    /// Checkpoints matched against the chain.
    pub checkpoints: usize,
    /// Whether checkpoint signatures were checked (a key was available).
    pub signatures_checked: bool,
    /// Checkpoints about records archived before the anchor (not checkable here).
    pub checkpoints_before_anchor: usize,
    /// Records cut by `serve --repair-log`, as the repair records declare them.
    pub cuts: Vec<Cut>,
    /// Checkpoints about records a repair cut (signatures checked, hashes not checkable).
    pub checkpoints_cut: usize,
    /// Allow records of dispatched calls (`invoke`, MCP `tools/call`) with no outcome record
    /// after them, oldest first: the outcome could not be written (the call did happen), or
    /// the call was still in flight when the log was read. Not a verification failure.
    pub without_outcome: Vec<Unmatched>,
    /// The lookup table's indexes that are missing. Not a verification failure: queries
    /// answer without them, more slowly, and the broker recreates them when it next opens the
    /// log. Always empty for a JSONL source.
    pub missing_lookup_indexes: Vec<String>,
}

/// An allow record of a dispatched call that no outcome record follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmatched {
    /// The allow record.
    pub seq: i64,
    /// Its decision id.
    pub decision_id: String,
}

/// Pairs each dispatched allow with its outcome record during the walk. Only unmatched allows
/// are held: in-flight calls and lost outcomes.
#[derive(Default)]
struct Outcomes {
    pending: BTreeMap<String, i64>,
}

impl Outcomes {
    fn see(&mut self, seq: i64, record: &DecisionRecord) {
        match record.kind {
            RecordKind::Decision
                if record.decision == Verdict::Allow
                    && DISPATCHING_ENDPOINTS.contains(&record.endpoint.as_str()) =>
            {
                self.pending.insert(record.decision_id.clone(), seq);
            }
            RecordKind::Dispatch => {
                self.pending.remove(&record.decision_id);
            }
            RecordKind::Decision => {}
        }
    }

    fn missing(self) -> Vec<Unmatched> {
        let mut missing: Vec<Unmatched> = self
            .pending
            .into_iter()
            .map(|(decision_id, seq)| Unmatched { seq, decision_id })
            .collect();
        missing.sort_by_key(|u| u.seq);
        missing
    }
}

/// Endpoints whose allow decisions are followed by a dispatch (`authorize` only answers).
const DISPATCHING_ENDPOINTS: &[&str] = &["invoke", "mcp"];

/// One row as read from the log, with the index columns when the source has them.
#[derive(Debug, Clone)]
pub struct ChainRow {
    /// Sequence number.
    pub seq: i64,
    /// The predecessor's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
    /// The record JSON, exactly as hashed.
    pub record: String,
    /// The SQLite index columns, if any.
    pub columns: Option<Columns>,
}

/// The index columns of a `decisions` row (outside the hash, so checked against the record).
#[derive(Debug, Clone)]
pub struct Columns {
    /// `decision_id`.
    pub decision_id: String,
    /// `kind`.
    pub kind: String,
    /// `time_ms`.
    pub time_ms: i64,
    /// `stage`.
    pub stage: String,
    /// `reason`.
    pub reason: String,
    /// `decision`.
    pub decision: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `tool`.
    pub tool: Option<String>,
}

fn read_err(e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Read(e.to_string())
}

/// Verifies a SQLite decision log; `keys` checks checkpoint signatures when given.
pub fn verify_db(path: &Path, keys: Option<&JwkSet>) -> Result<VerifyReport, VerifyError> {
    if !path.exists() {
        return Err(read_err(format!("`{}` does not exist", path.display())));
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(read_err)?;
    // One read transaction: a consistent snapshot even while the broker appends.
    conn.execute_batch("BEGIN").map_err(read_err)?;
    let anchor = match conn.query_row("SELECT seq, hash FROM chain_anchor WHERE id = 1", [], |r| {
        Ok(Head {
            seq: r.get(0)?,
            hash: r.get(1)?,
        })
    }) {
        Ok(a) => Some(a),
        Err(rusqlite::Error::QueryReturnedNoRows) => None,
        Err(e) => return Err(read_err(e)),
    };
    let checkpoints = checkpoint::load_all(&conn).map_err(read_err)?;
    let mut stmt = conn
        .prepare(
            "SELECT seq, prev_hash, hash, record, decision_id, kind, time_ms, stage, reason, decision, subject, tool
             FROM decisions ORDER BY seq",
        )
        .map_err(read_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(ChainRow {
                seq: r.get(0)?,
                prev_hash: r.get(1)?,
                hash: r.get(2)?,
                record: r.get(3)?,
                columns: Some(Columns {
                    decision_id: r.get(4)?,
                    kind: r.get(5)?,
                    time_ms: r.get(6)?,
                    stage: r.get(7)?,
                    reason: r.get(8)?,
                    decision: r.get(9)?,
                    subject: r.get(10)?,
                    tool: r.get(11)?,
                }),
            })
        })
        .map_err(read_err)?
        .map(|r| r.map_err(read_err));
    let required_anchor = anchor.is_some();
    let start = anchor.unwrap_or(Head {
        seq: 0,
        hash: GENESIS_HASH.to_owned(),
    });
    let mut report = verify_rows(start, required_anchor, rows, &checkpoints, keys)
        .map_err(|e| explain(path, e))?;
    // The rows' columns match their records (checked above); the lookup rows must match them.
    if let Some(seq) = super::lookup::first_mismatch(&conn).map_err(read_err)? {
        return Err(VerifyError::Lookup { seq });
    }
    report.missing_lookup_indexes = super::lookup::missing_indexes(&conn).map_err(read_err)?;
    Ok(report)
}

/// Verifies a JSONL export or archive. The chain starts at the first record's `prev_hash`
/// (genesis for a full archive); checkpoint lines in the file are checked too.
pub fn verify_jsonl(path: &Path, keys: Option<&JwkSet>) -> Result<VerifyReport, VerifyError> {
    let (records, checkpoints) = read_jsonl(path)?;
    let start = match records.first() {
        Some(first) => Head {
            // The file's own number: i64::MIN would overflow (a panic in debug builds).
            seq: first
                .seq
                .checked_sub(1)
                .ok_or_else(|| VerifyError::Malformed {
                    seq: first.seq,
                    message: "sequence number out of range".to_owned(),
                })?,
            hash: first.prev_hash.clone(),
        },
        None => Head {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        },
    };
    let rows = records.into_iter().map(|r| {
        Ok(ChainRow {
            seq: r.seq,
            prev_hash: r.prev_hash,
            hash: r.hash,
            record: r.record.get().to_owned(),
            columns: None,
        })
    });
    verify_rows(start, false, rows, &checkpoints, keys)
}

/// Reads a JSONL file of records and checkpoint lines.
pub fn read_jsonl(path: &Path) -> Result<(Vec<LoggedRecord>, Vec<StoredCheckpoint>), VerifyError> {
    let file =
        std::fs::File::open(path).map_err(|e| read_err(format!("`{}`: {e}", path.display())))?;
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        match LogLine::parse(&line) {
            Ok(LogLine::Record(r)) => records.push(r),
            Ok(LogLine::Checkpoint(c)) => checkpoints.push(c),
            Err(e) => return Err(read_err(format!("line {}: {e}", i + 1))),
        }
    }
    Ok((records, checkpoints))
}

/// The chain walk shared by every source.
pub fn verify_rows(
    start: Head,
    anchored: bool,
    rows: impl Iterator<Item = Result<ChainRow, VerifyError>>,
    checkpoints: &[StoredCheckpoint],
    keys: Option<&JwkSet>,
) -> Result<VerifyReport, VerifyError> {
    // Hashes at the checkpointed positions, filled in during the walk.
    let mut wanted: BTreeMap<i64, Option<String>> = checkpoints
        .iter()
        .filter(|c| c.seq > start.seq)
        .map(|c| (c.seq, None))
        .collect();
    let mut prev = start.clone();
    let mut count = 0u64;
    let mut cuts: Vec<Cut> = Vec::new();
    let mut outcomes = Outcomes::default();
    for row in rows {
        let row = row?;
        check_link(&row, &prev, &mut cuts)?;
        let record = check_columns(&row)?;
        outcomes.see(row.seq, &record);
        if let Some(slot) = wanted.get_mut(&row.seq) {
            *slot = Some(row.hash.clone());
        }
        count += 1;
        prev = Head {
            seq: row.seq,
            hash: row.hash,
        };
    }

    let mut matched = 0;
    let mut before_anchor = 0;
    let mut checkpoints_cut = 0;
    let mut anchor_covered = !anchored;
    for cp in checkpoints {
        let fail = |problem: String| VerifyError::Checkpoint {
            seq: cp.seq,
            reason: cp.reason.clone(),
            problem,
        };
        if let Some(keys) = keys {
            checkpoint::check_signature(cp, keys).map_err(fail)?;
        }
        if cp.seq < start.seq {
            before_anchor += 1;
            continue;
        }
        if cuts.iter().any(|c| (c.from..=c.to).contains(&cp.seq)) {
            checkpoints_cut += 1;
            continue;
        }
        if cp.seq == start.seq {
            if cp.head != start.hash {
                return Err(fail("does not match the chain's starting point".to_owned()));
            }
            anchor_covered = true;
            matched += 1;
            continue;
        }
        if cp.seq > prev.seq {
            return Err(VerifyError::Truncated {
                last: prev.seq,
                seq: cp.seq,
            });
        }
        match wanted.get(&cp.seq) {
            Some(Some(hash)) if *hash == cp.head => matched += 1,
            _ => {
                return Err(fail(
                    "the record there has a different hash (history was rewritten)".to_owned(),
                ));
            }
        }
    }
    if !anchor_covered {
        return Err(VerifyError::Anchor { seq: start.seq });
    }
    Ok(VerifyReport {
        records: count,
        anchor_seq: start.seq,
        head_seq: prev.seq,
        head_hash: prev.hash,
        checkpoints: matched,
        signatures_checked: keys.is_some(),
        checkpoints_before_anchor: before_anchor,
        cuts,
        checkpoints_cut,
        without_outcome: outcomes.missing(),
        missing_lookup_indexes: Vec::new(),
    })
}

/// One row's place in the chain: after `prev`, with no gap but the one a repair record
/// declares (added to `cuts`), its hash its own, and linked to `prev`.
fn check_link(row: &ChainRow, prev: &Head, cuts: &mut Vec<Cut>) -> Result<(), VerifyError> {
    if row.seq <= prev.seq {
        return Err(VerifyError::Order {
            seq: row.seq,
            prev: prev.seq,
        });
    }
    if row.seq > prev.seq + 1 {
        // Only a repair record may follow a gap, and only the one it declares; it must
        // still link to the record before the gap (checked below).
        match declared_cut(row.seq, &row.record) {
            Some(cut) if cut.from == prev.seq + 1 && cut.to == row.seq - 1 => cuts.push(cut),
            _ => {
                return Err(VerifyError::Missing {
                    from: prev.seq + 1,
                    to: row.seq - 1,
                });
            }
        }
    }
    if chain_hash(&row.prev_hash, &row.record) != row.hash {
        return Err(VerifyError::Edited { seq: row.seq });
    }
    if row.prev_hash != prev.hash {
        return Err(VerifyError::Link {
            seq: row.seq,
            prev: prev.seq,
        });
    }
    Ok(())
}

/// Parses the row's record and checks its index columns against it.
fn check_columns(row: &ChainRow) -> Result<DecisionRecord, VerifyError> {
    let record: DecisionRecord =
        serde_json::from_str(&row.record).map_err(|e| VerifyError::Malformed {
            seq: row.seq,
            message: e.to_string(),
        })?;
    let Some(c) = &row.columns else {
        return Ok(record);
    };
    let column = |column: &'static str| VerifyError::Column {
        seq: row.seq,
        column,
    };
    if c.decision_id != record.decision_id {
        return Err(column("decision_id"));
    }
    if c.kind != record.kind.as_str() {
        return Err(column("kind"));
    }
    if c.time_ms != record.time_ms {
        return Err(column("time_ms"));
    }
    if c.stage != record.stage {
        return Err(column("stage"));
    }
    if c.reason != record.reason {
        return Err(column("reason"));
    }
    if c.decision != record.decision.as_str() {
        return Err(column("decision"));
    }
    if c.subject.as_deref() != record.principal.as_ref().map(|p| p.subject.as_str()) {
        return Err(column("subject"));
    }
    if c.tool != record.tool {
        return Err(column("tool"));
    }
    Ok(record)
}

/// How much shorter the SQLite file at `path` is than its header declares, as (declared,
/// actual) bytes; `None` when it is not (or the header cannot tell). A file cut short reads
/// its missing pages as zeros, so SQLite's own integrity check passes: only this tells a
/// truncated file from edited records. Meaningful when no writer is extending the file.
pub fn file_shortfall(path: &Path) -> Option<(u64, u64)> {
    use std::io::Read;
    let mut header = [0u8; 100];
    let mut file = std::fs::File::open(path).ok()?;
    file.read_exact(&mut header).ok()?;
    let actual = file.metadata().ok()?.len();
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    // The page count is valid only when written by the same change as the change counter.
    if be32(24) != be32(92) {
        return None;
    }
    let declared = u64::from(be32(28)) * page_size;
    (actual < declared).then_some((declared, actual))
}

/// Names a file truncation as such when the chain fails on a file cut short.
pub fn explain(path: &Path, error: VerifyError) -> VerifyError {
    explain_shortfall(file_shortfall(path), error)
}

pub(super) fn explain_shortfall(shortfall: Option<(u64, u64)>, error: VerifyError) -> VerifyError {
    match (shortfall, error.first_bad_seq()) {
        (Some((declared, actual)), Some(seq)) => VerifyError::FileTruncated {
            declared,
            actual,
            seq: Some(seq),
        },
        _ => error,
    }
}
