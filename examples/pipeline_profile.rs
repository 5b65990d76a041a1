//! Runs the in-process pipeline (no HTTP) a fixed number of times on the load test's setup,
//! for instruction counts under `valgrind --tool=callgrind` or for `perf record`: repeatable
//! where wall-clock figures on a shared machine are not.
//!
//! ```text
//! bench/load.sh writes DIR with examples/bench_setup (RS256 issuer, 10 policies, one tool)
//! cargo build --release --features examples --example pipeline_profile
//! valgrind --tool=callgrind target/release/examples/pipeline_profile DIR authorize 2000
//! ```
//!
//! Modes: `authorize` (the whole pipeline, 32 concurrent callers, committed log records),
//! `decide` (the policy stage alone) and `verify` (token verification with revocation check).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use toolgate::app::{CallRequest, Endpoint};

/// Concurrent in-process callers in `authorize` mode, as with the load test's connections.
const CALLERS: usize = 32;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: pipeline_profile DIR [authorize|decide|verify] [N]")?,
    );
    let mode = args.next().unwrap_or_else(|| "authorize".to_owned());
    let n: usize = args.next().as_deref().unwrap_or("2000").parse()?;
    let config = toolgate::config::Config::load(&dir.join("toolgate.toml"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let built = runtime.block_on(async { toolgate::server::build(config, None) })?;
    let app = built.app;
    let token = std::fs::read_to_string(dir.join("token"))?;
    let authorization = Arc::new(format!("Bearer {}", token.trim()));
    let arguments = json!({ "message": "hello world" });
    match mode.as_str() {
        "authorize" => runtime.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..CALLERS {
                let app = app.clone();
                let authorization = authorization.clone();
                let arguments = arguments.clone();
                tasks.push(tokio::spawn(async move {
                    let mut allowed = 0usize;
                    for _ in 0..n / CALLERS {
                        let response = app
                            .call(
                                Endpoint::Authorize,
                                CallRequest {
                                    authorization: Some(&authorization),
                                    tool: "bench___echo",
                                    arguments: Ok(arguments.clone()),
                                    arguments_text: None,
                                    request_id: None,
                                },
                            )
                            .await;
                        allowed += usize::from(response.is_ok_and(|d| d.succeeded()));
                    }
                    allowed
                }));
            }
            let mut allowed = 0;
            for task in tasks {
                allowed += task.await?;
            }
            println!("{allowed} calls allowed");
            anyhow::Ok(())
        })?,
        "decide" => {
            let verified = app.authenticator.verify(token.trim())?;
            let tools = app.tools();
            let tool = tools.get("bench___echo").context("no bench___echo tool")?;
            let mut allowed = 0;
            for _ in 0..n {
                let facts = toolgate::policy::CallFacts {
                    tool,
                    arguments: &arguments,
                    arguments_text: None,
                    request_id: "profile",
                    now: toolgate::auth::unix_now(),
                    logged_arguments: None,
                };
                allowed += usize::from(app.policy.decide(&verified, &facts)?.allowed);
            }
            println!("{allowed} decisions allowed");
        }
        "verify" => {
            let mut ok = 0;
            for _ in 0..n {
                ok += usize::from(
                    runtime
                        .block_on(app.authenticator.verify_fresh(token.trim()))
                        .is_ok(),
                );
            }
            println!("{ok} tokens verified");
        }
        other => anyhow::bail!("unknown mode `{other}`"),
    }
    drop(app);
    built.audit_writer.join();
    Ok(())
}
