//! The policies behind a decision in answers to agents (`[api] expose_determining_policies`):
//! absent by default, present in JSON API and MCP `tools/call` answers (allow and deny) when
//! configured and in dev mode, and always in the record and the admin API.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::mcp_server::{mcp, open, rpc};
use crate::support::{Options, Reply, TestApp, repo};

/// A permit whose condition overflows at run time: Cedar skips it and reports it as erroring.
const OVERFLOWING: &str = r#"
@id("overflowing-echo")
permit (principal, action == Toolgate::Action::"demo___echo", resource)
when { context.session.request_time * 9223372036854775807 > 0 };
"#;

async fn spawn(exposed: Option<bool>) -> TestApp {
    TestApp::spawn_with(Options {
        extra_config: exposed
            .map(|on| format!("[api]\nexpose_determining_policies = {on}\n"))
            .unwrap_or_default(),
        extra_policies: Some(OVERFLOWING.to_owned()),
        ..Options::default()
    })
    .await
}

fn payer(app: &TestApp) -> String {
    let mut claims = app.claims("carol", "payments:write", &["finance"]);
    claims["act"] = json!({ "sub": "payments-agent" });
    app.sign(&claims)
}

fn transfer(amount: u32) -> Value {
    json!({ "to_account": "DE02100100109307118603", "amount": amount, "currency": "EUR" })
}

/// An allow with an erroring policy, a forbid, a default deny and an invoke: the answers.
async fn answers(app: &TestApp) -> [Reply; 4] {
    let reporter = app.token("reporting-agent", "files:read", &["reporting"]);
    let payer = payer(app);
    let allow = app
        .authorize(&reporter, "demo___echo", json!({ "message": "hi" }))
        .await;
    let forbid = app
        .authorize(&payer, "payments___transfer", transfer(20_000))
        .await;
    let default_deny = app
        .authorize(
            &reporter,
            "files___read_file",
            json!({ "path": "/etc/passwd" }),
        )
        .await;
    let invoke = app
        .invoke(Some(&reporter), "demo___echo", json!({ "message": "hi" }))
        .await;
    let statuses = [&allow, &forbid, &default_deny, &invoke].map(|r| r.status);
    assert_eq!(statuses, [200, 403, 403, 200]);
    [allow, forbid, default_deny, invoke]
}

#[tokio::test]
async fn answers_name_no_policy_by_default_but_the_record_and_admin_api_do() {
    for exposed in [None, Some(false)] {
        let app = spawn(exposed).await;
        for reply in answers(&app).await {
            assert!(
                reply.body.get("determining_policies").is_none(),
                "{:?}",
                reply.body
            );
            assert!(
                reply.body.get("erroring_policies").is_none(),
                "{:?}",
                reply.body
            );
        }
        let forbid = &app.decisions()[1];
        assert_eq!(
            forbid.record["policy"]["determining_policies"],
            json!(["payments-hard-cap"])
        );
        let allow = &app.decisions()[0];
        assert_eq!(
            allow.record["policy"]["erroring_policies"],
            json!(["overflowing-echo"])
        );
        let admin = app
            .get(
                &format!("/admin/decisions/{}", forbid.decision_id),
                Some(&app.admin_token()),
            )
            .await;
        assert_eq!(admin.status, 200, "{:?}", admin.body);
        assert_eq!(
            admin.body["records"][0]["record"]["policy"]["determining_policies"],
            json!(["payments-hard-cap"]),
            "{:?}",
            admin.body
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn answers_name_the_policies_when_configured() {
    let app = spawn(Some(true)).await;
    let [allow, forbid, default_deny, invoke] = answers(&app).await;
    for reply in [&allow, &invoke] {
        assert_eq!(
            reply.body["determining_policies"],
            json!(["echo-for-every-agent"])
        );
        assert_eq!(reply.body["erroring_policies"], json!(["overflowing-echo"]));
    }
    assert_eq!(
        forbid.body["determining_policies"],
        json!(["payments-hard-cap"])
    );
    assert_eq!(forbid.body["erroring_policies"], json!([]));
    assert_eq!(forbid.body["decision"], "deny");
    assert_eq!(default_deny.body["determining_policies"], json!([]));

    // Not from a stage before policy: nothing decided by a policy, nothing to name.
    let reply = app
        .authorize("not.a.jwt", "demo___echo", json!({ "message": "hi" }))
        .await;
    assert_eq!(reply.status, 401);
    assert!(reply.body.get("determining_policies").is_none());
    app.stop().await;
}

#[tokio::test]
async fn mcp_results_carry_the_policies_in_meta_when_configured() {
    for exposed in [false, true] {
        let app = spawn(Some(exposed)).await;
        let payer = payer(&app);
        let session = open(&app, &payer).await;
        let mut metas = Vec::new();
        for (id, amount) in [(2, 120), (3, 20_000)] {
            let call = rpc(
                id,
                "tools/call",
                json!({ "name": "payments___transfer", "arguments": transfer(amount) }),
            );
            let reply = mcp(&app, Some(&payer), Some(&session), &call).await;
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            metas.push(reply.body["result"]["_meta"].clone());
        }
        let [allowed, denied] = [&metas[0], &metas[1]];
        assert!(allowed["io.toolgate/decision-id"].is_string(), "{allowed}");
        if exposed {
            assert_eq!(
                allowed["io.toolgate/determining-policies"],
                json!(["payments-agent-transfers-for-finance"])
            );
            assert_eq!(
                denied["io.toolgate/determining-policies"],
                json!(["payments-hard-cap"])
            );
            assert_eq!(denied["io.toolgate/erroring-policies"], json!([]));
        } else {
            for meta in [allowed, denied] {
                assert!(
                    meta.get("io.toolgate/determining-policies").is_none(),
                    "{meta}"
                );
                assert!(
                    meta.get("io.toolgate/erroring-policies").is_none(),
                    "{meta}"
                );
            }
        }
        app.stop().await;
    }
}

/// Kills the dev server however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn dev_mode_answers_name_the_policies() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(["serve", "--dev", "--config"])
            .arg(repo().join("toolgate.toml"))
            .env("TOOLGATE__SERVER__LISTEN", "127.0.0.1:0")
            .env("TOOLGATE__SERVER__STATE_DIR", dir.path().join("state"))
            .env(
                "TOOLGATE__ISSUERS__0__JWKS_FILE",
                dir.path().join("dev-jwks.json"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The banner names the address and a token for the reporting agent.
    let (mut token, mut base) = (None, None);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    while token.is_none() || base.is_none() {
        let line = lines.next().expect("the dev banner").unwrap();
        if let Some(t) = line.trim().strip_prefix("export REPORTING_TOKEN=") {
            token = Some(t.to_owned());
        }
        if let Some(rest) = line.split("curl -s -X POST ").nth(1) {
            base = rest.split("/v1/").next().map(str::to_owned);
        }
    }
    let (token, base) = (token.unwrap(), base.unwrap());
    let reply = reqwest::Client::new()
        .post(format!("{base}/v1/tools/files___read_file/invoke"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json!({ "arguments": { "path": "/srv/reports/q3-summary.txt" } }).to_string())
        .send()
        .await
        .unwrap();
    let reply = Reply::read(reply).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.body["determining_policies"],
        json!(["reporting-reads-reports"]),
        "{:?}",
        reply.body
    );
}
