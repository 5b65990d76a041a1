//! The Cedar request of a decision as the log records it (`policy.request`), in Cedar's own
//! JSON formats, so that any Cedar binding can rebuild and re-decide it: uids as
//! `EntityUid::from_json` reads them, the context as `Context::from_json_value` reads it
//! against the schema (`{"__extn": …}` for decimals, `{"__entity": …}` for the actor), the
//! entities as `Entities::from_json_value` reads them.
//!
//! It is serialised straight from the token and the call on every decision, so what does not
//! change between calls (uids, `context.token`, entities) is kept as JSON text: per token in
//! `token_parts.rs`, per tool and policy load in `ToolRequest`.

use cedar_policy::{Entity, EntityUid};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{CallFacts, NAMESPACE, PolicyError, hour_and_weekday};
use crate::auth::VerifiedToken;
use crate::tools::input::{InputType, decimal_literal};

/// `policy.request.version` of records in Cedar's JSON formats. Records without it are of
/// the first format (uids as Cedar text, arguments as the caller sent them, the actor as a
/// plain string), which replay still reads.
pub const RECORD_VERSION: u64 = 2;

fn json_error(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Request(format!("recording the request: {e}"))
}

/// A uid as Cedar's JSON (`{"__entity": {"type": …, "id": …}}`), built once and kept.
pub(super) fn uid_json(uid: &EntityUid) -> Result<Box<RawValue>, PolicyError> {
    serde_json::value::to_raw_value(&uid.to_json_value().map_err(json_error)?).map_err(json_error)
}

/// An entity as Cedar's entity JSON, built once and kept.
pub(super) fn entity_json(entity: &Entity) -> Result<Box<RawValue>, PolicyError> {
    serde_json::value::to_raw_value(&entity.to_json_value().map_err(json_error)?)
        .map_err(json_error)
}

/// What a decision records besides the call's own facts, prepared ahead.
pub(super) struct Prepared<'a> {
    /// The principal's uid JSON.
    pub principal: &'a RawValue,
    /// The action's uid JSON.
    pub action: &'a RawValue,
    /// The resource's uid JSON.
    pub resource: &'a RawValue,
    /// `context.token` JSON.
    pub token_context: &'a RawValue,
    /// The principal (and actor) entities.
    pub token_entities: &'a [Box<RawValue>],
    /// The tool and its server entities.
    pub tool_entities: &'a [Box<RawValue>],
}

/// Serialises the recorded request of one decision.
pub(super) fn record(
    prepared: &Prepared<'_>,
    input_type: &InputType,
    token: &VerifiedToken,
    call: &CallFacts<'_>,
) -> Result<Box<RawValue>, PolicyError> {
    serde_json::value::to_raw_value(&RecordedRequest {
        version: RECORD_VERSION,
        principal: prepared.principal,
        action: prepared.action,
        resource: prepared.resource,
        context: RecordedContext {
            input: CedarValue {
                ty: input_type,
                value: call.logged_arguments.unwrap_or(call.arguments),
            },
            token: prepared.token_context,
            session: RecordedSession { token, call },
        },
        entities: RecordedEntities(prepared.token_entities, prepared.tool_entities),
    })
    .map_err(json_error)
}

#[derive(Serialize)]
struct RecordedRequest<'a> {
    version: u64,
    principal: &'a RawValue,
    action: &'a RawValue,
    resource: &'a RawValue,
    context: RecordedContext<'a>,
    entities: RecordedEntities<'a>,
}

#[derive(Serialize)]
struct RecordedContext<'a> {
    input: CedarValue<'a>,
    token: &'a RawValue,
    session: RecordedSession<'a>,
}

/// An argument value as Cedar's JSON of its declared type: decimals as `__extn`, a whole
/// float where a `Long` is declared as an integer, `null` (absent) fields left out. A value
/// that does not have the declared type (only a redacted one can: the live call converted)
/// is written as it is.
struct CedarValue<'a> {
    ty: &'a InputType,
    value: &'a Value,
}

impl Serialize for CedarValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.ty, self.value) {
            (InputType::Long, Value::Number(n)) if !n.is_i64() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    serializer.serialize_i64(f as i64)
                }
                _ => self.value.serialize(serializer),
            },
            (InputType::Decimal, Value::Number(n)) => match decimal_literal(&n.to_string()) {
                Ok(literal) => Extension("decimal", &literal).serialize(serializer),
                Err(_) => self.value.serialize(serializer),
            },
            (InputType::Set(inner), Value::Array(items)) => {
                serializer.collect_seq(items.iter().map(|value| CedarValue { ty: inner, value }))
            }
            (InputType::Record(fields), Value::Object(map)) => {
                let mut out = serializer.serialize_map(None)?;
                for (name, value) in map.iter().filter(|(_, v)| !v.is_null()) {
                    match fields.get(name) {
                        Some(field) => out.serialize_entry(
                            name,
                            &CedarValue {
                                ty: &field.ty,
                                value,
                            },
                        )?,
                        None => out.serialize_entry(name, value)?,
                    }
                }
                out.end()
            }
            _ => self.value.serialize(serializer),
        }
    }
}

/// `{"__extn": {"fn": …, "arg": …}}`.
struct Extension<'a>(&'a str, &'a str);

impl Serialize for Extension<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Call<'a> {
            #[serde(rename = "fn")]
            function: &'a str,
            arg: &'a str,
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(
            "__extn",
            &Call {
                function: self.0,
                arg: self.1,
            },
        )?;
        map.end()
    }
}

/// `context.token`: the typed subset of the claims, as `super::token_expr` builds it.
pub(super) struct RecordedToken<'a>(pub &'a VerifiedToken);

impl Serialize for RecordedToken<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let token = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("iss", &token.issuer)?;
        map.serialize_entry("sub", &token.subject)?;
        map.serialize_entry("aud", &token.audiences)?;
        map.serialize_entry("scopes", &token.scopes)?;
        if let Some(c) = &token.client_id {
            map.serialize_entry("client_id", c)?;
        }
        if let Some(j) = &token.jti {
            map.serialize_entry("jti", j)?;
        }
        map.end()
    }
}

/// `context.session`: time, request id and delegation, as `super::session_expr` builds it.
struct RecordedSession<'a> {
    token: &'a VerifiedToken,
    call: &'a CallFacts<'a>,
}

impl Serialize for RecordedSession<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (hour, weekday) = hour_and_weekday(self.call.now);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("request_time", &self.call.now)?;
        map.serialize_entry("request_id", self.call.request_id)?;
        map.serialize_entry("hour_utc", &hour)?;
        map.serialize_entry("weekday_utc", &weekday)?;
        map.serialize_entry("delegation_depth", &self.token.actors.len())?;
        if let Some(actor) = self.token.actors.first() {
            map.serialize_entry("actor", &AgentRef(actor))?;
        }
        map.end()
    }
}

/// `{"__entity": {"type": "Toolgate::Agent", "id": …}}`.
struct AgentRef<'a>(&'a str);

impl Serialize for AgentRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Uid<'a>(&'a str);
        impl Serialize for Uid<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", &format_args!("{NAMESPACE}::Agent"))?;
                map.serialize_entry("id", self.0)?;
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("__entity", &Uid(self.0))?;
        map.end()
    }
}

/// The request's entities: the token's (principal, actor), then the tool's (tool, server).
struct RecordedEntities<'a>(&'a [Box<RawValue>], &'a [Box<RawValue>]);

impl Serialize for RecordedEntities<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len() + self.1.len()))?;
        for entity in self.0.iter().chain(self.1) {
            seq.serialize_element(entity)?;
        }
        seq.end()
    }
}
