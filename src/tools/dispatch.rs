//! Stage 5: dispatch of an allowed, recorded call to the tool's backend.
//!
//! The backend receives the arguments and the decision id, never the agent's token or any
//! header of the agent's request. Every call is bounded in time and in response size.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::{Backend, Tool};

/// Connection set-up is bounded separately from the whole call, so a black-holed backend
/// fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a dispatch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The backend did not answer within the tool's timeout.
    #[error("backend timed out after {0} ms")]
    Timeout(u64),
    /// The backend could not be reached.
    #[error("backend unreachable")]
    Unreachable,
    /// The backend answered with a non-success status.
    #[error("backend answered with status {0}")]
    Status(u16),
    /// The response body exceeded the tool's limit.
    #[error("backend response exceeds {0} bytes")]
    ResponseTooLarge(usize),
    /// The response body is not JSON.
    #[error("backend response is not JSON")]
    InvalidResponse,
}

impl DispatchError {
    /// A stable class for the decision log.
    pub fn class(&self) -> &'static str {
        match self {
            DispatchError::Timeout(_) => "timeout",
            DispatchError::Unreachable => "unreachable",
            DispatchError::Status(_) => "bad_status",
            DispatchError::ResponseTooLarge(_) => "response_too_large",
            DispatchError::InvalidResponse => "invalid_response",
        }
    }
}

/// The result of a successful dispatch.
#[derive(Debug, Clone, Serialize)]
pub struct DispatchOutcome {
    /// HTTP status from the backend.
    pub status: u16,
    /// The backend's JSON result.
    #[serde(skip)]
    pub result: Value,
    /// Response body size.
    pub bytes: usize,
}

/// Sends calls to tool backends over one pooled HTTP client.
#[derive(Clone)]
pub struct Dispatcher {
    client: reqwest::Client,
}

impl Dispatcher {
    /// Builds the shared client. Redirects are not followed: a backend cannot bounce a call
    /// elsewhere.
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("toolgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// Calls the tool's backend with `arguments`, tagging the call with `decision_id`.
    pub async fn call(
        &self,
        tool: &Tool,
        arguments: &Value,
        decision_id: &str,
    ) -> (Result<DispatchOutcome, DispatchError>, Duration) {
        let started = Instant::now();
        let result = match &tool.backend {
            Backend::Http {
                url,
                timeout,
                max_response_bytes,
            } => {
                let call =
                    self.http_call(url, arguments, decision_id, &tool.id, *max_response_bytes);
                match tokio::time::timeout(*timeout, call).await {
                    Ok(result) => result,
                    Err(_) => Err(DispatchError::Timeout(timeout.as_millis() as u64)),
                }
            }
        };
        (result, started.elapsed())
    }

    async fn http_call(
        &self,
        url: &reqwest::Url,
        arguments: &Value,
        decision_id: &str,
        tool_id: &str,
        max_response_bytes: usize,
    ) -> Result<DispatchOutcome, DispatchError> {
        let body = serde_json::to_vec(arguments).map_err(|_| DispatchError::InvalidResponse)?;
        let mut response = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-toolgate-decision-id", decision_id)
            .header("x-toolgate-tool", tool_id)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    DispatchError::Timeout(0)
                } else {
                    DispatchError::Unreachable
                }
            })?;
        let status = response.status();
        if let Some(len) = response.content_length()
            && len as usize > max_response_bytes
        {
            return Err(DispatchError::ResponseTooLarge(max_response_bytes));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| DispatchError::Unreachable)?
        {
            if bytes.len() + chunk.len() > max_response_bytes {
                // Dropping the response here closes the connection instead of draining it.
                return Err(DispatchError::ResponseTooLarge(max_response_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(DispatchError::Status(status.as_u16()));
        }
        let result: Value =
            serde_json::from_slice(&bytes).map_err(|_| DispatchError::InvalidResponse)?;
        Ok(DispatchOutcome {
            status: status.as_u16(),
            result,
            bytes: bytes.len(),
        })
    }
}
