//! Regression tests for what the fuzz targets in `fuzz/` found (docs/security-testing.md).

use serde_json::json;

use crate::support::TestApp;

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
