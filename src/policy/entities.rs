//! The Cedar entities and context records of a request: the principal and actor from the
//! token, the tool and its server from the registry, the extra entities of `entities.json`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression, Schema};
use serde_json::Value;

use super::{ENTITIES_FILE, NAMESPACE, PolicyError, PolicyLoadError};
use crate::auth::VerifiedToken;
use crate::tools::Tool;

/// The entity types a request names, parsed once: parsing a type name runs Cedar's parser,
/// which would otherwise happen several times per request.
static TYPE_NAMES: std::sync::LazyLock<BTreeMap<&'static str, cedar_policy::EntityTypeName>> =
    std::sync::LazyLock::new(|| {
        ["Agent", "User", "Group", "Tool", "McpServer", "Action"]
            .into_iter()
            .filter_map(|t| Some((t, format!("{NAMESPACE}::{t}").parse().ok()?)))
            .collect()
    });

pub(super) fn uid(type_name: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let ty = match TYPE_NAMES.get(type_name) {
        Some(ty) => ty.clone(),
        None => format!("{NAMESPACE}::{type_name}")
            .parse()
            .map_err(|e: cedar_policy::ParseErrors| PolicyError::Request(e.to_string()))?,
    };
    Ok(EntityUid::from_type_name_and_id(
        ty,
        cedar_policy::EntityId::new(id),
    ))
}

/// A claim's value as a tag: strings as they are, anything else as compact JSON.
pub(super) fn tag_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The principal: `Agent::"<sub>"` for a token acting for itself, `User::"<sub>"` when the token
/// carries an `act` claim (an agent acting on the subject's behalf). Groups become parents and
/// every claim a string tag.
pub(super) fn principal_entity(token: &VerifiedToken) -> Result<Entity, PolicyError> {
    let type_name = if token.actors.is_empty() {
        "Agent"
    } else {
        "User"
    };
    let principal = uid(type_name, &token.subject)?;
    let parents = token
        .groups
        .iter()
        .map(|g| uid("Group", g))
        .collect::<Result<HashSet<_>, _>>()?;
    let attrs = [
        (
            "iss".to_owned(),
            RestrictedExpression::new_string(token.issuer.clone()),
        ),
        (
            "sub".to_owned(),
            RestrictedExpression::new_string(token.subject.clone()),
        ),
    ];
    let claims = token
        .claims
        .to_map()
        .map_err(|e| PolicyError::Request(e.to_string()))?;
    let tags = claims
        .into_iter()
        .map(|(k, v)| (k, RestrictedExpression::new_string(tag_text(v))));
    Entity::new_with_tags(principal, attrs, parents, tags)
        .map_err(|e| PolicyError::Request(e.to_string()))
}

/// The acting agent of a delegated token, if any.
pub(super) fn actor_entity(token: &VerifiedToken) -> Result<Option<Entity>, PolicyError> {
    let Some(actor) = token.actors.first() else {
        return Ok(None);
    };
    let uid = uid("Agent", actor)?;
    let attrs = [
        (
            "iss".to_owned(),
            RestrictedExpression::new_string(token.issuer.clone()),
        ),
        (
            "sub".to_owned(),
            RestrictedExpression::new_string(actor.clone()),
        ),
    ];
    Entity::new_with_tags(uid, attrs, [], [])
        .map(Some)
        .map_err(|e| PolicyError::Request(e.to_string()))
}

/// `context.session`; without a request id (a listing, which is not a call) the id is an
/// unknown for partial evaluation.
pub(super) fn session_expr(
    token: &VerifiedToken,
    now: i64,
    request_id: Option<&str>,
) -> Result<RestrictedExpression, PolicyError> {
    let (hour, weekday) = hour_and_weekday(now);
    let mut pairs = vec![
        (
            "request_time".to_owned(),
            RestrictedExpression::new_long(now),
        ),
        (
            "request_id".to_owned(),
            request_id.map_or_else(
                || RestrictedExpression::new_unknown("request_id"),
                |id| RestrictedExpression::new_string(id.to_owned()),
            ),
        ),
        ("hour_utc".to_owned(), RestrictedExpression::new_long(hour)),
        (
            "weekday_utc".to_owned(),
            RestrictedExpression::new_long(weekday),
        ),
        (
            "delegation_depth".to_owned(),
            RestrictedExpression::new_long(token.actors.len() as i64),
        ),
    ];
    if let Some(actor) = token.actors.first() {
        pairs.push((
            "actor".to_owned(),
            RestrictedExpression::new_entity_uid(uid("Agent", actor)?),
        ));
    }
    RestrictedExpression::new_record(pairs).map_err(|e| PolicyError::Request(e.to_string()))
}

/// UTC hour (0-23) and ISO weekday (1 = Monday .. 7 = Sunday) of a Unix time.
pub fn hour_and_weekday(unix: i64) -> (i64, i64) {
    let days = unix.div_euclid(86_400);
    let hour = unix.rem_euclid(86_400) / 3600;
    // 1970-01-01 was a Thursday (ISO weekday 4).
    let weekday = (days + 3).rem_euclid(7) + 1;
    (hour, weekday)
}

pub(super) fn token_expr(token: &VerifiedToken) -> Result<RestrictedExpression, PolicyError> {
    let strings = |items: &mut dyn Iterator<Item = &String>| {
        RestrictedExpression::new_set(
            items
                .map(|s| RestrictedExpression::new_string(s.clone()))
                .collect::<Vec<_>>(),
        )
    };
    let mut pairs = vec![
        (
            "iss".to_owned(),
            RestrictedExpression::new_string(token.issuer.clone()),
        ),
        (
            "sub".to_owned(),
            RestrictedExpression::new_string(token.subject.clone()),
        ),
        ("aud".to_owned(), strings(&mut token.audiences.iter())),
        ("scopes".to_owned(), strings(&mut token.scopes.iter())),
    ];
    if let Some(c) = &token.client_id {
        pairs.push((
            "client_id".to_owned(),
            RestrictedExpression::new_string(c.clone()),
        ));
    }
    if let Some(j) = &token.jti {
        pairs.push((
            "jti".to_owned(),
            RestrictedExpression::new_string(j.clone()),
        ));
    }
    RestrictedExpression::new_record(pairs).map_err(|e| PolicyError::Request(e.to_string()))
}

/// Largest `entities.json` read.
const MAX_ENTITIES_BYTES: u64 = 16 * 1024 * 1024;

/// Entity types `entities.json` may not define: principals come from the token, tools,
/// servers and actions from the registry and the schema.
const RESERVED_ENTITY_TYPES: &[&str] = &["Agent", "User", "Tool", "McpServer"];

/// Reads `entities.json` of the policy directory, if present, validated against the schema.
pub(super) fn load_extra_entities(
    dir: &Path,
    schema: &Schema,
) -> Result<Option<(String, Vec<Entity>)>, PolicyLoadError> {
    let path = dir.join(ENTITIES_FILE);
    let io = |source| PolicyLoadError::Io {
        path: path.clone(),
        source,
    };
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let entities_error = |message: String| PolicyLoadError::Entities { message };
    if len > MAX_ENTITIES_BYTES {
        return Err(entities_error(format!(
            "larger than {MAX_ENTITIES_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let entities = Entities::from_json_str(&text, Some(schema))
        .map_err(|e| entities_error(format!("{e}: {}", error_chain(&e))))?;
    let mut out = Vec::new();
    for entity in entities {
        let uid = entity.uid();
        let basename = uid.type_name().basename();
        if basename == "Action" {
            // Parsing with a schema adds the schema's action entities; they are already in
            // the static set (and Cedar refuses an action that differs from the schema's).
            continue;
        }
        if RESERVED_ENTITY_TYPES.contains(&basename) {
            return Err(entities_error(format!(
                "`{uid}`: entities of type `{basename}` come from tokens, the tool registry or the schema, not from `{ENTITIES_FILE}`"
            )));
        }
        out.push(entity);
    }
    Ok(Some((text, out)))
}

/// `McpServer::"<server>"`, the parent of its tools; errors as the text the load reports.
pub(super) fn server_entity(server: &str) -> Result<Entity, String> {
    let uid = uid("McpServer", server).map_err(|e| e.to_string())?;
    Entity::new(
        uid,
        [(
            "kind".to_owned(),
            RestrictedExpression::new_string("http".to_owned()),
        )]
        .into(),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())
}

/// The causes of an error, joined: Cedar's entity errors keep the useful part in `source`.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

pub(super) fn tool_entity(tool: &Tool) -> Result<Entity, PolicyError> {
    let a = tool.annotations;
    let attrs = [
        (
            "name".to_owned(),
            RestrictedExpression::new_string(tool.name.clone()),
        ),
        (
            "server".to_owned(),
            RestrictedExpression::new_string(tool.server.clone()),
        ),
        (
            "readOnly".to_owned(),
            RestrictedExpression::new_bool(a.read_only),
        ),
        (
            "destructive".to_owned(),
            RestrictedExpression::new_bool(a.destructive),
        ),
        (
            "idempotent".to_owned(),
            RestrictedExpression::new_bool(a.idempotent),
        ),
        (
            "openWorld".to_owned(),
            RestrictedExpression::new_bool(a.open_world),
        ),
    ];
    let parent = uid("McpServer", &tool.server)?;
    Entity::new(uid("Tool", &tool.id)?, attrs.into(), [parent].into())
        .map_err(|e| PolicyError::Request(e.to_string()))
}
