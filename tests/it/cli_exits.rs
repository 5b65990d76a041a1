//! The built binary's answers at its edges: `token verify` checking what the broker checks
//! (`typ: at+jwt`) and, with `--signature-only`, the signature of any JWS; a closed standard
//! output ending every command quietly; errors that say each cause once; help that is true.

use std::process::{Command, Output, Stdio};

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use toolgate::signing::SigningKey;

use crate::support::{AUDIENCE, ISSUER, TestApp};

fn toolgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `token verify ARGS`: the exit code and the printed JSON.
fn verify(args: &[&str]) -> (Option<i32>, Value) {
    let out = toolgate(&[&["token", "verify"], args].concat());
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), json)
}

/// A compact JWS over any payload bytes, signed with `key`.
fn jws(key: &Ed25519KeyPair, header: &Value, payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// Runs `token verify --signature-only` and asserts a valid signature over `Ok(payload)`, or
/// exit 2 with `Err(reason)`.
#[track_caller]
fn check_signature_only(jwks: &str, token: &str, expected: Result<&[u8], &str>) {
    let (code, out) = verify(&["--jwks", jwks, "--signature-only", token]);
    match expected {
        Ok(payload) => {
            assert_eq!(code, Some(0), "{jwks} {token}: {out}");
            assert_eq!(out["signature"], "valid");
            assert_eq!(out["payload"], URL_SAFE_NO_PAD.encode(payload));
        }
        Err(reason) => {
            assert_eq!(code, Some(2), "{reason}: {out}");
            assert_eq!(out["reason"], reason);
        }
    }
}

#[test]
fn signature_only_checks_any_jws_against_the_key_set_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (key, pkcs8) = SigningKey::generate().unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let (other, _) = SigningKey::generate().unwrap();
    let one = dir.path().join("one.json");
    std::fs::write(&one, key.jwks().to_string()).unwrap();
    let two = dir.path().join("two.json");
    std::fs::write(
        &two,
        json!({ "keys": [key.public_jwk(), other.public_jwk()] }).to_string(),
    )
    .unwrap();
    let (one, two) = (one.to_str().unwrap(), two.to_str().unwrap());
    let kid = key.kid();
    let payload = b"not a claims object \xff\x00";

    // A payload that is not JSON, and no `iss`: the signature alone is checked, by `kid` or
    // as the only key, with no `--issuer` or `--audience`.
    let by_kid = jws(&pair, &json!({ "alg": "EdDSA", "kid": kid }), payload);
    let no_kid = jws(&pair, &json!({ "alg": "EdDSA" }), payload);
    for (jwks, token) in [(one, &by_kid), (two, &by_kid), (one, &no_kid)] {
        check_signature_only(jwks, token, Ok(payload));
    }
    // A JSON payload without `iss` is shown as claims (not checked).
    let claims = jws(
        &pair,
        &json!({ "alg": "EdDSA", "kid": kid }),
        b"{\"sub\":\"x\"}",
    );
    let (code, out) = verify(&["--jwks", one, "--signature-only", &claims]);
    assert_eq!(
        (code, &out["claims"]["sub"]),
        (Some(0), &json!("x")),
        "{out}"
    );

    let refused = [
        // Two keys and no `kid`: never a guess between keys.
        (two, no_kid.clone(), "unknown_kid"),
        // The payload changed under the signature.
        (
            one,
            {
                let (head, rest) = by_kid.split_once('.').unwrap();
                let (_, signature) = rest.split_once('.').unwrap();
                format!("{head}.{}.{signature}", URL_SAFE_NO_PAD.encode(b"other"))
            },
            "bad_signature",
        ),
        // The header's `alg` cannot choose another algorithm than the key's.
        (
            one,
            jws(&pair, &json!({ "alg": "RS256", "kid": kid }), payload),
            "key_mismatch",
        ),
        (
            one,
            jws(&pair, &json!({ "alg": "HS256", "kid": kid }), payload),
            "algorithm_not_allowed",
        ),
        // Key-locating headers are refused here as everywhere.
        (
            one,
            jws(
                &pair,
                &json!({ "alg": "EdDSA", "kid": kid, "jku": "http://x" }),
                payload,
            ),
            "header_rejected",
        ),
    ];
    for (jwks, token, reason) in refused {
        check_signature_only(jwks, &token, Err(reason));
    }
}

#[tokio::test]
async fn signature_only_with_a_config_needs_no_claims_either() {
    let app = TestApp::spawn().await;
    let config = app.config_path();
    let config = config.to_str().unwrap();
    let kid = app.issuer_key.kid().to_owned();
    let (other, _) = SigningKey::generate().unwrap();
    // The issuer's token verifies; another key's signature under its `kid`, over claims
    // without `iss`, reaches the signature check and fails there.
    let good = app.token("agent", "", &[]);
    let (code, out) = verify(&["--config", config, "--signature-only", &good]);
    assert_eq!(
        (code, &out["header"]["kid"]),
        (Some(0), &json!(kid)),
        "{out}"
    );
    let mut claims = app.claims("agent", "", &[]);
    claims.as_object_mut().unwrap().remove("iss");
    let foreign = other.sign("at+jwt", &claims).unwrap();
    let (_, rest) = foreign.split_once('.').unwrap();
    let head = good.split('.').next().unwrap();
    let (code, out) = verify(&[
        "--config",
        config,
        "--signature-only",
        &format!("{head}.{rest}"),
    ]);
    assert_eq!(
        (code, &out["reason"]),
        (Some(2), &json!("bad_signature")),
        "{out}"
    );
}

#[tokio::test]
async fn token_verify_requires_at_jwt_like_the_broker_unless_relaxed() {
    let app = TestApp::spawn().await;
    let config = app.config_path();
    let config = config.to_str().unwrap();
    let jwks = app.dir.path().join("jwks.json");
    let jwks = jwks.to_str().unwrap();
    let untyped = app
        .issuer_key
        .sign("JWT", &app.claims("agent", "files:read", &[]))
        .unwrap();
    // The broker refuses it ...
    let reply = app
        .invoke(Some(&untyped), "demo___echo", json!({ "message": "hi" }))
        .await;
    assert_eq!(reply.status, 401);
    // ... and so does `token verify`, with a config or a bare JWKS.
    let standalone = ["--jwks", jwks, "--issuer", ISSUER, "--audience", AUDIENCE];
    for args in [vec!["--config", config], standalone.to_vec()] {
        let (code, out) = verify(&[args.clone(), vec![untyped.as_str()]].concat());
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert_eq!(out["reason"], "invalid_claim");
        assert_eq!(out["detail"], "invalid claim `typ`");
    }
    // Relaxed only on request, as `require_at_jwt_typ = false` would.
    let (code, out) = verify(&[&standalone[..], &["--allow-any-typ", &untyped]].concat());
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out["claims"]["sub"], "agent");
    let (code, _) = verify(&["--config", config, "--allow-any-typ", &untyped]);
    assert_ne!(code, Some(0), "`--allow-any-typ` goes with `--jwks` only");
}

/// Runs the binary with its standard output a pipe whose reader is already gone.
fn with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_closed_stdout_ends_every_command_quietly() {
    let app = TestApp::spawn().await;
    let token = app.token("agent", "files:read", &[]);
    app.invoke(Some(&token), "demo___echo", json!({ "message": "hi" }))
        .await;
    let config = app.config_path();
    let config = config.to_str().unwrap();
    let db = app.db_path();
    let db = db.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["token", "verify", "--config", config, &token],
        vec!["token", "verify", "--config", config, "not-a-token"],
        vec!["schema", "print", "--config", config],
        vec!["policy", "validate", "--config", config],
        vec!["tools", "list", "--config", config],
        vec!["keys", "jwks", "--config", config],
        vec!["revoke", "list", "--config", config],
        vec!["log", "verify", "--db", db],
        vec!["log", "query", "--db", db],
        vec!["log", "export", "--db", db],
        vec!["replay", "--log", db, "--config", config],
    ];
    for args in commands {
        let out = with_closed_stdout(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn start_up_errors_say_their_cause_once() {
    let app = TestApp::spawn().await;
    let config = app.config_path();
    let kept = app.stop_keep().await;
    let jwks = config.with_file_name("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let out = toolgate(&["serve", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(
        stderr.matches("no usable verification key").count(),
        1,
        "{stderr}"
    );
    drop(kept);

    let missing = tempfile::tempdir().unwrap().path().join("toolgate.toml");
    let out = toolgate(&["serve", "--config", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read config file"), "{stderr}");
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
}

#[test]
fn replay_help_says_expect_takes_a_file() {
    let out = toolgate(&["replay", "--help"]);
    let help = String::from_utf8(out.stdout).unwrap();
    let line = help
        .lines()
        .skip_while(|l| !l.contains("--expect"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(line.contains("--expect <FILE>"), "{help}");
    assert!(line.contains("A file of expected changes"), "{help}");
}

#[tokio::test]
async fn a_broker_whose_output_readers_left_keeps_serving_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    let app = TestApp::spawn().await;
    let token = app.token("reporting-agent", "files:read", &["reporting"]);
    let config = app.config_path();
    let kept = app.stop_keep().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("TOOLGATE__SERVER__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["fields"]["message"] == "toolgate listening" {
            break event["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    // Whoever read its stdout and stderr is gone: every later log line meets a closed pipe.
    drop(lines);
    drop(child.stdout.take());
    let status = reqwest::Client::new()
        .post(format!("http://{addr}/v1/authorize"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(
            json!({"tool": "files___read_file", "arguments": {"path": "/srv/reports/x"}})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the broker died with its log reader"
    );
    let killed = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    drop(kept);
}
