//! Replay of recorded decisions: identical against the recording policies, a candidate policy
//! change reported as a flip (and accepted only when expected), JSONL export round-trips.
//!
//! The fixture `tests/fixtures/demo-decisions.jsonl` is recorded from the demo tools and
//! policies by `recorded_decisions_replay_identically`; regenerate it with
//! `TOOLGATE_WRITE_FIXTURE=1 cargo test --test it replay::recorded_decisions_replay_identically`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use toolgate::audit::query::{self, Filter};
use toolgate::audit::verify;
use toolgate::replay::{self, ChangeKind, Expected};

use crate::support::{Options, TestApp, repo};

const SECRET_TOOL: &str = r#"
[[tools]]
server = "test"
name = "secret"
input_schema = { type = "object", properties = { token = { type = "string" } } }
sensitive_arguments = ["token"]
annotations = { destructive = false }
backend = { kind = "http", url = "http://127.0.0.1:9/secret" }
"#;

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/demo-decisions.jsonl")
}

/// Drives the demo scenario: allows, policy denies (default and forbid), a delegated call,
/// and a call with a redacted argument.
async fn record_demo(app: &TestApp) {
    let reporter = app.token("reporting-agent", "files:read", &["reporting"]);
    let outsider = app.token("outsider-agent", "files:read files:write", &[]);
    let calls: &[(&str, &str, Value, u16)] = &[
        (&reporter, "demo___echo", json!({ "message": "hello" }), 200),
        (
            &reporter,
            "files___read_file",
            json!({ "path": "/srv/reports/q3.txt" }),
            200,
        ),
        (
            &reporter,
            "files___read_file",
            json!({ "path": "/etc/passwd" }),
            403,
        ),
        (
            &reporter,
            "files___read_file",
            json!({ "path": "/srv/reports/../etc/passwd" }),
            403,
        ),
        (
            &outsider,
            "files___read_file",
            json!({ "path": "/srv/reports/q3.txt" }),
            403,
        ),
        (
            &outsider,
            "files___delete_file",
            json!({ "path": "/srv/reports/tmp/a.txt" }),
            403,
        ),
        (
            &outsider,
            "demo___echo",
            json!({ "message": "hi", "repeat": 2 }),
            200,
        ),
    ];
    for (token, tool, args, status) in calls {
        let reply = app.authorize(token, tool, args.clone()).await;
        assert_eq!(reply.status, *status, "{tool} {args}: {:?}", reply.body);
    }
    let mut delegated = app.claims("alice", "files:write", &["report-admins"]);
    delegated["act"] = json!({ "sub": "cleanup-agent" });
    let reply = app
        .authorize(
            &app.sign(&delegated),
            "files___delete_file",
            json!({ "path": "/srv/reports/tmp/old.txt" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let tester = app.token("test-agent", "", &["testers"]);
    let reply = app
        .authorize(&tester, "test___secret", json!({ "token": "s3cr3t" }))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

fn export(db: &Path) -> String {
    let conn = query::open_read_only(db).unwrap();
    let mut out = Vec::new();
    query::export_jsonl(
        &conn,
        &Filter {
            limit: query::MAX_LIMIT,
            ..Filter::default()
        },
        &mut out,
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn recorded_decisions_replay_identically() {
    let app = TestApp::spawn_with(Options {
        extra_config: SECRET_TOOL.to_owned(),
        ..Options::default()
    })
    .await;
    record_demo(&app).await;
    let config = app.dir.path().join("toolgate.toml");
    let db = app.db_path();

    // A redacted argument never reaches the log, not even inside the Cedar request.
    let secret = app
        .decisions()
        .into_iter()
        .find(|d| d.record["tool"] == "test___secret")
        .unwrap();
    assert_eq!(secret.record["redacted"], true);
    assert_eq!(
        secret.record["policy"]["request"]["context"]["input"]["token"],
        "[redacted]"
    );
    assert!(
        !app.records()
            .iter()
            .any(|r| r.record.to_string().contains("s3cr3t"))
    );

    // From the SQLite log, against the policies that recorded it.
    let snapshot = replay::load_policies(&config, None, None).unwrap();
    let report = replay::replay(&snapshot, &replay::read_log(&db).unwrap());
    assert!(report.is_identical(), "{}", report.summary());
    assert_eq!(report.replayed, 8, "{}", report.summary());
    assert_eq!(report.same_policy_set, 8);
    assert_eq!(report.not_exact, std::slice::from_ref(&secret.decision_id));

    // The JSONL export round-trips: it verifies and replays the same.
    let text = export(&db);
    let jsonl = app.dir.path().join("export.jsonl");
    std::fs::write(&jsonl, &text).unwrap();
    assert_eq!(verify::verify_jsonl(&jsonl, None).unwrap().records, 9);
    let again = replay::replay(&snapshot, &replay::read_log(&jsonl).unwrap());
    assert!(again.is_identical());
    assert_eq!((again.replayed, again.not_exact.len()), (8, 1));

    if std::env::var_os("TOOLGATE_WRITE_FIXTURE").is_some() {
        std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
        std::fs::write(fixture(), &text).unwrap();
    }
    app.stop().await;
}

#[test]
fn fixture_replays_identically_against_the_demo_policies() {
    assert!(verify::verify_jsonl(&fixture(), None).is_ok());
    let snapshot = replay::load_policies(&repo().join("toolgate.toml"), None, None).unwrap();
    let records = replay::read_log(&fixture()).unwrap();
    let report = replay::replay(&snapshot, &records);
    assert!(report.is_identical(), "{}", report.summary());
    assert_eq!(report.replayed, 8, "{}", report.summary());
    assert_eq!(report.not_exact.len(), 1);
}

fn candidate_policies(dir: &Path) -> PathBuf {
    let out = dir.join("candidate");
    std::fs::create_dir(&out).unwrap();
    for name in ["demo.cedar", "delegation.cedar"] {
        let text = std::fs::read_to_string(repo().join("policies").join(name)).unwrap();
        // The candidate narrows report reading to a public subfolder.
        let text = text.replace("\"/srv/reports/*\"", "\"/srv/reports/public/*\"");
        std::fs::write(out.join(name), text).unwrap();
    }
    out
}

#[test]
fn candidate_policy_flip_is_reported_and_fails_unless_expected() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = candidate_policies(dir.path());
    let config = repo().join("toolgate.toml");
    let snapshot = replay::load_policies(&config, Some(&candidate), None).unwrap();
    let report = replay::replay(&snapshot, &replay::read_log(&fixture()).unwrap());
    assert_eq!(report.changes.len(), 1, "{}", report.summary());
    let change = &report.changes[0];
    assert_eq!(
        (change.change, change.agent.as_str(), change.tool.as_str()),
        (
            ChangeKind::AllowToDeny,
            "reporting-agent",
            "files___read_file"
        )
    );
    assert_eq!(
        change.before.determining_policies,
        ["reporting-reads-reports"]
    );
    assert!(change.after.determining_policies.is_empty());
    let groups = report.by_policy_and_agent();
    assert_eq!(
        groups["reporting-reads-reports"]["reporting-agent"].len(),
        1
    );
    assert_eq!(report.unexpected(&[]).len(), 1);
    let expected = [Expected {
        decision_id: change.decision_id.clone(),
        change: ChangeKind::AllowToDeny,
    }];
    assert!(report.unexpected(&expected).is_empty());

    // The command: non-zero on an unexpected change, zero once it is expected.
    let bin = env!("CARGO_BIN_EXE_toolgate");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("replay")
            .arg("--log")
            .arg(fixture())
            .arg("--config")
            .arg(&config)
            .arg("--policies")
            .arg(&candidate)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("policy reporting-reads-reports"), "{out}");
    assert!(out.contains("allow→deny files___read_file"), "{out}");
    let expect = dir.path().join("expect.json");
    std::fs::write(&expect, serde_json::to_string(&expected).unwrap()).unwrap();
    let (code, out) = run(&["--expect", expect.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = std::process::Command::new(bin)
        .args(["replay", "--log"])
        .arg(fixture())
        .arg("--config")
        .arg(&config)
        .output()
        .map(|o| {
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(
        code,
        Some(0),
        "identical against the recording policies: {out}"
    );
}
