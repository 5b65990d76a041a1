//! The load test's baseline and backend: a bare axum server that answers `POST /baseline`
//! with a small JSON body (what toolgate's answer costs without any checks) and `POST /echo`
//! as a trivial tool backend. Used by `bench/load.sh`.
//!
//! ```text
//! cargo run --release --features examples --example bare_baseline -- 127.0.0.1:9400
//! ```

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9400".to_owned());
    let router = Router::new()
        .route(
            "/baseline",
            post(|body: Bytes| async move {
                // Parse the body as toolgate would, so the baseline does comparable work.
                let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                Json(json!({ "decision_id": "01a20961-e637-72e6-8313-357557eee19d", "decision": "allow", "ok": parsed.is_object() }))
            }),
        )
        .route("/echo", post(|Json(args): Json<Value>| async move { Json(json!({ "echo": args })) }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, router).await?;
    Ok(())
}
