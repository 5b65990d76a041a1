//! Every stage, reason and verdict serialises to the string the decision log has always held,
//! and reads back as itself; an unknown string lands in the catch-all.

use super::{Reason, Stage};
use crate::audit::Verdict;

#[track_caller]
fn check<T>(value: T, text: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(&value).unwrap();
    assert_eq!(
        json,
        format!("\"{text}\""),
        "{value:?} serialises to today's string"
    );
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(back, value, "`{text}` reads back as the same variant");
}

#[test]
fn every_stage_round_trips_to_todays_string() {
    for (stage, text) in [
        (Stage::Auth, "auth"),
        (Stage::Request, "request"),
        (Stage::Tool, "tool"),
        (Stage::Scope, "scope"),
        (Stage::Arguments, "arguments"),
        (Stage::Policy, "policy"),
        (Stage::Dispatch, "dispatch"),
        (Stage::Admin, "admin"),
        (Stage::Session, "session"),
    ] {
        assert_eq!(stage.to_string(), text);
        check(stage, text);
    }
}

#[test]
fn every_reason_round_trips_to_todays_string() {
    for (reason, text) in [
        (Reason::Pending, "pending"),
        (Reason::Allowed, "allowed"),
        (Reason::Listed, "listed"),
        (Reason::PolicyDenied, "policy_denied"),
        (Reason::PolicyError, "policy_error"),
        (Reason::UnknownTool, "unknown_tool"),
        (Reason::InsufficientScope, "insufficient_scope"),
        (Reason::BadRequest, "bad_request"),
        (Reason::PayloadTooLarge, "payload_too_large"),
        (Reason::RequestTimeout, "request_timeout"),
        (Reason::InvalidArguments, "invalid_arguments"),
        (
            Reason::ArgumentNotRepresentable,
            "argument_not_representable",
        ),
        (Reason::Dispatched, "dispatched"),
        (Reason::ToolError, "tool_error"),
        (Reason::SessionOpened, "session_opened"),
        (Reason::SessionClosed, "session_closed"),
        (Reason::OriginNotAllowed, "origin_not_allowed"),
        (Reason::TooManySessions, "too_many_sessions"),
    ] {
        assert_eq!(reason.to_string(), text);
        check(reason, text);
    }
}

#[test]
fn every_verdict_round_trips_to_todays_string() {
    check(Verdict::Allow, "allow");
    check(Verdict::Deny, "deny");
    assert_eq!(Verdict::Allow.as_str(), "allow");
    assert_eq!(Verdict::Deny.as_str(), "deny");
}

#[test]
fn unknown_strings_land_in_the_catch_all_and_keep_their_text() {
    // Token failure codes, backend error classes and codes from other versions' records.
    for text in [
        "token_expired",
        "timeout",
        "circuit_open",
        "log_repaired",
        "no_such_reason",
    ] {
        check(Reason::Other(text.to_owned()), text);
        assert_eq!(Reason::from(text), Reason::Other(text.to_owned()));
    }
    for text in ["replay", "no_such_stage"] {
        check(Stage::Other(text.to_owned()), text);
        assert_eq!(Stage::from(text), Stage::Other(text.to_owned()));
    }
}
