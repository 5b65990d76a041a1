//! A tool call as named steps: authenticate → read the body → find the tool → check scopes →
//! check arguments → evaluate policy → record the decision → dispatch → record the outcome.
//! Each check either passes or says which deny to record.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    App, CallError, CallRequest, Decision, Endpoint, MAX_RECORDED_TOOL_CHARS, Outcome,
    PolicyReasons, new_record, now_ms, prefix_chars, sha256_json,
};
use crate::audit::{DecisionRecord, DispatchFacts, Reason, RecordKind, Stage, Verdict};
use crate::auth::{self, VerifiedToken};
use crate::policy::{ArgumentsText, CallFacts, PolicyDecision, PolicyError};
use crate::tools::{ArgumentError, DispatchError, DispatchOutcome, Tool};

/// How a caller proves who it is: the raw `Authorization` header, or a token the caller's
/// transport has already verified once for this HTTP request (MCP), so that a single-use
/// token is not counted twice.
#[derive(Clone, Copy)]
enum Credentials<'a> {
    Header(Option<&'a str>),
    Verified(&'a VerifiedToken),
}

/// The caller's token: verified here, or by the transport.
enum Token<'a> {
    Fresh(Arc<VerifiedToken>),
    Verified(&'a VerifiedToken),
}

impl Deref for Token<'_> {
    type Target = VerifiedToken;

    fn deref(&self) -> &VerifiedToken {
        match self {
            Token::Fresh(token) => token,
            Token::Verified(token) => token,
        }
    }
}

/// A call that passed every check and that policy allowed, not yet recorded.
struct Allowed<'a> {
    token: Token<'a>,
    tool: Arc<Tool>,
    arguments: Value,
}

/// Why a call stops before dispatch: the deny to record and what the caller gets.
struct Refusal {
    stage: Stage,
    reason: Reason,
    outcome: Outcome,
}

impl Refusal {
    // Boxed: a refusal carries a whole `CallError`, and the checks' `Ok` values are small.
    fn failed(stage: Stage, reason: Reason, error: CallError) -> Box<Self> {
        Box::new(Self {
            stage,
            reason,
            outcome: Outcome::Failed(error),
        })
    }
}

/// Microseconds per stage, into the record.
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
    /// Runs one call through the pipeline: the decision, allow or deny, once it is recorded;
    /// an error only when no decision could be recorded.
    pub async fn call(
        &self,
        endpoint: Endpoint,
        request: CallRequest<'_>,
    ) -> Result<Decision, CallError> {
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
    ) -> Result<Decision, CallError> {
        self.call_with(endpoint, Credentials::Verified(token), request)
            .await
    }

    async fn call_with(
        &self,
        endpoint: Endpoint,
        credentials: Credentials<'_>,
        request: CallRequest<'_>,
    ) -> Result<Decision, CallError> {
        let (decision_id, mut record) = new_record(endpoint.as_str(), request.request_id);
        let (verdict, stage, reason, outcome) = self
            .run(endpoint, credentials, request, &mut record)
            .await?;
        let policies = record
            .policy
            .filter(|_| self.config.api.exposes_determining_policies())
            .map(|decision| PolicyReasons {
                determining_policies: decision.determining_policies,
                erroring_policies: decision.erroring_policies,
            });
        Ok(Decision {
            id: decision_id,
            verdict,
            stage,
            reason,
            outcome,
            policies,
        })
    }

    async fn run(
        &self,
        endpoint: Endpoint,
        credentials: Credentials<'_>,
        request: CallRequest<'_>,
        record: &mut DecisionRecord,
    ) -> Result<(Verdict, Stage, Reason, Outcome), CallError> {
        // Empty when the body naming the tool (`/v1/authorize`) could not be read.
        record.tool = (!request.tool.is_empty())
            .then(|| prefix_chars(request.tool, MAX_RECORDED_TOOL_CHARS).to_owned());
        let allowed = match self.check(credentials, request, record).await {
            Ok(allowed) => allowed,
            Err(refusal) => {
                let Refusal {
                    stage,
                    reason,
                    outcome,
                } = *refusal;
                self.deny(record, &stage, &reason).await?;
                return Ok((Verdict::Deny, stage, reason, outcome));
            }
        };
        self.record_allow(record, &allowed).await?;
        let outcome = if endpoint == Endpoint::Authorize {
            Outcome::Authorized
        } else {
            // The allow record is durable: only now may the backend be called.
            self.dispatch(record, &allowed).await
        };
        Ok((Verdict::Allow, Stage::Policy, Reason::Allowed, outcome))
    }

    /// Every check before the decision is recorded, in order, each lapped into the record.
    async fn check<'t>(
        &self,
        credentials: Credentials<'t>,
        request: CallRequest<'_>,
        record: &mut DecisionRecord,
    ) -> Result<Allowed<'t>, Box<Refusal>> {
        let mut timer = Timer(Instant::now());
        let token = self.authenticate_step(credentials).await?;
        record.set_token(&token);
        timer.lap(record, "auth");
        // An unreadable body is refused before the tool lookup, the same way on every
        // endpoint: on `/v1/authorize` the body names the tool, so no later stage can judge.
        let arguments = read_arguments(request.arguments, record)?;
        let tool = self.find_tool(request.tool)?;
        check_scopes(&tool, &token, record)?;
        let arguments = check_arguments(&tool, arguments, record)?;
        timer.lap(record, "arguments");
        let decision = self.evaluate(&token, &tool, &arguments, request.arguments_text, record)?;
        timer.lap(record, "policy");
        let permitted = decision.allowed;
        record.policy = Some(decision);
        if !permitted {
            return Err(Box::new(Refusal {
                stage: Stage::Policy,
                reason: Reason::PolicyDenied,
                outcome: Outcome::Denied,
            }));
        }
        Ok(Allowed {
            token,
            tool,
            arguments,
        })
    }

    async fn authenticate_step<'t>(
        &self,
        credentials: Credentials<'t>,
    ) -> Result<Token<'t>, Box<Refusal>> {
        match credentials {
            Credentials::Verified(token) => Ok(Token::Verified(token)),
            Credentials::Header(authorization) => match self.authenticate(authorization).await {
                Ok(token) => Ok(Token::Fresh(token)),
                Err(e) => Err(Refusal::failed(
                    Stage::Auth,
                    Reason::from(e.code()),
                    CallError::Token(e),
                )),
            },
        }
    }

    fn find_tool(&self, requested: &str) -> Result<Arc<Tool>, Box<Refusal>> {
        self.tools.load().get(requested).cloned().ok_or_else(|| {
            let name = prefix_chars(requested, MAX_RECORDED_TOOL_CHARS).to_owned();
            Refusal::failed(
                Stage::Tool,
                Reason::UnknownTool,
                CallError::UnknownTool(name),
            )
        })
    }

    /// Cedar's decision on the call; the record keeps the arguments redacted.
    fn evaluate(
        &self,
        token: &VerifiedToken,
        tool: &Tool,
        arguments: &Value,
        arguments_text: Option<ArgumentsText<'_>>,
        record: &mut DecisionRecord,
    ) -> Result<PolicyDecision, Box<Refusal>> {
        let decided = self.policy.decide(
            token,
            &CallFacts {
                tool,
                arguments,
                arguments_text,
                request_id: &record.request_id,
                now: auth::unix_now(),
                // The recorded Cedar request holds the arguments: redacted like `arguments`,
                // so a sensitive value never reaches the log (replay reports such records
                // as inexact).
                logged_arguments: record.arguments.as_ref().filter(|_| record.redacted),
            },
        );
        match decided {
            Ok(decision) => Ok(decision),
            Err(PolicyError::Argument(problem)) => {
                let err = ArgumentError {
                    problems: vec![problem],
                };
                record.detail = Some(err.to_string());
                Err(Refusal::failed(
                    Stage::Arguments,
                    Reason::ArgumentNotRepresentable,
                    CallError::InvalidArguments(err),
                ))
            }
            Err(PolicyError::Request(message)) => {
                record.detail = Some(message.clone());
                Err(Refusal::failed(
                    Stage::Policy,
                    Reason::PolicyError,
                    CallError::PolicyFailure(message),
                ))
            }
        }
    }

    async fn record_allow(
        &self,
        record: &mut DecisionRecord,
        allowed: &Allowed<'_>,
    ) -> Result<(), CallError> {
        record.set_decision(Verdict::Allow, &Stage::Policy, &Reason::Allowed);
        self.commit(record).await?;
        let determining: &[String] = record
            .policy
            .as_ref()
            .map(|p| p.determining_policies.as_slice())
            .unwrap_or_default();
        tracing::info!(
            decision = Verdict::Allow.as_str(),
            decision_id = %record.decision_id,
            tool = %allowed.tool.id,
            subject = %allowed.token.subject,
            policies = ?determining,
            "decision recorded"
        );
        Ok(())
    }

    /// Calls the backend and records what came of it.
    async fn dispatch(&self, record: &DecisionRecord, allowed: &Allowed<'_>) -> Outcome {
        let token: &VerifiedToken = &allowed.token;
        let (result, duration) = self
            .dispatcher
            .call(
                &allowed.tool,
                &allowed.arguments,
                &record.decision_id,
                token.into(),
            )
            .await;
        self.record_dispatch(record, &result, duration).await;
        match result {
            Ok(o) => Outcome::Answered {
                result: o.result,
                tool_error: o.is_error.then_some(o.status),
            },
            Err(e) => {
                tracing::warn!(decision_id = %record.decision_id, tool = %allowed.tool.id, error = %e, "dispatch failed");
                Outcome::Failed(CallError::Dispatch(e))
            }
        }
    }

    /// Appends the dispatch record: the backend's outcome under the allow's decision id.
    async fn record_dispatch(
        &self,
        record: &DecisionRecord,
        result: &Result<DispatchOutcome, DispatchError>,
        duration: Duration,
    ) {
        let mut outcome = record.clone();
        outcome.kind = RecordKind::Dispatch;
        outcome.stage = Stage::Dispatch.as_str().to_owned();
        outcome.time_ms = now_ms();
        outcome.policy = None;
        outcome.arguments = None;
        outcome.latency_us.clear();
        outcome
            .latency_us
            .insert("dispatch".to_owned(), duration.as_micros() as u64);
        outcome.dispatch = Some(match result {
            Ok(o) => DispatchFacts {
                status: Some(o.status),
                duration_us: duration.as_micros() as u64,
                bytes: o.bytes,
                error_class: o.is_error.then(|| Reason::ToolError.as_str().to_owned()),
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
        let reason = match result {
            Ok(o) if o.is_error => Reason::ToolError,
            Ok(_) => Reason::Dispatched,
            // The backend's error class (`timeout`, ...), in the catch-all.
            Err(e) => Reason::from(e.class()),
        };
        outcome.reason = reason.as_str().to_owned();
        if let Err(e) = self.audit.append_outcome(&outcome).await {
            // The call has happened and its allow record is durable; the outcome record is lost
            // (counted in `/admin/status`, listed by `log verify`). The agent still gets the
            // backend's answer: a 503 would invite a retry of a call that already acted.
            tracing::error!(decision_id = %record.decision_id, error = %e, "dispatch outcome could not be recorded");
        }
    }
}

/// The arguments, or the deny for a body that could not be read.
fn read_arguments(
    arguments: Result<Value, CallError>,
    record: &mut DecisionRecord,
) -> Result<Value, Box<Refusal>> {
    arguments.map_err(|err| {
        record.detail = Some(err.to_string());
        Refusal::failed(Stage::Request, err.body_reason(), err)
    })
}

fn check_scopes(
    tool: &Tool,
    token: &VerifiedToken,
    record: &mut DecisionRecord,
) -> Result<(), Box<Refusal>> {
    let missing: Vec<&str> = tool.missing_scopes(&token.scopes).collect();
    if missing.is_empty() {
        return Ok(());
    }
    record.detail = Some(format!("missing scopes: {}", missing.join(" ")));
    let scope = tool.required_scopes.join(" ");
    Err(Refusal::failed(
        Stage::Scope,
        Reason::InsufficientScope,
        CallError::InsufficientScope { scope },
    ))
}

/// The arguments as an object that passes the tool's input schema, recorded redacted.
fn check_arguments(
    tool: &Tool,
    arguments: Value,
    record: &mut DecisionRecord,
) -> Result<Value, Box<Refusal>> {
    let Value::Object(map) = arguments else {
        let err = CallError::BadRequest("`arguments` must be a JSON object".to_owned());
        return Err(Refusal::failed(Stage::Request, Reason::BadRequest, err));
    };
    let arguments = Value::Object(map);
    if let Err(e) = tool.check_arguments(&arguments) {
        record.detail = Some(e.to_string());
        return Err(Refusal::failed(
            Stage::Arguments,
            Reason::InvalidArguments,
            CallError::InvalidArguments(e),
        ));
    }
    let (redacted, was_redacted) = tool.redact(&arguments);
    record.arguments = Some(redacted);
    record.arguments_sha256 = Some(sha256_json(&arguments));
    record.redacted = was_redacted;
    Ok(arguments)
}
