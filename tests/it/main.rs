//! Integration tests: one binary, real server on loopback, real SQLite, real backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
// The 100-line bound on functions is for `src/`: a few tests here are stories (start, break,
// restart, verify) or tables longer than that, and read best whole.
#![allow(clippy::too_many_lines)]

mod api;
mod architecture;
mod audit;
mod audit_lookup;
mod auth_boundaries;
mod cedar_json;
mod cli;
mod cli_exits;
mod controls_doc;
mod corpus;
mod decision_bodies;
mod determining_policies;
mod dev_mode;
mod dispatch;
mod dispatch_outcome;
mod fuzz_findings;
mod http_limits;
mod log_damage;
mod log_export;
mod mcp_server;
mod mcp_upstream;
mod policy;
mod policy_fidelity;
mod policy_index;
mod python;
mod replay;
mod revocation;
mod rotation;
mod signature_vectors;
mod state_modes;
mod support;
mod times;
mod tokens;
mod verified_token;
