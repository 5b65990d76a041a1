//! Reading the decision log back: filtered, keyset-paginated queries for the admin API and
//! `log query`, and the JSONL line format shared by `log export`, archives and replay.

use std::io::Write;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, ToSql};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::checkpoint::StoredCheckpoint;
use super::lookup::TIME_INDEX;

/// Most records one query returns, whatever the caller asks for.
pub const MAX_LIMIT: usize = 1000;

/// Records per page when the caller does not say.
pub const DEFAULT_LIMIT: usize = 100;

/// Longest filter value accepted (agent, tool): bounds what an outsider can make us bind.
pub const MAX_FILTER_LEN: usize = 256;

/// Why a query could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A filter value is malformed.
    #[error("invalid `{name}`: {reason}")]
    Invalid {
        /// The parameter.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// No record with this decision id.
    #[error("no decision `{0}`")]
    NotFound(String),
    /// The log could not be read.
    #[error("decision log unreadable: {0}")]
    Unavailable(String),
}

/// One record with its chain fields: a line of a JSONL export, an item of a query result.
/// `record` is kept as the exact text that was hashed, so exports verify.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedRecord {
    /// Sequence number in the chain.
    pub seq: i64,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash: SHA-256 of `prev_hash`, a newline, and `record`'s text.
    pub hash: String,
    /// The decision record (see `docs/decision-log.md`).
    pub record: Box<RawValue>,
}

/// A line of a JSONL file: a record or a checkpoint.
#[derive(Debug, Clone)]
pub enum LogLine {
    /// A record.
    Record(LoggedRecord),
    /// A signed checkpoint (`{"checkpoint": {...}}`).
    Checkpoint(StoredCheckpoint),
}

#[derive(Deserialize)]
struct CheckpointLine {
    checkpoint: StoredCheckpoint,
}

impl LogLine {
    /// Parses one JSONL line.
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        if line.trim_start().starts_with("{\"checkpoint\"") {
            let c: CheckpointLine = serde_json::from_str(line)?;
            return Ok(LogLine::Checkpoint(c.checkpoint));
        }
        serde_json::from_str(line).map(LogLine::Record)
    }
}

/// Filters of a query; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The principal's subject (`sub`).
    pub agent: Option<String>,
    /// The tool id (or admin action).
    pub tool: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// `decision` or `dispatch`.
    pub kind: Option<String>,
    /// From this time, Unix ms, inclusive.
    pub since_ms: Option<i64>,
    /// Before this time, Unix ms, exclusive.
    pub until_ms: Option<i64>,
    /// Only records after this sequence number (the cursor).
    pub after_seq: Option<i64>,
    /// Page size (clamped to [`MAX_LIMIT`]).
    pub limit: usize,
}

impl Filter {
    /// Whether no filter narrows the records (the cursor and page size aside): the records
    /// are then a contiguous run of the chain.
    pub fn is_unfiltered(&self) -> bool {
        self.agent.is_none()
            && self.tool.is_none()
            && self.decision.is_none()
            && self.kind.is_none()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
    }

    /// Checks the values an outsider sent.
    pub fn validate(&self) -> Result<(), QueryError> {
        for (name, value) in [("agent", &self.agent), ("tool", &self.tool)] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_FILTER_LEN) {
                return Err(QueryError::Invalid {
                    name,
                    reason: format!("longer than {MAX_FILTER_LEN} bytes"),
                });
            }
        }
        if let Some(d) = &self.decision
            && !matches!(d.as_str(), "allow" | "deny")
        {
            return Err(QueryError::Invalid {
                name: "decision",
                reason: "expected `allow` or `deny`".to_owned(),
            });
        }
        if let Some(k) = &self.kind
            && !matches!(k.as_str(), "decision" | "dispatch")
        {
            return Err(QueryError::Invalid {
                name: "kind",
                reason: "expected `decision` or `dispatch`".to_owned(),
            });
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(QueryError::Invalid {
                name: "limit",
                reason: format!("must be 1 to {MAX_LIMIT}"),
            });
        }
        Ok(())
    }
}

/// A page of results, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The records.
    pub decisions: Vec<LoggedRecord>,
    /// The signed checkpoints of the chain head after the cursor up to the page's last record,
    /// whatever the filters: paging through the log yields each checkpoint once, and an
    /// auditor can keep the latest one off the broker's disk.
    pub checkpoints: Vec<StoredCheckpoint>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn unavailable(e: impl std::fmt::Display) -> QueryError {
    QueryError::Unavailable(e.to_string())
}

/// Opens the log read-only.
pub fn open_read_only(path: &Path) -> Result<Connection, QueryError> {
    if !path.exists() {
        return Err(unavailable(format!("`{}` does not exist", path.display())));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(unavailable)?;
    Ok(conn)
}

fn row_to_logged(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_logged(
    (seq, prev_hash, hash, record): (i64, String, String, String),
) -> Result<LoggedRecord, QueryError> {
    Ok(LoggedRecord {
        seq,
        prev_hash,
        hash,
        record: RawValue::from_string(record).map_err(unavailable)?,
    })
}

/// Appends `filter`'s conditions on the columns of `table` (`decisions` or the lookup table,
/// which share their names) to `sql`, binding their values in `args`.
fn push_conditions<'a>(
    filter: &'a Filter,
    table: &str,
    sql: &mut String,
    args: &mut Vec<&'a dyn ToSql>,
) {
    let conditions: [(&str, &str, Option<&'a dyn ToSql>); 6] = [
        (
            "subject",
            "=",
            filter.agent.as_ref().map(|v| v as &dyn ToSql),
        ),
        ("tool", "=", filter.tool.as_ref().map(|v| v as &dyn ToSql)),
        (
            "decision",
            "=",
            filter.decision.as_ref().map(|v| v as &dyn ToSql),
        ),
        ("kind", "=", filter.kind.as_ref().map(|v| v as &dyn ToSql)),
        (
            "time_ms",
            ">=",
            filter.since_ms.as_ref().map(|v| v as &dyn ToSql),
        ),
        (
            "time_ms",
            "<",
            filter.until_ms.as_ref().map(|v| v as &dyn ToSql),
        ),
    ];
    for (column, op, value) in conditions {
        if let Some(value) = value {
            args.push(value);
            sql.push_str(&format!(" AND {table}.{column} {op} ?{}", args.len()));
        }
    }
}

/// Runs a query for records and returns their rows, oldest first.
fn fetch(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
) -> Result<Vec<(i64, String, String, String)>, QueryError> {
    let mut stmt = conn.prepare(sql).map_err(unavailable)?;
    stmt.query_map(args, row_to_logged)
        .map_err(unavailable)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(unavailable)
}

/// Records in a time window at most this many make a query read the window through the
/// time index and sort it; a wider window (or none) is read in sequence order instead.
const NARROW_WINDOW_RECORDS: i64 = 10_000;

/// Whether `filter` has a time window that holds at most [`NARROW_WINDOW_RECORDS`] covered
/// records, counted through the time index (stopping at the bound). SQLite cannot tell
/// a narrow window from a wide one by itself: for "the last hour" of a large log it would
/// scan the lookup table from the start in sequence order.
fn narrow_time_window(conn: &Connection, filter: &Filter) -> Result<bool, QueryError> {
    if filter.since_ms.is_none() && filter.until_ms.is_none() {
        return Ok(false);
    }
    // `INDEXED BY` fails when the index is missing: without it, read in sequence order.
    if !super::lookup::time_index_exists(conn).map_err(unavailable)? {
        return Ok(false);
    }
    let since = filter.since_ms.unwrap_or(i64::MIN);
    let until = filter.until_ms.unwrap_or(i64::MAX);
    let in_window: i64 = conn
        .query_row(
            &format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM decisions_lookup INDEXED BY {TIME_INDEX}
                 WHERE time_ms >= ?1 AND time_ms < ?2 LIMIT ?3)"
            ),
            [since, until, NARROW_WINDOW_RECORDS + 1],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    Ok(in_window <= NARROW_WINDOW_RECORDS)
}

/// At most `limit` records after `after` matching `filter`, oldest first, in two parts: the
/// records the lookup table covers, found through its indexes, then the uncovered tail of
/// `decisions` (see [`super::lookup`]). The log is append-only, so the two parts join up even
/// when the writer extends the coverage between them.
fn matching(
    conn: &Connection,
    filter: &Filter,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String, String, String)>, QueryError> {
    let covered = super::lookup::coverage(conn).map_err(unavailable)?;
    let fetch_limit = limit as i64;
    let mut rows = Vec::new();
    if after < covered {
        // The page's sequence numbers come from the lookup table alone; only they are then
        // read from `decisions`, so a sort never carries record text.
        let index = if narrow_time_window(conn, filter)? {
            format!("INDEXED BY {TIME_INDEX}")
        } else {
            String::new()
        };
        let mut sql = format!(
            "SELECT seq, prev_hash, hash, record FROM decisions WHERE seq IN (
                SELECT l.seq FROM decisions_lookup l {index} WHERE l.seq > ?1 AND l.seq <= ?2"
        );
        let mut args: Vec<&dyn ToSql> = vec![&after, &covered];
        push_conditions(filter, "l", &mut sql, &mut args);
        args.push(&fetch_limit);
        sql.push_str(&format!(
            " ORDER BY l.seq LIMIT ?{}) ORDER BY seq",
            args.len()
        ));
        rows = fetch(conn, &sql, &args)?;
    }
    if rows.len() < limit {
        let from = after.max(covered);
        let rest = (limit - rows.len()) as i64;
        let mut sql =
            "SELECT seq, prev_hash, hash, record FROM decisions WHERE seq > ?1".to_owned();
        let mut args: Vec<&dyn ToSql> = vec![&from];
        push_conditions(filter, "decisions", &mut sql, &mut args);
        args.push(&rest);
        sql.push_str(&format!(" ORDER BY seq LIMIT ?{}", args.len()));
        rows.extend(fetch(conn, &sql, &args)?);
    }
    Ok(rows)
}

/// One page of records matching `filter`, by ascending sequence number (keyset pagination).
pub fn query(conn: &Connection, filter: &Filter) -> Result<Page, QueryError> {
    filter.validate()?;
    // One extra row tells whether there is a next page.
    let rows = matching(
        conn,
        filter,
        filter.after_seq.unwrap_or(0),
        filter.limit + 1,
    )?;
    let more = rows.len() > filter.limit;
    let decisions = rows
        .into_iter()
        .take(filter.limit)
        .map(to_logged)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if more {
        decisions.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let checkpoints = match decisions.last() {
        Some(last) => super::checkpoint::load_range(conn, filter.after_seq.unwrap_or(0), last.seq)
            .map_err(unavailable)?,
        None => Vec::new(),
    };
    Ok(Page {
        decisions,
        checkpoints,
        next_cursor,
    })
}

/// Every record of one decision: the decision and, for dispatched calls, its outcome.
pub fn by_decision_id(conn: &Connection, id: &str) -> Result<Vec<LoggedRecord>, QueryError> {
    if id.is_empty() || id.len() > 64 {
        return Err(QueryError::NotFound(id.chars().take(64).collect()));
    }
    let covered = super::lookup::coverage(conn).map_err(unavailable)?;
    let mut rows = Vec::new();
    if covered > 0 {
        rows = fetch(
            conn,
            "SELECT d.seq, d.prev_hash, d.hash, d.record
             FROM decisions_lookup l JOIN decisions d ON d.seq = l.seq
             WHERE l.decision_id = ?1 AND l.seq <= ?2 ORDER BY l.seq",
            &[&id, &covered],
        )?;
    }
    rows.extend(fetch(
        conn,
        "SELECT seq, prev_hash, hash, record FROM decisions
         WHERE seq > ?2 AND decision_id = ?1 ORDER BY seq",
        &[&id, &covered],
    )?);
    if rows.is_empty() {
        return Err(QueryError::NotFound(id.to_owned()));
    }
    rows.into_iter().map(to_logged).collect()
}

/// Writes every record matching `filter` (any `limit`) as JSONL, one [`LoggedRecord`] per
/// line, paging through the log so memory stays bounded. An unfiltered export also carries
/// the signed checkpoints, each after the records it covers, so that `log verify --jsonl`
/// checks them. Returns the number of records written.
pub fn export_jsonl(
    conn: &Connection,
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<u64, QueryError> {
    let mut page_filter = Filter {
        limit: MAX_LIMIT,
        ..filter.clone()
    };
    let mut written = 0;
    loop {
        let page = query(conn, &page_filter)?;
        for r in &page.decisions {
            let line = serde_json::to_string(r).map_err(unavailable)?;
            writeln!(out, "{line}").map_err(unavailable)?;
            written += 1;
        }
        if filter.is_unfiltered() {
            for cp in &page.checkpoints {
                writeln!(out, "{}", super::checkpoint::jsonl_line(cp)).map_err(unavailable)?;
            }
        }
        match page.decisions.last() {
            Some(last) if page.next_cursor.is_some() => page_filter.after_seq = Some(last.seq),
            _ => break,
        }
    }
    Ok(written)
}

/// Parses a time: Unix milliseconds (`1700000000000`) or RFC 3339 UTC
/// (`2026-11-23T17:00:00Z`, optional fraction).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    crate::time::parse_utc_ms(text).map_err(|e| format!("{e} (or Unix milliseconds)"))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_parse_as_unix_ms_or_rfc3339() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Ok(1_700_000_000_500));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2023-13-14T22:13:20Z").is_err());
        assert_eq!(
            parse_time("2023-02-31T00:00:00Z"),
            Err("`2023-02-31T00:00:00Z` is not a date and time on the calendar (or Unix milliseconds)".to_owned())
        );
    }
}
