//! Stage 3: authorization with Cedar. Loads and strictly validates the policy set against a
//! schema generated from the stub in `schemas/` plus every registered tool's input schema,
//! and decides calls: default deny, forbid overrides permit, determining policy ids kept.
//!
//! Architecture invariant: nothing here does I/O on the request path. Files are read only by
//! [`PolicyEngine::load`]; a decision reads the in-memory [`PolicySnapshot`].

pub mod index;
mod recorded;
mod replay;
pub mod testing;
mod token_parts;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, Policy, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, SchemaFragment, ValidationMode, Validator,
};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::auth::{Claims, VerifiedToken};
pub use crate::tools::input::{ArgumentsText, InputType, MappingError};
use crate::tools::{ArgumentProblem, Registry, Tool};

/// Optional file of extra entities (groups hierarchy, ...) inside the policy directory.
pub const ENTITIES_FILE: &str = "entities.json";

/// The Cedar namespace of every toolgate entity and action.
pub const NAMESPACE: &str = "Toolgate";

/// An error loading or validating policies and schema. Messages name the file, line and policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// A file or directory could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The schema stub does not parse.
    #[error("schema `{path}`: {message}")]
    Schema {
        /// The stub file.
        path: PathBuf,
        /// What Cedar said.
        message: String,
    },
    /// A tool's input schema cannot be mapped to a Cedar type.
    #[error("tool `{tool}`: input schema {source}")]
    ToolMapping {
        /// The tool id.
        tool: String,
        /// Where and why.
        source: MappingError,
    },
    /// A policy file does not parse.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What Cedar said.
        message: String,
    },
    /// A policy has no `@id` annotation.
    #[error("{file}:{line}: policy has no `@id(\"...\")` annotation")]
    MissingId {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
    },
    /// A policy carries an annotation toolgate gives no meaning to (yet): acting on it as a
    /// plain policy would silently drop what its author meant.
    #[error(
        "{file}:{line}: policy `{id}` has annotation `@{annotation}`, which toolgate does not know (known: {})",
        known_annotations()
    )]
    UnknownAnnotation {
        /// The file.
        file: String,
        /// 1-based line of the annotation.
        line: usize,
        /// The policy's `@id`.
        id: String,
        /// The annotation's name, without `@`.
        annotation: String,
    },
    /// Two policies share an `@id`.
    #[error("policy id `{id}` is used twice: in `{first}` and `{second}`")]
    DuplicateId {
        /// The id.
        id: String,
        /// Where it first appears.
        first: String,
        /// Where it appears again.
        second: String,
    },
    /// Templates are not supported yet.
    #[error("{file}: policy templates are not supported")]
    Template {
        /// The file.
        file: String,
    },
    /// `entities.json` is invalid: unreadable JSON, not matching the schema, a reserved
    /// entity type, or a duplicate of a generated entity.
    #[error("{ENTITIES_FILE}: {message}")]
    Entities {
        /// What is wrong.
        message: String,
    },
    /// Strict validation failed (errors and warnings alike).
    #[error("policy validation failed:\n{}", .0.join("\n"))]
    Validation(Vec<String>),
}

/// A failure while deciding one request; the call is denied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// An argument cannot be represented in the Cedar request.
    #[error("argument at `{}`: {}", .0.path, .0.message)]
    Argument(ArgumentProblem),
    /// The Cedar request could not be built (a bug or a schema mismatch).
    #[error("cannot build the authorization request: {0}")]
    Request(String),
}

/// The outcome of one authorization.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PolicyDecision {
    /// Whether the call is allowed.
    pub allowed: bool,
    /// `@id`s of the policies that determined the decision (empty for the default deny).
    pub determining_policies: Vec<String>,
    /// Evaluation errors: a policy whose condition errors is skipped, so these matter.
    pub errors: Vec<String>,
    /// `@id`s of the policies whose evaluation errored (and were skipped); absent from
    /// records written before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub erroring_policies: Vec<String>,
    /// SHA-256 of the policy set the decision was made with.
    pub policy_set_hash: String,
    /// SHA-256 of the generated schema.
    pub schema_hash: String,
    /// The Cedar request as evaluated: principal, action, resource, context, entities, as
    /// JSON text (written once per decision, straight from the token and the call).
    pub request: Box<RawValue>,
}

/// The facts of a call the policy sees besides the token.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    /// The tool.
    pub tool: &'a Tool,
    /// Arguments, already checked against the tool's input schema.
    pub arguments: &'a Value,
    /// The JSON text `arguments` was parsed from, when it came as text: decimals are read
    /// from it, never from a float.
    pub arguments_text: Option<ArgumentsText<'a>>,
    /// The request id.
    pub request_id: &'a str,
    /// Request time, Unix seconds.
    pub now: i64,
    /// The arguments as the decision log keeps them (sensitive ones redacted), when they
    /// differ from `arguments`: the recorded request then holds these.
    pub logged_arguments: Option<&'a Value>,
}

/// An immutable, validated policy set with its schema and per-tool data, built once per load.
pub struct PolicySnapshot {
    schema: Schema,
    schema_text: String,
    /// Every policy `@id`, sorted.
    policy_ids: Vec<String>,
    /// The whole policy set, parsed again from `policy_sources` on first use: only the
    /// unindexed reference path needs it, so a serving broker keeps just the index's copy.
    whole: OnceLock<Result<PolicySet, String>>,
    policy_sources: Vec<(String, String)>,
    input_types: BTreeMap<String, InputType>,
    /// Per tool, what a decision on it starts from, built and checked once per load.
    tool_requests: BTreeMap<String, ToolRequest>,
    /// Per tool (and per named principal), the policies that can apply.
    index: index::PolicyIndex,
    /// SHA-256 over the policy files (names and contents).
    pub policy_set_hash: String,
    /// SHA-256 over the generated schema text.
    pub schema_hash: String,
    /// Unique to this load, so that entities cached per token are never reused across loads.
    generation: u64,
}

/// Counts policy loads, for [`PolicySnapshot::generation`].
static SNAPSHOT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl PolicySnapshot {
    /// The generated Cedar schema text (stub plus per-tool actions).
    pub fn schema_text(&self) -> &str {
        &self.schema_text
    }

    /// Number of policies.
    pub fn policy_count(&self) -> usize {
        self.policy_ids.len()
    }

    /// The whole policy set (see `whole`).
    fn whole_set(&self) -> Result<&PolicySet, PolicyError> {
        self.whole
            .get_or_init(|| parse_policies(&self.policy_sources).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| PolicyError::Request(e.clone()))
    }

    fn tool_request(&self, tool_id: &str) -> Result<&ToolRequest, PolicyError> {
        self.tool_requests.get(tool_id).ok_or_else(|| {
            PolicyError::Request(format!("tool `{tool_id}` is not in the loaded schema"))
        })
    }

    /// Every policy `@id`, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        self.policy_ids.clone()
    }

    /// The policy files this snapshot was loaded from, as (name, text).
    pub fn policy_sources(&self) -> &[(String, String)] {
        &self.policy_sources
    }
}

/// What every decision on one tool shares, built once per load: its action and resource,
/// and the static entities a decision on it can reach (its action and the `call_tool`
/// group, the tool, its server, and the `entities.json` entities) with their transitive
/// closure computed. A decision adds only the principal (and actor) to a copy of
/// `entities`, so its cost does not grow with the number of tools.
struct ToolRequest {
    /// `Toolgate::Action::"<tool>"`.
    action: EntityUid,
    /// `Toolgate::Tool::"<tool>"`.
    resource: EntityUid,
    /// `action` as Cedar's JSON, for the recorded request.
    recorded_action: Box<RawValue>,
    /// `resource` as Cedar's JSON, for the recorded request.
    recorded_resource: Box<RawValue>,
    /// The tool and its server entities as Cedar's JSON, for the recorded request.
    recorded_entities: Vec<Box<RawValue>>,
    /// The static entities, transitively closed.
    entities: Entities,
}

/// Holds the current policy snapshot and swaps it atomically on reload.
pub struct PolicyEngine {
    current: ArcSwap<PolicySnapshot>,
    authorizer: Authorizer,
    /// Serialises reloads, so that two concurrent reloads cannot swap in an older set last.
    reload_lock: Mutex<()>,
    status: Mutex<ReloadStatus>,
    token_parts: token_parts::TokenPartsCache,
}

/// Counters and the last error of reloads since start, for `/readyz` and `/admin/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Reloads that swapped in a new set.
    pub reloads: u64,
    /// Reloads rejected because the new set failed to load or validate.
    pub rejected: u64,
    /// Why the last reload was rejected; cleared by the next successful one.
    pub last_error: Option<String>,
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// Whether the policy set or schema differs from the one it replaced.
    pub changed: bool,
    /// Number of policies now in force.
    pub policy_count: usize,
    /// Hash of the policy set now in force.
    pub policy_set_hash: String,
    /// Hash of the schema now in force.
    pub schema_hash: String,
}

impl PolicyEngine {
    /// Builds an engine from an already loaded snapshot.
    pub fn new(snapshot: PolicySnapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            authorizer: Authorizer::new(),
            reload_lock: Mutex::new(()),
            status: Mutex::new(ReloadStatus::default()),
            token_parts: token_parts::TokenPartsCache::new(),
        }
    }

    /// Loads and validates a new set completely, then swaps it in atomically; an invalid set
    /// is rejected (logged, counted, kept as the last error) and the current one keeps serving.
    pub fn reload(
        &self,
        schema_stub: &Path,
        policies_dir: &Path,
        tools: &Registry,
    ) -> Result<ReloadOutcome, PolicyLoadError> {
        let _serial = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = load_snapshot(schema_stub, policies_dir, tools);
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(snapshot) => {
                let old = self.current.load();
                let changed = old.policy_set_hash != snapshot.policy_set_hash
                    || old.schema_hash != snapshot.schema_hash;
                let outcome = ReloadOutcome {
                    changed,
                    policy_count: snapshot.policy_count(),
                    policy_set_hash: snapshot.policy_set_hash.clone(),
                    schema_hash: snapshot.schema_hash.clone(),
                };
                self.current.store(Arc::new(snapshot));
                status.reloads += 1;
                status.last_error = None;
                tracing::info!(
                    changed,
                    policies = outcome.policy_count,
                    policy_set_hash = %outcome.policy_set_hash,
                    "policy set reloaded"
                );
                Ok(outcome)
            }
            Err(e) => {
                status.rejected += 1;
                status.last_error = Some(e.to_string());
                tracing::error!(error = %e, dir = %policies_dir.display(), "policy reload rejected: the last good policy set keeps serving");
                Err(e)
            }
        }
    }

    /// Reload counters and the last rejection.
    pub fn reload_status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Loads, generates the schema for `tools`, and validates; the result can be swapped in.
    pub fn load(
        schema_stub: &Path,
        policies_dir: &Path,
        tools: &Registry,
    ) -> Result<PolicySnapshot, PolicyLoadError> {
        load_snapshot(schema_stub, policies_dir, tools)
    }

    /// Replaces the current snapshot (the caller has validated it by loading it).
    pub fn swap(&self, snapshot: PolicySnapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// Decides a call in full, evaluating the policies the index selects for the tool and
    /// principal (the same decision as the whole set, see `policy/index.rs`).
    pub fn decide(
        &self,
        token: &VerifiedToken,
        call: &CallFacts<'_>,
    ) -> Result<PolicyDecision, PolicyError> {
        self.decide_with(token, call, true)
    }

    /// Decides a call against the whole policy set, without the index: for the index's
    /// property test and benchmarks.
    pub fn decide_unindexed(
        &self,
        token: &VerifiedToken,
        call: &CallFacts<'_>,
    ) -> Result<PolicyDecision, PolicyError> {
        self.decide_with(token, call, false)
    }

    fn decide_with(
        &self,
        token: &VerifiedToken,
        call: &CallFacts<'_>,
        indexed: bool,
    ) -> Result<PolicyDecision, PolicyError> {
        let snap = self.current.load();
        let input_type = snap.input_types.get(&call.tool.id).ok_or_else(|| {
            PolicyError::Request(format!(
                "tool `{}` is not in the loaded schema",
                call.tool.id
            ))
        })?;
        let input = input_type
            .to_cedar_exact(call.arguments, "", call.arguments_text)
            .map_err(PolicyError::Argument)?;
        let tool = snap.tool_request(&call.tool.id)?;
        let parts = self.token_parts.get(token)?;
        let context = Context::from_pairs([
            ("input".to_owned(), input),
            ("token".to_owned(), parts.context.clone()),
            (
                "session".to_owned(),
                session_expr(token, call.now, Some(call.request_id))?,
            ),
        ])
        .map_err(|e| PolicyError::Request(e.to_string()))?;
        let principal_uid = &parts.principal_uid;
        // No per-request schema validation: every part of the request is built here to the
        // schema's shape, and `load_snapshot` checked those shapes against the schema
        // (`check_request_shapes`), with the arguments typed by the same `InputType` that
        // generated the action's context type.
        let request = Request::new(
            principal_uid.clone(),
            tool.action.clone(),
            tool.resource.clone(),
            context,
            None,
        )
        .map_err(|e| PolicyError::Request(e.to_string()))?;
        let entities = parts.entities_for(snap.generation, &call.tool.id, &tool.entities)?;
        let applicable = if indexed {
            snap.index.policies_for(&call.tool.id, principal_uid)
        } else {
            None
        };
        let index::Combined {
            allowed,
            determining_policies,
            errors,
            erroring_policies,
        } = match applicable {
            Some(applicable) => applicable.decide(&self.authorizer, &request, &entities),
            None => self
                .authorizer
                .is_authorized(&request, snap.whole_set()?, &entities)
                .into(),
        };
        for error in &errors {
            tracing::warn!(tool = %call.tool.id, %error, "policy evaluation error: the erroring policy was skipped");
        }
        let request = recorded::record(
            &recorded::Prepared {
                principal: &parts.recorded_principal,
                action: &tool.recorded_action,
                resource: &tool.recorded_resource,
                token_context: &parts.recorded_context,
                token_entities: &parts.recorded_entities,
                tool_entities: &tool.recorded_entities,
            },
            input_type,
            token,
            call,
        )?;
        Ok(PolicyDecision {
            allowed,
            determining_policies,
            errors,
            erroring_policies,
            policy_set_hash: snap.policy_set_hash.clone(),
            schema_hash: snap.schema_hash.clone(),
            request,
        })
    }

    /// Whether some call of this caller on this tool at time `now` could be allowed, whatever
    /// the arguments: Cedar partial evaluation with only `context.input` and the request id
    /// unknown. Everything else a call would know (principal, actor, delegation depth, token
    /// claims, time) is known, so a tool no call could reach is not listed. Used to filter
    /// tool listings only; calls are always decided in full.
    pub fn may_call(&self, token: &VerifiedToken, tool: &Tool, now: i64) -> bool {
        let snap = self.current.load();
        let (Ok(parts), Ok(tool_request)) =
            (self.token_parts.get(token), snap.tool_request(&tool.id))
        else {
            return false;
        };
        // Listing is rarer than calling: a principal with policies of its own gets the union
        // built here, so that partial evaluation sees every policy that could apply.
        let union;
        let policies = match snap.index.policies_for(&tool.id, &parts.principal_uid) {
            Some(index::Applicable {
                general,
                own: Some(own),
            }) => {
                let Ok(merged) =
                    PolicySet::from_policies(general.policies().chain(own.policies()).cloned())
                else {
                    return false;
                };
                union = merged;
                &union
            }
            Some(index::Applicable { general, own: None }) => general,
            // Not indexed means no policy can apply to this tool.
            None => return false,
        };
        let Ok(session) = session_expr(token, now, None) else {
            return false;
        };
        let Ok(context) = Context::from_pairs([
            (
                "input".to_owned(),
                RestrictedExpression::new_unknown("input"),
            ),
            ("token".to_owned(), parts.context.clone()),
            ("session".to_owned(), session),
        ]) else {
            return false;
        };
        let request = cedar_policy::RequestBuilder::default()
            .principal(parts.principal_uid.clone())
            .action(tool_request.action.clone())
            .resource(tool_request.resource.clone())
            .context(context)
            .build();
        let Ok(entities) = parts.entities_for(snap.generation, &tool.id, &tool_request.entities)
        else {
            return false;
        };
        let response = self
            .authorizer
            .is_authorized_partial(&request, policies, &entities);
        response.decision() != Some(CedarDecision::Deny)
    }
}

/// The entity types a request names, parsed once: parsing a type name runs Cedar's parser,
/// which would otherwise happen several times per request.
static TYPE_NAMES: std::sync::LazyLock<BTreeMap<&'static str, cedar_policy::EntityTypeName>> =
    std::sync::LazyLock::new(|| {
        ["Agent", "User", "Group", "Tool", "McpServer", "Action"]
            .into_iter()
            .filter_map(|t| Some((t, format!("{NAMESPACE}::{t}").parse().ok()?)))
            .collect()
    });

fn uid(type_name: &str, id: &str) -> Result<EntityUid, PolicyError> {
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
fn tag_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The principal: `Agent::"<sub>"` for a token acting for itself, `User::"<sub>"` when the token
/// carries an `act` claim (an agent acting on the subject's behalf). Groups become parents and
/// every claim a string tag.
fn principal_entity(token: &VerifiedToken) -> Result<Entity, PolicyError> {
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
fn actor_entity(token: &VerifiedToken) -> Result<Option<Entity>, PolicyError> {
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
fn session_expr(
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

fn token_expr(token: &VerifiedToken) -> Result<RestrictedExpression, PolicyError> {
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

/// The generated schema text of one tool's action (inside `namespace Toolgate`).
pub fn action_declaration(tool_id: &str, input: &InputType) -> String {
    format!(
        "  action \"{}\" in [call_tool] appliesTo {{\n    principal: [Agent, User],\n    resource: [Tool],\n    context: {{ input: {}, token: TokenClaims, session: Session }}\n  }};\n",
        tool_id.replace('\\', "\\\\").replace('"', "\\\""),
        input.cedar_type()
    )
}

/// Parses the schema stub text together with generated action declarations.
pub fn schema_from_parts(stub: &str, actions: &str) -> Result<Schema, String> {
    let (fragment, _) =
        SchemaFragment::from_cedarschema_str(stub).map_err(|e| format!("schema stub: {e}"))?;
    let text = schema_text_from_parts(stub, &fragment, actions)?;
    Schema::from_cedarschema_str(&text)
        .map(|(schema, _)| schema)
        .map_err(|e| e.to_string())
}

/// The whole schema as one Cedar schema file: the stub with the generated action
/// declarations put inside its `namespace Toolgate` block. Cedar refuses a namespace declared
/// twice in one file, and the text printed (and hashed) is the text the schema is built from.
/// `fragment` is the stub parsed.
fn schema_text_from_parts(
    stub: &str,
    fragment: &SchemaFragment,
    actions: &str,
) -> Result<String, String> {
    let one_block = || {
        format!(
            "the schema stub must declare everything inside one `namespace {NAMESPACE} {{ ... }}` block"
        )
    };
    let namespaces: Vec<String> = fragment
        .namespaces()
        .map(|n| n.map(|n| n.to_string()).unwrap_or_default())
        .collect();
    if namespaces != [NAMESPACE] {
        return Err(one_block());
    }
    // With one namespace and nothing outside it, the stub's last brace closes that namespace.
    let close = last_closing_brace(stub).ok_or_else(one_block)?;
    Ok(format!(
        "{}\n\n  // Generated by toolgate from the registered tools.\n{actions}{}",
        stub[..close].trim_end(),
        &stub[close..]
    ))
}

/// The byte offset of the last `}` of Cedar schema text outside strings and `//` comments.
fn last_closing_brace(text: &str) -> Option<usize> {
    let mut last = None;
    let mut in_string = false;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' if in_string => {
                chars.next();
            }
            '"' => in_string = !in_string,
            '/' if !in_string && chars.peek().is_some_and(|(_, n)| *n == '/') => {
                chars.find(|(_, n)| *n == '\n');
            }
            '}' if !in_string => last = Some(at),
            _ => {}
        }
    }
    last
}

fn load_snapshot(
    schema_stub: &Path,
    policies_dir: &Path,
    tools: &Registry,
) -> Result<PolicySnapshot, PolicyLoadError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PolicyLoadError::Io { path, source }
    };
    let stub = std::fs::read_to_string(schema_stub).map_err(io(schema_stub))?;
    let schema_error = |message: String| PolicyLoadError::Schema {
        path: schema_stub.to_owned(),
        message,
    };

    let mut input_types = BTreeMap::new();
    let mut generated = String::new();
    for tool in tools.iter() {
        let input = InputType::from_tool_schema(&tool.input_schema).map_err(|source| {
            PolicyLoadError::ToolMapping {
                tool: tool.id.clone(),
                source,
            }
        })?;
        generated.push_str(&action_declaration(&tool.id, &input));
        input_types.insert(tool.id.clone(), input);
    }

    let (stub_fragment, _) =
        SchemaFragment::from_cedarschema_str(&stub).map_err(|e| schema_error(format!("{e:?}")))?;
    let schema_text =
        schema_text_from_parts(&stub, &stub_fragment, &generated).map_err(schema_error)?;
    let (schema, _) = Schema::from_cedarschema_str(&schema_text)
        .map_err(|e| schema_error(format!("with the generated tool actions: {e}")))?;

    let (policies, policy_sources) = load_policies(policies_dir)?;
    validate(&schema, &policies, &policy_sources)?;

    let actions: Vec<Entity> = schema
        .action_entities()
        .map_err(|e| schema_error(e.to_string()))?
        .into_iter()
        .collect();
    let mut static_entities: Vec<Entity> = actions.clone();
    let mut servers = BTreeMap::new();
    let mut tool_entities = BTreeMap::new();
    for tool in tools.iter() {
        let entity = tool_entity(tool).map_err(|e| schema_error(e.to_string()))?;
        static_entities.push(entity.clone());
        tool_entities.insert(tool.id.clone(), entity);
        servers.entry(tool.server.clone()).or_insert(());
    }
    let mut server_entities = BTreeMap::new();
    for server in servers.keys() {
        let uid = uid("McpServer", server).map_err(|e| schema_error(e.to_string()))?;
        let entity = Entity::new(
            uid,
            [(
                "kind".to_owned(),
                RestrictedExpression::new_string("http".to_owned()),
            )]
            .into(),
            HashSet::new(),
        )
        .map_err(|e| schema_error(e.to_string()))?;
        static_entities.push(entity.clone());
        server_entities.insert(server.clone(), entity);
    }
    let extra = load_extra_entities(policies_dir, &schema)?;
    if let Some((_, entities)) = &extra {
        static_entities.extend(entities.iter().cloned());
    }
    // Check the static entities against the schema once, at load (this also refuses an
    // `entities.json` entity that duplicates a generated one).
    Entities::from_entities(static_entities.iter().cloned(), Some(&schema)).map_err(|e| {
        PolicyLoadError::Entities {
            message: e.to_string(),
        }
    })?;

    let action_by_uid: BTreeMap<String, &Entity> =
        actions.iter().map(|e| (e.uid().to_string(), e)).collect();
    let call_tool = uid("Action", "call_tool").map_err(|e| schema_error(e.to_string()))?;
    let mut tool_requests = BTreeMap::new();
    for tool in tools.iter() {
        let action = uid("Action", &tool.id).map_err(|e| schema_error(e.to_string()))?;
        let resource = uid("Tool", &tool.id).map_err(|e| schema_error(e.to_string()))?;
        let mut reachable: Vec<Entity> = [&action, &call_tool]
            .iter()
            .filter_map(|u| action_by_uid.get(&u.to_string()).map(|e| (*e).clone()))
            .collect();
        let own = [
            tool_entities.get(&tool.id),
            server_entities.get(&tool.server),
        ];
        let recorded_entities = own
            .iter()
            .flatten()
            .map(|e| recorded::entity_json(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| schema_error(e.to_string()))?;
        reachable.extend(own.into_iter().flatten().cloned());
        if let Some((_, entities)) = &extra {
            reachable.extend(entities.iter().cloned());
        }
        let entities =
            Entities::from_entities(reachable, None).map_err(|e| PolicyLoadError::Entities {
                message: e.to_string(),
            })?;
        tool_requests.insert(
            tool.id.clone(),
            ToolRequest {
                recorded_action: recorded::uid_json(&action)
                    .map_err(|e| schema_error(e.to_string()))?,
                recorded_resource: recorded::uid_json(&resource)
                    .map_err(|e| schema_error(e.to_string()))?,
                recorded_entities,
                action,
                resource,
                entities,
            },
        );
    }
    check_request_shapes(&schema, &input_types, &tool_requests).map_err(schema_error)?;

    let tool_actions = tools
        .iter()
        .map(|t| uid("Action", &t.id).map(|a| (t.id.as_str(), a)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| schema_error(e.to_string()))?;
    let index =
        index::PolicyIndex::build(&policies, tool_actions, &call_tool).map_err(schema_error)?;
    let mut policy_ids: Vec<String> = policies.policies().map(|p| p.id().to_string()).collect();
    policy_ids.sort();
    drop(policies);

    let mut hasher = Sha256::new();
    // The extra entities decide calls too, so they are part of the policy set's hash.
    let extra_source = extra.map(|(text, _)| (ENTITIES_FILE.to_owned(), text));
    for (name, text) in policy_sources.iter().chain(extra_source.iter()) {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    let policy_set_hash = hex::encode(hasher.finalize());
    let schema_hash = hex::encode(Sha256::digest(schema_text.as_bytes()));
    Ok(PolicySnapshot {
        schema,
        schema_text,
        policy_ids,
        whole: OnceLock::new(),
        policy_sources,
        input_types,
        tool_requests,
        index,
        policy_set_hash,
        schema_hash,
        generation: SNAPSHOT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    })
}

/// Checks, once per load, that every request a decision can build conforms to the schema,
/// so that decisions can skip Cedar's per-request validation. The input type of each tool's
/// action is generated from the same [`InputType`] that converts its arguments; the token
/// claims, session and principal come from the schema stub, which an operator may edit. Two
/// probes per tool cover every shape: an `Agent` with no optional claim, no actor and only
/// the required arguments, and a `User` with every optional claim, an actor and every
/// argument (record conformance is checked attribute by attribute, so these two cover the
/// combinations in between).
fn check_request_shapes(
    schema: &Schema,
    input_types: &BTreeMap<String, InputType>,
    tool_requests: &BTreeMap<String, ToolRequest>,
) -> Result<(), String> {
    let bare = VerifiedToken {
        issuer: "https://issuer.probe".to_owned(),
        subject: "probe".to_owned(),
        audiences: vec!["probe".to_owned()],
        scopes: ["probe".to_owned()].into(),
        groups: vec!["probe".to_owned()],
        client_id: None,
        jti: None,
        kid: None,
        algorithm: "EdDSA".to_owned(),
        issued_at: None,
        expires_at: 0,
        actors: Vec::new(),
        // Every claim becomes a string tag: one claim checks the tag type.
        claims: Claims::new([("probe".to_owned(), Value::from(1))].into_iter().collect()),
        token_sha256: String::new(),
    };
    let full = VerifiedToken {
        client_id: Some("probe".to_owned()),
        jti: Some("probe".to_owned()),
        actors: vec!["probe-agent".to_owned()],
        ..bare.clone()
    };
    for (tool_id, tool) in tool_requests {
        let input_type = input_types
            .get(tool_id)
            .ok_or_else(|| format!("tool `{tool_id}` has no input type"))?;
        for (token, all_fields) in [(&bare, false), (&full, true)] {
            let arguments = input_type.example(all_fields);
            let shape_error = |e: &dyn std::fmt::Display| {
                format!(
                    "a request for tool `{tool_id}` (principal `{}`) does not conform to the schema: {e}",
                    if token.actors.is_empty() {
                        "Agent"
                    } else {
                        "User"
                    }
                )
            };
            let input = input_type
                .to_cedar(&arguments, "")
                .map_err(|e| shape_error(&e.message))?;
            let context = Context::from_pairs([
                ("input".to_owned(), input),
                (
                    "token".to_owned(),
                    token_expr(token).map_err(|e| shape_error(&e))?,
                ),
                (
                    "session".to_owned(),
                    session_expr(token, 0, Some("probe")).map_err(|e| shape_error(&e))?,
                ),
            ])
            .map_err(|e| shape_error(&e))?;
            let principal = principal_entity(token).map_err(|e| shape_error(&e))?;
            Request::new(
                principal.uid(),
                tool.action.clone(),
                tool.resource.clone(),
                context,
                Some(schema),
            )
            .map_err(|e| shape_error(&e))?;
            // The per-request entities too (decisions add them without a schema).
            Entities::from_entities(
                std::iter::once(principal).chain(actor_entity(token).map_err(|e| shape_error(&e))?),
                Some(schema),
            )
            .map_err(|e| shape_error(&e))?;
        }
    }
    Ok(())
}

/// Largest `entities.json` read.
const MAX_ENTITIES_BYTES: u64 = 16 * 1024 * 1024;

/// Entity types `entities.json` may not define: principals come from the token, tools,
/// servers and actions from the registry and the schema.
const RESERVED_ENTITY_TYPES: &[&str] = &["Agent", "User", "Tool", "McpServer"];

/// Reads `entities.json` of the policy directory, if present, validated against the schema.
fn load_extra_entities(
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

/// The causes of an error, joined: Cedar's entity errors keep the useful part in `source`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

fn tool_entity(tool: &Tool) -> Result<Entity, PolicyError> {
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

/// Reads every `*.cedar` file of `dir` (sorted by name) into one set keyed by `@id`.
fn load_policies(dir: &Path) -> Result<(PolicySet, Vec<(String, String)>), PolicyLoadError> {
    let sources = read_policy_files(dir)?;
    Ok((parse_policies(&sources)?, sources))
}

/// Every `*.cedar` file of `dir`, sorted by name, as (name, text).
fn read_policy_files(dir: &Path) -> Result<Vec<(String, String)>, PolicyLoadError> {
    let io = |source| PolicyLoadError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyLoadError::Io {
            path: path.clone(),
            source,
        })?;
        sources.push((name, text));
    }
    Ok(sources)
}

/// Parses policy files, given as (name, text), into one set keyed by `@id`.
fn parse_policies(sources: &[(String, String)]) -> Result<PolicySet, PolicyLoadError> {
    let mut set = PolicySet::new();
    // Which source each id came from; lines are found only for an error, so a large file
    // is not searched once per policy.
    let mut origin: HashMap<String, usize> = HashMap::new();
    for (file, (name, text)) in sources.iter().enumerate() {
        let parsed: PolicySet =
            text.parse()
                .map_err(|e: cedar_policy::ParseErrors| PolicyLoadError::Parse {
                    file: name.clone(),
                    line: first_label_line(&e, text),
                    message: e.to_string(),
                })?;
        if parsed.templates().next().is_some() {
            return Err(PolicyLoadError::Template { file: name.clone() });
        }
        for policy in parsed.policies() {
            let Some(id) = policy.annotation("id") else {
                return Err(PolicyLoadError::MissingId {
                    file: name.clone(),
                    line: line_of(text, &policy.to_string()),
                });
            };
            let id = id.to_owned();
            if let Some((annotation, _)) = policy
                .annotations()
                .find(|(key, _)| !KNOWN_ANNOTATIONS.contains(key))
            {
                return Err(PolicyLoadError::UnknownAnnotation {
                    file: name.clone(),
                    line: annotation_line(text, &id, annotation),
                    id,
                    annotation: annotation.to_owned(),
                });
            }
            if let Some(&first) = origin.get(&id) {
                let (first_name, first_text) = &sources[first];
                let first_lines = id_lines(first_text, &id);
                let second_line = if first == file {
                    first_lines.get(1).copied()
                } else {
                    id_lines(text, &id).first().copied()
                };
                let at = |name: &str, line: Option<usize>| format!("{name}:{}", line.unwrap_or(1));
                return Err(PolicyLoadError::DuplicateId {
                    first: at(first_name, first_lines.first().copied()),
                    second: at(name, second_line),
                    id,
                });
            }
            let renamed: Policy = policy.new_id(PolicyId::new(id.clone()));
            set.add(renamed).map_err(|e| PolicyLoadError::Parse {
                file: name.clone(),
                line: id_lines(text, &id).first().copied().unwrap_or(1),
                message: e.to_string(),
            })?;
            origin.insert(id, file);
        }
    }
    Ok(set)
}

/// The annotations toolgate gives a meaning to; any other is refused at load.
const KNOWN_ANNOTATIONS: &[&str] = &["id"];

/// [`KNOWN_ANNOTATIONS`] as `@name` list, for messages.
fn known_annotations() -> String {
    KNOWN_ANNOTATIONS
        .iter()
        .map(|a| format!("`@{a}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The line (1-based) of annotation `@<name>` of the policy with `@id("<id>")`: the
/// occurrence nearest to that id, since annotations stand together before the policy.
fn annotation_line(text: &str, id: &str, name: &str) -> usize {
    let id_line = id_lines(text, id).first().copied().unwrap_or(1);
    let needle = format!("@{name}");
    text.match_indices(&needle)
        .filter(|(at, _)| {
            // `@shadow` must not match inside `@shadowing`.
            !text[at + needle.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, _)| text[..at].matches('\n').count() + 1)
        .min_by_key(|line| line.abs_diff(id_line))
        .unwrap_or(id_line)
}

/// The lines (1-based) of every `@id("<id>")` in `text`.
fn id_lines(text: &str, id: &str) -> Vec<usize> {
    let needle = format!("@id(\"{id}\")");
    text.match_indices(&needle)
        .map(|(at, _)| text[..at].matches('\n').count() + 1)
        .collect()
}

/// Strict validation; every warning (e.g. an impossible policy) is treated as an error.
fn validate(
    schema: &Schema,
    policies: &PolicySet,
    sources: &[(String, String)],
) -> Result<(), PolicyLoadError> {
    let validator = Validator::new(schema.clone());
    let result = validator.validate(policies, ValidationMode::Strict);
    let locate = |id: &PolicyId| -> String {
        let id = id.to_string();
        sources
            .iter()
            .find_map(|(name, text)| {
                let line = id_lines(text, &id).first().copied()?;
                Some(format!("{name}:{line}"))
            })
            .unwrap_or_else(|| "?".to_owned())
    };
    let mut problems: Vec<String> = result
        .validation_errors()
        .map(|e| {
            format!(
                "{}: policy `{}`: error: {e}",
                locate(e.policy_id()),
                e.policy_id()
            )
        })
        .collect();
    problems.extend(result.validation_warnings().map(|w| {
        format!(
            "{}: policy `{}`: warning treated as error: {w}",
            locate(w.policy_id()),
            w.policy_id()
        )
    }));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PolicyLoadError::Validation(problems))
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map(|at| text[..at].matches('\n').count() + 1)
        .unwrap_or(1)
}

fn first_label_line(errors: &cedar_policy::ParseErrors, text: &str) -> usize {
    use miette::Diagnostic;
    errors
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| text[..label.offset().min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests;
