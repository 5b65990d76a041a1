//! A tool backend that trusts toolgate's per-call assertion (the mesh-hop scenario): it
//! fetches the broker's JWKS, verifies each call's `x-toolgate-assertion` (EdDSA pinned,
//! `iss`, `aud`, `exp`, the body hash) with the library's [`RemoteJwks`], the same code the
//! tests exercise, and only then does its work: here, echoing the arguments with the caller.
//!
//! ```text
//! cargo run --features examples --example assertion_backend -- --broker http://127.0.0.1:8080 --listen 127.0.0.1:9090
//! ```
//! and register a tool with `backend = { kind = "http", url = "http://127.0.0.1:9090/echo" }`
//! (its default audience is `http://127.0.0.1:9090`, which is what this backend expects).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use toolgate::tools::assertion::{ASSERTION_HEADER, Expected, RemoteJwks};

/// An unknown `kid` refetches the JWKS at most this often.
const MIN_REFETCH: Duration = Duration::from_secs(10);

struct Backend {
    jwks: RemoteJwks,
    issuer: String,
    audience: String,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let broker = arg(&args, "--broker").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:9090".to_owned());
    let audience = arg(&args, "--audience").unwrap_or_else(|| format!("http://{listen}"));
    let issuer = arg(&args, "--issuer").unwrap_or_else(|| "toolgate".to_owned());
    let jwks_url = format!("{}/.well-known/jwks.json", broker.trim_end_matches('/'));
    let jwks = RemoteJwks::fetch(&jwks_url, MIN_REFETCH).await?;
    let backend = Arc::new(Backend {
        jwks,
        issuer,
        audience,
    });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "assertion backend on http://{} (audience `{}`)",
        listener.local_addr()?,
        backend.audience
    );
    let router = Router::new().fallback(handle).with_state(backend);
    axum::serve(listener, router).await?;
    Ok(())
}

async fn handle(State(backend): State<Arc<Backend>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = headers.get(ASSERTION_HEADER).and_then(|v| v.to_str().ok()) else {
        return refuse("missing assertion".to_owned());
    };
    let expected = Expected {
        issuer: &backend.issuer,
        audience: &backend.audience,
        body: &body,
    };
    match backend.jwks.verify(token, &expected).await {
        Ok(claims) => {
            let arguments: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            // The work: runs only for a call the broker authorized, for this exact body.
            axum::Json(json!({
                "caller": claims.sub,
                "actors": claims.act,
                "tool": claims.tool,
                "decision_id": claims.decision_id,
                "echo": arguments,
            }))
            .into_response()
        }
        Err(e) => refuse(e.to_string()),
    }
}

fn refuse(reason: String) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": "invalid_assertion", "message": reason })),
    )
        .into_response()
}
