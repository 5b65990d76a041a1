//! The policy stage shows what it enforces: tool listings as exact as the known facts allow,
//! decimal arguments read from their literal, one valid printed schema, unknown policy
//! annotations refused.

use serde_json::{Value, json};

use crate::mcp_server::{mcp, open, rpc};
use crate::support::TestApp;

/// A token for `user` (in `groups`) delegated to the agents of `chain`, outermost first.
fn delegated(app: &TestApp, user: &str, groups: &[&str], chain: &[&str]) -> String {
    let mut claims = app.claims(user, "payments:write", groups);
    let mut act = Value::Null;
    for agent in chain.iter().rev() {
        act = match act {
            Value::Null => json!({ "sub": agent }),
            inner => json!({ "sub": agent, "act": inner }),
        };
    }
    claims["act"] = act;
    app.sign(&claims)
}

fn names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_delegated_caller_is_listed_only_the_tools_it_can_call() {
    let app = TestApp::spawn().await;
    // (actor chain, listed over HTTP and MCP, status of a transfer the policy allows when
    // the actor is right). Only `payments-agent` as the only actor may transfer.
    let cases: &[(&[&str], &[&str], u16)] = &[
        (
            &["payments-agent"],
            &["demo___echo", "payments___transfer"],
            200,
        ),
        (&["other-agent"], &["demo___echo"], 403),
        (&["payments-agent", "planner-agent"], &["demo___echo"], 403),
    ];
    for (chain, listed, transfer) in cases {
        let bob = delegated(&app, "bob", &["finance"], chain);
        let reply = app.get("/v1/tools", Some(&bob)).await;
        assert_eq!(reply.status, 200, "{chain:?}: {:?}", reply.body);
        assert_eq!(names(&reply.body["tools"]), *listed, "{chain:?}");

        let session = open(&app, &bob).await;
        let reply = mcp(
            &app,
            Some(&bob),
            Some(&session),
            &rpc(2, "tools/list", json!({})),
        )
        .await;
        assert_eq!(reply.status, 200, "{chain:?}: {:?}", reply.body);
        assert_eq!(names(&reply.body["result"]["tools"]), *listed, "{chain:?}");

        // The listing agrees with what a call gets.
        let reply = app
            .authorize(
                &bob,
                "payments___transfer",
                json!({ "amount": 100, "currency": "EUR", "to_account": "DE1" }),
            )
            .await;
        assert_eq!(reply.status, *transfer, "{chain:?}: {:?}", reply.body);
    }
}
