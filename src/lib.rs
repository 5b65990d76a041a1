//! toolgate: an authorization broker for AI-agent tool calls.
//!
//! # Layout
//! A call travels `http → auth → tools (lookup, arguments) → policy → audit → tools (dispatch)`:
//! - [`config`]: `toolgate.toml`, environment overrides, validation;
//! - [`http`]: the axum router and the one error-to-status map (the only module using axum,
//!   besides the dev-mode demo backends in [`dev`]);
//! - [`auth`]: bearer-token verification against JWKS keys;
//! - [`tools`]: the registry, argument checks and dispatch to backends;
//! - [`policy`]: Cedar schema generation, policy loading and decisions;
//! - [`audit`]: the hash-chained SQLite decision log;
//! - [`app`]: the pipeline that strings the stages together, with no HTTP types;
//! - [`replay`]: re-evaluation of recorded decisions against a policy set;
//! - [`server`]: start-up and shutdown; [`cli`]: the command line.

pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dev;
#[doc(hidden)]
pub mod fuzz_api;
pub mod http;
pub mod policy;
pub mod private_files;
pub mod reload;
pub mod replay;
pub mod server;
pub mod signing;
pub mod time;
pub mod tools;

// The unit tests share the integration tests' `VerifiedToken` builder, which names the crate
// `toolgate` as the tests and benches outside it do.
#[cfg(test)]
extern crate self as toolgate;
#[cfg(test)]
#[path = "../tests/it/verified_token.rs"]
mod verified_token;
