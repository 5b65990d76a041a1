//! toolgate as an MCP server at `/mcp`: the Streamable HTTP transport over raw HTTP (sessions,
//! errors, SSE, metadata), then the official MCP Python SDK as an independent client.

use serde_json::{Value, json};

use crate::support::{ISSUER, Reply, TestApp, check_status};

const REPORT: &str = "/srv/reports/q3.txt";

pub(crate) async fn mcp(
    app: &TestApp,
    token: Option<&str>,
    session: Option<&str>,
    body: &Value,
) -> Reply {
    let mut request = app
        .client
        .post(app.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(s) = session {
        request = request.header("mcp-session-id", s);
    }
    Reply::read(request.send().await.unwrap()).await
}

pub(crate) fn rpc(id: u64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

fn initialize(version: &str) -> Value {
    rpc(
        1,
        "initialize",
        json!({
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": { "name": "raw-test", "version": "0" },
        }),
    )
}

/// Opens a session for `token` and returns its id.
pub(crate) async fn open(app: &TestApp, token: &str) -> String {
    let reply = mcp(app, Some(token), None, &initialize("2025-11-25")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let session = reply.header("mcp-session-id").unwrap().to_owned();
    let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    assert_eq!(
        mcp(app, Some(token), Some(&session), &note).await.status,
        202
    );
    session
}

fn mcp_decisions(app: &TestApp) -> Vec<Value> {
    app.decisions()
        .into_iter()
        .filter(|r| r.record["endpoint"] == "mcp")
        .map(|r| r.record)
        .collect()
}

#[tokio::test]
async fn mcp_requires_a_token_and_publishes_protected_resource_metadata() {
    let app = TestApp::spawn().await;
    let metadata_url = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp",
        app.addr
    );

    let reply = mcp(&app, None, None, &initialize("2025-11-25")).await;
    assert_eq!(reply.status, 401);
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );
    let reply = mcp(&app, Some("not.a.jwt"), None, &initialize("2025-11-25")).await;
    assert_eq!(reply.status, 401);
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");

    let metadata = Reply::read(app.client.get(&metadata_url).send().await.unwrap()).await;
    assert_eq!(metadata.status, 200);
    let metadata = metadata.body;
    assert_eq!(metadata["resource"], format!("http://{}/mcp", app.addr));
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
    let scopes = metadata["scopes_supported"].as_array().unwrap();
    assert!(scopes.contains(&json!("files:read")), "{metadata}");
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));

    // Both refusals are decisions in the log, with their reason.
    let denied = mcp_decisions(&app);
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|r| r["decision"] == "deny" && r["stage"] == "auth")
    );
    assert_eq!(denied[0]["reason"], "token_missing");
}

#[tokio::test]
async fn mcp_sessions_negotiate_versions_and_are_bound_to_the_principal() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", "", &["reporting"]);
    let mallory = app.token("mallory", "", &["reporting"]);

    let reply = mcp(&app, Some(&alice), None, &initialize("2025-06-18")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(reply.body["result"]["serverInfo"]["name"], "toolgate");
    assert!(reply.body["result"]["capabilities"]["tools"].is_object());
    let session = reply.header("mcp-session-id").unwrap().to_owned();
    assert!(session.len() >= 32 && session.bytes().all(|b| b.is_ascii_graphic()));

    // A version toolgate does not speak: it answers with its latest.
    let reply = mcp(&app, Some(&alice), None, &initialize("1999-01-01")).await;
    assert_eq!(reply.body["result"]["protocolVersion"], "2025-11-25");

    // Requests after initialize need the session; another principal cannot use it; a token
    // is needed on every request, not only on initialize.
    let ping = rpc(2, "ping", json!({}));
    let unknown = "no-such-session".to_owned();
    // (case, token, session, status)
    let pings = [
        ("no session", Some(&alice), None, 400),
        ("own session", Some(&alice), Some(&session), 200),
        ("another principal", Some(&mallory), Some(&session), 404),
        ("unknown session", Some(&alice), Some(&unknown), 404),
        ("no token", None, Some(&session), 401),
    ];
    for (case, token, session_id, status) in pings {
        let reply = mcp(
            &app,
            token.map(String::as_str),
            session_id.map(String::as_str),
            &ping,
        )
        .await;
        check_status(case, &reply, status);
        if status == 200 {
            assert_eq!(
                (&reply.body["result"], &reply.body["id"]),
                (&json!({}), &json!(2)),
                "{case}"
            );
        }
    }

    // The protocol-version header must match the session's.
    let reply = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .header("content-type", "application/json")
        .body(ping.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);

    // Malformed messages and batches are refused with a JSON-RPC error.
    for bad in [json!([ping.clone()]), json!({ "id": 3, "method": "ping" })] {
        let reply = mcp(&app, Some(&alice), Some(&session), &bad).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.body["error"]["code"], -32600, "{bad}");
    }
    let reply = mcp(
        &app,
        Some(&alice),
        Some(&session),
        &rpc(4, "resources/list", json!({})),
    )
    .await;
    assert_eq!(reply.body["error"]["code"], -32601);

    // No server-initiated stream; DELETE ends the session.
    let get = app
        .client
        .get(app.url("/mcp"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let delete = |token: &str| {
        app.client
            .delete(app.url("/mcp"))
            .bearer_auth(token.to_owned())
            .header("mcp-session-id", &session)
            .send()
    };
    assert_eq!(delete(&mallory).await.unwrap().status(), 404);
    assert_eq!(delete(&alice).await.unwrap().status(), 204);
    assert_eq!(
        mcp(&app, Some(&alice), Some(&session), &ping).await.status,
        404
    );

    // A browser page from another origin is refused (DNS-rebinding defence).
    let reply = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(&alice)
        .header("origin", "http://evil.example")
        .header("content-type", "application/json")
        .body(initialize("2025-11-25").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 403);

    let actions: Vec<(String, String)> = mcp_decisions(&app)
        .iter()
        .map(|r| {
            (
                r["tool"].as_str().unwrap_or("").to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("mcp/initialize".into(), "session_opened".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("mcp/session/close".into(), "session_closed".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("mcp".into(), "origin_not_allowed".into())),
        "{actions:?}"
    );
}

#[tokio::test]
async fn mcp_tools_are_filtered_called_through_the_pipeline_and_denied_with_a_decision_id() {
    let app = TestApp::spawn().await;
    let reporter = app.token("reporter", "files:read", &["reporting"]);
    let session = open(&app, &reporter).await;

    let reply = mcp(
        &app,
        Some(&reporter),
        Some(&session),
        &rpc(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(reply.status, 200);
    let tools = reply.body["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["demo___echo", "files___read_file"]);
    let read_file = &tools[1];
    assert_eq!(read_file["inputSchema"]["type"], "object");
    assert_eq!(read_file["annotations"]["readOnlyHint"], true);

    // Allowed: the backend is called (without the agent's token) and its answer comes back
    // as MCP content, with the decision id.
    let call = rpc(
        3,
        "tools/call",
        json!({ "name": "files___read_file", "arguments": { "path": REPORT } }),
    );
    let reply = mcp(&app, Some(&reporter), Some(&session), &call).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let result = &reply.body["result"];
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structuredContent"]["content"], "report body");
    let decision_id = result["_meta"]["io.toolgate/decision-id"].as_str().unwrap();
    assert_eq!(reply.header("x-toolgate-decision-id"), Some(decision_id));
    let calls = app.backend.calls("/read_file");
    assert_eq!(calls.len(), 1);
    let forwarded = calls[0].headers.get("authorization");
    assert!(forwarded.is_none_or(|v| !v.to_str().unwrap().contains(&reporter)));

    // Denied by policy: an isError result naming the decision; the backend is not called.
    let call = rpc(
        4,
        "tools/call",
        json!({ "name": "files___read_file", "arguments": { "path": "/etc/passwd" } }),
    );
    let reply = mcp(&app, Some(&reporter), Some(&session), &call).await;
    let result = &reply.body["result"];
    assert_eq!(result["isError"], true, "{result}");
    let denied_id = result["_meta"]["io.toolgate/decision-id"].as_str().unwrap();
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(denied_id)
    );
    assert_eq!(app.backend.calls("/read_file").len(), 1);

    // Invalid arguments are a tool error the agent can correct; an unknown tool is a
    // JSON-RPC error.
    let call = rpc(
        5,
        "tools/call",
        json!({ "name": "files___read_file", "arguments": { "path": 7 } }),
    );
    let reply = mcp(&app, Some(&reporter), Some(&session), &call).await;
    assert_eq!(reply.body["result"]["isError"], true);
    assert!(
        reply.body["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("/path")
    );
    let call = rpc(
        6,
        "tools/call",
        json!({ "name": "nope___nothing", "arguments": {} }),
    );
    let reply = mcp(&app, Some(&reporter), Some(&session), &call).await;
    assert_eq!(reply.body["error"]["code"], -32602);

    // A tool needing a scope the token lacks: 403 with a step-up challenge.
    let call = rpc(
        7,
        "tools/call",
        json!({ "name": "files___delete_file", "arguments": { "path": REPORT } }),
    );
    let reply = mcp(&app, Some(&reporter), Some(&session), &call).await;
    assert_eq!(reply.status, 403);
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"files:write\""), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");

    // The SSE response form, for a client that accepts only an event stream.
    let sse = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(&reporter)
        .header("mcp-session-id", &session)
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(
            rpc(
                8,
                "tools/call",
                json!({ "name": "demo___echo", "arguments": { "message": "hi" } }),
            )
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let text = sse.text().await.unwrap();
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let message: Value = serde_json::from_str(data).unwrap();
    assert_eq!(message["id"], 8);
    assert_eq!(
        message["result"]["structuredContent"]["echo"]["message"],
        "hi"
    );

    // Every call is a decision record with endpoint `mcp`, the dispatched ones with their
    // outcome.
    let records = mcp_decisions(&app);
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["decision_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id(decision_id)["decision"], "allow");
    assert_eq!(by_id(denied_id)["reason"], "policy_denied");
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    for reason in [
        "listed",
        "invalid_arguments",
        "unknown_tool",
        "insufficient_scope",
    ] {
        assert!(reasons.contains(&reason), "{reasons:?}");
    }
}

/// A stateless (2026-07-28) request: the envelope in `_meta`, mirrored in headers.
async fn stateless(
    app: &TestApp,
    token: &str,
    method: &str,
    mut params: Value,
    headers: &[(&str, &str)],
) -> Reply {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut request = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(rpc(9, method, params).to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn stateless_2026_requests_need_a_token_and_a_consistent_envelope_but_no_session() {
    let app = TestApp::spawn().await;
    let reporter = app.token("reporter", "files:read", &["reporting"]);
    let version = ("mcp-protocol-version", "2026-07-28");

    let reply = stateless(
        &app,
        &reporter,
        "server/discover",
        json!({}),
        &[version, ("mcp-method", "server/discover")],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let result = &reply.body["result"];
    assert_eq!(result["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(result["resultType"], "complete");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "toolgate"
    );

    let call = json!({ "name": "files___read_file", "arguments": { "path": REPORT } });
    let headers = [
        version,
        ("mcp-method", "tools/call"),
        ("mcp-name", "files___read_file"),
    ];
    let reply = stateless(&app, &reporter, "tools/call", call.clone(), &headers).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["result"]["isError"], false);
    assert_eq!(reply.body["result"]["resultType"], "complete");
    assert!(reply.body["result"]["_meta"]["io.toolgate/decision-id"].is_string());
    // The tool name may come base64-encoded in its header.
    let encoded = ("mcp-name", "=?base64?ZmlsZXNfX19yZWFkX2ZpbGU=?=");
    let reply = stateless(
        &app,
        &reporter,
        "tools/call",
        call.clone(),
        &[version, ("mcp-method", "tools/call"), encoded],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(app.backend.calls("/read_file").len(), 2);

    // Headers that disagree with the body, or no version header, are refused before anything
    // is decided, and so is a method this version does not have.
    // (case, method, params, headers, status, JSON-RPC error code)
    type Refusal<'a> = (&'a str, &'a str, Value, &'a [(&'a str, &'a str)], u16, i64);
    let refused: [Refusal; 3] = [
        (
            "a name header that disagrees with the body",
            "tools/call",
            call.clone(),
            &[
                version,
                ("mcp-method", "tools/call"),
                ("mcp-name", "demo___echo"),
            ],
            400,
            -32020,
        ),
        (
            "a missing version header",
            "tools/call",
            call.clone(),
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "files___read_file"),
            ],
            400,
            -32020,
        ),
        (
            "ping",
            "ping",
            json!({}),
            &[version, ("mcp-method", "ping")],
            404,
            -32601,
        ),
    ];
    for (case, method, params, headers, status, code) in refused {
        let reply = stateless(&app, &reporter, method, params, headers).await;
        check_status(case, &reply, status);
        assert_eq!(reply.body["error"]["code"], code, "{case}");
    }
    // An unsupported version is refused with the supported ones.
    let reply = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(&reporter)
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2099-01-01")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "files___read_file")
        .body(
            rpc(
                10,
                "tools/call",
                json!({
                    "name": "files___read_file",
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": "2099-01-01",
                        "io.modelcontextprotocol/clientCapabilities": {},
                    },
                }),
            )
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let reply = Reply::read(reply).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["error"]["code"], -32022);
    assert_eq!(
        reply.body["error"]["data"]["supported"],
        json!(["2026-07-28"])
    );
    assert_eq!(app.backend.calls("/read_file").len(), 2);

    // Still a token on every request.
    let reply = app
        .client
        .post(app.url("/mcp"))
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .body(rpc(11, "server/discover", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
}

/// Runs `tests/mcp/client.py` (the official SDK's client) against the broker.
pub(crate) async fn python_client(app: &TestApp, scenario: Value) -> Value {
    let python = crate::python::python();
    let url = app.url("/mcp");
    let script = crate::python::script("client.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(url)
            .arg(scenario.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client.py failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn official_python_sdk_client_lists_calls_and_is_denied() {
    let app = TestApp::spawn().await;
    let reporter = app.token("reporter", "files:read", &["reporting"]);
    let outsider = app.token("outsider", "", &[]);

    let out = python_client(
        &app,
        json!({
            "token": reporter,
            "calls": [
                { "name": "files___read_file", "arguments": { "path": REPORT } },
                { "name": "files___read_file", "arguments": { "path": "/etc/passwd" } },
            ],
        }),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["server"], "toolgate");
    // The SDK's default mode finds the stateless 2026-07-28 protocol.
    assert_eq!(out["protocol_version"], "2026-07-28");
    assert_eq!(out["tools"], json!(["demo___echo", "files___read_file"]));
    assert_eq!(out["annotations"]["files___read_file"], true);
    let calls = out["calls"].as_array().unwrap();
    assert_eq!(calls[0]["is_error"], false, "{out}");
    assert_eq!(calls[0]["structured"]["content"], "report body");
    assert_eq!(calls[1]["is_error"], true, "{out}");
    assert!(
        calls[1]["text"].as_str().unwrap().contains("denied"),
        "{out}"
    );
    let denied_id = calls[1]["meta"]["io.toolgate/decision-id"]
        .as_str()
        .unwrap();
    let records = mcp_decisions(&app);
    let denied = records
        .iter()
        .find(|r| r["decision_id"] == denied_id)
        .unwrap();
    assert_eq!(denied["reason"], "policy_denied");
    assert_eq!(denied["principal"]["subject"], "reporter");
    assert_eq!(app.backend.calls("/read_file").len(), 1);

    // Another agent sees only what it may call, here over the `initialize` handshake and a
    // session.
    let out = python_client(
        &app,
        json!({
            "token": outsider,
            "mode": "legacy",
            "calls": [{ "name": "files___read_file", "arguments": { "path": REPORT } }],
        }),
    )
    .await;
    assert_eq!(out["protocol_version"], "2025-11-25", "{out}");
    assert_eq!(out["server"], "toolgate");
    assert_eq!(out["tools"], json!(["demo___echo"]), "{out}");
    // Unlisted is also uncallable: the missing scope is a 403 step-up challenge.
    assert!(out["calls"][0]["raised"].is_string(), "{out}");
    assert!(
        out["http_statuses"]
            .as_array()
            .unwrap()
            .contains(&json!(403)),
        "{out}"
    );
    assert_eq!(app.backend.calls("/read_file").len(), 1);

    // Without a token the connection is refused.
    let out = python_client(&app, json!({ "token": null })).await;
    assert!(out["error"].is_string(), "{out}");
    assert!(out.get("tools").is_none(), "{out}");
    let statuses = out["http_statuses"].as_array().unwrap();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| s == 401),
        "{out}"
    );
}
