//! Integration tests: one binary, real server on loopback, real SQLite, real backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod api;
mod corpus;
mod policy;
mod support;
