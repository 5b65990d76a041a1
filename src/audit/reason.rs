//! The vocabulary of a decision: which stage decided and the stable reason code, as enums
//! that serialise to the strings the decision log has always held.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The stage of the pipeline (or the event) that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Token verification.
    Auth,
    /// Reading the request body.
    Request,
    /// The tool lookup.
    Tool,
    /// The tool's required scopes.
    Scope,
    /// The arguments against the tool's input schema.
    Arguments,
    /// Cedar.
    Policy,
    /// The backend call (dispatch records).
    Dispatch,
    /// The admin API's audience and scope check.
    Admin,
    /// An MCP session opened or closed.
    Session,
    /// A stage this build does not know, from an old or newer record.
    Other(String),
}

impl Stage {
    /// The stage as the log spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Stage::Auth => "auth",
            Stage::Request => "request",
            Stage::Tool => "tool",
            Stage::Scope => "scope",
            Stage::Arguments => "arguments",
            Stage::Policy => "policy",
            Stage::Dispatch => "dispatch",
            Stage::Admin => "admin",
            Stage::Session => "session",
            Stage::Other(other) => other,
        }
    }
}

impl From<&str> for Stage {
    fn from(s: &str) -> Self {
        match s {
            "auth" => Stage::Auth,
            "request" => Stage::Request,
            "tool" => Stage::Tool,
            "scope" => Stage::Scope,
            "arguments" => Stage::Arguments,
            "policy" => Stage::Policy,
            "dispatch" => Stage::Dispatch,
            "admin" => Stage::Admin,
            "session" => Stage::Session,
            other => Stage::Other(other.to_owned()),
        }
    }
}

/// The stable reason code of a decision or a dispatch outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Not decided yet (a record being filled in).
    Pending,
    /// Policy permitted the call (or the admin check passed).
    Allowed,
    /// A tool listing.
    Listed,
    /// A policy forbade the call, or none permitted it.
    PolicyDenied,
    /// The authorization request could not be evaluated.
    PolicyError,
    /// No tool with the requested id.
    UnknownTool,
    /// The token lacks a scope the tool (or the admin API) requires.
    InsufficientScope,
    /// The body or the arguments are malformed.
    BadRequest,
    /// The body exceeds the limit.
    PayloadTooLarge,
    /// The body did not arrive in time.
    RequestTimeout,
    /// The arguments fail the tool's input schema.
    InvalidArguments,
    /// An argument cannot be represented for Cedar.
    ArgumentNotRepresentable,
    /// The backend answered.
    Dispatched,
    /// The backend answered with its own error.
    ToolError,
    /// An MCP session was opened.
    SessionOpened,
    /// An MCP session was closed.
    SessionClosed,
    /// An MCP request came from an `Origin` not allowed.
    OriginNotAllowed,
    /// The broker holds as many MCP sessions as it may.
    TooManySessions,
    /// Any other code: a token failure (`token_expired`, ...), a backend error class
    /// (`timeout`, ...), or a reason from an old or newer record.
    Other(String),
}

impl Reason {
    /// The reason code as the log spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Pending => "pending",
            Reason::Allowed => "allowed",
            Reason::Listed => "listed",
            Reason::PolicyDenied => "policy_denied",
            Reason::PolicyError => "policy_error",
            Reason::UnknownTool => "unknown_tool",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::BadRequest => "bad_request",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::RequestTimeout => "request_timeout",
            Reason::InvalidArguments => "invalid_arguments",
            Reason::ArgumentNotRepresentable => "argument_not_representable",
            Reason::Dispatched => "dispatched",
            Reason::ToolError => "tool_error",
            Reason::SessionOpened => "session_opened",
            Reason::SessionClosed => "session_closed",
            Reason::OriginNotAllowed => "origin_not_allowed",
            Reason::TooManySessions => "too_many_sessions",
            Reason::Other(other) => other,
        }
    }
}

impl From<&str> for Reason {
    fn from(s: &str) -> Self {
        match s {
            "pending" => Reason::Pending,
            "allowed" => Reason::Allowed,
            "listed" => Reason::Listed,
            "policy_denied" => Reason::PolicyDenied,
            "policy_error" => Reason::PolicyError,
            "unknown_tool" => Reason::UnknownTool,
            "insufficient_scope" => Reason::InsufficientScope,
            "bad_request" => Reason::BadRequest,
            "payload_too_large" => Reason::PayloadTooLarge,
            "request_timeout" => Reason::RequestTimeout,
            "invalid_arguments" => Reason::InvalidArguments,
            "argument_not_representable" => Reason::ArgumentNotRepresentable,
            "dispatched" => Reason::Dispatched,
            "tool_error" => Reason::ToolError,
            "session_opened" => Reason::SessionOpened,
            "session_closed" => Reason::SessionClosed,
            "origin_not_allowed" => Reason::OriginNotAllowed,
            "too_many_sessions" => Reason::TooManySessions,
            other => Reason::Other(other.to_owned()),
        }
    }
}

// Display and serde go through `as_str` / `From<&str>`, so the text in logs, answers and
// records is the one spelling above.
impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Stage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Stage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Stage::from(String::deserialize(deserializer)?.as_str()))
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Reason::from(String::deserialize(deserializer)?.as_str()))
    }
}

#[cfg(test)]
mod tests;
