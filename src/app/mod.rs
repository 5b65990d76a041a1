//! The request pipeline with no HTTP types: token → tool → scope → arguments → policy →
//! decision log → dispatch → dispatch record. The HTTP layer and tests drive it directly.
//! `pipeline` runs a tool call as named steps; `decision` is the value it returns.
//!
//! Architecture invariant: every call yields exactly one decision record, whatever stage
//! decided it, and a tool backend is called only after an allow record has been committed.

mod decision;
mod pipeline;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use decision::{CallError, Decision, Outcome, PolicyReasons};

use crate::audit::{AuditLog, DecisionRecord, Reason, Stage, Verdict};
use crate::auth::{self, Authenticator, TokenError, VerifiedToken};
use crate::config::Config;
use crate::policy::PolicyEngine;
use crate::tools::{Dispatcher, Registry};

/// Which API entry point a call came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Decide and dispatch.
    Invoke,
    /// Decide only.
    Authorize,
    /// An MCP `tools/call`: decide and dispatch.
    Mcp,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Invoke => "invoke",
            Endpoint::Authorize => "authorize",
            Endpoint::Mcp => "mcp",
        }
    }
}

/// A tool call as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct CallRequest<'a> {
    /// The raw `Authorization` header value.
    pub authorization: Option<&'a str>,
    /// The tool id.
    pub tool: &'a str,
    /// The arguments object, or why the body could not be read.
    pub arguments: Result<Value, CallError>,
    /// The JSON text the arguments were parsed from, for reading decimals exactly.
    pub arguments_text: Option<crate::policy::ArgumentsText<'a>>,
    /// A caller-supplied request id, if well-formed.
    pub request_id: Option<&'a str>,
}

/// A tool as listed to a caller.
#[derive(Debug, Clone, Serialize)]
pub struct ToolListing {
    /// The tool id.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its input JSON Schema.
    #[serde(rename = "inputSchema")]
    pub input_schema: Value,
    /// Behaviour hints.
    pub annotations: crate::tools::Annotations,
}

/// A decision that is not a tool call, for [`App::record_event`].
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The API entry point (`mcp`, ...).
    pub endpoint: &'a str,
    /// What was attempted (`mcp/initialize`, ...), logged in the record's `tool` field.
    pub action: &'a str,
    /// Who, when known.
    pub token: Option<&'a VerifiedToken>,
    /// Allow or deny.
    pub verdict: Verdict,
    /// The stage that decided.
    pub stage: Stage,
    /// The reason code.
    pub reason: Reason,
    /// Free-text detail.
    pub detail: Option<String>,
}

/// The readiness checks and their details, as `/admin/status` reports them (`/readyz` shows
/// only [`Readiness::ready`] and [`Readiness::failing`]).
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Every issuer has keys.
    pub keys_loaded: bool,
    /// A valid policy set is loaded.
    pub policies_valid: bool,
    /// The last decision-log write succeeded.
    pub log_writable: bool,
    /// Number of policies in force.
    pub policy_count: usize,
    /// Hash of the policy set in force.
    pub policy_set_hash: String,
    /// Why the last policy reload was rejected (`policies_valid` is then false and the last
    /// good set keeps serving).
    pub policy_error: Option<String>,
    /// Policy reloads that swapped in a new set since start.
    pub policy_reloads: u64,
    /// Policy reloads rejected since start.
    pub policy_reloads_rejected: u64,
    /// Upstream MCP servers; one that is down does not make the broker unready.
    pub upstreams: Vec<crate::tools::upstream::manager::UpstreamStatus>,
}

impl Readiness {
    /// Whether the broker can take calls. A rejected policy reload does not make it unready:
    /// the last good set keeps serving, and a bad policy push must not take every replica
    /// out of its load balancer; `policies_valid` and `policy_error` report it instead.
    pub fn ready(&self) -> bool {
        self.keys_loaded && self.log_writable
    }

    /// The names of the checks that fail, the most `/readyz` tells an unauthenticated caller.
    pub fn failing(&self) -> Vec<&'static str> {
        [
            ("keys_loaded", self.keys_loaded),
            ("policies_valid", self.policies_valid),
            ("log_writable", self.log_writable),
        ]
        .into_iter()
        .filter_map(|(name, ok)| (!ok).then_some(name))
        .collect()
    }
}

/// Every stage of the pipeline, wired together. Holds no HTTP types.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// Token verification.
    pub authenticator: Authenticator,
    /// Registered tools: the configured ones plus any discovered upstream. Swapped whole (with
    /// a policy set regenerated for it) by [`App::replace_tools`]; read it with [`App::tools`].
    pub tools: ArcSwap<Registry>,
    /// Cedar policies.
    pub policy: PolicyEngine,
    /// The decision log.
    pub audit: AuditLog,
    /// Backend calls.
    pub dispatcher: Dispatcher,
    /// The policy directory, for reloads.
    pub policies_dir: PathBuf,
    /// The schema stub, for reloads.
    pub schema_stub: PathBuf,
    /// Serialises policy reloads with registry swaps, so that a reload never installs a
    /// schema generated for a registry that has since been replaced.
    pub reload_lock: std::sync::Mutex<()>,
    /// Upstream MCP servers whose tools are registered (see `tools::upstream::manager`).
    pub upstreams: crate::tools::upstream::manager::Upstreams,
}

/// Longest caller-supplied request id accepted; others are replaced by a fresh id.
const MAX_REQUEST_ID_LEN: usize = 64;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Most characters of a requested tool name that a record or an error repeats.
const MAX_RECORDED_TOOL_CHARS: usize = 200;

/// At most `max` characters of `s`, cut at a character boundary.
fn prefix_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// The caller's request id if it is well-formed, else `None`.
fn well_formed_request_id(supplied: Option<&str>) -> Option<String> {
    supplied
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map(str::to_owned)
}

/// A fresh decision id (UUIDv7, time-ordered) and the deny record every request starts from.
/// Without a well-formed caller request id, the decision id serves as the request id too:
/// it is just as unique, and saves drawing a second random id per request.
fn new_record(endpoint: &str, supplied_request_id: Option<&str>) -> (String, DecisionRecord) {
    let decision_id = uuid::Uuid::now_v7().to_string();
    let request_id =
        well_formed_request_id(supplied_request_id).unwrap_or_else(|| decision_id.clone());
    let record = DecisionRecord::new(decision_id.clone(), request_id, endpoint, now_ms());
    (decision_id, record)
}

/// SHA-256 of a JSON value's text: lets a record prove which arguments it saw without keeping
/// redacted ones.
pub fn sha256_json(value: &Value) -> String {
    // Serialized straight into the hash: the same bytes as `value.to_string()`, with no
    // intermediate string. Writing into a hasher cannot fail.
    let mut hasher = Sha256::new();
    if serde_json::to_writer(&mut hasher, value).is_err() {
        return hex::encode(Sha256::digest(value.to_string().as_bytes()));
    }
    hex::encode(hasher.finalize())
}

impl App {
    async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        let token = auth::bearer_token(authorization)?;
        self.authenticator.verify_fresh(token).await
    }

    async fn commit(&self, record: &DecisionRecord) -> Result<(), CallError> {
        self.audit.append(record).await.map_err(CallError::Audit)
    }

    /// Records a deny decided at `stage` for `reason`; fails only if the log does.
    async fn deny(
        &self,
        record: &mut DecisionRecord,
        stage: &Stage,
        reason: &Reason,
    ) -> Result<(), CallError> {
        record.set_decision(Verdict::Deny, stage, reason);
        self.commit(record).await?;
        tracing::info!(
            decision = Verdict::Deny.as_str(),
            decision_id = %record.decision_id,
            stage = stage.as_str(),
            reason = reason.as_str(),
            tool = record.tool.as_deref().unwrap_or(""),
            "decision recorded"
        );
        Ok(())
    }

    /// Records a deny and returns `error` for the caller (or the log's failure).
    async fn refuse(
        &self,
        record: &mut DecisionRecord,
        stage: Stage,
        reason: Reason,
        error: CallError,
    ) -> CallError {
        match self.deny(record, &stage, &reason).await {
            Ok(()) => error,
            Err(e) => e,
        }
    }

    /// Authenticates an admin-API call (admin audience and scope) and records the attempt,
    /// allowed or not, as a decision with endpoint `admin` and the action as its tool.
    pub async fn authorize_admin(
        &self,
        authorization: Option<&str>,
        action: &str,
    ) -> (String, Result<VerifiedToken, CallError>) {
        let (decision_id, mut record) = new_record("admin", None);
        record.tool = Some(action.to_owned());
        let admin = &self.config.admin;
        let verified = match auth::bearer_token(authorization) {
            Ok(t) => {
                self.authenticator
                    .verify_for_audience_fresh(t, &admin.audience)
                    .await
            }
            Err(e) => Err(e),
        };
        let token = match verified {
            Ok(t) => t,
            Err(e) => {
                let reason = Reason::from(e.code());
                let err = self
                    .refuse(&mut record, Stage::Auth, reason, CallError::Token(e))
                    .await;
                return (decision_id, Err(err));
            }
        };
        record.set_token(&token);
        if !token.scopes.contains(&admin.scope) {
            let err = CallError::InsufficientScope {
                scope: admin.scope.clone(),
            };
            let err = self
                .refuse(&mut record, Stage::Scope, Reason::InsufficientScope, err)
                .await;
            return (decision_id, Err(err));
        }
        record.set_decision(Verdict::Allow, &Stage::Admin, &Reason::Allowed);
        match self.commit(&record).await {
            Ok(()) => (decision_id, Ok(token)),
            Err(e) => (decision_id, Err(e)),
        }
    }

    /// Lists the tools this caller may call (scopes held and some permit could apply), and
    /// records the listing.
    pub async fn list_tools(
        &self,
        authorization: Option<&str>,
    ) -> (String, Result<Vec<ToolListing>, CallError>) {
        match self.authenticate_request("list", authorization).await {
            Ok(token) => self.list_tools_for("list", &token).await,
            Err((decision_id, err)) => (decision_id, Err(err)),
        }
    }

    /// Authenticates one HTTP request. A failure is recorded as a deny decision (endpoint
    /// `endpoint`, stage `auth`) and returned with its decision id; a success records nothing
    /// (what the caller then does is recorded).
    pub async fn authenticate_request(
        &self,
        endpoint: &str,
        authorization: Option<&str>,
    ) -> Result<Arc<VerifiedToken>, (String, CallError)> {
        match self.authenticate(authorization).await {
            Ok(token) => Ok(token),
            Err(e) => {
                let (decision_id, mut record) = new_record(endpoint, None);
                let reason = Reason::from(e.code());
                let err = self
                    .refuse(&mut record, Stage::Auth, reason, CallError::Token(e))
                    .await;
                Err((decision_id, err))
            }
        }
    }

    /// Records an event that is not a tool call (an MCP session opened or closed, a request
    /// refused before authentication) as a decision; returns its id once it is durable.
    pub async fn record_event(&self, event: Event<'_>) -> Result<String, CallError> {
        let (decision_id, mut record) = new_record(event.endpoint, None);
        record.tool = Some(event.action.to_owned());
        if let Some(token) = event.token {
            record.set_token(token);
        }
        record.set_decision(event.verdict, &event.stage, &event.reason);
        record.detail = event.detail;
        self.commit(&record).await?;
        Ok(decision_id)
    }

    /// Lists, for a verified token, the tools it may call (scopes held and some permit could
    /// apply), and records the listing with endpoint `endpoint`.
    pub async fn list_tools_for(
        &self,
        endpoint: &str,
        token: &VerifiedToken,
    ) -> (String, Result<Vec<ToolListing>, CallError>) {
        let (decision_id, mut record) = new_record(endpoint, None);
        record.set_token(token);
        let now = auth::unix_now();
        let listed: Vec<ToolListing> = self
            .tools()
            .iter()
            .filter(|t| t.missing_scopes(&token.scopes).next().is_none())
            .filter(|t| self.policy.may_call(token, t, now))
            .map(|t| ToolListing {
                name: t.id.clone(),
                description: t.description.clone(),
                input_schema: t.input_schema.clone(),
                annotations: t.annotations,
            })
            .collect();
        record.set_decision(Verdict::Allow, &Stage::Policy, &Reason::Listed);
        record.detail = Some(format!("{} tools listed", listed.len()));
        match self.commit(&record).await {
            Ok(()) => (decision_id, Ok(listed)),
            Err(e) => (decision_id, Err(e)),
        }
    }

    /// Readiness of keys, policies and the log.
    pub fn readiness(&self) -> Readiness {
        let snapshot = self.policy.snapshot();
        let reload = self.policy.reload_status();
        Readiness {
            keys_loaded: self.authenticator.ready(),
            policies_valid: reload.last_error.is_none(),
            log_writable: self.audit.healthy(),
            policy_count: snapshot.policy_count(),
            policy_set_hash: snapshot.policy_set_hash.clone(),
            policy_error: reload.last_error,
            policy_reloads: reload.reloads,
            policy_reloads_rejected: reload.rejected,
            upstreams: self.upstreams.statuses(),
        }
    }

    /// Reloads the policy set from `policies_dir` and `schema_stub` for the registered tools:
    /// validated completely, then swapped in atomically; on error the last good set keeps
    /// serving. Blocking (file reads and validation): call it off the async workers.
    pub fn reload_policies(
        &self,
    ) -> Result<crate::policy::ReloadOutcome, crate::policy::PolicyLoadError> {
        let _serial = self.lock_reloads();
        self.policy
            .reload(&self.schema_stub, &self.policies_dir, &self.tools())
    }

    /// The registered tools now.
    pub fn tools(&self) -> Arc<Registry> {
        self.tools.load_full()
    }

    /// Replaces the registry: the policy set is regenerated and revalidated for `registry`
    /// first, and only if that succeeds are both swapped in; otherwise the current registry
    /// and policies keep serving. In the moment between the two swaps a call to an added or
    /// removed tool is denied (unknown tool, or no action in the schema), never allowed.
    /// Blocking (file reads and validation): call it off the async workers.
    pub fn replace_tools(
        &self,
        registry: Registry,
    ) -> Result<crate::policy::ReloadOutcome, crate::policy::PolicyLoadError> {
        let _serial = self.lock_reloads();
        let outcome = self
            .policy
            .reload(&self.schema_stub, &self.policies_dir, &registry)?;
        self.tools.store(Arc::new(registry));
        Ok(outcome)
    }

    fn lock_reloads(&self) -> std::sync::MutexGuard<'_, ()> {
        self.reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::{prefix_chars, sha256_json};
    use sha2::{Digest, Sha256};

    #[test]
    fn the_arguments_hash_is_over_their_compact_json_text() {
        let value = serde_json::json!({"path": "/tmp/a\"b", "n": [1, 2.5, null], "é": {"x": true}});
        let text = value.to_string();
        assert_eq!(
            sha256_json(&value),
            hex::encode(Sha256::digest(text.as_bytes()))
        );
        assert_eq!(
            sha256_json(&serde_json::json!({})),
            // SHA-256 of the two bytes `{}`.
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn a_prefix_is_cut_at_a_character_boundary() {
        assert_eq!(prefix_chars("files___read", 200), "files___read");
        assert_eq!(prefix_chars("abc", 3), "abc");
        assert_eq!(prefix_chars("abcd", 3), "abc");
        // Two-byte and four-byte characters count once each.
        assert_eq!(prefix_chars("ééé", 2), "éé");
        assert_eq!(prefix_chars("a🦀b", 2), "a🦀");
        assert_eq!(prefix_chars("", 0), "");
    }
}
