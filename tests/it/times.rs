//! Times given by people, through the real API and CLI: an impossible date such as
//! `2023-02-31` is refused with a clear error, never rolled over into the next month.

use crate::policy::toolgate;
use crate::support::TestApp;

const FEB_31: &str = "2023-02-31T00:00:00Z";
const NOT_ON_THE_CALENDAR: &str = "`2023-02-31T00:00:00Z` is not a date and time on the calendar";

#[tokio::test]
async fn log_queries_refuse_a_day_that_does_not_exist() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token();
    let reply = app
        .get(&format!("/admin/decisions?since={FEB_31}"), Some(&admin))
        .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(
        reply.body.to_string().contains(NOT_ON_THE_CALENDAR),
        "{:?}",
        reply.body
    );
    let good = app
        .get("/admin/decisions?since=2023-02-28T00:00:00Z", Some(&admin))
        .await;
    assert_eq!(good.status, 200, "{:?}", good.body);

    let config = app.config_path();
    let (ok, out) = toolgate(&[
        "log",
        "query",
        "--config",
        config.to_str().unwrap(),
        "--since",
        FEB_31,
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains(NOT_ON_THE_CALENDAR), "{out}");
}

#[test]
fn policy_tests_refuse_a_day_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feb31.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[case]]
name = "echo on a day that does not exist"
principal = {{ sub = "intern-agent" }}
tool = "demo___echo"
arguments = {{ message = "hi" }}
time = "{FEB_31}"
expect = "allow"
"#
        ),
    )
    .unwrap();
    let (ok, out) = toolgate(&["policy", "test", file.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("time {NOT_ON_THE_CALENDAR}")),
        "{out}"
    );
}
