//! Policy model through the real API and CLI: the shipped policy tests, argument-level and
//! delegation-aware permits, and hot reload (admin API, file change, SIGHUP, concurrency).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Options, TestApp, check_status, repo};

pub(crate) fn toolgate(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn shipped_policy_tests_pass_with_full_coverage() {
    let (ok, out) = toolgate(&[
        "policy",
        "test",
        "--require-coverage",
        "tests/policies/demo.toml",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
    assert!(out.contains("coverage: 9 of 9 policies"), "{out}");
    assert!(!out.contains("never determining"), "{out}");
}

#[test]
fn failing_policy_test_prints_a_diff_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.toml");
    std::fs::write(
        &file,
        r#"
[[case]]
name = "expects the traversal forbid to allow"
principal = { sub = "reporting-agent", groups = ["reporting"] }
tool = "files___read_file"
arguments = { path = "/srv/reports/../secret" }
expect = "allow"
determining = ["reporting-reads-reports"]

[[case]]
name = "echo passes"
principal = { sub = "intern-agent" }
tool = "demo___echo"
arguments = { message = "hi" }
expect = "allow"
"#,
    )
    .unwrap();
    let out = check_run(
        &["policy", "test", file.to_str().unwrap()],
        false,
        &[
            "FAIL",
            "case 1 `expects the traversal forbid to allow`",
            "- decision:    allow",
            "+ decision:    deny",
            "- determining: [reporting-reads-reports]",
            "2 cases: 1 passed, 1 failed",
            "never determining: payments-hard-cap",
        ],
    );
    assert!(
        out.contains("+ determining: [no-path-traversal, reporting-reads-reports]")
            || out.contains("+ determining: [no-path-traversal]"),
        "{out}"
    );

    // A policy directory given on the command line replaces the config's.
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("only.cedar"),
        "@id(\"all-echo\")\npermit (principal, action == Toolgate::Action::\"demo___echo\", resource);\n",
    )
    .unwrap();
    let passing = dir.path().join("echo.toml");
    std::fs::write(
        &passing,
        "[[case]]\nname = \"echo\"\nprincipal = { sub = \"a\" }\ntool = \"demo___echo\"\narguments = { message = \"hi\" }\nexpect = \"allow\"\ndetermining = [\"all-echo\"]\n",
    )
    .unwrap();
    let (policies_arg, passing_arg) = (policies.to_str().unwrap(), passing.to_str().unwrap());
    let coverage = ["policy", "test", "--require-coverage", "--policies"];
    let coverage = [&coverage[..], &[policies_arg, passing_arg]].concat();
    check_run(&coverage, true, &["coverage: 1 of 1 policies"]);

    // `policy validate` checks a directory without starting anything.
    let validate = ["policy", "validate", "--policies", policies_arg];
    let out = check_run(&validate, true, &[]);
    assert!(out.starts_with("ok: 1 policies valid"), "{out}");
    std::fs::write(
        policies.join("bad.cedar"),
        "@id(\"bad\")\npermit (principal, action == Toolgate::Action::\"demo___echo\", resource)\nwhen { context.input.nope };\n",
    )
    .unwrap();
    check_run(&validate, false, &["bad.cedar:1: policy `bad`: error"]);
    let test = ["policy", "test", "--policies", policies_arg, passing_arg];
    check_run(&test, false, &["bad.cedar:1"]);
}

/// Runs the binary with `args` and asserts whether it succeeds and that its output holds each
/// of `expected`; returns the output.
#[track_caller]
fn check_run(args: &[&str], ok: bool, expected: &[&str]) -> String {
    let (succeeded, out) = toolgate(args);
    assert_eq!(succeeded, ok, "{args:?}: {out}");
    for text in expected {
        assert!(out.contains(text), "{args:?}: `{text}` in {out}");
    }
    out
}

#[tokio::test]
async fn payments_limit_currency_and_delegation_through_the_api() {
    let app = TestApp::spawn().await;
    let delegated = |user: &str, groups: &[&str], actor: &str| {
        let mut c = app.claims(user, "payments:write", groups);
        c["act"] = json!({ "sub": actor });
        app.sign(&c)
    };
    let bob = delegated("bob", &["finance"], "payments-agent");
    let transfer = |amount: Value, currency: &str| json!({ "amount": amount, "currency": currency, "to_account": "DE02120300000000202051" });

    let outsider = delegated("carol", &["reporting"], "payments-agent");
    let other_agent = delegated("bob", &["finance"], "planner-agent");
    // `policies/entities.json` puts group finance-eu inside finance.
    let nested_group = delegated("erika", &["finance-eu"], "payments-agent");
    let agent_alone = app.token("payments-agent", "payments:write", &["finance"]);
    // (case, token, amount, currency, status); the order is the order of the records below.
    let cases: [(&str, &str, Value, &str, u16); 9] = [
        ("under the limit", &bob, json!(499.99), "EUR", 200),
        ("at the limit", &bob, json!(500), "EUR", 403),
        ("other currency", &bob, json!(100), "USD", 403),
        ("over the hard cap", &bob, json!(25000.5), "EUR", 403),
        // 1.00001 cannot be a Cedar decimal: refused before the policies, never rounded.
        ("not a decimal", &bob, json!(1.00001), "EUR", 400),
        ("user outside finance", &outsider, json!(10), "EUR", 403),
        ("other agent", &other_agent, json!(10), "EUR", 403),
        ("nested group", &nested_group, json!(250), "EUR", 200),
        ("agent alone", &agent_alone, json!(10), "EUR", 403),
    ];
    for (case, token, amount, currency, status) in cases {
        let reply = app
            .invoke(
                Some(token),
                "payments___transfer",
                transfer(amount, currency),
            )
            .await;
        check_status(case, &reply, status);
        if status == 400 {
            assert_eq!(reply.body["problems"][0]["path"], "/amount", "{case}");
        }
    }

    // The listing shows the transfer tool to the finance user's delegated agent only.
    let listed = |token: &str| {
        let app = &app;
        let token = token.to_owned();
        async move {
            let reply = app.get("/v1/tools", Some(&token)).await;
            reply.body["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&bob).await, ["demo___echo", "payments___transfer"]);
    assert_eq!(listed(&outsider).await, ["demo___echo"]);
    assert_eq!(listed(&agent_alone).await, ["demo___echo"]);

    let decisions: Vec<_> = app
        .decisions()
        .into_iter()
        .filter(|r| r.record["endpoint"] == "invoke")
        .collect();
    let determining: Vec<Value> = decisions
        .iter()
        .map(|r| r.record["policy"]["determining_policies"].clone())
        .collect();
    assert_eq!(
        determining[0],
        json!(["payments-agent-transfers-for-finance"])
    );
    assert_eq!(determining[1], json!([]));
    assert_eq!(determining[3], json!(["payments-hard-cap"]));
    assert_eq!(decisions[4].reason, "argument_not_representable");
    // The backend saw exactly the two allowed transfers.
    assert_eq!(app.backend.calls("/echo").len(), 2);
    app.stop().await;
}

const FORBID_ECHO: &str = r#"
@id("reload-forbids-echo")
forbid (principal, action == Toolgate::Action::"demo___echo", resource);
"#;

/// Typo'd argument: strict validation rejects it.
const INVALID: &str = r#"
@id("typo")
permit (principal, action == Toolgate::Action::"demo___echo", resource)
when { context.input.mesage == "x" };
"#;

async fn echo_status(app: &TestApp) -> u16 {
    let intern = app.token("intern-agent", "", &[]);
    app.invoke(Some(&intern), "demo___echo", json!({ "message": "hi" }))
        .await
        .status
}

#[tokio::test]
async fn a_reload_that_changes_entities_applies_to_a_token_already_calling() {
    let app = TestApp::spawn().await;
    let mut claims = app.claims("erika", "payments:write", &["finance-eu"]);
    claims["act"] = json!({ "sub": "payments-agent" });
    let erika = app.sign(&claims);
    let transfer =
        json!({ "amount": 250, "currency": "EUR", "to_account": "DE02120300000000202051" });
    // `policies/entities.json` puts finance-eu inside finance; the same token calls twice,
    // so the second decision reuses what was built for it.
    for _ in 0..2 {
        let reply = app
            .invoke(Some(&erika), "payments___transfer", transfer.clone())
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    // finance-eu leaves finance: the same token, on the same tool, is now refused.
    std::fs::write(
        app.policies_dir().join("entities.json"),
        r#"[{ "uid": { "type": "Toolgate::Group", "id": "finance-eu" }, "attrs": {}, "parents": [] }]"#,
    )
    .unwrap();
    let reply = app.post("/admin/policies/reload", &app.admin_token()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let reply = app
        .invoke(Some(&erika), "payments___transfer", transfer)
        .await;
    assert_eq!(reply.status, 403, "{:?}", reply.body);
}

#[tokio::test]
async fn admin_reload_swaps_a_valid_set_and_rejects_an_invalid_one() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token();
    assert_eq!(echo_status(&app).await, 200);
    let before = app.status().await.body["checks"]["policy_set_hash"].clone();

    // Only admins may reload.
    let agent = app.token("agent", "toolgate:admin", &[]);
    assert_eq!(app.post("/admin/policies/reload", &agent).await.status, 401);

    std::fs::write(app.policies_dir().join("reload.cedar"), FORBID_ECHO).unwrap();
    let reply = app.post("/admin/policies/reload", &admin).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["changed"], true);
    assert_ne!(reply.body["policy_set_hash"], before);
    assert_eq!(echo_status(&app).await, 403);
    let denied = app.decisions().pop().unwrap();
    assert_eq!(
        denied.record["policy"]["determining_policies"],
        json!(["reload-forbids-echo"])
    );
    assert_eq!(
        denied.record["policy"]["policy_set_hash"],
        reply.body["policy_set_hash"]
    );

    std::fs::write(app.policies_dir().join("typo.cedar"), INVALID).unwrap();
    let rejected = app.post("/admin/policies/reload", &admin).await;
    assert_eq!(rejected.status, 422, "{:?}", rejected.body);
    assert_eq!(rejected.body["error"], "policy_reload_rejected");
    let message = rejected.body["message"].as_str().unwrap();
    assert!(
        message.contains("typo.cedar") && message.contains("typo") && message.contains("mesage"),
        "{message}"
    );
    // Still ready (the last good set serves), but the rejection is visible.
    let ready = app.status().await;
    assert_eq!(ready.body["ready"], true);
    assert_eq!(ready.body["checks"]["policies_valid"], false);
    let public = app.get("/readyz", None).await;
    assert_eq!(public.status, 200);
    assert_eq!(
        public.body,
        json!({ "ready": true, "failing": ["policies_valid"] }),
        "`/readyz` names the failing check and shows no detail"
    );
    assert!(
        ready.body["checks"]["policy_error"]
            .as_str()
            .unwrap()
            .contains("mesage")
    );
    assert!(
        ready.body["checks"]["policy_reloads_rejected"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(
        ready.body["checks"]["policy_set_hash"],
        reply.body["policy_set_hash"]
    );
    assert_eq!(
        echo_status(&app).await,
        403,
        "the last good set still serves"
    );
    let status = app.get("/admin/status", Some(&admin)).await;
    assert!(
        status.body["checks"]["policy_reloads_rejected"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // Fixing the files and reloading clears the error and restores the original set.
    std::fs::remove_file(app.policies_dir().join("typo.cedar")).unwrap();
    std::fs::remove_file(app.policies_dir().join("reload.cedar")).unwrap();
    let fixed = app.post("/admin/policies/reload", &admin).await;
    assert_eq!(fixed.status, 200);
    assert_eq!(fixed.body["policy_set_hash"], before);
    let ready = app.status().await;
    assert_eq!(ready.body["checks"]["policies_valid"], true);
    assert_eq!(ready.body["checks"]["policy_error"], Value::Null);
    assert_eq!(echo_status(&app).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_during_swaps_get_consistent_answers() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let admin = app.admin_token();
    let extra = app.policies_dir().join("swap.cedar");

    let swapper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut hashes = Vec::new();
            for i in 0..20 {
                if i % 2 == 0 {
                    std::fs::write(&extra, FORBID_ECHO).unwrap();
                } else {
                    std::fs::remove_file(&extra).unwrap();
                }
                let reply = app.post("/admin/policies/reload", &admin).await;
                assert_eq!(reply.status, 200, "{:?}", reply.body);
                hashes.push((i % 2 == 0, reply.body["policy_set_hash"].clone()));
            }
            hashes
        })
    };
    let mut callers = Vec::new();
    for _ in 0..4 {
        let app = app.clone();
        callers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..25 {
                statuses.push(echo_status(&app).await);
            }
            statuses
        }));
    }
    let hashes = swapper.await.unwrap();
    for caller in callers {
        for status in caller.await.unwrap() {
            assert!(status == 200 || status == 403, "{status}");
        }
    }
    let forbidding: Vec<&Value> = hashes.iter().filter(|(f, _)| *f).map(|(_, h)| h).collect();
    let permitting: Vec<&Value> = hashes.iter().filter(|(f, _)| !*f).map(|(_, h)| h).collect();
    assert!(forbidding.iter().all(|h| *h == forbidding[0]));
    assert!(permitting.iter().all(|h| *h == permitting[0]));
    assert_ne!(forbidding[0], permitting[0]);

    // Every decision was made wholly by one set: allowed by the set without the forbid, or
    // denied by the forbid of the set that has it; never a mix.
    let decisions: Vec<_> = app
        .decisions()
        .into_iter()
        .filter(|r| r.record["endpoint"] == "invoke")
        .collect();
    assert_eq!(decisions.len(), 100);
    for d in decisions {
        let policy = &d.record["policy"];
        if d.decision == "allow" {
            assert_eq!(&policy["policy_set_hash"], permitting[0]);
            assert_eq!(
                policy["determining_policies"],
                json!(["echo-for-every-agent"])
            );
        } else {
            assert_eq!(&policy["policy_set_hash"], forbidding[0]);
            assert_eq!(
                policy["determining_policies"],
                json!(["reload-forbids-echo"])
            );
        }
    }
}

/// Polls `/admin/status` until `check` holds (the watcher acts on its own schedule).
async fn wait_for_readiness(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = app.status().await.body;
        if check(&body["checks"]) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_file_change_reloads_and_an_invalid_change_keeps_the_last_good_set() {
    let app = TestApp::spawn_with(Options {
        watch_interval_ms: Some(100),
        ..Options::default()
    })
    .await;
    assert_eq!(echo_status(&app).await, 200);
    std::fs::write(app.policies_dir().join("reload.cedar"), FORBID_ECHO).unwrap();
    wait_for_readiness(&app, "the reload", |c| {
        c["policy_reloads"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(echo_status(&app).await, 403);

    std::fs::write(app.policies_dir().join("typo.cedar"), INVALID).unwrap();
    let body = wait_for_readiness(&app, "the rejection", |c| {
        c["policy_reloads_rejected"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["policies_valid"], false);
    assert_eq!(
        echo_status(&app).await,
        403,
        "the last good set still serves"
    );
    app.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_policies() {
    let app = TestApp::spawn().await;
    assert_eq!(echo_status(&app).await, 200);
    std::fs::write(app.policies_dir().join("reload.cedar"), FORBID_ECHO).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_readiness(&app, "the SIGHUP reload", |c| {
        c["policy_reloads"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(echo_status(&app).await, 403);
    app.stop().await;
}

/// Loads a policy directory made of `files` against the repo's config and tools.
fn load_dir(
    files: &[(&str, &str)],
) -> Result<toolgate::policy::PolicySnapshot, toolgate::policy::PolicyLoadError> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = toolgate::config::Config::load(&repo().join("toolgate.toml")).unwrap();
    let url = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
    let demo = toolgate::tools::DemoUrls {
        echo: url.clone(),
        files: url.clone(),
        payments: url,
    };
    let tools = toolgate::tools::Registry::from_config(&config, Some(&demo)).unwrap();
    toolgate::policy::PolicyEngine::load(
        &repo().join("schemas/toolgate.cedarschema"),
        dir.path(),
        &tools,
    )
}

fn load_error(files: &[(&str, &str)]) -> String {
    match load_dir(files) {
        Ok(_) => panic!("the set {files:?} loaded"),
        Err(e) => e.to_string(),
    }
}

const ECHO_OK: &str =
    "@id(\"echo\")\npermit (principal, action == Toolgate::Action::\"demo___echo\", resource);\n";

#[test]
fn invalid_sets_are_refused_naming_file_line_and_policy() {
    assert!(load_dir(&[("a.cedar", ECHO_OK)]).is_ok());

    let parse = load_error(&[(
        "a.cedar",
        "\n\n@id(\"x\")\npermit (principal, action, resource) when { ;\n",
    )]);
    assert!(parse.starts_with("a.cedar:4:"), "{parse}");

    let missing = load_error(&[("a.cedar", "\npermit (principal, action, resource);\n")]);
    assert_eq!(
        missing,
        "a.cedar:2: policy has no `@id(\"...\")` annotation"
    );

    let twice = load_error(&[("a.cedar", ECHO_OK), ("b.cedar", &format!("\n{ECHO_OK}"))]);
    assert_eq!(
        twice,
        "policy id `echo` is used twice: in `a.cedar:1` and `b.cedar:2`"
    );

    let typo = load_error(&[(
        "t.cedar",
        "// comment\n@id(\"typo\")\npermit (principal, action == Toolgate::Action::\"files___read_file\", resource)\nwhen { context.input.pth like \"/srv/*\" };\n",
    )]);
    assert!(typo.contains("t.cedar:2: policy `typo`: error:"), "{typo}");
    assert!(typo.contains("pth"), "{typo}");

    let string_vs_long = load_error(&[(
        "t.cedar",
        "@id(\"types\")\npermit (principal, action == Toolgate::Action::\"demo___echo\", resource)\nwhen { context.input has repeat && context.input.repeat == \"2\" };\n",
    )]);
    assert!(
        string_vs_long.contains("policy `types`"),
        "{string_vs_long}"
    );

    // A policy ported from a single-action gateway can never match: a warning, refused.
    let impossible = load_error(&[(
        "p.cedar",
        "@id(\"ported\")\npermit (principal, action == Toolgate::Action::\"call_tool\", resource);\n",
    )]);
    assert!(
        impossible.contains("p.cedar:1: policy `ported`: warning treated as error"),
        "{impossible}"
    );
}

#[test]
fn entities_json_is_validated_and_extends_the_groups() {
    let nested = r#"[{"uid": {"type": "Toolgate::Group", "id": "a"}, "attrs": {}, "parents": [{"type": "Toolgate::Group", "id": "b"}]}]"#;
    let with = load_dir(&[("a.cedar", ECHO_OK), ("entities.json", nested)]).unwrap();
    let without = load_dir(&[("a.cedar", ECHO_OK)]).unwrap();
    assert_ne!(
        with.policy_set_hash, without.policy_set_hash,
        "entities decide calls, so they are part of the set's hash"
    );

    let agent = r#"[{"uid": {"type": "Toolgate::Agent", "id": "x"}, "attrs": {"iss": "i", "sub": "x"}, "parents": [], "tags": {}}]"#;
    let e = load_error(&[("a.cedar", ECHO_OK), ("entities.json", agent)]);
    assert!(
        e.starts_with("entities.json: `Toolgate::Agent::\"x\"`"),
        "{e}"
    );

    let tool = r#"[{"uid": {"type": "Toolgate::Tool", "id": "demo___echo"}, "attrs": {"name": "echo", "server": "demo", "readOnly": true, "destructive": true, "idempotent": true, "openWorld": true}, "parents": []}]"#;
    let e = load_error(&[("a.cedar", ECHO_OK), ("entities.json", tool)]);
    assert!(e.contains("tool registry"), "{e}");

    let unknown_type =
        r#"[{"uid": {"type": "Toolgate::Team", "id": "x"}, "attrs": {}, "parents": []}]"#;
    let e = load_error(&[("a.cedar", ECHO_OK), ("entities.json", unknown_type)]);
    assert!(e.starts_with("entities.json:") && e.contains("Team"), "{e}");

    let bad_attr = r#"[{"uid": {"type": "Toolgate::Group", "id": "x"}, "attrs": {"level": 3}, "parents": []}]"#;
    let e = load_error(&[("a.cedar", ECHO_OK), ("entities.json", bad_attr)]);
    assert!(
        e.starts_with("entities.json:") && e.contains("level"),
        "{e}"
    );

    let e = load_error(&[("a.cedar", ECHO_OK), ("entities.json", "{not json")]);
    assert!(e.starts_with("entities.json:"), "{e}");
}

/// Decisions skip Cedar's per-request validation because the shapes toolgate builds are
/// checked against the schema at load: a schema stub edited so that they no longer conform
/// is refused, instead of letting a policy on a missing attribute error (and be skipped).
#[test]
fn a_schema_stub_the_built_requests_do_not_conform_to_is_refused() {
    let stub = std::fs::read_to_string(repo().join("schemas/toolgate.cedarschema")).unwrap();
    let cases = [
        ("jti?: String,", "jti?: String,\n    tenant: String,"),
        ("client_id?: String,", "client_id: String,"),
        ("request_id: String,", "request_id: Long,"),
        ("actor?: Agent,", ""),
        (
            "entity Agent in [Group] = { iss: String, sub: String } tags String;",
            "entity Agent in [Group] = { iss: String, sub: String, team: String } tags String;",
        ),
        (
            "entity User in [Group] = { iss: String, sub: String } tags String;",
            "entity User in [Group] = { iss: String, sub: String } tags Long;",
        ),
    ];
    for (from, to) in cases {
        assert!(stub.contains(from), "{from}");
        let dir = tempfile::tempdir().unwrap();
        let edited = dir.path().join("edited.cedarschema");
        std::fs::write(&edited, stub.replace(from, to)).unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("a.cedar"), ECHO_OK).unwrap();
        let config = toolgate::config::Config::load(&repo().join("toolgate.toml")).unwrap();
        let url = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        let demo = toolgate::tools::DemoUrls {
            echo: url.clone(),
            files: url.clone(),
            payments: url,
        };
        let tools = toolgate::tools::Registry::from_config(&config, Some(&demo)).unwrap();
        let err = match toolgate::policy::PolicyEngine::load(&edited, &policies, &tools) {
            Ok(_) => panic!("a stub with `{to}` instead of `{from}` loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("does not conform to the schema"),
            "{from}: {err}"
        );
    }
}
