//! Signed checkpoints leave the broker with the records: in unfiltered `log export` lines, in
//! the admin decisions API, and `log verify --jsonl` checks the exported ones.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Kept, Options, TestApp};

/// A broker that made calls over three runs, so its log holds two shutdown checkpoints and
/// records after them; returns it running.
async fn log_with_checkpoints() -> TestApp {
    let mut kept: Option<Kept> = None;
    for run in 0..3 {
        let app = TestApp::spawn_with(Options {
            reuse: kept.take(),
            ..Options::default()
        })
        .await;
        let token = app.token("exporter", "", &[]);
        let reply = app
            .invoke(Some(&token), "demo___echo", json!({ "message": "hi" }))
            .await;
        assert_eq!(reply.status, 200);
        if run == 2 {
            return app;
        }
        kept = Some(app.stop_keep().await);
    }
    unreachable!()
}

fn toolgate(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Writes `jsonl` beside the log and asserts that `log verify --jsonl` on it exits with `code`
/// and reports `report`.
#[track_caller]
fn check_verify_jsonl(app: &TestApp, case: &str, jsonl: &str, code: i32, report: &str) {
    let config = app.config_path();
    let path = app.dir.path().join("verify.jsonl");
    std::fs::write(&path, jsonl).unwrap();
    let (got, out) = toolgate(&[
        "log",
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--jsonl",
        path.to_str().unwrap(),
    ]);
    assert_eq!(got, Some(code), "{case}: {out}");
    assert!(out.contains(report), "{case}: {out}");
}

#[tokio::test]
async fn unfiltered_exports_carry_checkpoints_that_verify_checks() {
    let app = log_with_checkpoints().await;
    let config = app.config_path();
    let config = config.to_str().unwrap();

    let (code, out) = toolgate(&["log", "export", "--config", config]);
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let checkpoints: Vec<&Value> = lines.iter().filter_map(|l| l.get("checkpoint")).collect();
    assert_eq!(checkpoints.len(), 2, "{out}");
    for cp in &checkpoints {
        for field in ["seq", "head", "time_ms", "reason", "kid", "jws"] {
            assert!(cp.get(field).is_some(), "{field} in {cp}");
        }
        assert_eq!(cp["reason"], "shutdown");
    }
    // Each checkpoint follows the record it covers.
    let position = |pred: &dyn Fn(&Value) -> bool| lines.iter().position(pred).unwrap();
    let first_cp = checkpoints[0]["seq"].clone();
    assert!(position(&|l| l.get("checkpoint").is_some()) > position(&|l| l["seq"] == first_cp));

    // The checkpoints are checked: a forged head fails, and so does a tail cut off below the
    // last checkpoint.
    let forged_head = "f".repeat(64);
    let forged: String = lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if l.get("checkpoint").is_some() {
                l["checkpoint"]["head"] = json!(forged_head);
            }
            format!("{l}\n")
        })
        .collect();
    let last_cp = checkpoints[1]["seq"].as_i64().unwrap();
    let cut: String = lines
        .iter()
        .filter(|l| l.get("checkpoint").is_some() || l["seq"].as_i64().unwrap() < last_cp)
        .map(|l| format!("{l}\n"))
        .collect();
    // (case, JSONL, exit code, part of the report)
    let exports = [
        (
            "the export",
            &out,
            0,
            "2 checkpoints matched with valid signatures",
        ),
        (
            "a forged head",
            &forged,
            1,
            "stored fields differ from the signed ones",
        ),
        ("a cut tail", &cut, 1, "the tail was truncated"),
    ];
    for (case, jsonl, code, report) in exports {
        check_verify_jsonl(&app, case, jsonl, code, report);
    }

    // A filtered export is not a contiguous chain: no checkpoint lines.
    let (code, out) = toolgate(&["log", "export", "--config", config, "--kind", "decision"]);
    assert_eq!(code, Some(0));
    assert!(!out.contains("\"checkpoint\""), "{out}");
    app.stop().await;
}

#[tokio::test]
async fn the_admin_decisions_api_returns_checkpoints_page_by_page() {
    let app = log_with_checkpoints().await;
    let admin = app.admin_token();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/decisions?limit=2&cursor={c}"),
            None => "/admin/decisions?limit=2".to_owned(),
        };
        let reply = app.get(&path, Some(&admin)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let records = reply.body["decisions"].as_array().unwrap();
        for cp in reply.body["checkpoints"].as_array().unwrap() {
            let seq = cp["seq"].as_i64().unwrap();
            // On the page that holds the record it covers, with that record's hash.
            let record = records.iter().find(|r| r["seq"] == seq).unwrap();
            assert_eq!(cp["head"], record["hash"]);
            assert!(cp["jws"].as_str().unwrap().split('.').count() == 3);
            seen.push(seq);
        }
        match reply.body.get("next_cursor") {
            Some(c) => cursor = Some(c.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    app.stop().await;
}
