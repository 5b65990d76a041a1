//! Regression tests for what the fuzz targets in `fuzz/` found (docs/security-testing.md).

use serde_json::json;
use toolgate::audit::verify::VerifyError;

use crate::support::{TestApp, repo};

/// `exp`, `nbf` and `iat` at the ends of i64 once overflowed the time arithmetic: a panic in a
/// debug build and, in a release build, a wrapped `exp - iat` that passed the lifetime check
/// for a token valid for billions of years. They are refused like out-of-range floats.
#[tokio::test]
async fn numeric_dates_near_the_i64_limits_are_refused_not_overflowed() {
    let app = TestApp::spawn().await;
    let now = toolgate::auth::unix_now();
    let cases = [
        ("exp i64::MAX", json!({ "exp": i64::MAX })),
        ("exp i64::MIN", json!({ "exp": i64::MIN })),
        ("nbf i64::MAX", json!({ "nbf": i64::MAX })),
        ("iat i64::MIN", json!({ "iat": i64::MIN, "exp": now + 300 })),
        (
            "exp - iat wraps around",
            json!({ "iat": -6_000_000_000_000_000_000_i64, "exp": 4_000_000_000_000_000_000_i64 }),
        ),
    ];
    for (name, overrides) in cases {
        let mut claims = app.claims("agent", "", &[]);
        for (key, value) in overrides.as_object().unwrap() {
            claims[key] = value.clone();
        }
        let reply = app
            .invoke(
                Some(&app.sign(&claims)),
                "demo___echo",
                json!({ "message": "hi" }),
            )
            .await;
        assert_eq!(reply.status, 401, "{name}: {:?}", reply.body);
        let id = reply.header("x-toolgate-decision-id").unwrap().to_owned();
        let row = app
            .decisions()
            .into_iter()
            .find(|r| r.decision_id == id)
            .unwrap();
        assert_eq!(row.reason, "invalid_claim", "{name}");
    }
}

/// A JSONL export whose first record claims sequence number i64::MIN overflowed the chain's
/// starting point in `log verify` (a panic in debug builds); it is a malformed record.
#[test]
fn a_jsonl_record_numbered_i64_min_is_malformed_not_an_overflow() {
    let fixture =
        std::fs::read_to_string(repo().join("tests/fixtures/demo-decisions.jsonl")).unwrap();
    let first = fixture.lines().next().unwrap();
    let mut record: serde_json::Value = serde_json::from_str(first).unwrap();
    record["seq"] = json!(i64::MIN);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.jsonl");
    std::fs::write(&path, format!("{record}\n")).unwrap();
    let err = toolgate::audit::verify::verify_jsonl(&path, None).unwrap_err();
    assert!(
        matches!(err, VerifyError::Malformed { seq: i64::MIN, .. }),
        "{err}"
    );
}
