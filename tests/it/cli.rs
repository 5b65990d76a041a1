//! The built binary: `toolgate token verify` (claims, or a reason code and exit 2) and
//! `serve --log-format json` (structured logs, never a token).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::support::{AUDIENCE, ISSUER, TestApp};

fn verify(args: &[&str], stdin: Option<&str>) -> (Output, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["token", "verify"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

/// Runs `token verify` with `args` and checks its exit code and the given fields of its JSON.
#[track_caller]
fn check_verify(
    case: &str,
    args: &[&str],
    stdin: Option<&str>,
    code: i32,
    expected: &[(&str, &str)],
) {
    let (out, json) = verify(args, stdin);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{case} {args:?}: {json} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (pointer, value) in expected {
        assert_eq!(
            json.pointer(pointer).and_then(Value::as_str),
            Some(*value),
            "{case} {args:?}: `{pointer}` in {json}"
        );
    }
}

#[tokio::test]
async fn token_verify_prints_claims_or_the_reason() {
    let app = TestApp::spawn().await;
    let config = app.config_path();
    let config = config.to_str().unwrap();
    let jwks = app.dir.path().join("jwks.json");
    let jwks = jwks.to_str().unwrap();
    let good = app.token("agent", "files:read", &[]);
    let now = toolgate::auth::unix_now();
    let mut expired = app.claims("agent", "", &[]);
    expired["exp"] = json!(now - 600);
    expired["iat"] = json!(now - 900);
    let expired = app.sign(&expired);
    let (other_key, _) = toolgate::signing::SigningKey::generate().unwrap();
    let foreign = {
        // Another key's signature under our kid.
        let t = other_key
            .sign("at+jwt", &app.claims("agent", "", &[]))
            .unwrap();
        let (_, rest) = t.split_once('.').unwrap();
        let head = good.split('.').next().unwrap();
        format!("{head}.{rest}")
    };

    let standalone = ["--jwks", jwks, "--issuer", ISSUER, "--audience", AUDIENCE];
    // (case, arguments after the key set, standard input, exit code, JSON pointer and value)
    type Case<'a> = (
        &'a str,
        Vec<&'a str>,
        Option<String>,
        i32,
        &'a [(&'a str, &'a str)],
    );
    let cases: [Case; 5] = [
        (
            "valid",
            vec![good.as_str()],
            None,
            0,
            &[
                ("/claims/sub", "agent"),
                ("/header/typ", "at+jwt"),
                ("/verified/issuer", ISSUER),
            ],
        ),
        (
            "expired",
            vec![expired.as_str()],
            None,
            2,
            &[("/reason", "token_expired")],
        ),
        // --signature-only ignores the claims but not the key.
        (
            "signature only, expired",
            vec!["--signature-only", expired.as_str()],
            None,
            0,
            &[("/claims/sub", "agent")],
        ),
        (
            "signature only, another key",
            vec!["--signature-only", foreign.as_str()],
            None,
            2,
            &[("/reason", "bad_signature")],
        ),
        // `-` reads the token from standard input.
        (
            "standard input",
            vec!["-"],
            Some(format!("{good}\n")),
            0,
            &[("/claims/sub", "agent")],
        ),
    ];
    for key_set in [vec!["--config", config], standalone.to_vec()] {
        for (case, args, stdin, code, expected) in &cases {
            let args = [key_set.clone(), args.clone()].concat();
            check_verify(case, &args, stdin.as_deref(), *code, expected);
        }
    }
    // A wrong audience in standalone mode.
    let wrong_audience = [
        "--jwks",
        jwks,
        "--issuer",
        ISSUER,
        "--audience",
        "elsewhere",
        good.as_str(),
    ];
    check_verify(
        "wrong audience",
        &wrong_audience,
        None,
        2,
        &[("/reason", "audience_mismatch")],
    );
    // `--jwks` without issuer and audience is a usage error.
    let (out, _) = verify(&["--jwks", jwks, good.as_str()], None);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(0));
}

/// Starts `toolgate serve` on `config` with JSON logs at `info` (and `env` added), and reads
/// its log lines until `toolgate listening`: the child, the channel of the lines still to
/// come, the lines so far, and the address it listens on.
fn serve_json_logs(
    config: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    Vec<String>,
    String,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = lines_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the server did not log `toolgate listening`");
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        lines.push(line);
        if event["fields"]["message"] == "toolgate listening" {
            break event["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    (child, lines_rx, lines, addr)
}

/// Whether any of `lines` (JSON log events) warns that the decision log is on a filesystem
/// that does not survive a reboot.
fn warns_of_volatile_log(lines: &[String]) -> bool {
    lines.iter().any(|l| {
        let event: Value = serde_json::from_str(l).unwrap();
        event["level"] == "WARN" && event["fields"]["filesystem"] == "tmpfs"
    })
}

/// A decision log on tmpfs would lose its records at reboot: the broker still starts (an
/// operator may mean it, e.g. for a benchmark) but warns, and does not on a disk.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_warns_when_the_decision_log_is_on_tmpfs() {
    let on_tmpfs = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/dev/shm") && l.contains(" - tmpfs "));
    if !on_tmpfs {
        return crate::support::skip(
            "serve_warns_when_the_decision_log_is_on_tmpfs",
            "/dev/shm is not a tmpfs mount here",
        );
    }
    let app = TestApp::spawn().await;
    let config = app.config_path();
    let kept = app.stop_keep().await;
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let db = shm.path().join("decisions.db");
    // The test's own state directory warns only if it is on a tmpfs itself.
    let default_on_tmpfs = toolgate::audit::storage::volatile_filesystem(&config).is_some();
    let runs = [
        (vec![("TOOLGATE__AUDIT__DB", db.as_os_str())], true),
        (vec![], default_on_tmpfs),
    ];
    for (env, warned) in runs {
        let (mut child, _, lines, _) = serve_json_logs(&config, &env);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(warns_of_volatile_log(&lines), warned, "{lines:?}");
    }
    assert!(db.exists(), "the broker wrote its log on tmpfs");
    drop(kept);
}

#[tokio::test]
async fn serve_logs_json_lines_with_decision_ids_and_never_the_token() {
    let app = TestApp::spawn().await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    let config = app.config_path();
    // The same config and state, served by the real binary instead of the in-process server.
    let kept = app.stop_keep().await;
    let (mut child, lines_rx, mut lines, addr) = serve_json_logs(&config, &[]);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{addr}/v1/tools/demo___echo/invoke"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json!({ "arguments": { "message": "hi" } }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decision_id = response.headers()["x-toolgate-decision-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        child.wait().unwrap().success(),
        "SIGTERM is a clean shutdown"
    );
    lines.extend(lines_rx.iter());

    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let decision = events
        .iter()
        .find(|e| e["fields"]["decision_id"] == decision_id.as_str())
        .unwrap_or_else(|| panic!("no log event for {decision_id}: {lines:?}"));
    assert_eq!(decision["fields"]["decision"], "allow");
    assert_eq!(decision["level"], "INFO");
    // The token, and its signature on its own, appear nowhere in the logs.
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        lines
            .iter()
            .all(|l| !l.contains(&token) && !l.contains(signature))
    );
    drop(kept);
}
