//! A damaged end of the decision log, with the real binary: a log cut short while the broker
//! was stopped makes `serve` refuse to start (rather than chain new records onto a broken
//! one), `log verify` names the truncation, and `serve --repair-log` cuts the damaged records,
//! records the cut in the log and starts; `log verify` then passes and shows the cut.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestApp;

/// Longest wait for one log line of the child: a guard against a hang, not a timing.
const LINE_WAIT: Duration = Duration::from_secs(30);

fn toolgate(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Starts `toolgate serve` and reads its stderr until it listens (`Ok(addr)`) or exits
/// (`Err(everything it printed)`).
fn serve(config: &Path, extra: &[&str]) -> (Child, Receiver<String>, Result<String, String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(LINE_WAIT) {
            Ok(line) => {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["fields"]["message"] == "toolgate listening"
                {
                    let addr = event["fields"]["addr"].as_str().unwrap().to_owned();
                    return (child, rx, Ok(addr));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return (child, rx, Err(seen)),
            Err(e) => panic!("`toolgate serve` neither listened nor exited: {e}: {seen}"),
        }
    }
}

fn stop(mut child: Child) {
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

async fn invoke(addr: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/tools/demo___echo/invoke"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(json!({ "arguments": { "message": "hi" } }).to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_truncated_log_refuses_to_start_until_repaired_and_the_cut_is_recorded() {
    let app = TestApp::spawn().await;
    let token = app.token("agent", "", &[]);
    for _ in 0..3 {
        let reply = app
            .invoke(Some(&token), "demo___echo", json!({ "message": "hi" }))
            .await;
        assert_eq!(reply.status, 200);
    }
    let config = app.config_path();
    let db = app.db_path();
    // A clean stop: the WAL is folded into the file, and a checkpoint covers the last record.
    let kept = app.stop_keep().await;
    let config_arg = config.to_str().unwrap();
    let (code, report) = toolgate(&["log", "verify", "--config", config_arg]);
    assert_eq!(code, Some(0), "{report}");

    // The broker is stopped; 100 bytes are cut off the end of the file.
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 100).unwrap();
    drop(file);

    let (code, report) = toolgate(&["log", "verify", "--config", config_arg]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("the log file was truncated"), "{report}");
    assert!(!report.contains("edited"), "{report}");

    // `serve` refuses to write onto it, and says what to do.
    let (mut child, _, started) = serve(&config, &[]);
    let printed = match started {
        Ok(addr) => {
            let _ = child.kill();
            panic!("the broker started on a damaged log, on {addr}");
        }
        Err(printed) => printed,
    };
    assert!(!child.wait().unwrap().success());
    assert!(printed.contains("decision log damaged"), "{printed}");
    assert!(printed.contains("the log file was truncated"), "{printed}");
    assert!(printed.contains("--repair-log"), "{printed}");
    let (code, _) = toolgate(&["log", "verify", "--config", config_arg]);
    assert_eq!(code, Some(1), "the refused start wrote nothing");

    // The explicit repair cuts the damaged records, records the cut, and starts.
    let (child, _, started) = serve(&config, &["--repair-log"]);
    let addr = started.unwrap_or_else(|printed| panic!("did not start: {printed}"));
    assert_eq!(invoke(&addr, &token).await, 200);
    stop(child);

    let (code, report) = toolgate(&["log", "verify", "--config", config_arg]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("were cut by `serve --repair-log`")
            && report.contains("the log file was truncated"),
        "{report}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let repairs: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM decisions WHERE reason = 'log_repaired' AND tool = 'admin:repair_log'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(repairs, 1);
    // The cut rows are kept, as they were, in an owner-only file beside the log.
    let saved: Vec<_> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("decisions.db.cut-"))
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&saved[0]).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let lines = std::fs::read_to_string(&saved[0]).unwrap();
    assert!(lines.lines().count() >= 1, "{lines}");
    for line in lines.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        assert!(
            row["seq"].is_i64() && row.get("record_text").is_some(),
            "{row}"
        );
    }

    // Whole again: later starts need no repair and record none.
    let (child, _, started) = serve(&config, &[]);
    let addr = started.unwrap_or_else(|printed| panic!("did not start: {printed}"));
    assert_eq!(invoke(&addr, &token).await, 200);
    stop(child);
    let (code, report) = toolgate(&["log", "verify", "--config", config_arg]);
    assert_eq!(code, Some(0), "{report}");
    drop(kept);
}

/// An edited chain head (an acknowledged record whose hash no longer matches) refuses too, in
/// process: the check recomputes the head, not only the file's length.
#[tokio::test]
async fn an_edited_head_refuses_to_open() {
    let app = TestApp::spawn().await;
    let token = app.token("agent", "", &[]);
    let reply = app
        .invoke(Some(&token), "demo___echo", json!({ "message": "hi" }))
        .await;
    assert_eq!(reply.status, 200);
    let config = app.config_path();
    let db = app.db_path();
    let kept = app.stop_keep().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let head: i64 = conn
        .query_row("SELECT MAX(seq) FROM decisions", [], |r| r.get(0))
        .unwrap();
    conn.execute(
        "UPDATE decisions SET record = replace(record, '\"time_ms\":', '\"time_ms\": ') WHERE seq = ?1",
        [head],
    )
    .unwrap();
    drop(conn);

    let config = toolgate::config::Config::load(&config).unwrap();
    let error = match toolgate::server::build(config, None) {
        Ok(_) => panic!("the broker opened a log whose head is damaged"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains(&format!(
            "decision log damaged: record {head}: content does not match its hash"
        )) && error.contains("--repair-log"),
        "{error}"
    );
    drop(kept);
}

/// Records that no checkpoint covers when the log opens (after a crash, or a log from before
/// checkpoints) are walked at that start, then covered by the next checkpoint, so that the
/// following start walks only from there.
#[tokio::test]
async fn an_uncovered_tail_gets_a_checkpoint_after_the_start_that_walked_it() {
    let app = TestApp::spawn().await;
    let token = app.token("agent", "", &[]);
    let reply = app
        .invoke(Some(&token), "demo___echo", json!({ "message": "hi" }))
        .await;
    assert_eq!(reply.status, 200);
    let db = app.db_path();
    let kept = app.stop_keep().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM checkpoints", []).unwrap();
    let head: i64 = conn
        .query_row("SELECT MAX(seq) FROM decisions", [], |r| r.get(0))
        .unwrap();
    drop(conn);

    // A start and stop with no request at all.
    let app = TestApp::spawn_with(crate::support::Options {
        reuse: Some(kept),
        ..Default::default()
    })
    .await;
    let kept = app.stop_keep().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let covered: Vec<(i64, String)> = conn
        .prepare("SELECT seq, reason FROM checkpoints")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(covered, vec![(head, "shutdown".to_owned())]);
    drop(kept);
}
