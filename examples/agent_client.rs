//! A minimal agent client: mints a dev token with the local dev issuer (as `serve --dev`
//! does) and calls a tool through the broker.
//!
//! Start the broker first (`cargo run --release -- serve --dev`), then:
//!
//! ```text
//! cargo run --features examples --example agent_client -- [BROKER_URL] [PATH]
//! ```

use anyhow::Context;
use serde_json::{Value, json};
use toolgate::config::Config;
use toolgate::dev::{DevIssuer, MintOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let broker = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let path = args
        .next()
        .unwrap_or_else(|| "/srv/reports/q3-summary.txt".to_owned());

    // The agent's credential: a short-lived access token from the dev issuer.
    let config = Config::load("toolgate.toml".as_ref()).context("run from the repository root")?;
    let issuer = DevIssuer::ensure(&config)?;
    let token = issuer.mint(&MintOptions {
        sub: "reporting-agent".to_owned(),
        scope: "files:read".to_owned(),
        ttl: 300,
        groups: vec!["reporting".to_owned()],
        ..MintOptions::default()
    })?;

    let client = reqwest::Client::new();
    let listing = client
        .get(format!("{broker}/v1/tools"))
        .bearer_auth(&token)
        .send()
        .await
        .context("is the broker running? start it with `cargo run --release -- serve --dev`")?
        .bytes()
        .await?;
    let tools: Value = serde_json::from_slice(&listing)?;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    println!("tools this agent may call: {names:?}");

    let response = client
        .post(format!("{broker}/v1/tools/files___read_file/invoke"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json!({ "arguments": { "path": path } }).to_string())
        .send()
        .await?;
    let status = response.status();
    let body: Value = serde_json::from_slice(&response.bytes().await?)?;
    println!("{status}: {}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
