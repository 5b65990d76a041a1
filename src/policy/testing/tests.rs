//! Unit tests for the policy-test file format and its time parsing.

use super::*;

#[test]
fn parses_utc_times_and_refuses_others() {
    let parse_utc = |text| crate::time::parse_utc_seconds(text).ok();
    assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_utc("2026-01-05T10:00:00Z"), Some(DEFAULT_TIME));
    assert_eq!(parse_utc("2024-02-29T23:59:59Z"), Some(1_709_251_199));
    assert_eq!(
        crate::policy::hour_and_weekday(DEFAULT_TIME),
        (10, 1),
        "the default time is a Monday, 10:00 UTC"
    );
    for bad in [
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-05T24:00:00Z",
        "2026-01-05T10:00:00+01:00",
        "2026-01-05 10:00:00Z",
        "2026-01-05T10:00:00.5Z",
        "+026-01-05T10:00:00Z",
    ] {
        assert_eq!(parse_utc(bad), None, "{bad}");
    }
}

#[test]
fn a_file_needs_cases_and_known_fields() {
    assert!(Suite::parse("").unwrap_err().contains("no `[[case]]`"));
    let unknown = Suite::parse(
        r#"
[[case]]
name = "x"
tool = "demo___echo"
expect = "allow"
principal = { sub = "a", group = ["typo"] }
"#,
    )
    .unwrap_err();
    assert!(unknown.contains("unknown field `group`"), "{unknown}");
    let bad_outcome = Suite::parse(
        r#"
[[case]]
name = "x"
tool = "demo___echo"
expect = "permit"
principal = { sub = "a" }
"#,
    )
    .unwrap_err();
    assert!(bad_outcome.contains("permit"), "{bad_outcome}");
    let ok = Suite::parse(
        r#"
[defaults]
time = "2026-01-10T12:00:00Z"

[[case]]
name = "x"
tool = "payments___transfer"
arguments = { amount = 499.99, currency = "EUR" }
expect = "deny"
determining = ["a", "b"]
principal = { sub = "alice", groups = ["finance"], actor = "payments-agent", claims = { department = "finance" } }
"#,
    )
    .unwrap();
    assert_eq!(ok.cases[0].arguments["amount"], serde_json::json!(499.99));
    assert_eq!(
        ok.defaults.time.as_ref().map(TimeSpec::unix),
        Some(Ok(1_768_046_400))
    );
}
