//! The decision log's lookup table: the columns that queries filter on (decision id, time,
//! subject, tool, decision, kind), indexed, for every record up to a recent one.
//!
//! The `decisions` table itself has no secondary index, so a commit only appends table
//! pages. Indexes on `decisions` made every commit rewrite their leaf and interior pages into
//! the WAL (BENCHMARKS.md, eighth and ninth passes). The writer instead copies new rows'
//! columns here in bulk, a few hundred at a time, after answering a batch's requests: once
//! [`FILL_WHEN_IDLE_RECORDS`] are uncovered and no record waits, or once
//! [`MAX_UNCOVERED_RECORDS`] are. The lookup table always holds exactly the `decisions` rows
//! up to its highest `seq` (its coverage); queries read it for those and scan the short
//! uncovered tail of `decisions` directly.
//!
//! A log written before this table existed has indexes on `decisions` and no lookup table:
//! readers then treat the coverage as 0 and query `decisions` alone (those indexes serve
//! them). When the broker opens such a log, [`prepare`] drops the old indexes and fills the
//! lookup table. `verify` checks that it mirrors `decisions`; a damaged lookup table can be
//! dropped, and the broker rebuilds it when it next opens the log.

use rusqlite::{Connection, OptionalExtension};

/// Uncovered records that make the writer extend the lookup table when no record is
/// waiting: its pages are then written once per few hundred records, not once per commit.
pub const FILL_WHEN_IDLE_RECORDS: i64 = 256;

/// Uncovered records that make the writer extend the lookup table even with records
/// waiting (a log under constant load): bounds the tail that queries scan.
pub const MAX_UNCOVERED_RECORDS: i64 = 2048;

/// Most records one extension covers, so that it holds up the records arriving meanwhile
/// for about a millisecond at most.
const EXTEND_AT_MOST_RECORDS: i64 = 512;

/// The lookup table and its indexes.
pub(crate) const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS decisions_lookup (
    seq         INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    decision    TEXT NOT NULL,
    subject     TEXT,
    tool        TEXT
);
CREATE INDEX IF NOT EXISTS decisions_lookup_by_id ON decisions_lookup (decision_id);
CREATE INDEX IF NOT EXISTS decisions_lookup_by_time ON decisions_lookup (time_ms);
CREATE INDEX IF NOT EXISTS decisions_lookup_by_subject_tool ON decisions_lookup (subject, tool);
";

/// The indexes that logs written before the lookup table kept on `decisions`.
const OLD_INDEXES_SQL: &str = "
DROP INDEX IF EXISTS decisions_by_id;
DROP INDEX IF EXISTS decisions_by_time;
DROP INDEX IF EXISTS decisions_by_subject_tool;
";

/// The last record the lookup table covers: 0 when it covers none, or when the log predates
/// it (there is no such table).
pub fn coverage(conn: &Connection) -> rusqlite::Result<i64> {
    if !exists(conn)? {
        return Ok(0);
    }
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM decisions_lookup",
        [],
        |r| r.get(0),
    )
}

fn exists(conn: &Connection) -> rusqlite::Result<bool> {
    schema_has(conn, "table", "decisions_lookup")
}

/// The index on the lookup table's time column, which narrow time windows are read through.
pub(crate) const TIME_INDEX: &str = "decisions_lookup_by_time";

/// The lookup table's indexes, as [`SCHEMA_SQL`] creates them.
const INDEXES: [&str; 3] = [
    "decisions_lookup_by_id",
    TIME_INDEX,
    "decisions_lookup_by_subject_tool",
];

/// The lookup table's indexes that are missing (dropped by hand). None are reported for a log
/// that predates the table: the broker creates table and indexes when it upgrades the log.
pub(crate) fn missing_indexes(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    if !exists(conn)? {
        return Ok(Vec::new());
    }
    let mut missing = Vec::new();
    for name in INDEXES {
        if !schema_has(conn, "index", name)? {
            missing.push(name.to_owned());
        }
    }
    Ok(missing)
}

/// Whether the lookup table's time index exists. Someone may have dropped it by hand; the
/// broker recreates it when it next opens the log, and queries meanwhile do without it.
pub(crate) fn time_index_exists(conn: &Connection) -> rusqlite::Result<bool> {
    schema_has(conn, "index", TIME_INDEX)
}

fn schema_has(conn: &Connection, kind: &str, name: &str) -> rusqlite::Result<bool> {
    let found = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = ?1 AND name = ?2",
            [kind, name],
            |_| Ok(()),
        )
        .optional()?;
    Ok(found.is_some())
}

/// Removes the lookup rows from `seq` on, after a repair cut those records.
pub(crate) fn forget_from(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    if exists(conn)? {
        conn.execute("DELETE FROM decisions_lookup WHERE seq >= ?1", [seq])?;
    }
    Ok(())
}

/// Removes the lookup rows of records up to `seq`, which archiving removes from `decisions`
/// in the same transaction.
pub(crate) fn forget_through(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    if exists(conn)? {
        conn.execute("DELETE FROM decisions_lookup WHERE seq <= ?1", [seq])?;
    }
    Ok(())
}

/// Whether the writer should extend the lookup table now: `uncovered` records are not in
/// it, and `idle` says no record is waiting to be committed.
pub(crate) fn extension_due(uncovered: i64, idle: bool) -> bool {
    let threshold = if idle {
        FILL_WHEN_IDLE_RECORDS
    } else {
        MAX_UNCOVERED_RECORDS
    };
    uncovered >= threshold
}

/// Covers the records after `covered` (the current coverage), at most `limit` of them
/// (all for a negative `limit`). Returns the new coverage.
fn fill(conn: &Connection, covered: i64, limit: i64) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO decisions_lookup (seq, decision_id, kind, time_ms, decision, subject, tool)
         SELECT seq, decision_id, kind, time_ms, decision, subject, tool
         FROM decisions WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        [covered, limit],
    )?;
    coverage(conn)
}

/// Covers up to [`EXTEND_AT_MOST_RECORDS`] more records in a transaction of its own, without
/// waiting for an fsync when the log's mode is FULL (`full`): SQLite's WAL keeps the database
/// consistent either way, and the lookup rows can be rebuilt. Returns the new coverage.
pub(crate) fn extend(conn: &mut Connection, covered: i64, full: bool) -> rusqlite::Result<i64> {
    if full {
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    }
    let result = (|| {
        let tx = conn.transaction()?;
        let covered = fill(&tx, covered, EXTEND_AT_MOST_RECORDS)?;
        tx.commit()?;
        Ok(covered)
    })();
    if full {
        conn.execute_batch("PRAGMA synchronous = FULL")?;
    }
    result
}

/// Readies a log for the writer: drops the indexes older logs kept on `decisions`, then
/// covers every record, so the writer starts with no tail. Returns the coverage. On a log
/// written before the lookup table this fills it from scratch, once.
pub(crate) fn prepare(conn: &mut Connection) -> rusqlite::Result<i64> {
    let tx = conn.transaction()?;
    tx.execute_batch(OLD_INDEXES_SQL)?;
    let covered = fill(&tx, coverage(&tx)?, -1)?;
    tx.commit()?;
    Ok(covered)
}

/// The first lookup row that does not mirror its `decisions` row, or a record up to the
/// coverage that has no lookup row: `Some(seq)`, else `None`. Run inside the verifier's read
/// transaction.
pub(crate) fn first_mismatch(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let covered = coverage(conn)?;
    if covered == 0 {
        return Ok(None);
    }
    let stale = conn
        .query_row(
            "SELECT l.seq FROM decisions_lookup l LEFT JOIN decisions d ON d.seq = l.seq
             WHERE d.seq IS NULL OR l.decision_id IS NOT d.decision_id OR l.kind IS NOT d.kind
                OR l.time_ms IS NOT d.time_ms OR l.decision IS NOT d.decision
                OR l.subject IS NOT d.subject OR l.tool IS NOT d.tool
             ORDER BY l.seq LIMIT 1",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    if stale.is_some() {
        return Ok(stale);
    }
    conn.query_row(
        "SELECT d.seq FROM decisions d LEFT JOIN decisions_lookup l ON l.seq = d.seq
         WHERE d.seq <= ?1 AND l.seq IS NULL ORDER BY d.seq LIMIT 1",
        [covered],
        |r| r.get::<_, i64>(0),
    )
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_extends_when_idle_or_when_the_tail_is_long() {
        assert!(!extension_due(FILL_WHEN_IDLE_RECORDS - 1, true));
        assert!(extension_due(FILL_WHEN_IDLE_RECORDS, true));
        assert!(!extension_due(MAX_UNCOVERED_RECORDS - 1, false));
        assert!(extension_due(MAX_UNCOVERED_RECORDS, false));
    }

    #[test]
    fn an_extension_covers_at_most_its_share_of_the_tail() -> rusqlite::Result<()> {
        let mut conn = Connection::open_in_memory()?;
        conn.execute_batch(crate::audit::SCHEMA_SQL)?;
        conn.execute_batch(SCHEMA_SQL)?;
        let records = EXTEND_AT_MOST_RECORDS + 100;
        for seq in 1..=records {
            conn.execute(
                "INSERT INTO decisions (seq, decision_id, kind, time_ms, stage, reason, decision,
                 subject, tool, record, prev_hash, hash)
                 VALUES (?1, 'd' || ?1, 'decision', ?1, 'policy', 'allowed', 'allow', 'a', 't',
                 '{}', '', '')",
                [seq],
            )?;
        }
        let covered = extend(&mut conn, 0, true)?;
        assert_eq!(covered, EXTEND_AT_MOST_RECORDS);
        assert_eq!(extend(&mut conn, covered, true)?, records);
        assert_eq!(extend(&mut conn, records, true)?, records);
        assert_eq!(first_mismatch(&conn)?, None);
        // FULL durability is restored for the writer's next commit.
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        assert_eq!(synchronous, 2);
        Ok(())
    }
}
