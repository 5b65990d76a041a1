//! The decision log: tamper detection (each kind), signed checkpoints, archive, the admin
//! query API, group commit under concurrent load, and a kill -9 of a real broker process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jsonwebtoken::jwk::JwkSet;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use toolgate::audit::checkpoint;
use toolgate::audit::verify::{self, VerifyError};
use toolgate::audit::{AuditLog, AuditOptions, CheckpointOptions, DecisionRecord, Verdict};
use toolgate::config::Synchronous;
use toolgate::signing::SigningKey;

use crate::support::{AUDIENCE, Backend, ISSUER, Options, TestApp, check_status, repo};

/// A log of `n` records written by the real writer, with a checkpoint every 5 records and
/// one at shutdown. Record `i` (seq `i`) has `time_ms = i * 1000`.
async fn written_log(n: i64) -> (tempfile::TempDir, PathBuf, Arc<SigningKey>, JwkSet) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let (key, _) = SigningKey::generate().unwrap();
    let key = Arc::new(key);
    append(&path, &key, 1..=n).await;
    let jwks = checkpoint::jwks_of(&key).unwrap();
    (dir, path, key, jwks)
}

/// A log at `path` with NORMAL durability, batches of at most 64 records and a checkpoint
/// signed by `key` every `checkpoint_every` records.
pub(crate) fn log_options(
    path: &Path,
    key: &Arc<SigningKey>,
    checkpoint_every: u64,
) -> AuditOptions {
    AuditOptions {
        path: path.to_owned(),
        synchronous: Synchronous::Normal,
        busy_timeout: std::time::Duration::from_secs(2),
        max_batch: 64,
        checkpoints: Some(CheckpointOptions {
            key: key.clone(),
            every_records: checkpoint_every,
            interval: None,
        }),
    }
}

async fn append(path: &Path, key: &Arc<SigningKey>, seqs: std::ops::RangeInclusive<i64>) {
    let (log, writer) = AuditLog::open(log_options(path, key, 5)).unwrap();
    for i in seqs {
        let mut r = DecisionRecord::new(format!("d{i}"), format!("r{i}"), "invoke", i * 1000);
        r.stage = "policy".to_owned();
        r.reason = "allowed".to_owned();
        r.decision = Verdict::Allow;
        r.tool = Some("demo___echo".to_owned());
        log.append(&r).await.unwrap();
    }
    drop(log);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
}

fn row(conn: &Connection, seq: i64) -> (String, String, String) {
    conn.query_row(
        "SELECT record, prev_hash, hash FROM decisions WHERE seq = ?1",
        [seq],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

/// Re-chains every record from `from` on, as an attacker without the broker key could.
fn rehash_from(conn: &Connection, from: i64) {
    let last: i64 = conn
        .query_row("SELECT MAX(seq) FROM decisions", [], |r| r.get(0))
        .unwrap();
    let mut prev = row(conn, from - 1).2;
    for seq in from..=last {
        let (record, _, _) = row(conn, seq);
        let hash = toolgate::audit::chain_hash(&prev, &record);
        conn.execute(
            "UPDATE decisions SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![prev, hash, seq],
        )
        .unwrap();
        prev = hash;
    }
}

type Tamper = fn(&Connection);

#[tokio::test]
async fn verify_reports_each_kind_of_tampering() {
    let cases: &[(&str, Tamper, VerifyError)] = &[
        (
            "edit a field of the record",
            |c| {
                c.execute(
                    "UPDATE decisions SET record = replace(record, '\"reason\":\"allowed\"', '\"reason\":\"policy_denied\"') WHERE seq = 3",
                    [],
                )
                .unwrap();
            },
            VerifyError::Edited { seq: 3 },
        ),
        (
            "edit an index column",
            |c| {
                c.execute("UPDATE decisions SET decision = 'deny' WHERE seq = 4", [])
                    .unwrap();
            },
            VerifyError::Column {
                seq: 4,
                column: "decision",
            },
        ),
        (
            "delete a row",
            |c| {
                c.execute("DELETE FROM decisions WHERE seq = 5", [])
                    .unwrap();
            },
            VerifyError::Missing { from: 5, to: 5 },
        ),
        (
            "swap two rows",
            |c| {
                c.execute_batch(
                    "UPDATE decisions SET seq = -3 WHERE seq = 3;
                     UPDATE decisions SET seq = 3 WHERE seq = 4;
                     UPDATE decisions SET seq = 4 WHERE seq = -3;",
                )
                .unwrap();
            },
            VerifyError::Link { seq: 3, prev: 2 },
        ),
        (
            "insert a well-formed row",
            |c| {
                c.execute_batch(
                    "UPDATE decisions SET seq = seq + 1000 WHERE seq >= 5;
                     UPDATE decisions SET seq = seq - 999 WHERE seq >= 1000;",
                )
                .unwrap();
                let (record, _, prev) = row(c, 4);
                let forged = record.replace("\"d4\"", "\"forged\"");
                let hash = toolgate::audit::chain_hash(&prev, &forged);
                c.execute(
                    "INSERT INTO decisions (seq, decision_id, kind, time_ms, stage, reason, decision, subject, tool, record, prev_hash, hash)
                     VALUES (5, 'forged', 'decision', 4000, 'policy', 'allowed', 'allow', NULL, 'demo___echo', ?1, ?2, ?3)",
                    params![forged, prev, hash],
                )
                .unwrap();
            },
            VerifyError::Link { seq: 6, prev: 5 },
        ),
        (
            "truncate the tail below the last checkpoint",
            |c| {
                c.execute("DELETE FROM decisions WHERE seq > 7", [])
                    .unwrap();
            },
            VerifyError::Truncated { last: 7, seq: 10 },
        ),
        (
            "edit a record and re-chain everything after it",
            |c| {
                c.execute(
                    "UPDATE decisions SET record = replace(record, '\"allow\"', '\"deny\"'), decision = 'deny' WHERE seq = 3",
                    [],
                )
                .unwrap();
                rehash_from(c, 3);
            },
            VerifyError::Checkpoint {
                seq: 5,
                reason: "periodic".to_owned(),
                problem: "the record there has a different hash (history was rewritten)".to_owned(),
            },
        ),
        (
            "forge a checkpoint",
            |c| {
                c.execute(
                    "UPDATE checkpoints SET seq = 7, head = (SELECT hash FROM decisions WHERE seq = 7) WHERE seq = 10",
                    [],
                )
                .unwrap();
            },
            VerifyError::Checkpoint {
                seq: 7,
                reason: "periodic".to_owned(),
                problem: "stored fields differ from the signed ones".to_owned(),
            },
        ),
    ];
    for (name, tamper, expected) in cases {
        let (_dir, path, _key, jwks) = written_log(12).await;
        let report = verify::verify_db(&path, Some(&jwks)).unwrap();
        assert_eq!((report.records, report.head_seq), (12, 12), "{name}");
        assert_eq!(report.checkpoints, 3, "{name}: at 5, 10 and at shutdown");
        assert!(report.signatures_checked);
        let conn = Connection::open(&path).unwrap();
        tamper(&conn);
        drop(conn);
        assert_eq!(
            verify::verify_db(&path, Some(&jwks)).unwrap_err(),
            *expected,
            "case: {name}"
        );
    }
}

#[tokio::test]
async fn checkpoints_signed_by_another_key_fail() {
    let (_dir, path, _key, _) = written_log(6).await;
    let (other, _) = SigningKey::generate().unwrap();
    let err = verify::verify_db(&path, Some(&checkpoint::jwks_of(&other).unwrap())).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Checkpoint { problem, .. } if problem.starts_with("no key with id")),
        "{err:?}"
    );
}

/// With FULL durability the writer copies the WAL back into the database itself (SQLite's
/// auto-checkpoint on its connection, every 128 pages), so the WAL stays at a few hundred
/// pages however many records are written.
#[tokio::test]
async fn with_full_durability_the_writer_keeps_the_wal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let (key, _) = SigningKey::generate().unwrap();
    let key = Arc::new(key);
    let options = AuditOptions {
        synchronous: Synchronous::Full,
        ..log_options(&path, &key, 0)
    };
    let (log, writer) = AuditLog::open(options).unwrap();
    // One record per commit: each commit adds at least one WAL page (the table's last leaf),
    // so 800 records would leave a WAL of more than 3 MiB unchecked (4 MiB when tried).
    for i in 1..=800 {
        let mut r = DecisionRecord::new(format!("d{i}"), format!("r{i}"), "invoke", i * 1000);
        r.tool = Some("demo___echo".to_owned());
        log.append(&r).await.unwrap();
    }
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let wal_bytes = std::fs::metadata(&wal).unwrap().len();
    assert!(
        wal_bytes < 1 << 20,
        "the WAL grew to {wal_bytes} bytes while the writer ran"
    );
    drop(log);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
    let report = verify::verify_db(&path, Some(&checkpoint::jwks_of(&key).unwrap())).unwrap();
    assert_eq!(report.records, 800);
}

#[tokio::test]
async fn a_new_log_gets_4k_pages_and_an_existing_16k_log_keeps_its_own() {
    let page_size = |path: &Path| -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    };
    let (_dir, path, _key, jwks) = written_log(12).await;
    assert_eq!(page_size(&path), 4096);
    assert_eq!(verify::verify_db(&path, Some(&jwks)).unwrap().records, 12);

    // A log created with the larger pages of earlier versions: the writer appends to it as it is.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("decisions.db");
    Connection::open(&old)
        .unwrap()
        .execute_batch("PRAGMA page_size=16384; CREATE TABLE earlier (x INTEGER);")
        .unwrap();
    let (key, _) = SigningKey::generate().unwrap();
    let key = Arc::new(key);
    append(&old, &key, 1..=12).await;
    assert_eq!(page_size(&old), 16_384);
    let report = verify::verify_db(&old, Some(&checkpoint::jwks_of(&key).unwrap())).unwrap();
    assert_eq!(report.records, 12);
}

#[tokio::test]
async fn archive_moves_old_records_and_what_remains_verifies() {
    let (dir, path, key, jwks) = written_log(12).await;
    let out = dir.path().join("archive-1.jsonl");
    // Records 1..=6 have time_ms 1000..=6000.
    let report = toolgate::audit::archive::archive(&path, 6500, &out, &key).unwrap();
    assert_eq!((report.records, report.anchor_seq), (6, 6));

    let archived = verify::verify_jsonl(&out, Some(&jwks)).unwrap();
    assert_eq!((archived.records, archived.head_seq), (6, 6));
    assert_eq!(
        archived.checkpoints, 2,
        "the periodic one at 5 and the archive seal at 6"
    );

    let remaining = verify::verify_db(&path, Some(&jwks)).unwrap();
    assert_eq!(
        (remaining.anchor_seq, remaining.records, remaining.head_seq),
        (6, 6, 12)
    );
    let conn = Connection::open(&path).unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 6);
    drop(conn);

    // The writer continues the chain after reopening, and archiving everything keeps the
    // numbering going from the anchor.
    append(&path, &key, 13..=14).await;
    let out2 = dir.path().join("archive-2.jsonl");
    let report = toolgate::audit::archive::archive(&path, i64::MAX, &out2, &key).unwrap();
    assert_eq!((report.records, report.anchor_seq), (8, 14));
    append(&path, &key, 15..=15).await;
    let after = verify::verify_db(&path, Some(&jwks)).unwrap();
    assert_eq!((after.anchor_seq, after.head_seq), (14, 15));

    // Removing old rows and faking an anchor without a signed checkpoint is caught.
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM checkpoints WHERE seq <= 14", [])
        .unwrap();
    drop(conn);
    assert_eq!(
        verify::verify_db(&path, Some(&jwks)).unwrap_err(),
        VerifyError::Anchor { seq: 14 }
    );
}

fn admin_token(app: &TestApp) -> String {
    let mut claims = app.claims("ops", "toolgate:admin", &[]);
    claims["aud"] = json!("toolgate-admin");
    app.sign(&claims)
}

#[tokio::test]
async fn admin_decisions_api_filters_paginates_and_fetches_one() {
    let app = TestApp::spawn().await;
    let reporter = app.token("reporting-agent", "files:read", &["reporting"]);
    let other = app.token("other-agent", "", &[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let reply = app
            .invoke(
                Some(&reporter),
                "files___read_file",
                json!({ "path": format!("/srv/reports/{i}.txt") }),
            )
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        ids.push(reply.body["decision_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        app.invoke(Some(&other), "demo___echo", json!({ "message": "hi" }))
            .await
            .status,
        200
    );
    let admin = admin_token(&app);

    let page = app
        .get(
            "/admin/decisions?agent=reporting-agent&kind=decision&decision=allow&limit=2",
            Some(&admin),
        )
        .await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let first: Vec<Value> = page.body["decisions"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["record"]["decision_id"], json!(ids[0]));
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .get(
            &format!(
                "/admin/decisions?agent=reporting-agent&kind=decision&decision=allow&limit=2&cursor={cursor}"
            ),
            Some(&admin),
        )
        .await;
    let second = next.body["decisions"].as_array().unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["record"]["decision_id"], json!(ids[2]));
    assert!(next.body.get("next_cursor").is_none());

    let by_tool = app
        .get("/admin/decisions?tool=demo___echo", Some(&admin))
        .await;
    let subjects: Vec<&str> = by_tool.body["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["record"]["principal"]["subject"].as_str().unwrap_or(""))
        .collect();
    assert!(!subjects.is_empty());
    assert!(
        by_tool.body["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["record"]["tool"] == "demo___echo")
    );

    let one = app
        .get(&format!("/admin/decisions/{}", ids[1]), Some(&admin))
        .await;
    assert_eq!(one.status, 200);
    let kinds: Vec<&str> = one.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["decision", "dispatch"]);

    let (admin, reporter) = (Some(admin.as_str()), Some(reporter.as_str()));
    // (case, path, token, status)
    let refused = [
        ("unknown id", "/admin/decisions/no-such-id", admin, 404),
        (
            "limit over the bound",
            "/admin/decisions?limit=100000",
            admin,
            400,
        ),
        (
            "unreadable since",
            "/admin/decisions?since=yesterday",
            admin,
            400,
        ),
        (
            "unknown parameter",
            "/admin/decisions?colour=red",
            admin,
            400,
        ),
        ("no token", "/admin/decisions", None, 401),
        ("an agent's token", "/admin/decisions", reporter, 401),
    ];
    for (case, path, token, status) in refused {
        check_status(case, &app.get(path, token).await, status);
    }
    app.stop().await;
}

#[tokio::test]
async fn group_commit_keeps_one_record_per_request_under_concurrent_load() {
    let app = Arc::new(TestApp::spawn().await);
    let token = app.token("load-agent", "", &[]);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let app = app.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            app.authorize(&token, "demo___echo", json!({ "message": format!("m{i}") }))
                .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let reply = t.await.unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        ids.push(reply.body["decision_id"].as_str().unwrap().to_owned());
    }
    let decisions = app.decisions();
    assert_eq!(decisions.len(), 200);
    let mut logged: Vec<String> = decisions.iter().map(|d| d.decision_id.clone()).collect();
    logged.sort();
    ids.sort();
    assert_eq!(logged, ids, "exactly one record per request");
    let key = SigningKey::load(
        &app.dir
            .path()
            .join("state")
            .join(checkpoint::BROKER_KEY_FILE),
    )
    .unwrap();
    let report =
        verify::verify_db(&app.db_path(), Some(&checkpoint::jwks_of(&key).unwrap())).unwrap();
    assert_eq!(report.records, 200);
}

#[tokio::test]
async fn log_cli_verifies_queries_and_exports() {
    let app = TestApp::spawn_with(Options::default()).await;
    let token = app.token("cli-agent", "", &[]);
    for m in ["a", "b"] {
        app.invoke(Some(&token), "demo___echo", json!({ "message": m }))
            .await;
        // Distinct milliseconds, so that `--before` below splits the two calls.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let config = app.dir.path().join("toolgate.toml");
    let db = app.db_path();
    let bin = env!("CARGO_BIN_EXE_toolgate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let config_arg = config.to_str().unwrap();
    let (code, out) = run(&["log", "verify", "--config", config_arg]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("4 records verified") && out.contains("valid signatures"),
        "{out}"
    );

    let (code, out) = run(&[
        "log", "export", "--config", config_arg, "--kind", "decision",
    ]);
    assert_eq!(code, Some(0));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        for field in ["seq", "prev_hash", "hash", "record"] {
            assert!(l.get(field).is_some(), "{field} in {l}");
        }
        assert_eq!(l["record"]["principal"]["subject"], "cli-agent");
    }
    let (code, out) = run(&[
        "log", "query", "--config", config_arg, "--format", "json", "--limit", "1",
    ]);
    assert_eq!(code, Some(0));
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], "1");
    let (code, out) = run(&["log", "query", "--config", config_arg, "--kind", "dispatch"]);
    assert_eq!(code, Some(0));
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows.iter()
            .all(|r| r.contains("dispatched") && r.contains("cli-agent")),
        "{out}"
    );

    // Archive records 1 and 2 (before record 3's time), then both parts verify.
    let conn = Connection::open(&db).unwrap();
    let time_of = |seq: i64| -> i64 {
        conn.query_row("SELECT time_ms FROM decisions WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let before = time_of(3);
    assert!(time_of(2) < before);
    drop(conn);
    let archive = app.dir.path().join("archive.jsonl");
    let (code, out) = run(&[
        "log",
        "archive",
        "--config",
        config_arg,
        "--before",
        &before.to_string(),
        "--out",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("archived 2 records"), "{out}");
    let (code, out) = run(&["log", "verify", "--config", config_arg]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 records verified (records 3..=4)"), "{out}");
    let (code, out) = run(&[
        "log",
        "verify",
        "--config",
        config_arg,
        "--jsonl",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("2 records verified") && out.contains("valid signatures"),
        "{out}"
    );

    // Checkpoints signed by the broker do not verify against another key.
    let (other, _) = SigningKey::generate().unwrap();
    let other_jwks = app.dir.path().join("other-jwks.json");
    std::fs::write(&other_jwks, other.jwks().to_string()).unwrap();
    let (code, out) = run(&[
        "log",
        "verify",
        "--config",
        config_arg,
        "--jwks",
        other_jwks.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no key with id"), "{out}");

    let conn = Connection::open(&db).unwrap();
    conn.execute("DELETE FROM decisions WHERE seq = 3", [])
        .unwrap();
    drop(conn);
    let (code, out) = run(&[
        "log",
        "verify",
        "--db",
        db.to_str().unwrap(),
        "--config",
        config_arg,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("records 3 to 3 are missing"), "{out}");
    app.stop().await;
}

/// Starts the real binary, drives concurrent calls, kills it with SIGKILL mid-load, and
/// checks that every call that got a response has its record and the chain verifies.
#[tokio::test]
async fn kill_9_under_load_loses_no_answered_record() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer_key, _) = SigningKey::generate().unwrap();
    std::fs::write(dir.path().join("jwks.json"), issuer_key.jwks().to_string()).unwrap();
    let backend = Backend::start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let schemas = repo().join("schemas");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
state_dir = "state"

[[issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "jwks.json"
algorithms = ["EdDSA"]

[policy]
dir = "{policies}"
schema = "{schema}"

[audit]
synchronous = "normal"
checkpoint_every = 50

[[tools]]
server = "demo"
name = "echo"
input_schema_file = "{tools}/echo.json"
annotations = {{ read_only = true, destructive = false }}
backend = {{ kind = "http", url = "{b}echo" }}

[[tools]]
server = "files"
name = "read_file"
input_schema_file = "{tools}/read_file.json"
backend = {{ kind = "http", url = "{b}read_file" }}

[[tools]]
server = "files"
name = "delete_file"
input_schema_file = "{tools}/delete_file.json"
backend = {{ kind = "http", url = "{b}echo" }}

[[tools]]
server = "payments"
name = "transfer"
input_schema_file = "{tools}/transfer.json"
backend = {{ kind = "http", url = "{b}echo" }}
"#,
        policies = repo().join("policies").display(),
        schema = schemas.join("toolgate.cedarschema").display(),
        tools = schemas.join("tools").display(),
        b = backend.url,
    );
    let config_path = dir.path().join("toolgate.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("broker.log")).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..300 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "the broker did not start: {}",
        std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default()
    );

    let now = toolgate::auth::unix_now();
    let token = issuer_key
        .sign(
            "at+jwt",
            &json!({ "iss": ISSUER, "sub": "load-agent", "aud": AUDIENCE, "iat": now, "exp": now + 300 }),
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (client, base, token, stop, answered) = (
            client.clone(),
            base.clone(),
            token.clone(),
            stop.clone(),
            answered.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let sent = client
                    .post(format!("{base}/v1/tools/demo___echo/invoke"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(json!({ "arguments": { "message": format!("w{w}-{i}") } }).to_string())
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                let id = response
                    .headers()
                    .get("x-toolgate-decision-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if response.bytes().await.is_err() {
                    break;
                }
                if let Some(id) = id {
                    answered.lock().unwrap().push(id);
                }
            }
        }));
    }
    while answered.lock().unwrap().len() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let answered = answered.lock().unwrap().clone();
    let db = dir.path().join("state").join("decisions.db");
    let conn = Connection::open(&db).unwrap();
    let mut missing = Vec::new();
    for id in &answered {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM decisions WHERE decision_id = ?1 AND kind = 'decision'",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        if n != 1 {
            missing.push(id.clone());
        }
    }
    drop(conn);
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no record",
        missing.len(),
        answered.len()
    );
    let key =
        SigningKey::load(&dir.path().join("state").join(checkpoint::BROKER_KEY_FILE)).unwrap();
    let report = verify::verify_db(&db, Some(&checkpoint::jwks_of(&key).unwrap())).unwrap();
    assert!(report.records as usize >= answered.len());
}

#[tokio::test]
async fn a_quiet_log_gets_a_checkpoint_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let (key, _) = SigningKey::generate().unwrap();
    let (log, writer) = AuditLog::open(AuditOptions {
        path: path.clone(),
        synchronous: Synchronous::Full,
        busy_timeout: std::time::Duration::from_secs(2),
        max_batch: 64,
        checkpoints: Some(CheckpointOptions {
            key: Arc::new(key),
            every_records: 0,
            interval: Some(std::time::Duration::from_millis(20)),
        }),
    })
    .unwrap();
    log.append(&DecisionRecord::new("d1".into(), "r1".into(), "invoke", 1))
        .await
        .unwrap();
    // Wait (bounded) for the writer's timer: no further record arrives to trigger it.
    let mut found = Vec::new();
    for _ in 0..500 {
        let conn = Connection::open(&path).unwrap();
        found = checkpoint::load_all(&conn).unwrap();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        found.len(),
        1,
        "one periodic checkpoint while the log is quiet"
    );
    assert_eq!((found[0].seq, found[0].reason.as_str()), (1, "periodic"));
    drop(log);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        checkpoint::load_all(&conn).unwrap().len(),
        1,
        "nothing new to cover at shutdown"
    );
}
