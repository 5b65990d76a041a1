//! The decision log's lookup table: queries through it and through the uncovered tail agree
//! with a scan of what was written; a log from before it is read, then upgraded; archiving
//! and `verify` keep it in step with the log; queries answer without its indexes.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::JwkSet;
use std::sync::Arc;

use rusqlite::Connection;
use toolgate::audit::lookup::{self, FILL_WHEN_IDLE_RECORDS};
use toolgate::audit::query::{self, Filter};
use toolgate::audit::verify::{self, VerifyError};
use toolgate::audit::{AuditLog, DecisionRecord, PrincipalFacts, RecordKind, Verdict};
use toolgate::signing::SigningKey;

const TOOLS: [&str; 3] = ["files___read", "db___query", "pay___send"];

/// What record `i` (seq `i`) holds: its subject (none for an unauthenticated request), tool,
/// verdict, kind and time.
struct Spec {
    subject: Option<&'static str>,
    tool: &'static str,
    decision: &'static str,
    kind: &'static str,
    time_ms: i64,
}

fn spec(i: i64) -> Spec {
    Spec {
        subject: match i % 7 {
            0 => None,
            n if n % 2 == 0 => Some("alice"),
            _ => Some("bob"),
        },
        tool: TOOLS[(i % 3) as usize],
        decision: if i % 4 == 0 { "deny" } else { "allow" },
        kind: if i % 5 == 0 { "dispatch" } else { "decision" },
        time_ms: i * 1000,
    }
}

async fn append(path: &Path, key: &Arc<SigningKey>, seqs: std::ops::RangeInclusive<i64>) {
    let (log, writer) = AuditLog::open(crate::audit::log_options(path, key, 100)).unwrap();
    for i in seqs {
        let s = spec(i);
        let mut r = DecisionRecord::new(format!("d{i}"), format!("r{i}"), "invoke", s.time_ms);
        r.kind = if s.kind == "dispatch" {
            RecordKind::Dispatch
        } else {
            RecordKind::Decision
        };
        r.decision = if s.decision == "deny" {
            Verdict::Deny
        } else {
            Verdict::Allow
        };
        r.stage = "policy".to_owned();
        r.reason = "test".to_owned();
        r.tool = Some(s.tool.to_owned());
        r.principal = s.subject.map(|subject| PrincipalFacts {
            issuer: "https://issuer.test".to_owned(),
            subject: subject.to_owned(),
            client_id: None,
            actors: Vec::new(),
            groups: Vec::new(),
            scopes: Vec::new(),
        });
        log.append(&r).await.unwrap();
    }
    drop(log);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
}

/// A directory for a log that does not exist yet, its path, a checkpoint key and its JWKS.
fn scratch_log() -> (tempfile::TempDir, PathBuf, Arc<SigningKey>, JwkSet) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let key = Arc::new(SigningKey::generate().unwrap().0);
    let jwks = toolgate::audit::checkpoint::jwks_of(&key).unwrap();
    (dir, path, key, jwks)
}

fn coverage(path: &Path) -> i64 {
    lookup::coverage(&query::open_read_only(path).unwrap()).unwrap()
}

/// How many indexes of the log have a name matching the SQL `LIKE` pattern.
fn indexes_named(path: &Path, pattern: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name LIKE ?1",
            [pattern],
            |r| r.get(0),
        )
        .unwrap()
}

/// Which records a filter should select, by their [`Spec`].
type Selects = fn(&Spec) -> bool;

/// Every filter the query API has, alone and combined, paged in pages that straddle the
/// coverage: the sequence numbers returned must be exactly those a scan of `seqs` selects.
fn assert_queries_match(path: &Path, seqs: std::ops::RangeInclusive<i64>) {
    let conn = query::open_read_only(path).unwrap();
    let filters: Vec<(&str, Filter, Selects)> = vec![
        ("none", Filter::default(), (|_| true)),
        (
            "agent",
            Filter {
                agent: Some("alice".into()),
                ..Filter::default()
            },
            (|s| s.subject == Some("alice")),
        ),
        (
            "tool",
            Filter {
                tool: Some("db___query".into()),
                ..Filter::default()
            },
            (|s| s.tool == "db___query"),
        ),
        (
            "agent and tool",
            Filter {
                agent: Some("bob".into()),
                tool: Some("pay___send".into()),
                ..Filter::default()
            },
            (|s| s.subject == Some("bob") && s.tool == "pay___send"),
        ),
        (
            "decision and kind",
            Filter {
                decision: Some("deny".into()),
                kind: Some("dispatch".into()),
                ..Filter::default()
            },
            (|s| s.decision == "deny" && s.kind == "dispatch"),
        ),
        (
            "since",
            Filter {
                since_ms: Some(450_000),
                ..Filter::default()
            },
            (|s| s.time_ms >= 450_000),
        ),
        (
            "time window and tool",
            Filter {
                since_ms: Some(200_000),
                until_ms: Some(550_500),
                tool: Some("files___read".into()),
                ..Filter::default()
            },
            (|s| s.time_ms >= 200_000 && s.time_ms < 550_500 && s.tool == "files___read"),
        ),
    ];
    for (name, filter, selects) in filters {
        let expected: Vec<i64> = seqs.clone().filter(|&i| selects(&spec(i))).collect();
        let mut got = Vec::new();
        let mut page_filter = Filter {
            limit: 37,
            ..filter
        };
        loop {
            let page = query::query(&conn, &page_filter).unwrap();
            got.extend(page.decisions.iter().map(|r| r.seq));
            match page.next_cursor {
                Some(cursor) => page_filter.after_seq = Some(cursor.parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(got, expected, "filter {name}");
    }
    let covered = lookup::coverage(&conn).unwrap();
    for i in [*seqs.start(), covered, covered + 1, *seqs.end()] {
        if !seqs.contains(&i) {
            continue;
        }
        let found = query::by_decision_id(&conn, &format!("d{i}")).unwrap();
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![i]);
    }
    let missing = format!("d{}", seqs.end() + 1);
    assert!(query::by_decision_id(&conn, &missing).is_err());
}

#[tokio::test]
async fn queries_through_the_lookup_table_and_the_tail_match_a_scan() {
    let (dir, path, key, jwks) = scratch_log();

    append(&path, &key, 1..=600).await;
    // Between appends the writer is mostly idle, and it extends the table when 256 or more
    // records are uncovered and no record waits. When it finds none waiting depends on
    // scheduling, so only one extension is certain.
    let covered = coverage(&path);
    assert!(covered >= FILL_WHEN_IDLE_RECORDS, "coverage {covered}");
    // Where the coverage ends depends on the writer's timing. Cut it back to a fixed point
    // (the table still mirrors a prefix of the log) so that pages straddle it.
    Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM decisions_lookup WHERE seq > 333", [])
        .unwrap();
    assert_eq!(coverage(&path), 333);
    assert_queries_match(&path, 1..=600);
    assert_eq!(verify::verify_db(&path, Some(&jwks)).unwrap().records, 600);

    // Opening the log covers the tail at once.
    append(&path, &key, 601..=601).await;
    assert_eq!(coverage(&path), 600);
    assert_queries_match(&path, 1..=601);

    // Archiving removes the archived records' lookup rows with them.
    let out = dir.path().join("archive.jsonl");
    let report = toolgate::audit::archive::archive(&path, 400_500, &out, &key).unwrap();
    assert_eq!((report.records, report.anchor_seq), (400, 400));
    let conn = Connection::open(&path).unwrap();
    let (first, rows): (i64, i64) = conn
        .query_row("SELECT MIN(seq), COUNT(*) FROM decisions_lookup", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    drop(conn);
    assert_eq!((first, rows), (401, 200));
    assert_queries_match(&path, 401..=601);
    assert_eq!(verify::verify_db(&path, Some(&jwks)).unwrap().records, 201);
}

#[tokio::test]
async fn a_log_from_before_the_lookup_table_is_read_then_upgraded() {
    let (_dir, path, key, jwks) = scratch_log();
    append(&path, &key, 1..=300).await;

    // The layout of earlier versions: the indexes on `decisions`, no lookup table.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE decisions_lookup;
         CREATE INDEX decisions_by_id ON decisions (decision_id);
         CREATE INDEX decisions_by_time ON decisions (time_ms);
         CREATE INDEX decisions_by_subject_tool ON decisions (subject, tool);",
    )
    .unwrap();
    drop(conn);
    assert_eq!(coverage(&path), 0);
    assert_queries_match(&path, 1..=300);
    verify::verify_db(&path, Some(&jwks)).unwrap();

    // The broker opening it drops the old indexes and covers every record.
    append(&path, &key, 301..=301).await;
    assert_eq!(indexes_named(&path, "decisions_by_%"), 0);
    assert_eq!(coverage(&path), 300);
    assert_queries_match(&path, 1..=301);
    verify::verify_db(&path, Some(&jwks)).unwrap();
}

#[tokio::test]
async fn verify_reports_a_lookup_table_out_of_step_and_a_dropped_one_is_rebuilt() {
    let (dir, path, key, jwks) = scratch_log();
    append(&path, &key, 1..=300).await;
    let pristine = dir.path().join("pristine.db");
    std::fs::copy(&path, &pristine).unwrap();

    let cases: &[(&str, i64)] = &[
        // Hides record 7 from queries for alice.
        (
            "UPDATE decisions_lookup SET subject = 'mallory' WHERE seq = 7",
            7,
        ),
        // Hides record 9 from every query through the table.
        ("DELETE FROM decisions_lookup WHERE seq = 9", 9),
        // Moves record 11 out of a time window.
        ("UPDATE decisions_lookup SET time_ms = 0 WHERE seq = 11", 11),
        (
            "UPDATE decisions_lookup SET decision = 'allow' WHERE seq = 12",
            12,
        ),
    ];
    for (tamper, seq) in cases {
        std::fs::copy(&pristine, &path).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch(tamper)
            .unwrap();
        assert_eq!(
            verify::verify_db(&path, Some(&jwks)).unwrap_err(),
            VerifyError::Lookup { seq: *seq },
            "{tamper}"
        );
    }

    // The remedy the error names: drop the table; queries still answer from `decisions`
    // alone, and the broker rebuilds the table when it opens the log.
    std::fs::copy(&pristine, &path).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE decisions_lookup")
        .unwrap();
    verify::verify_db(&path, Some(&jwks)).unwrap();
    assert_queries_match(&path, 1..=300);
    append(&path, &key, 301..=301).await;
    assert_eq!(coverage(&path), 300);
    assert_queries_match(&path, 1..=301);
    verify::verify_db(&path, Some(&jwks)).unwrap();
}

#[tokio::test]
async fn queries_answer_without_the_lookup_indexes_and_the_broker_recreates_them() {
    let (_dir, path, key, jwks) = scratch_log();
    append(&path, &key, 1..=300).await;
    let lookup_indexes = |path: &Path| indexes_named(path, "decisions_lookup_%");
    assert_eq!(lookup_indexes(&path), 3);
    // Dropped by hand (an operator reclaiming space, a bad migration): queries are slower,
    // not wrong, and none fails; the time-window filters are among them.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP INDEX decisions_lookup_by_id;
             DROP INDEX decisions_lookup_by_time;
             DROP INDEX decisions_lookup_by_subject_tool;",
        )
        .unwrap();
    assert_eq!(lookup_indexes(&path), 0);
    assert!(coverage(&path) >= FILL_WHEN_IDLE_RECORDS);
    assert_queries_match(&path, 1..=300);
    // `verify` passes, and names what is missing.
    let report = verify::verify_db(&path, Some(&jwks)).unwrap();
    assert_eq!(
        report.missing_lookup_indexes,
        [
            "decisions_lookup_by_id",
            "decisions_lookup_by_time",
            "decisions_lookup_by_subject_tool"
        ]
    );
    // The broker opening the log recreates them.
    append(&path, &key, 301..=301).await;
    assert_eq!(lookup_indexes(&path), 3);
    assert_queries_match(&path, 1..=301);
    let report = verify::verify_db(&path, Some(&jwks)).unwrap();
    assert!(report.missing_lookup_indexes.is_empty());
}
