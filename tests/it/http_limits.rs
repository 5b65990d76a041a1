//! The HTTP layer's bounds over raw sockets (header, body and idle timeouts, the connection
//! cap) and unreadable bodies answered and recorded alike on `/v1/authorize`, `/invoke` and
//! `/mcp`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mcp_server::{open, rpc};
use crate::support::{Options, TestApp};

/// Upper bound for anything the server should do by itself: reached only if it never does.
const NEVER: Duration = Duration::from_secs(30);

async fn spawn_with_limits(limits: &str) -> TestApp {
    TestApp::spawn_with(Options {
        extra_config: format!("\n[limits]\n{limits}\n"),
        ..Options::default()
    })
    .await
}

/// Reads until the server closes the connection; a reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(NEVER, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open; received so far: {}",
        String::from_utf8_lossy(&received)
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads one response head and its `content-length` body from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(NEVER, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            if text.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_half_sent_header_is_closed_after_the_header_timeout_and_not_recorded() {
    // The idle timeout (the longest there is) cannot be what closes it.
    let app = spawn_with_limits("header_read_timeout_ms = 300\nidle_timeout_ms = 3600000").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/authorize HTTP/1.1\r\nhost: toolgate\r\ncontent-ty")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream).await;
    assert!(!received.contains(" 200 "), "{received}");
    assert!(
        app.decisions().is_empty(),
        "the HTTP layer refused it before any stage"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_with_limits("idle_timeout_ms = 300").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: toolgate\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    app.stop().await;
}

/// The header timeout counts from a head's first byte, not from the idle wait before it: a
/// connection that waits longer than it, then sends a whole request, is served.
#[tokio::test]
async fn the_header_timeout_does_not_count_the_idle_wait() {
    let app = spawn_with_limits("header_read_timeout_ms = 100\nidle_timeout_ms = 3600000").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: toolgate\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    app.stop().await;
}

/// A body that stalls is answered 408 `request_timeout`, recorded with that reason, and the
/// tool is not called; the connection is then closed (the rest of the body is never read).
#[tokio::test]
async fn a_stalled_body_gets_408_is_recorded_and_dispatches_nothing() {
    let app = spawn_with_limits("body_read_timeout_ms = 300").await;
    let token = app.token("alice", "", &[]);
    for declared in [2_000, 100_000_000] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /v1/tools/demo___echo/invoke HTTP/1.1\r\nhost: toolgate\r\n\
             authorization: Bearer {token}\r\ncontent-type: application/json\r\n\
             content-length: {declared}\r\n\r\n{{\"arguments\": {{\"message\": \""
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'a'; 1000]).await.unwrap();
        let received = read_until_closed(&mut stream).await;
        assert!(
            received.starts_with("HTTP/1.1 408"),
            "declared {declared}: {received}"
        );
        assert!(
            received.contains("\"error\":\"request_timeout\""),
            "{received}"
        );
        let recorded = app.decisions().pop().unwrap();
        assert_eq!(
            (recorded.stage.as_str(), recorded.reason.as_str()),
            ("request", "request_timeout")
        );
        assert!(received.contains(&recorded.decision_id), "{received}");
    }
    assert!(app.backend.calls("/echo").is_empty());
    app.stop().await;
}

/// Connections over `limits.max_connections` are answered 503 and closed at once; a place
/// freed is taken by the next connection.
#[tokio::test]
async fn connections_over_the_cap_are_refused_with_503() {
    let app = spawn_with_limits("max_connections = 2").await;
    let request = b"GET /healthz HTTP/1.1\r\nhost: toolgate\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        // Answered, so accepted: it holds its place while kept alive.
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut over = TcpStream::connect(app.addr).await.unwrap();
    let refused = read_until_closed(&mut over).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("too_many_connections"), "{refused}");

    drop(held.pop());
    // The server sees the close on its own schedule: retry until the place is free.
    let mut attempts = 0;
    loop {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let received = read_until_closed_or_answered(&mut stream).await;
        if received.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(received.starts_with("HTTP/1.1 503"), "{received}");
        attempts += 1;
        assert!(attempts < 500, "the freed place was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

/// The first response on a connection, whether it stays open or not.
async fn read_until_closed_or_answered(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
        match tokio::time::timeout(NEVER, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Neither the idle nor the header timer runs while a response is being produced: an SSE
/// answer to an MCP call that takes longer than both arrives whole. (toolgate has no long-lived
/// `GET /mcp` stream: it answers 405, as MCP allows.)
#[tokio::test]
async fn an_sse_answer_slower_than_the_idle_timeout_arrives_whole() {
    let app = spawn_with_limits("idle_timeout_ms = 100\nheader_read_timeout_ms = 100").await;
    let token = app.token("tess", "", &["testers"]);
    let session = open(&app, &token).await;
    let call = rpc(
        2,
        "tools/call",
        json!({ "name": "test___slow", "arguments": {} }),
    );
    let sse = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let event = sse.text().await.unwrap();
    assert!(event.starts_with("event: message\ndata: "), "{event}");
    assert!(event.contains("\"id\":2"), "{event}");
    // The premise: the call took longer than the timeout (the backend sleeps 2 s, the tool
    // times out after 300 ms).
    let outcome = app
        .records()
        .into_iter()
        .rfind(|r| r.kind == "dispatch")
        .unwrap();
    assert!(outcome.record["dispatch"]["duration_us"].as_u64().unwrap() > 100_000);
    app.stop().await;
}

/// One unreadable body, sent to every endpoint.
struct BodyCase {
    name: &'static str,
    body: Vec<u8>,
    status: u16,
    reason: &'static str,
}

fn body_cases() -> Vec<BodyCase> {
    let case = |name, body: Vec<u8>, status, reason| BodyCase {
        name,
        body,
        status,
        reason,
    };
    let bad = |name, body: &str| case(name, body.as_bytes().to_vec(), 400, "bad_request");
    vec![
        bad("not JSON", "tool=demo___echo"),
        bad("truncated", r#"{"tool": "demo___echo", "arguments": {"#),
        bad("trailing garbage", r#"{"tool": "demo___echo"} x"#),
        bad("NaN", r#"{"tool": "demo___echo", "arguments": {"n": NaN}}"#),
        bad(
            "1e400",
            r#"{"tool": "demo___echo", "arguments": {"n": 1e400}}"#,
        ),
        bad(
            "bad escape",
            r#"{"tool": "demo___echo", "arguments": {"s": "\x"}}"#,
        ),
        bad(
            "lone surrogate",
            r#"{"tool": "demo___echo", "arguments": {"s": "\ud800"}}"#,
        ),
        bad("single quotes", "{'tool': 'demo___echo'}"),
        case(
            "invalid UTF-8",
            b"{\"tool\": \"demo___echo\", \"arguments\": {\"s\": \"\xff\xfe\"}}".to_vec(),
            400,
            "bad_request",
        ),
        case(
            "BOM",
            b"\xef\xbb\xbf{\"tool\": \"demo___echo\"}".to_vec(),
            400,
            "bad_request",
        ),
        bad(
            "10,000 deep",
            &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        bad("40 deep", &format!("{}{}", "[".repeat(40), "]".repeat(40))),
        case(
            "1 MB",
            json!({ "tool": "demo___echo", "arguments": { "message": "a".repeat(1 << 20) } })
                .to_string()
                .into_bytes(),
            413,
            "payload_too_large",
        ),
    ]
}

/// Status, error code and recorded reason are the same on every endpoint for a body that
/// cannot be read as JSON within the limits.
#[tokio::test]
async fn unreadable_bodies_are_answered_and_recorded_alike_on_every_endpoint() {
    let app = TestApp::spawn().await;
    let token = app.token("alice", "", &[]);
    let session = open(&app, &token).await;
    for case in body_cases() {
        for path in ["/v1/authorize", "/v1/tools/demo___echo/invoke", "/mcp"] {
            let mut request = app
                .client
                .post(app.url(path))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(case.body.clone());
            if path == "/mcp" {
                request = request
                    .header("mcp-session-id", &session)
                    .header("mcp-protocol-version", "2025-11-25");
            }
            let reply = request.send().await.unwrap();
            let status = reply.status().as_u16();
            let body: Value = serde_json::from_slice(&reply.bytes().await.unwrap()).unwrap();
            let what = format!("{} on {path}: {body}", case.name);
            assert_eq!(status, case.status, "{what}");
            // `/mcp` answers a parse error in JSON-RPC's own form.
            let code = match (path, case.status) {
                ("/mcp", 400) => body["error"]["code"] == -32700,
                _ => body["error"] == case.reason,
            };
            assert!(code, "{what}");
            let recorded = app.decisions().pop().unwrap();
            assert_eq!(
                (recorded.stage.as_str(), recorded.reason.as_str()),
                ("request", case.reason),
                "{what}"
            );
            assert!(body.to_string().contains(&recorded.decision_id), "{what}");
        }
    }
    assert!(app.backend.calls("/echo").is_empty());
    app.stop().await;
}

/// Envelope errors of the two JSON APIs: `/v1/authorize` no longer reports them as an
/// unknown tool.
#[tokio::test]
async fn authorize_and_invoke_refuse_a_bad_envelope_as_bad_request() {
    let app = TestApp::spawn().await;
    let token = app.token("alice", "", &[]);
    let cases: [(&str, &str, Value); 4] = [
        (
            "empty body (authorize names no tool)",
            "/v1/authorize",
            Value::Null,
        ),
        (
            "unknown field",
            "/v1/authorize",
            json!({ "tool": "demo___echo", "arguments": {}, "extra": 1 }),
        ),
        (
            "unknown field",
            "/v1/tools/demo___echo/invoke",
            json!({ "arguments": {}, "extra": 1 }),
        ),
        ("tool not a string", "/v1/authorize", json!({ "tool": 7 })),
    ];
    for (name, path, body) in cases {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let reply = app
            .client
            .post(app.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let body: Value = serde_json::from_slice(&reply.bytes().await.unwrap()).unwrap();
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("bad_request")),
            "{name}: {body}"
        );
        let recorded = app.decisions().pop().unwrap();
        assert_eq!(
            (recorded.stage.as_str(), recorded.reason.as_str()),
            ("request", "bad_request"),
            "{name}"
        );
    }
    app.stop().await;
}

/// The HTTP layer's own refusals carry no decision id and leave no record (ARCHITECTURE.md,
/// README): oversized headers, and paths or methods that match no route.
#[tokio::test]
async fn http_layer_refusals_leave_no_record_and_carry_no_decision_id() {
    let app = TestApp::spawn().await;
    let token = app.token("alice", "", &[]);
    let huge_header = app
        .client
        .post(app.url("/v1/authorize"))
        .bearer_auth(&token)
        .header("x-padding", "p".repeat(20_000))
        .body(json!({ "tool": "demo___echo" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(huge_header.status(), 431);
    assert!(
        huge_header
            .headers()
            .get("x-toolgate-decision-id")
            .is_none()
    );
    let no_route = app.get("/v1/nothing", Some(&token)).await;
    assert_eq!(no_route.status, 404);
    let wrong_method = app.get("/v1/authorize", Some(&token)).await;
    assert_eq!(wrong_method.status, 405);
    assert!(app.decisions().is_empty());
    app.stop().await;
}

/// Shutdown stops accepting but lets a request in flight finish: the caller gets its answer.
#[tokio::test]
async fn shutdown_answers_the_request_in_flight() {
    let app = TestApp::spawn().await;
    let request = app
        .client
        .post(app.url("/v1/tools/test___slow/invoke"))
        .bearer_auth(app.token("tess", "", &["testers"]))
        .header("content-type", "application/json")
        .body(json!({ "arguments": {} }).to_string())
        .send();
    let in_flight = tokio::spawn(request);
    let mut attempts = 0;
    while app.backend.calls("/slow").is_empty() {
        attempts += 1;
        assert!(attempts < 1500, "the call never reached the backend");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(
        reply.status(),
        504,
        "the tool's timeout, not a cut connection"
    );
    assert!(reply.headers().get("x-toolgate-decision-id").is_some());
}
