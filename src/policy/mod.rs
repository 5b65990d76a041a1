//! Stage 3: authorization with Cedar. Loads and strictly validates the policy set against a
//! schema generated from the stub in `schemas/` plus every registered tool's input schema,
//! and decides calls: default deny, forbid overrides permit, determining policy ids kept.
//!
//! Architecture invariant: nothing here does I/O on the request path. Files are read only by
//! [`PolicyEngine::load`]; a decision reads the in-memory [`PolicySnapshot`].

mod entities;
mod evaluation;
pub mod index;
mod listing;
mod loading;
mod recorded;
mod replay;
mod schema;
pub mod testing;
mod token_parts;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use cedar_policy::{Authorizer, Entities, EntityUid, PolicySet, Schema};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::auth::VerifiedToken;
pub use crate::tools::input::{ArgumentsText, InputType, MappingError};
use crate::tools::{ArgumentProblem, Registry, Tool};
pub use entities::hour_and_weekday;
use entities::{
    actor_entity, load_extra_entities, principal_entity, server_entity, session_expr, token_expr,
    tool_entity, uid,
};
use loading::{known_annotations, load_snapshot, parse_policies};
pub use schema::{action_declaration, schema_from_parts};
use schema::{check_request_shapes, schema_text_from_parts};

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
}

#[cfg(test)]
mod tests;
