//! `toolgate token verify` run as the built binary: claims or a reason code and exit 2.

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
    for args in [vec!["--config", config], standalone.to_vec()] {
        let (out, json) = verify(&[args.clone(), vec![good.as_str()]].concat(), None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json["claims"]["sub"], "agent");
        assert_eq!(json["header"]["typ"], "at+jwt");
        assert_eq!(json["verified"]["issuer"], ISSUER);

        let (out, json) = verify(&[args.clone(), vec![expired.as_str()]].concat(), None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(json["reason"], "token_expired");

        // --signature-only ignores the claims but not the key.
        let (out, json) = verify(
            &[args.clone(), vec!["--signature-only", expired.as_str()]].concat(),
            None,
        );
        assert!(out.status.success(), "{args:?}: {json}");
        assert_eq!(json["claims"]["sub"], "agent");
        let (out, json) = verify(
            &[args.clone(), vec!["--signature-only", foreign.as_str()]].concat(),
            None,
        );
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(json["reason"], "bad_signature");

        // `-` reads the token from standard input.
        let (out, json) = verify(
            &[args.clone(), vec!["-"]].concat(),
            Some(&format!("{good}\n")),
        );
        assert!(out.status.success());
        assert_eq!(json["claims"]["sub"], "agent");
    }
    // A wrong audience in standalone mode.
    let (out, json) = verify(
        &[
            "--jwks",
            jwks,
            "--issuer",
            ISSUER,
            "--audience",
            "elsewhere",
            good.as_str(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json["reason"], "audience_mismatch");
    // `--jwks` without issuer and audience is a usage error.
    let (out, _) = verify(&["--jwks", jwks, good.as_str()], None);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(0));
}
