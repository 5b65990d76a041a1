//! Integration tests: one binary, real server on loopback, real SQLite, real backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod api;
mod dispatch;
mod cli;
mod revocation;
mod rotation;
mod audit;
mod replay;
mod corpus;
mod policy;
mod support;
mod tokens;
