//! The request pipeline with no HTTP types: token → tool → scope → arguments → policy →
//! decision log → dispatch → dispatch record. The HTTP layer and tests drive it directly.
//!
//! Architecture invariant: every call yields exactly one decision record, whatever stage
//! decided it, and a tool backend is called only after an allow record has been committed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audit::{AuditError, AuditLog, DecisionRecord, DispatchFacts, RecordKind, Verdict};
use crate::auth::{self, Authenticator, TokenError, VerifiedToken};
use crate::config::Config;
use crate::policy::{CallFacts, PolicyEngine, PolicyError};
use crate::tools::{ArgumentError, DispatchError, Dispatcher, Registry};

/// Why a call did not succeed. Mapped to an HTTP status in exactly one place (`http::error`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The bearer token is missing or invalid.
    #[error("{0}")]
    Token(TokenError),
    /// The token lacks a scope the tool requires.
    #[error("insufficient scope: `{scope}` is required")]
    InsufficientScope {
        /// The scopes needed, space-separated.
        scope: String,
    },
    /// No tool with this id.
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    /// The request body is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request body exceeds the limit.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The request body did not arrive in time (`limits.body_read_timeout_ms`).
    #[error("request body not received within {0} ms")]
    BodyTimeout(u64),
    /// The arguments fail the tool's input schema or cannot be represented for policy.
    #[error("{0}")]
    InvalidArguments(ArgumentError),
    /// A policy denied the call (or none permitted it).
    #[error("denied by policy")]
    Denied {
        /// `@id`s of the determining forbid policies (empty for the default deny).
        policies: Vec<String>,
    },
    /// The authorization request could not be evaluated; the call is denied.
    #[error("authorization failed: {0}")]
    PolicyFailure(String),
    /// The decision could not be recorded; nothing was dispatched.
    #[error("{0}")]
    Audit(AuditError),
    /// The backend failed.
    #[error("{0}")]
    Dispatch(DispatchError),
    /// The state database (revocations) could not be read or written.
    #[error("the revocation store is unavailable")]
    StateUnavailable,
    /// The broker holds as many MCP sessions as it may; try again later.
    #[error("too many MCP sessions are open; try again later")]
    TooManySessions,
    /// An admin-requested policy reload was rejected; the last good set keeps serving.
    #[error("policy reload rejected, the last good set keeps serving: {0}")]
    PolicyReloadRejected(String),
}

impl CallError {
    /// The recorded reason for a request body that could not be read: the same on every
    /// endpoint, so a SIEM watching one reason sees every such request.
    pub fn body_reason(&self) -> &'static str {
        match self {
            CallError::PayloadTooLarge(_) => "payload_too_large",
            CallError::BodyTimeout(_) => "request_timeout",
            _ => "bad_request",
        }
    }
}

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

/// How a caller proves who it is: the raw `Authorization` header, or a token the caller's
/// transport has already verified once for this HTTP request (MCP), so that a single-use
/// token is not counted twice.
#[derive(Clone, Copy)]
enum Credentials<'a> {
    Header(Option<&'a str>),
    Verified(&'a VerifiedToken),
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

/// What a call produced: always a decision id, and the result or the error.
#[derive(Debug)]
pub struct CallResponse {
    /// The id of the decision record.
    pub decision_id: String,
    /// The backend result (`None` for authorize-only), or why the call failed.
    pub outcome: Result<Option<Value>, CallError>,
    /// The tool answered with this 4xx status: `outcome` holds its error result.
    pub tool_error: Option<u16>,
    /// The policies behind the decision, when policy decided and the answer may name them
    /// (`[api] expose_determining_policies`).
    pub policies: Option<PolicyReasons>,
}

/// The policies behind a decision, as answers to agents may name them.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReasons {
    /// `@id`s of the policies that determined the decision (empty for the default deny).
    pub determining_policies: Vec<String>,
    /// `@id`s of the policies whose evaluation errored and were skipped.
    pub erroring_policies: Vec<String>,
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
    /// Whether it was allowed.
    pub allowed: bool,
    /// The stage that decided.
    pub stage: &'a str,
    /// The reason code.
    pub reason: &'a str,
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

struct Timer(Instant);

impl Timer {
    fn lap(&mut self, record: &mut DecisionRecord, stage: &str) {
        let now = Instant::now();
        record
            .latency_us
            .insert(stage.to_owned(), (now - self.0).as_micros() as u64);
        self.0 = now;
    }
}

impl App {
    /// Runs one call through the pipeline.
    pub async fn call(&self, endpoint: Endpoint, request: CallRequest<'_>) -> CallResponse {
        let credentials = Credentials::Header(request.authorization);
        self.call_with(endpoint, credentials, request).await
    }

    /// Runs one call for a token already verified for this HTTP request (by
    /// [`App::authenticate_request`]); `request.authorization` is not read.
    pub async fn call_verified(
        &self,
        endpoint: Endpoint,
        token: &VerifiedToken,
        request: CallRequest<'_>,
    ) -> CallResponse {
        self.call_with(endpoint, Credentials::Verified(token), request)
            .await
    }

    async fn call_with(
        &self,
        endpoint: Endpoint,
        credentials: Credentials<'_>,
        request: CallRequest<'_>,
    ) -> CallResponse {
        let (decision_id, mut record) = new_record(endpoint.as_str(), request.request_id);
        let mut tool_error = None;
        let outcome = self
            .run(endpoint, credentials, request, &mut record, &mut tool_error)
            .await;
        let policies = record
            .policy
            .filter(|_| self.config.api.exposes_determining_policies())
            .map(|decision| PolicyReasons {
                determining_policies: decision.determining_policies,
                erroring_policies: decision.erroring_policies,
            });
        CallResponse {
            decision_id,
            outcome,
            tool_error,
            policies,
        }
    }

    // split in the decision-as-value work (issue 26)
    #[allow(clippy::too_many_lines)]
    async fn run(
        &self,
        endpoint: Endpoint,
        credentials: Credentials<'_>,
        request: CallRequest<'_>,
        record: &mut DecisionRecord,
        tool_error: &mut Option<u16>,
    ) -> Result<Option<Value>, CallError> {
        let mut timer = Timer(Instant::now());
        // Empty when the body naming the tool (`/v1/authorize`) could not be read.
        record.tool = (!request.tool.is_empty())
            .then(|| prefix_chars(request.tool, MAX_RECORDED_TOOL_CHARS).to_owned());

        let verified;
        let token = match credentials {
            Credentials::Verified(token) => token,
            Credentials::Header(authorization) => match self.authenticate(authorization).await {
                Ok(token) => {
                    verified = token;
                    &verified
                }
                Err(e) => {
                    return Err(self
                        .deny(record, "auth", e.code(), CallError::Token(e))
                        .await);
                }
            },
        };
        record.set_token(token);
        timer.lap(record, "auth");

        // An unreadable body is refused before the tool lookup, the same way on every
        // endpoint: on `/v1/authorize` the body names the tool, so no later stage can judge.
        let arguments = match request.arguments {
            Ok(arguments) => arguments,
            Err(err) => {
                record.detail = Some(err.to_string());
                let reason = err.body_reason();
                return Err(self.deny(record, "request", reason, err).await);
            }
        };

        let Some(tool) = self.tools.load().get(request.tool).cloned() else {
            let err = CallError::UnknownTool(
                prefix_chars(request.tool, MAX_RECORDED_TOOL_CHARS).to_owned(),
            );
            return Err(self.deny(record, "tool", "unknown_tool", err).await);
        };

        let missing: Vec<&str> = tool.missing_scopes(&token.scopes).collect();
        if !missing.is_empty() {
            let err = CallError::InsufficientScope {
                scope: tool.required_scopes.join(" "),
            };
            record.detail = Some(format!("missing scopes: {}", missing.join(" ")));
            return Err(self.deny(record, "scope", "insufficient_scope", err).await);
        }

        let arguments = match arguments {
            Value::Object(map) => Value::Object(map),
            _ => {
                let err = CallError::BadRequest("`arguments` must be a JSON object".to_owned());
                return Err(self.deny(record, "request", "bad_request", err).await);
            }
        };
        if let Err(e) = tool.check_arguments(&arguments) {
            record.detail = Some(e.to_string());
            return Err(self
                .deny(
                    record,
                    "arguments",
                    "invalid_arguments",
                    CallError::InvalidArguments(e),
                )
                .await);
        }
        let (redacted, was_redacted) = tool.redact(&arguments);
        record.arguments = Some(redacted);
        record.arguments_sha256 = Some(sha256_json(&arguments));
        record.redacted = was_redacted;
        timer.lap(record, "arguments");

        let decided = self.policy.decide(
            token,
            &CallFacts {
                tool: &tool,
                arguments: &arguments,
                arguments_text: request.arguments_text,
                request_id: &record.request_id,
                now: auth::unix_now(),
                // The recorded Cedar request holds the arguments: redacted like `arguments`,
                // so a sensitive value never reaches the log (replay reports such records
                // as inexact).
                logged_arguments: record.arguments.as_ref().filter(|_| record.redacted),
            },
        );
        let decision = match decided {
            Ok(d) => d,
            Err(PolicyError::Argument(problem)) => {
                let err = ArgumentError {
                    problems: vec![problem],
                };
                record.detail = Some(err.to_string());
                return Err(self
                    .deny(
                        record,
                        "arguments",
                        "argument_not_representable",
                        CallError::InvalidArguments(err),
                    )
                    .await);
            }
            Err(PolicyError::Request(message)) => {
                record.detail = Some(message.clone());
                return Err(self
                    .deny(
                        record,
                        "policy",
                        "policy_error",
                        CallError::PolicyFailure(message),
                    )
                    .await);
            }
        };
        timer.lap(record, "policy");
        let allowed = decision.allowed;
        let determining = decision.determining_policies.clone();
        record.policy = Some(decision);
        if !allowed {
            return Err(self
                .deny(
                    record,
                    "policy",
                    "policy_denied",
                    CallError::Denied {
                        policies: determining,
                    },
                )
                .await);
        }

        record.stage = "policy".to_owned();
        record.reason = "allowed".to_owned();
        record.decision = Verdict::Allow;
        self.commit(record).await?;
        tracing::info!(
            decision = "allow",
            decision_id = %record.decision_id,
            tool = %tool.id,
            subject = %token.subject,
            policies = ?determining,
            "decision recorded"
        );
        if endpoint == Endpoint::Authorize {
            return Ok(None);
        }

        // The allow record is durable: only now may the backend be called.
        let (result, duration) = self
            .dispatcher
            .call(&tool, &arguments, &record.decision_id, token.into())
            .await;
        let mut outcome = record.clone();
        outcome.kind = RecordKind::Dispatch;
        outcome.stage = "dispatch".to_owned();
        outcome.time_ms = now_ms();
        outcome.policy = None;
        outcome.arguments = None;
        outcome.latency_us.clear();
        outcome
            .latency_us
            .insert("dispatch".to_owned(), duration.as_micros() as u64);
        outcome.dispatch = Some(match &result {
            Ok(o) => DispatchFacts {
                status: Some(o.status),
                duration_us: duration.as_micros() as u64,
                bytes: o.bytes,
                error_class: o.is_error.then(|| "tool_error".to_owned()),
            },
            Err(e) => DispatchFacts {
                status: match e {
                    DispatchError::Status(s) => Some(*s),
                    _ => None,
                },
                duration_us: duration.as_micros() as u64,
                bytes: 0,
                error_class: Some(e.class().to_owned()),
            },
        });
        outcome.reason = match &result {
            Ok(o) if o.is_error => "tool_error".to_owned(),
            Ok(_) => "dispatched".to_owned(),
            Err(e) => e.class().to_owned(),
        };
        if let Err(e) = self.audit.append_outcome(&outcome).await {
            // The call has happened and its allow record is durable; the outcome record is lost
            // (counted in `/admin/status`, listed by `log verify`). The agent still gets the
            // backend's answer: a 503 would invite a retry of a call that already acted.
            tracing::error!(decision_id = %record.decision_id, error = %e, "dispatch outcome could not be recorded");
        }
        match result {
            Ok(o) => {
                if o.is_error {
                    *tool_error = Some(o.status);
                }
                Ok(Some(o.result))
            }
            Err(e) => {
                tracing::warn!(decision_id = %record.decision_id, tool = %tool.id, error = %e, "dispatch failed");
                Err(CallError::Dispatch(e))
            }
        }
    }

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

    async fn deny(
        &self,
        record: &mut DecisionRecord,
        stage: &str,
        reason: &str,
        error: CallError,
    ) -> CallError {
        record.stage = stage.to_owned();
        record.reason = reason.to_owned();
        record.decision = Verdict::Deny;
        if let Err(e) = self.commit(record).await {
            return e;
        }
        tracing::info!(
            decision = "deny",
            decision_id = %record.decision_id,
            stage,
            reason,
            tool = record.tool.as_deref().unwrap_or(""),
            "decision recorded"
        );
        error
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
                let err = self
                    .deny(&mut record, "auth", e.code(), CallError::Token(e))
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
                .deny(&mut record, "scope", "insufficient_scope", err)
                .await;
            return (decision_id, Err(err));
        }
        record.stage = "admin".to_owned();
        record.reason = "allowed".to_owned();
        record.decision = Verdict::Allow;
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
                let err = self
                    .deny(&mut record, "auth", e.code(), CallError::Token(e))
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
        record.stage = event.stage.to_owned();
        record.reason = event.reason.to_owned();
        record.decision = if event.allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
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
        record.stage = "policy".to_owned();
        record.reason = "listed".to_owned();
        record.decision = Verdict::Allow;
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
