//! Integration tests: one binary, real server on loopback, real SQLite, real backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod api;
mod audit;
mod audit_lookup;
mod cli;
mod corpus;
mod dispatch;
mod fuzz_findings;
mod mcp_server;
mod mcp_upstream;
mod policy;
mod policy_index;
mod python;
mod replay;
mod revocation;
mod rotation;
mod support;
mod tokens;
