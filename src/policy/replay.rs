//! Re-deciding a recorded Cedar request (`policy.request` of a decision record) against a
//! snapshot, so a recorded decision replays identically under the policy set it was made
//! with. A request of the current format (`version` 2) is read with Cedar's own JSON entry
//! points; one of the first format (no `version`) has its context rebuilt with the same typed
//! conversions as a live call.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, Request, RestrictedExpression,
};
use serde_json::Value;
use serde_json::value::RawValue;

use super::recorded::RECORD_VERSION;
use super::{PolicyDecision, PolicyError, PolicySnapshot, index, uid};

fn bad(message: impl Into<String>) -> PolicyError {
    PolicyError::Request(message.into())
}

fn string_of<'a>(value: &'a Value, key: &str) -> Result<&'a str, PolicyError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("recorded request lacks `{key}`")))
}

fn long_of(value: &Value, key: &str) -> Result<i64, PolicyError> {
    value
        .get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| bad(format!("recorded request lacks `{key}`")))
}

fn strings(value: &Value, key: &str) -> RestrictedExpression {
    let items = value
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| RestrictedExpression::new_string(s.to_owned()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    RestrictedExpression::new_set(items)
}

fn token_expr(token: &Value) -> Result<RestrictedExpression, PolicyError> {
    let mut pairs = vec![
        (
            "iss".to_owned(),
            RestrictedExpression::new_string(string_of(token, "iss")?.to_owned()),
        ),
        (
            "sub".to_owned(),
            RestrictedExpression::new_string(string_of(token, "sub")?.to_owned()),
        ),
        ("aud".to_owned(), strings(token, "aud")),
        ("scopes".to_owned(), strings(token, "scopes")),
    ];
    for key in ["client_id", "jti"] {
        if let Some(v) = token.get(key).and_then(Value::as_str) {
            pairs.push((
                key.to_owned(),
                RestrictedExpression::new_string(v.to_owned()),
            ));
        }
    }
    RestrictedExpression::new_record(pairs).map_err(|e| bad(e.to_string()))
}

fn session_expr(session: &Value) -> Result<RestrictedExpression, PolicyError> {
    let mut pairs = vec![
        (
            "request_time".to_owned(),
            RestrictedExpression::new_long(long_of(session, "request_time")?),
        ),
        (
            "request_id".to_owned(),
            RestrictedExpression::new_string(string_of(session, "request_id")?.to_owned()),
        ),
        (
            "hour_utc".to_owned(),
            RestrictedExpression::new_long(long_of(session, "hour_utc")?),
        ),
        (
            "weekday_utc".to_owned(),
            RestrictedExpression::new_long(long_of(session, "weekday_utc")?),
        ),
        (
            "delegation_depth".to_owned(),
            RestrictedExpression::new_long(long_of(session, "delegation_depth")?),
        ),
    ];
    if let Some(actor) = session.get("actor").and_then(Value::as_str) {
        pairs.push((
            "actor".to_owned(),
            RestrictedExpression::new_entity_uid(uid("Agent", actor)?),
        ));
    }
    RestrictedExpression::new_record(pairs).map_err(|e| bad(e.to_string()))
}

/// A recorded request rebuilt: its tool, the Cedar request, the entities it recorded.
type Rebuilt = (String, Request, Vec<Entity>);

impl PolicySnapshot {
    /// Decides a recorded Cedar request (the `policy.request` of a decision record) against
    /// this snapshot. The recorded request is returned unchanged in the decision.
    pub fn decide_recorded(&self, recorded: &RawValue) -> Result<PolicyDecision, PolicyError> {
        let request: Value = serde_json::from_str(recorded.get())
            .map_err(|e| bad(format!("recorded request: {e}")))?;
        let (tool, cedar_request, per_request) = match request.get("version") {
            None => self.rebuild_first_format(&request)?,
            Some(v) if v.as_u64() == Some(RECORD_VERSION) => self.rebuild(request)?,
            Some(v) => return Err(bad(format!("unknown recorded request version `{v}`"))),
        };
        let static_entities = &self.tool_request(&tool)?.entities;
        // The snapshot's own tool, server and action entities are the ones it decides with;
        // the record adds what only the request knows (the principal and actor).
        let per_request = per_request
            .into_iter()
            .filter(|e| static_entities.get(&e.uid()).is_none());
        let entities = static_entities
            .clone()
            .add_entities(per_request, None)
            .map_err(|e| bad(e.to_string()))?;
        let index::Combined {
            allowed,
            determining_policies,
            errors,
            erroring_policies,
        } = Authorizer::new()
            .is_authorized(&cedar_request, self.whole_set()?, &entities)
            .into();
        Ok(PolicyDecision {
            allowed,
            determining_policies,
            errors,
            erroring_policies,
            policy_set_hash: self.policy_set_hash.clone(),
            schema_hash: self.schema_hash.clone(),
            request: recorded.to_owned(),
        })
    }

    /// A request of the current format: uids, context and entities in Cedar's JSON formats.
    fn rebuild(&self, mut request: Value) -> Result<Rebuilt, PolicyError> {
        let mut take = |key: &str| {
            request
                .get_mut(key)
                .map(Value::take)
                .ok_or_else(|| bad(format!("recorded request lacks `{key}`")))
        };
        let parse_uid = |key: &str, value: Value| {
            EntityUid::from_json(value).map_err(|e| bad(format!("recorded `{key}`: {e}")))
        };
        let principal = parse_uid("principal", take("principal")?)?;
        let action = parse_uid("action", take("action")?)?;
        let resource = parse_uid("resource", take("resource")?)?;
        let context = Context::from_json_value(take("context")?, Some((&self.schema, &action)))
            .map_err(|e| bad(format!("recorded `context`: {e}")))?;
        let entities = Entities::from_json_value(take("entities")?, None)
            .map_err(|e| bad(format!("recorded `entities`: {e}")))?;
        let tool = action.id().unescaped().to_owned();
        let request = Request::new(principal, action, resource, context, Some(&self.schema))
            .map_err(|e| bad(e.to_string()))?;
        Ok((tool, request, entities.into_iter().collect()))
    }

    /// A request of the first format: uids as Cedar text, arguments as sent, the actor as a
    /// plain string.
    fn rebuild_first_format(&self, request: &Value) -> Result<Rebuilt, PolicyError> {
        let parse_uid = |key: &str| -> Result<EntityUid, PolicyError> {
            EntityUid::from_str(string_of(request, key)?)
                .map_err(|e| bad(format!("recorded `{key}`: {e}")))
        };
        let principal = parse_uid("principal")?;
        let action = parse_uid("action")?;
        let resource = parse_uid("resource")?;
        let tool = action.id().unescaped().to_owned();
        let input_type = self
            .input_types
            .get(&tool)
            .ok_or_else(|| bad(format!("tool `{tool}` is not in the loaded schema")))?;
        let context = request
            .get("context")
            .ok_or_else(|| bad("recorded request lacks `context`"))?;
        let empty = Value::Object(Default::default());
        let input = input_type
            .to_cedar(context.get("input").unwrap_or(&empty), "")
            .map_err(PolicyError::Argument)?;
        let context = Context::from_pairs([
            ("input".to_owned(), input),
            (
                "token".to_owned(),
                token_expr(context.get("token").unwrap_or(&empty))?,
            ),
            (
                "session".to_owned(),
                session_expr(context.get("session").unwrap_or(&empty))?,
            ),
        ])
        .map_err(|e| bad(e.to_string()))?;
        let cedar_request = Request::new(principal, action, resource, context, Some(&self.schema))
            .map_err(|e| bad(e.to_string()))?;
        let mut per_request = Vec::new();
        if let Some(items) = request.get("entities").and_then(Value::as_array) {
            for item in items {
                per_request.push(
                    Entity::from_json_value(item.clone(), None).map_err(|e| bad(e.to_string()))?,
                );
            }
        }
        Ok((tool, cedar_request, per_request))
    }
}
