//! Upstream MCP servers behind the broker, against a real server written with the official
//! MCP Python SDK (`tests/mcp/upstream_server.py`): discovery, policy-filtered listings,
//! calls with the broker's credential, tool errors, skipped tools, refresh and retry.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::python::{python, script};
use crate::support::{Options, TestApp, check_status, dead_url};

/// The broker's own credential for the upstream.
const UPSTREAM_SECRET: &str = "upstream-secret-0123";

/// Readers may call the upstream's read-only tools; operators any of its tools (the shipped
/// guardrails still forbid destructive tools to agents acting alone).
const POLICIES: &str = r#"
@id("weather-readers-read")
permit (
  principal in Toolgate::Group::"weather-readers",
  action in Toolgate::Action::"call_tool",
  resource in Toolgate::McpServer::"weather"
)
when { resource.readOnly };

@id("weather-operators-all")
permit (
  principal in Toolgate::Group::"weather-operators",
  action in Toolgate::Action::"call_tool",
  resource in Toolgate::McpServer::"weather"
);
"#;

/// A policy on an upstream tool's arguments: it names the tool's action, so it validates only
/// once the tool is listed (the upstream must be up at start-up).
const ARGUMENT_POLICY: &str = r#"
@id("no-weather-for-atlantis")
forbid (
  principal,
  action == Toolgate::Action::"weather___get_weather",
  resource
)
when { context.input.city == "Atlantis" };
"#;

/// A running `upstream_server.py`, killed on drop.
struct Upstream {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Upstream {
    fn start(json_mode: bool, port: Option<u16>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let mut command = Command::new(python());
        command
            .arg(script("upstream_server.py"))
            .args(["--token", UPSTREAM_SECRET, "--log"])
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if json_mode {
            command.arg("--json");
        }
        if let Some(port) = port {
            command.args(["--port", &port.to_string()]);
        }
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port from upstream_server.py: {line:?}"));
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Every request the upstream received: (authorization, assertion claims if any).
    fn requests(&self) -> Vec<(Option<String>, Option<Value>)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let entry: Value = serde_json::from_str(line).unwrap();
                let claims = entry["assertion"].as_str().map(|jwt| {
                    let payload = jwt.split('.').nth(1).unwrap();
                    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(payload)
                        .unwrap();
                    serde_json::from_slice(&bytes).unwrap()
                });
                (entry["authorization"].as_str().map(str::to_owned), claims)
            })
            .collect()
    }

    /// The HTTP method of every request received.
    fn methods(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let entry: Value = serde_json::from_str(line).unwrap();
                entry["method"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// The tools called through the broker, from the assertions' `tool` claims.
    fn called(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|(_, claims)| Some(claims?["tool"].as_str()?.to_owned()))
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upstream_config(url: &str, extra: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "weather"
kind = "mcp"
url = "{url}"
credential_file = "upstream.secret"
required_scopes = ["weather:use"]
trust_annotations = true
sensitive_arguments = {{ always_fails = ["reason"] }}
{extra}
"#
    )
}

async fn broker(url: &str, extra: &str, policies: &str) -> TestApp {
    TestApp::spawn_with(Options {
        extra_config: upstream_config(url, extra),
        extra_policies: Some(policies.to_owned()),
        files: vec![("upstream.secret".to_owned(), format!("{UPSTREAM_SECRET}\n"))],
        ..Options::default()
    })
    .await
}

/// The `weather___*` tool ids listed to `token`.
async fn listed(app: &TestApp, token: &str) -> Vec<String> {
    let reply = app.get("/v1/tools", Some(token)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let mut names: Vec<String> = reply.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .filter(|n| n.starts_with("weather___"))
        .collect();
    names.sort();
    names
}

/// Polls `/v1/tools` until `tool` is listed to `token`: the refresh runs in the background.
async fn wait_for_tool(app: &TestApp, token: &str, tool: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listed(app, token).await.iter().any(|t| t == tool) {
        assert!(Instant::now() < deadline, "`{tool}` never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn upstream_tools_are_listed_by_policy_called_with_the_broker_credential_and_refreshed() {
    let upstream = Upstream::start(false, None);
    let app = broker(&upstream.url(), "", &format!("{POLICIES}{ARGUMENT_POLICY}")).await;
    let reader = app.token("alice", "weather:use", &["weather-readers"]);
    let operator = app.token("bob", "weather:use", &["weather-operators"]);
    let unscoped = app.token("carol", "", &["weather-operators"]);

    // Listings: by scope and policy; the tool whose schema Cedar cannot type is absent.
    assert_eq!(listed(&app, &reader).await, ["weather___get_weather"]);
    assert_eq!(
        listed(&app, &operator).await,
        [
            "weather___add_tool",
            "weather___always_fails",
            "weather___announce_tool",
            "weather___get_weather"
        ],
        "destructive tools are forbidden to agents by the shipped guardrails"
    );
    assert!(listed(&app, &unscoped).await.is_empty());
    let tools = app.get("/v1/tools", Some(&reader)).await.body;
    let weather = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "weather___get_weather")
        .unwrap();
    assert_eq!(weather["description"], "The weather in a city");
    assert_eq!(weather["annotations"]["readOnly"], true);
    assert_eq!(weather["annotations"]["openWorld"], false);
    assert_eq!(weather["inputSchema"]["required"], json!(["city"]));

    // An allowed call returns the upstream's CallToolResult and is logged twice.
    let reply = app
        .invoke(
            Some(&reader),
            "weather___get_weather",
            json!({ "city": "Paris" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.body["result"]["structuredContent"]["result"],
        "sunny in Paris"
    );
    assert_eq!(reply.body["result"]["isError"], false);
    let id = reply.body["decision_id"].as_str().unwrap().to_owned();
    let rows: Vec<_> = app
        .records()
        .into_iter()
        .filter(|r| r.decision_id == id)
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].kind.as_str(), rows[0].decision.as_str()),
        ("decision", "allow")
    );
    assert_eq!(
        (rows[1].kind.as_str(), rows[1].reason.as_str()),
        ("dispatch", "dispatched")
    );
    assert_eq!(rows[1].record["dispatch"]["status"], 200);

    // Denied calls never reach the upstream; skipped tools are unknown.
    // (case, token, tool, arguments, status)
    let refused = [
        (
            "a destructive tool",
            &operator,
            "weather___delete_everything",
            json!({ "confirm": true }),
            403,
        ),
        (
            "no scope",
            &unscoped,
            "weather___get_weather",
            json!({ "city": "Oslo" }),
            403,
        ),
        (
            "a forbidden argument",
            &reader,
            "weather___get_weather",
            json!({ "city": "Atlantis" }),
            403,
        ),
        (
            "a skipped tool",
            &operator,
            "weather___untypable",
            json!({ "value": 1 }),
            404,
        ),
    ];
    let mut replies = Vec::new();
    for (case, token, tool, arguments, status) in refused {
        let reply = app.invoke(Some(token), tool, arguments).await;
        check_status(case, &reply, status);
        replies.push(reply);
    }
    let atlantis = &replies[2];
    let id = atlantis.body["decision_id"].as_str().unwrap();
    let row = app
        .decisions()
        .into_iter()
        .find(|r| r.decision_id == id)
        .unwrap();
    assert_eq!(
        row.record["policy"]["determining_policies"],
        json!(["no-weather-for-atlantis"])
    );

    // `isError: true` is the tool's own error; the sensitive argument is redacted.
    let failed = app
        .invoke(
            Some(&operator),
            "weather___always_fails",
            json!({ "reason": "s3cret-reason" }),
        )
        .await;
    assert_eq!(failed.status, 200, "{:?}", failed.body);
    assert_eq!(failed.body["is_error"], true);
    assert_eq!(failed.body["result"]["isError"], true);
    let id = failed.body["decision_id"].as_str().unwrap();
    let rows: Vec<_> = app
        .records()
        .into_iter()
        .filter(|r| r.decision_id == id)
        .collect();
    assert_eq!(rows[0].record["arguments"]["reason"], "[redacted]");
    assert_eq!(rows[1].reason, "tool_error");

    assert_eq!(
        upstream.called(),
        ["weather___get_weather", "weather___always_fails"]
    );

    // `add_tool` announces `tools/list_changed` on its own response stream.
    let added = app
        .invoke(Some(&operator), "weather___add_tool", json!({}))
        .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    wait_for_tool(&app, &operator, "weather___late_tool").await;
    let late = app
        .invoke(Some(&operator), "weather___late_tool", json!({ "n": 7 }))
        .await;
    assert_eq!(
        late.body["result"]["structuredContent"]["result"], "late 7",
        "{:?}",
        late.body
    );

    // A notification on the GET listen stream, once the broker has opened it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !upstream.methods().iter().any(|m| m == "GET") {
        assert!(Instant::now() < deadline, "no listen stream was opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let announced = app
        .invoke(Some(&operator), "weather___announce_tool", json!({}))
        .await;
    assert_eq!(announced.status, 200, "{:?}", announced.body);
    wait_for_tool(&app, &operator, "weather___listened_tool").await;

    // Every request carried the broker's credential, never an agent's token; each call's
    // assertion names the agent it was made for.
    let requests = upstream.requests();
    assert!(requests.len() >= 6, "{requests:?}");
    let expected = format!("Bearer {UPSTREAM_SECRET}");
    for (authorization, _) in &requests {
        assert_eq!(authorization.as_deref(), Some(expected.as_str()));
    }
    for token in [&reader, &operator, &unscoped] {
        assert!(
            !requests
                .iter()
                .any(|(a, _)| a.as_deref().unwrap().contains(token.as_str()))
        );
    }
    let subjects: Vec<&str> = requests
        .iter()
        .filter_map(|(_, c)| c.as_ref()?["sub"].as_str())
        .collect();
    assert_eq!(subjects, ["alice", "bob", "bob", "bob", "bob"]);

    let ready = app.status().await.body;
    assert_eq!(ready["checks"]["upstreams"][0]["name"], "weather");
    assert_eq!(ready["checks"]["upstreams"][0]["connected"], true);
    assert_eq!(ready["checks"]["upstreams"][0]["skipped"], 1);
    app.stop().await;
}

#[tokio::test]
async fn json_responses_work_and_an_admin_reload_picks_up_new_tools() {
    let upstream = Upstream::start(true, None);
    let app = broker(
        &upstream.url(),
        r#"tools = ["get_weather", "add_tool", "late_tool"]"#,
        POLICIES,
    )
    .await;
    let operator = app.token("bob", "weather:use", &["weather-operators"]);
    assert_eq!(
        listed(&app, &operator).await,
        ["weather___add_tool", "weather___get_weather"],
        "only allow-listed tools are registered"
    );
    let reply = app
        .invoke(
            Some(&operator),
            "weather___get_weather",
            json!({ "city": "Rome" }),
        )
        .await;
    assert_eq!(
        reply.body["result"]["structuredContent"]["result"],
        "sunny in Rome"
    );
    // A JSON-mode upstream cannot send the notification with the answer: the admin reload
    // lists the tools again before it answers.
    let added = app
        .invoke(Some(&operator), "weather___add_tool", json!({}))
        .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    let reload = app.post("/admin/policies/reload", &app.admin_token()).await;
    assert_eq!(reload.status, 200, "{:?}", reload.body);
    assert_eq!(
        listed(&app, &operator).await,
        [
            "weather___add_tool",
            "weather___get_weather",
            "weather___late_tool"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_does_not_stop_the_broker_and_is_retried() {
    let dead = dead_url().await;
    let port: u16 = dead
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let app = broker(&url, "retry_interval_ms = 200", POLICIES).await;
    let reader = app.token("alice", "weather:use", &["weather-readers"]);

    let ready = app.status().await;
    assert_eq!(
        ready.body["ready"], true,
        "an upstream that is down does not make the broker unready"
    );
    let status = &ready.body["checks"]["upstreams"][0];
    assert_eq!(status["connected"], false);
    assert_eq!(status["error"], "upstream unreachable");
    assert!(listed(&app, &reader).await.is_empty());
    let echo = app.token("dave", "", &[]);
    assert_eq!(
        app.invoke(Some(&echo), "demo___echo", json!({ "message": "hi" }))
            .await
            .status,
        200
    );

    let _upstream = Upstream::start(false, Some(port));
    wait_for_tool(&app, &reader, "weather___get_weather").await;
    let reply = app
        .invoke(
            Some(&reader),
            "weather___get_weather",
            json!({ "city": "Lima" }),
        )
        .await;
    assert_eq!(
        reply.body["result"]["structuredContent"]["result"],
        "sunny in Lima"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_restart_while_the_upstream_is_down_registers_its_saved_listing() {
    let upstream = Upstream::start(false, None);
    let (port, url) = (upstream.port, upstream.url());
    // The argument policy names an upstream tool's action: it validates only with the tool.
    let policies = format!("{POLICIES}{ARGUMENT_POLICY}");
    let app = broker(&url, "retry_interval_ms = 200", &policies).await;
    let reader = app.token("alice", "weather:use", &["weather-readers"]);
    assert_eq!(listed(&app, &reader).await, ["weather___get_weather"]);
    let kept = app.stop_keep().await;
    drop(upstream);

    // Restarted while the upstream is down: the last good listing stands in for it.
    let app = TestApp::spawn_with(Options {
        extra_config: upstream_config(&url, "retry_interval_ms = 200"),
        extra_policies: Some(policies),
        files: vec![("upstream.secret".to_owned(), format!("{UPSTREAM_SECRET}\n"))],
        reuse: Some(kept),
        ..Options::default()
    })
    .await;
    let reader = app.token("alice", "weather:use", &["weather-readers"]);
    let ready = app.status().await;
    assert_eq!(ready.body["ready"], true);
    let status = &ready.body["checks"]["upstreams"][0];
    assert_eq!(status["connected"], false, "{status}");
    assert_eq!(status["from_saved_listing"], true, "{status}");
    assert_eq!(listed(&app, &reader).await, ["weather___get_weather"]);
    let reply = app
        .invoke(
            Some(&reader),
            "weather___get_weather",
            json!({ "city": "Oslo" }),
        )
        .await;
    assert_eq!(reply.status, 502, "the upstream is down: {:?}", reply.body);

    // Back on its port: the live listing replaces the saved one and calls go through.
    let _upstream = Upstream::start(false, Some(port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = app.status().await;
        if ready.body["checks"]["upstreams"][0]["connected"] == true {
            assert_eq!(
                ready.body["checks"]["upstreams"][0]["from_saved_listing"],
                false
            );
            break;
        }
        assert!(Instant::now() < deadline, "the upstream never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = app
        .invoke(
            Some(&reader),
            "weather___get_weather",
            json!({ "city": "Oslo" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.body["result"]["structuredContent"]["result"],
        "sunny in Oslo"
    );
    app.stop().await;
}

#[tokio::test]
async fn upstream_annotations_are_untrusted_unless_the_operator_says_so() {
    let upstream = Upstream::start(true, None);
    let untrusted = |extra: &str| {
        format!(
            "[[upstreams]]\nname = \"weather\"\nkind = \"mcp\"\nurl = \"{}\"\ncredential_file = \"upstream.secret\"\n{extra}\n",
            upstream.url()
        )
    };
    let spawn = |config: String| {
        TestApp::spawn_with(Options {
            extra_config: config,
            extra_policies: Some(POLICIES.to_owned()),
            files: vec![("upstream.secret".to_owned(), format!("{UPSTREAM_SECRET}\n"))],
            ..Options::default()
        })
    };

    // The upstream says `get_weather` is read-only; without `trust_annotations` that is not
    // believed, so the readers' policy (`when { resource.readOnly }`) matches nothing.
    let app = spawn(untrusted("")).await;
    let reader = app.token("alice", "", &["weather-readers"]);
    assert!(listed(&app, &reader).await.is_empty());
    let reply = app
        .invoke(
            Some(&reader),
            "weather___get_weather",
            json!({ "city": "Rome" }),
        )
        .await;
    assert_eq!(reply.status, 403, "{:?}", reply.body);
    let tools = app
        .get(
            "/v1/tools",
            Some(&app.token("ops", "", &["weather-operators"])),
        )
        .await;
    let weather = tools.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "weather___get_weather")
        .map(|t| t["annotations"].clone());
    // Operators' listing omits it too: untrusted tools are destructive, and the shipped
    // guardrail forbids destructive tools to agents acting alone.
    assert_eq!(weather, None);
    app.stop().await;

    // The operator vouches for one tool.
    let app = spawn(untrusted(
        "annotations = { get_weather = { read_only = true, destructive = false } }",
    ))
    .await;
    let reader = app.token("alice", "", &["weather-readers"]);
    assert_eq!(listed(&app, &reader).await, ["weather___get_weather"]);
    let reply = app
        .invoke(
            Some(&reader),
            "weather___get_weather",
            json!({ "city": "Rome" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    app.stop().await;
}

/// A running `corpus_server.py` (the GitHub MCP server's real tool definitions), killed on
/// drop.
struct CorpusUpstream {
    child: Child,
    port: u16,
}

impl CorpusUpstream {
    fn start(corpus: &std::path::Path) -> Self {
        let mut child = Command::new(python())
            .arg(script("corpus_server.py"))
            .arg(corpus)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port from corpus_server.py: {line:?}"));
        Self { child, port }
    }
}

impl Drop for CorpusUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Agents in `github-readers` may call the GitHub server's read-only tools.
const GITHUB_POLICY: &str = r#"
@id("github-readers-read")
permit (
  principal in Toolgate::Group::"github-readers",
  action in Toolgate::Action::"call_tool",
  resource in Toolgate::McpServer::"github"
)
when { resource.readOnly };
"#;

#[tokio::test]
async fn github_mcp_server_tools_register_behind_the_broker_for_an_sdk_client() {
    let corpus_path = crate::support::repo().join("../shared/corpora/github-mcp-tools.json");
    let Ok(text) = std::fs::read_to_string(&corpus_path) else {
        return crate::support::skip(
            "github_mcp_server_tools_register_behind_the_broker_for_an_sdk_client",
            &format!(
                "corpus `{}` is absent (it lives in ../shared beside the checkout)",
                corpus_path.display()
            ),
        );
    };
    let corpus: Value = serde_json::from_str(&text).unwrap();
    let tools = corpus["tools"].as_array().unwrap();
    // What the broker should make of each definition, from the library's own mapping.
    let typed: Vec<&Value> = tools
        .iter()
        .filter(|t| toolgate::policy::InputType::from_tool_schema(&t["inputSchema"]).is_ok())
        .collect();
    let mut expected_read_only: Vec<String> = typed
        .iter()
        .filter(|t| t["annotations"]["readOnlyHint"] == true)
        .map(|t| format!("github___{}", t["name"].as_str().unwrap()))
        .collect();
    expected_read_only.push("demo___echo".to_owned());
    expected_read_only.sort();

    let upstream = CorpusUpstream::start(&corpus_path);
    let app = TestApp::spawn_with(Options {
        extra_config: format!(
            "[[upstreams]]\nname = \"github\"\nkind = \"mcp\"\nurl = \"http://127.0.0.1:{}/mcp\"\ntrust_annotations = true\n",
            upstream.port
        ),
        extra_policies: Some(GITHUB_POLICY.to_owned()),
        ..Options::default()
    })
    .await;

    // Every definition is registered or skipped; none stops the broker.
    let ready = app.status().await;
    assert_eq!(ready.body["ready"], true, "{:?}", ready.body);
    let status = &ready.body["checks"]["upstreams"][0];
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["tools"], typed.len(), "{status}");
    assert_eq!(status["skipped"], tools.len() - typed.len(), "{status}");

    // An agent framework's MCP client sees exactly the read-only tools, and calls one.
    let reader = app.token("octo-agent", "", &["github-readers"]);
    let out = crate::mcp_server::python_client(
        &app,
        json!({
            "token": reader,
            "calls": [
                { "name": "github___get_me", "arguments": {} },
                {
                    "name": "github___create_issue",
                    "arguments": { "owner": "o", "repo": "r", "title": "t" },
                },
            ],
        }),
    )
    .await;
    let listed: Vec<String> = serde_json::from_value(out["tools"].clone()).unwrap();
    assert_eq!(listed.len(), expected_read_only.len(), "{out}");
    assert_eq!(listed, expected_read_only);
    let calls = out["calls"].as_array().unwrap();
    assert_eq!(calls[0]["is_error"], false, "{out}");
    assert_eq!(
        calls[0]["structured"],
        json!({ "tool": "get_me", "arguments": {} }),
        "the upstream's own result, passed through"
    );
    assert_eq!(calls[1]["is_error"], true, "{out}");
    assert!(
        calls[1]["text"].as_str().unwrap().contains("denied"),
        "{out}"
    );
}
