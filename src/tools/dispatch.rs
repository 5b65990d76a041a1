//! Stage 5: dispatch of an allowed, recorded call to the tool's backend.
//!
//! The backend receives the arguments, the decision id and a broker-signed assertion naming
//! the caller, never the agent's token or any header of the agent's request. Every call is
//! bounded in time and in response size, limited in concurrency per backend, and refused
//! fast while the backend's circuit breaker is open. Only idempotent tools are retried, and
//! only when the connection failed before any response arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::assertion::{ASSERTION_HEADER, ASSERTION_LIFETIME_SECS, ASSERTION_TYP, AssertionClaims};
use super::broker_keys::BrokerKeys;
use super::upstream::McpBackend;
use super::upstream::client::UpstreamError;
use super::{Backend, HttpBackend, Tool};
use crate::auth::VerifiedToken;

/// Connection set-up is bounded separately from the whole call, so a black-holed backend
/// fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `Retry-After` for a saturated backend: calls in flight are short, so retry soon.
const SATURATED_RETRY_AFTER_SECS: u64 = 1;

/// Why a dispatch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The backend did not answer within the tool's timeout.
    #[error("backend timed out after {0} ms")]
    Timeout(u64),
    /// The backend could not be reached, or closed the connection before answering.
    #[error("backend unreachable")]
    Unreachable,
    /// The connection broke while the response was being read.
    #[error("backend connection broke during the response")]
    Interrupted,
    /// The backend answered with a server-error (or otherwise unusable) status.
    #[error("backend answered with status {0}")]
    Status(u16),
    /// The response body exceeded the tool's limit.
    #[error("backend response exceeds {0} bytes")]
    ResponseTooLarge(usize),
    /// The response body is not JSON.
    #[error("backend response is not JSON")]
    InvalidResponse,
    /// The backend already has its maximum of calls in flight.
    #[error("backend is saturated ({0} calls in flight)")]
    Saturated(usize),
    /// The backend's circuit breaker is open after repeated failures.
    #[error("backend circuit is open after repeated failures")]
    CircuitOpen {
        /// Seconds until a call may be tried again.
        retry_after_secs: u64,
    },
    /// The broker could not sign the call's assertion; nothing was sent.
    #[error("cannot sign the backend assertion")]
    Signing,
}

impl DispatchError {
    /// A stable class for the decision log.
    pub fn class(&self) -> &'static str {
        match self {
            DispatchError::Timeout(_) => "timeout",
            DispatchError::Unreachable => "unreachable",
            DispatchError::Interrupted => "interrupted",
            DispatchError::Status(_) => "bad_status",
            DispatchError::ResponseTooLarge(_) => "response_too_large",
            DispatchError::InvalidResponse => "invalid_response",
            DispatchError::Saturated(_) => "saturated",
            DispatchError::CircuitOpen { .. } => "circuit_open",
            DispatchError::Signing => "signing_failed",
        }
    }

    /// Seconds a caller should wait before retrying, for errors that say so.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            DispatchError::Saturated(_) => Some(SATURATED_RETRY_AFTER_SECS),
            DispatchError::CircuitOpen { retry_after_secs } => Some(*retry_after_secs),
            DispatchError::Timeout(_)
            | DispatchError::Unreachable
            | DispatchError::Interrupted
            | DispatchError::Status(_)
            | DispatchError::ResponseTooLarge(_)
            | DispatchError::InvalidResponse
            | DispatchError::Signing => None,
        }
    }

    /// Whether this failure says the backend is unhealthy (counts toward opening its circuit).
    fn trips_breaker(&self) -> bool {
        match self {
            DispatchError::Timeout(_)
            | DispatchError::Unreachable
            | DispatchError::Interrupted
            | DispatchError::Status(_) => true,
            DispatchError::ResponseTooLarge(_)
            | DispatchError::InvalidResponse
            | DispatchError::Saturated(_)
            | DispatchError::CircuitOpen { .. }
            | DispatchError::Signing => false,
        }
    }
}

/// The result of a dispatch that got an answer from the tool.
#[derive(Debug, Clone, Serialize)]
pub struct DispatchOutcome {
    /// HTTP status from the backend.
    pub status: u16,
    /// The backend's result: its JSON body, or for a tool error a non-JSON body as text.
    #[serde(skip)]
    pub result: Value,
    /// Response body size.
    pub bytes: usize,
    /// The tool reported an error (a 4xx): the agent gets it as an `is_error` result.
    pub is_error: bool,
    /// Connection attempts made (1 + retries).
    pub attempts: u32,
}

/// Who the call is for, as the assertion states it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The verified token's subject.
    pub subject: &'a str,
    /// The delegation chain, current actor first.
    pub actors: &'a [String],
}

impl<'a> From<&'a VerifiedToken> for Caller<'a> {
    fn from(token: &'a VerifiedToken) -> Self {
        Self {
            subject: &token.subject,
            actors: &token.actors,
        }
    }
}

/// Sends calls to tool backends over one pooled HTTP client.
#[derive(Clone)]
pub struct Dispatcher {
    client: reqwest::Client,
    keys: Arc<BrokerKeys>,
    issuer: String,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(Result<DispatchOutcome, DispatchError>),
    /// Failed before any response: safe to retry an idempotent call.
    ConnectionFailed,
}

impl Dispatcher {
    /// Builds the shared client. Redirects are not followed: a backend cannot bounce a call
    /// elsewhere. `issuer` is the `iss` of the assertions signed with `keys`.
    pub fn new(keys: Arc<BrokerKeys>, issuer: String) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("toolgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            keys,
            issuer,
        })
    }

    /// The broker's public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        self.keys.jwks()
    }

    /// Calls the tool's backend with `arguments` for `caller`, tagging it with `decision_id`.
    pub async fn call(
        &self,
        tool: &Tool,
        arguments: &Value,
        decision_id: &str,
        caller: Caller<'_>,
    ) -> (Result<DispatchOutcome, DispatchError>, Duration) {
        let started = Instant::now();
        let result = match &tool.backend {
            Backend::Http(backend) => {
                self.http(tool, backend, arguments, decision_id, caller)
                    .await
            }
            Backend::Mcp(backend) => {
                self.mcp(tool, backend, arguments, decision_id, caller)
                    .await
            }
        };
        (result, started.elapsed())
    }

    async fn http(
        &self,
        tool: &Tool,
        backend: &HttpBackend,
        arguments: &Value,
        decision_id: &str,
        caller: Caller<'_>,
    ) -> Result<DispatchOutcome, DispatchError> {
        let (_slot, permit) = admit(
            &backend.concurrency,
            backend.max_concurrent,
            &backend.breaker,
        )?;
        let body = serde_json::to_vec(arguments).map_err(|_| DispatchError::InvalidResponse)?;
        let assertion = self.assertion(tool, &backend.audience, &body, decision_id, caller)?;
        let calls = async {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match self
                    .attempt(backend, &body, &assertion, decision_id, &tool.id)
                    .await
                {
                    Attempt::Done(result) => {
                        return result.map(|o| DispatchOutcome { attempts, ..o });
                    }
                    Attempt::ConnectionFailed if attempts <= backend.retries => {
                        tracing::info!(tool = %tool.id, attempt = attempts, "retrying after a connection error");
                    }
                    Attempt::ConnectionFailed => return Err(DispatchError::Unreachable),
                }
            }
        };
        let result = match tokio::time::timeout(backend.timeout, calls).await {
            Ok(result) => result,
            Err(_) => Err(DispatchError::Timeout(backend.timeout.as_millis() as u64)),
        };
        permit.record(!result.as_ref().is_err_and(DispatchError::trips_breaker));
        result
    }

    /// Calls an upstream MCP server's tool with `tools/call`, with the same limits, breaker,
    /// assertion and bounds as an HTTP backend. The result is the upstream's `CallToolResult`;
    /// its `isError`, or a JSON-RPC error, is the tool's own error.
    async fn mcp(
        &self,
        tool: &Tool,
        backend: &McpBackend,
        arguments: &Value,
        decision_id: &str,
        caller: Caller<'_>,
    ) -> Result<DispatchOutcome, DispatchError> {
        let link = &backend.link;
        let (_slot, permit) = admit(&link.concurrency, link.max_concurrent, &link.breaker)?;
        // The assertion's `body_sha256` covers the `arguments` exactly as serialised into
        // the `tools/call` request (compact JSON, as here).
        let body = serde_json::to_vec(arguments).map_err(|_| DispatchError::InvalidResponse)?;
        let assertion = self.assertion(tool, &link.audience, &body, decision_id, caller)?;
        let extra = [
            (ASSERTION_HEADER, assertion.as_str()),
            ("x-toolgate-decision-id", decision_id),
            ("x-toolgate-tool", tool.id.as_str()),
        ];
        let timeout = link.client.timeout();
        let call = link.client.call_tool(&backend.tool, arguments, &extra);
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => mcp_outcome(result),
            Err(_) => Err(DispatchError::Timeout(timeout.as_millis() as u64)),
        };
        if let Err(e) = &result {
            tracing::warn!(tool = %tool.id, upstream = %link.client.name(), error = %e, "upstream call failed");
        }
        permit.record(!result.as_ref().is_err_and(DispatchError::trips_breaker));
        result
    }

    fn assertion(
        &self,
        tool: &Tool,
        audience: &str,
        body: &[u8],
        decision_id: &str,
        caller: Caller<'_>,
    ) -> Result<String, DispatchError> {
        let now = crate::auth::unix_now();
        let claims = AssertionClaims {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            sub: caller.subject.to_owned(),
            act: super::assertion::act_claim(caller.actors),
            tool: tool.id.clone(),
            body_sha256: super::assertion::body_sha256(body),
            decision_id: decision_id.to_owned(),
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let key = self.keys.signer().map_err(|e| {
            tracing::error!(error = %e, "no broker signing key");
            DispatchError::Signing
        })?;
        key.sign(ASSERTION_TYP, &claims).map_err(|e| {
            tracing::error!(error = %e, "assertion signing failed");
            DispatchError::Signing
        })
    }

    async fn attempt(
        &self,
        backend: &HttpBackend,
        body: &[u8],
        assertion: &str,
        decision_id: &str,
        tool_id: &str,
    ) -> Attempt {
        let mut request = self
            .client
            .post(backend.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-toolgate-decision-id", decision_id)
            .header("x-toolgate-tool", tool_id)
            .header(ASSERTION_HEADER, assertion)
            .body(body.to_vec());
        if let Some(credential) = &backend.credential {
            request = request.bearer_auth(credential.expose());
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Attempt::Done(Err(DispatchError::Timeout(
                    backend.timeout.as_millis() as u64
                )));
            }
            // No response arrived (refused, reset, closed before the status line): the
            // backend cannot have answered, so an idempotent call may be sent again.
            Err(_) => return Attempt::ConnectionFailed,
        };
        let max = backend.max_response_bytes;
        let status = response.status();
        if let Some(len) = response.content_length()
            && len > max as u64
        {
            return Attempt::Done(Err(DispatchError::ResponseTooLarge(max)));
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > max {
                        // Dropping the response here closes the connection instead of draining it.
                        return Attempt::Done(Err(DispatchError::ResponseTooLarge(max)));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return Attempt::Done(Err(DispatchError::Interrupted)),
            }
        }
        Attempt::Done(outcome(status, bytes))
    }
}

/// Admits a call to a backend: a concurrency slot, then a circuit-breaker permit. Saturation
/// is checked first so that a refused call does not use up a half-open probe.
fn admit<'a>(
    concurrency: &'a tokio::sync::Semaphore,
    max_concurrent: usize,
    breaker: &'a super::breaker::CircuitBreaker,
) -> Result<
    (
        tokio::sync::SemaphorePermit<'a>,
        super::breaker::CallPermit<'a>,
    ),
    DispatchError,
> {
    let slot = concurrency
        .try_acquire()
        .map_err(|_| DispatchError::Saturated(max_concurrent))?;
    let permit = breaker
        .acquire()
        .map_err(|wait| DispatchError::CircuitOpen {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        })?;
    Ok((slot, permit))
}

/// Maps the backend's answer: 2xx is the result; 4xx is the tool's own error, returned to the
/// agent as an `is_error` result (as MCP's `isError`) so it can correct itself; anything else
/// (5xx, and 1xx/3xx since redirects are not followed) is a backend failure.
fn outcome(status: reqwest::StatusCode, bytes: Vec<u8>) -> Result<DispatchOutcome, DispatchError> {
    let parsed = serde_json::from_slice::<Value>(&bytes);
    let (result, is_error) = if status.is_success() {
        (parsed.map_err(|_| DispatchError::InvalidResponse)?, false)
    } else if status.is_client_error() {
        let result =
            parsed.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (result, true)
    } else {
        return Err(DispatchError::Status(status.as_u16()));
    };
    Ok(DispatchOutcome {
        status: status.as_u16(),
        result,
        bytes: bytes.len(),
        is_error,
        attempts: 1,
    })
}

/// Maps an upstream's answer: a `CallToolResult` is the result (`isError: true` makes it the
/// tool's own error); a JSON-RPC error is the tool's own error too, as a `CallToolResult`
/// carrying its message; transport failures are backend failures.
fn mcp_outcome(result: Result<Value, UpstreamError>) -> Result<DispatchOutcome, DispatchError> {
    let (result, is_error) = match result {
        Ok(result) => {
            let is_error = result.get("isError") == Some(&Value::Bool(true));
            (result, is_error)
        }
        Err(UpstreamError::Rpc { code, message }) => (
            serde_json::json!({
                "content": [{ "type": "text", "text": format!("upstream error {code}: {message}") }],
                "isError": true,
            }),
            true,
        ),
        Err(e) => {
            return Err(match e {
                UpstreamError::Timeout(ms) => DispatchError::Timeout(ms),
                UpstreamError::Unreachable => DispatchError::Unreachable,
                UpstreamError::Interrupted => DispatchError::Interrupted,
                UpstreamError::Status(status) => DispatchError::Status(status),
                UpstreamError::SessionExpired => DispatchError::Status(404),
                UpstreamError::TooLarge(max) => DispatchError::ResponseTooLarge(max),
                UpstreamError::Invalid(_)
                | UpstreamError::Version(_)
                | UpstreamError::TooManyTools(_)
                | UpstreamError::Rpc { .. } => DispatchError::InvalidResponse,
            });
        }
    };
    Ok(DispatchOutcome {
        status: 200,
        bytes: result.to_string().len(),
        result,
        is_error,
        attempts: 1,
    })
}
