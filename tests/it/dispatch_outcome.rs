//! A lost dispatch outcome is answered, counted and listed: when the outcome record cannot be
//! written after the backend acted, the agent still gets the backend's result (a 503 would
//! invite a retry of a call that already happened), `/admin/status` counts it since start, and
//! `log verify` lists the allow record left without an outcome.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::support::{Options, TestApp};

/// A backend whose `/hold` tells the test it has the request, then answers only when the
/// test releases it.
async fn holding_backend() -> (String, mpsc::Receiver<oneshot::Sender<()>>) {
    let (arrived_tx, arrived) = mpsc::channel::<oneshot::Sender<()>>(1);
    let arrived_tx = Arc::new(Mutex::new(arrived_tx));
    let router = Router::new().route(
        "/hold",
        post(move || {
            let arrived_tx = arrived_tx.clone();
            async move {
                let (release_tx, release) = oneshot::channel();
                let sender = arrived_tx.lock().unwrap().clone();
                sender.send(release_tx).await.unwrap();
                let _ = release.await;
                axum::Json(json!({ "acted": true }))
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}/hold"), arrived)
}

#[tokio::test]
async fn an_outcome_lost_after_the_call_is_answered_counted_and_listed() {
    let (url, mut arrived) = holding_backend().await;
    let app = TestApp::spawn_with(Options {
        extra_config: format!(
            r#"
[[tools]]
server = "test"
name = "hold"
input_schema = {{ type = "object" }}
annotations = {{ destructive = false }}
backend = {{ kind = "http", url = "{url}" }}
"#
        ),
        ..Options::default()
    })
    .await;
    let app = Arc::new(app);
    let token = app.token("tester", "", &["testers"]);
    let call = {
        let app = app.clone();
        let token = token.clone();
        tokio::spawn(async move { app.invoke(Some(&token), "test___hold", json!({})).await })
    };
    // The allow record is committed and the backend is acting: now the log file is replaced
    // (moved away), so the outcome record cannot be written.
    let release = arrived.recv().await.unwrap();
    let db = app.db_path();
    let moved = db.with_extension("moved");
    std::fs::rename(&db, &moved).unwrap();
    release.send(()).unwrap();
    let reply = call.await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["result"]["acted"], true, "{:?}", reply.body);
    let decision_id = reply.header("x-toolgate-decision-id").unwrap().to_owned();

    // The file comes back; the broker writes to it again, and reports the lost outcome.
    std::fs::rename(&moved, &db).unwrap();
    let status = app.get("/admin/status", Some(&app.admin_token())).await;
    assert_eq!(status.status, 200, "{:?}", status.body);
    assert_eq!(status.body["dispatch_outcomes_unrecorded"], 1);

    let allow_seq = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let kinds: Vec<(i64, String)> = conn
            .prepare("SELECT seq, kind FROM decisions WHERE decision_id = ?1")
            .unwrap()
            .query_map([&decision_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kinds.len(), 1, "only the allow record: {kinds:?}");
        assert_eq!(kinds[0].1, "decision");
        kinds[0].0
    };

    // A call whose outcome was written is not listed.
    let ok = app
        .invoke(Some(&token), "demo___echo", json!({ "message": "hi" }))
        .await;
    assert_eq!(ok.status, 200);
    let config = app.config_path();
    let app = Arc::into_inner(app).unwrap();
    let kept = app.stop_keep().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["log", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}{errors}");
    assert!(
        report.contains(&format!(
            "note: 1 dispatched calls have no outcome record (it could not be written, or the call was in flight): record {allow_seq} ({decision_id})"
        )),
        "{report}"
    );
    drop(kept);
}
