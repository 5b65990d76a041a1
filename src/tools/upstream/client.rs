//! The MCP client for one upstream server over Streamable HTTP: the `initialize` handshake,
//! the session, `tools/list` and `tools/call`.
//!
//! Every request carries the broker's own credential for the upstream, never the agent's
//! token. Each answer is a JSON body or an SSE stream; both are bounded in size by
//! `max_response_bytes` and in time by the caller. On a stream, the response whose id matches
//! is taken; a `notifications/tools/list_changed` seen on any stream wakes the refresher
//! ([`McpClient::changed`]); other notifications and server requests are ignored (the broker
//! declares no client capabilities, so the upstream has nothing to ask it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use super::protocol::{
    LATEST_PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, PROTOCOL_VERSIONS, SESSION_HEADER,
};
use super::sse::SseReader;
use crate::tools::Credential;

/// Most `tools/list` pages followed: a cursor loop cannot keep the broker listing forever.
pub const MAX_LIST_PAGES: usize = 100;

/// Longest session id kept; the upstream chooses it and it is sent back on every request.
const MAX_SESSION_ID_BYTES: usize = 256;

/// Connection set-up is bounded separately, so a black-holed upstream fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The notification that the upstream's tool list changed.
pub const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";

/// Why a request to an upstream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No answer within the time allowed.
    #[error("upstream timed out after {0} ms")]
    Timeout(u64),
    /// The upstream could not be reached.
    #[error("upstream unreachable")]
    Unreachable,
    /// The connection broke while the answer was being read.
    #[error("upstream connection broke during the response")]
    Interrupted,
    /// The upstream answered with an unusable HTTP status.
    #[error("upstream answered with status {0}")]
    Status(u16),
    /// The answer exceeded the size limit.
    #[error("upstream response exceeds {0} bytes")]
    TooLarge(usize),
    /// The answer is not a JSON-RPC response to the request.
    #[error("invalid upstream response: {0}")]
    Invalid(String),
    /// The upstream does not know the session (HTTP 404): it must be initialized again.
    #[error("upstream session expired")]
    SessionExpired,
    /// The upstream negotiated a protocol version toolgate does not speak.
    #[error("upstream speaks protocol version `{0}`, which toolgate does not")]
    Version(String),
    /// The upstream lists more tools than allowed.
    #[error("upstream lists more than {0} tools")]
    TooManyTools(usize),
    /// The upstream answered with a JSON-RPC error.
    #[error("upstream error {code}: {message}")]
    Rpc {
        /// The JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
    },
}

/// How to reach one upstream and what it may send back.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The upstream's name (the `<server>` of its tools).
    pub name: String,
    /// The Streamable HTTP endpoint.
    pub url: reqwest::Url,
    /// The broker's own credential for the upstream.
    pub credential: Option<Credential>,
    /// Time allowed for one request.
    pub timeout: Duration,
    /// Largest answer accepted.
    pub max_response_bytes: usize,
    /// Most tools accepted from `tools/list`.
    pub max_tools: usize,
}

/// An initialized session.
#[derive(Debug)]
struct Session {
    id: Option<HeaderValue>,
    version: &'static str,
}

/// Extra headers on one request (the per-call assertion and decision id).
pub type ExtraHeaders<'a> = &'a [(&'static str, &'a str)];

/// The client for one upstream; shared by its tools and its refresher.
#[derive(Debug)]
pub struct McpClient {
    options: ClientOptions,
    http: reqwest::Client,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    next_id: AtomicU64,
    changed: tokio::sync::Notify,
}

impl McpClient {
    /// A client with its own connection pool; redirects are not followed.
    pub fn new(options: ClientOptions) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("toolgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            options,
            http,
            session: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// How this client reaches its upstream.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The endpoint.
    pub fn url(&self) -> &reqwest::Url {
        &self.options.url
    }

    /// Time allowed for one request.
    pub fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// Notified when the upstream announced that its tool list changed.
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// Every tool the upstream lists (the raw `Tool` objects), following `nextCursor` for at
    /// most [`MAX_LIST_PAGES`] pages and refusing more than `max_tools` tools.
    pub async fn list_tools(&self) -> Result<Vec<Value>, UpstreamError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let result = self.timed(self.request("tools/list", params, &[])).await?;
            let page = result
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("`tools/list` result has no `tools` array"))?;
            if tools.len() + page.len() > self.options.max_tools {
                return Err(UpstreamError::TooManyTools(self.options.max_tools));
            }
            tools.extend(page.iter().cloned());
            match result.get("nextCursor") {
                Some(Value::String(next)) => cursor = Some(next.clone()),
                None | Some(Value::Null) => return Ok(tools),
                Some(_) => return Err(invalid("`nextCursor` is not a string")),
            }
        }
        Err(invalid(format!(
            "`tools/list` has more than {MAX_LIST_PAGES} pages"
        )))
    }

    /// Calls `tool` with `arguments`; the result is the upstream's `CallToolResult` object.
    /// Not bounded in time here: the dispatcher bounds the whole call.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: &Value,
        extra: ExtraHeaders<'_>,
    ) -> Result<Value, UpstreamError> {
        let result = self
            .request(
                "tools/call",
                json!({ "name": tool, "arguments": arguments }),
                extra,
            )
            .await?;
        if !result.is_object() {
            return Err(invalid("`tools/call` result is not an object"));
        }
        Ok(result)
    }

    /// Connects (initializing a session if there is none) and checks the upstream answers.
    pub async fn connect(&self) -> Result<(), UpstreamError> {
        self.timed(self.session()).await.map(|_| ())
    }

    /// Listens on the upstream's GET stream for `tools/list_changed` until it ends. `Ok(false)`
    /// when the upstream offers no such stream (405), as the specification allows.
    pub async fn listen(&self) -> Result<bool, UpstreamError> {
        let session = self.timed(self.session()).await?;
        let request = self
            .authorized(self.http.get(self.options.url.clone()), Some(&session))
            .header(ACCEPT, "text/event-stream");
        let mut response = self
            .timed(async { request.send().await.map_err(send_error) })
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Ok(false);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            self.forget(&session).await;
            return Err(UpstreamError::SessionExpired);
        }
        if !status.is_success() || !is_event_stream(&response) {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        // A long-lived stream: each event is bounded, the stream as a whole is not.
        let mut reader = SseReader::new(self.options.max_response_bytes);
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(true),
                Err(_) => return Err(UpstreamError::Interrupted),
            };
            let events = reader.feed(&chunk).map_err(|e| invalid(e.to_string()))?;
            for event in events {
                if let Ok(message) = serde_json::from_str::<Value>(&event.data) {
                    self.notice(&message);
                }
            }
        }
    }

    async fn timed<T>(
        &self,
        work: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        match tokio::time::timeout(self.options.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(
                self.options.timeout.as_millis() as u64
            )),
        }
    }

    /// One request in the session, initializing it first if needed, and once more after the
    /// upstream forgot the session (404). The result member, or the JSON-RPC error.
    async fn request(
        &self,
        method: &str,
        params: Value,
        extra: ExtraHeaders<'_>,
    ) -> Result<Value, UpstreamError> {
        let mut retried = false;
        loop {
            let session = self.session().await?;
            match self.exchange(Some(&session), method, &params, extra).await {
                Err(UpstreamError::SessionExpired) if !retried => {
                    tracing::info!(upstream = %self.options.name, "upstream session expired: initializing again");
                    self.forget(&session).await;
                    retried = true;
                }
                other => return other.and_then(result_of),
            }
        }
    }

    /// The current session, or a new one from the `initialize` handshake. Holding the lock
    /// across the handshake makes concurrent callers wait for one session, not start many.
    async fn session(&self) -> Result<Arc<Session>, UpstreamError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(session.clone());
        }
        let session = Arc::new(self.initialize().await?);
        *slot = Some(session.clone());
        tracing::info!(upstream = %self.options.name, protocol_version = session.version, "upstream session initialized");
        Ok(session)
    }

    async fn forget(&self, expired: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, expired)) {
            *slot = None;
        }
    }

    async fn initialize(&self) -> Result<Session, UpstreamError> {
        let params = json!({
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "toolgate", "version": env!("CARGO_PKG_VERSION") },
        });
        let (response, session_id) = self
            .exchange_with_session_id(None, "initialize", &params, &[])
            .await?;
        let result = result_of(response)?;
        let offered = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("`initialize` result has no `protocolVersion`"))?;
        let version = PROTOCOL_VERSIONS
            .iter()
            .find(|v| **v == offered)
            .ok_or_else(|| UpstreamError::Version(offered.chars().take(64).collect()))?;
        let session = Session {
            id: session_id,
            version,
        };
        self.notify(&session, "notifications/initialized").await?;
        Ok(session)
    }

    /// Sends a notification; the upstream answers 202 with no body.
    async fn notify(&self, session: &Session, method: &str) -> Result<(), UpstreamError> {
        let body = json!({ "jsonrpc": "2.0", "method": method });
        let response = self
            .post(Some(session), &body, &[])
            .send()
            .await
            .map_err(send_error)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Status(status.as_u16()))
        }
    }

    async fn exchange(
        &self,
        session: Option<&Session>,
        method: &str,
        params: &Value,
        extra: ExtraHeaders<'_>,
    ) -> Result<Value, UpstreamError> {
        self.exchange_with_session_id(session, method, params, extra)
            .await
            .map(|(message, _)| message)
    }

    /// POSTs one request and reads the response message with the same id, from a JSON body
    /// or an SSE stream. Also returns the session id the upstream assigned, if any.
    async fn exchange_with_session_id(
        &self,
        session: Option<&Session>,
        method: &str,
        params: &Value,
        extra: ExtraHeaders<'_>,
    ) -> Result<(Value, Option<HeaderValue>), UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut response = self
            .post(session, &body, extra)
            .send()
            .await
            .map_err(send_error)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND && session.is_some_and(|s| s.id.is_some()) {
            return Err(UpstreamError::SessionExpired);
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let session_id = match response.headers().get(SESSION_HEADER) {
            Some(v) if v.len() <= MAX_SESSION_ID_BYTES && v.to_str().is_ok() => Some(v.clone()),
            Some(_) => return Err(invalid("unusable session id")),
            None => None,
        };
        let max = self.options.max_response_bytes;
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(UpstreamError::TooLarge(max));
        }
        let expected = json!(id);
        if is_event_stream(&response) {
            let mut reader = SseReader::new(max);
            let mut read = 0usize;
            loop {
                let chunk = match response.chunk().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => return Err(invalid("the stream ended without a response")),
                    Err(_) => return Err(UpstreamError::Interrupted),
                };
                read += chunk.len();
                if read > max {
                    return Err(UpstreamError::TooLarge(max));
                }
                let events = reader.feed(&chunk).map_err(|e| invalid(e.to_string()))?;
                for event in events {
                    let message: Value = serde_json::from_str(&event.data)
                        .map_err(|_| invalid("an event is not JSON"))?;
                    if self.is_response(&message, &expected) {
                        return Ok((message, session_id));
                    }
                }
            }
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > max {
                        return Err(UpstreamError::TooLarge(max));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return Err(UpstreamError::Interrupted),
            }
        }
        let message: Value =
            serde_json::from_slice(&bytes).map_err(|_| invalid("the body is not JSON"))?;
        let messages = match message {
            Value::Array(batch) => batch,
            single => vec![single],
        };
        messages
            .into_iter()
            .find(|m| self.is_response(m, &expected))
            .map(|m| (m, session_id))
            .ok_or_else(|| invalid("no response with the request's id"))
    }

    /// Whether `message` answers request `id`; notes a notification on the way.
    fn is_response(&self, message: &Value, id: &Value) -> bool {
        if message.get("method").is_some() {
            self.notice(message);
            return false;
        }
        message.get("id") == Some(id)
    }

    fn notice(&self, message: &Value) {
        if message.get("method").and_then(Value::as_str) == Some(TOOLS_LIST_CHANGED) {
            tracing::info!(upstream = %self.options.name, "upstream announced a new tool list");
            self.changed.notify_one();
        }
    }

    fn post(
        &self,
        session: Option<&Session>,
        body: &Value,
        extra: ExtraHeaders<'_>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .authorized(self.http.post(self.options.url.clone()), session)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body.to_string());
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request
    }

    /// The broker's credential and the session headers; never anything of the agent's.
    fn authorized(
        &self,
        mut request: reqwest::RequestBuilder,
        session: Option<&Session>,
    ) -> reqwest::RequestBuilder {
        if let Some(credential) = &self.options.credential {
            request = request.bearer_auth(credential.expose());
        }
        if let Some(session) = session {
            if let Some(id) = &session.id {
                request = request.header(SESSION_HEADER, id.clone());
            }
            request = request.header(PROTOCOL_VERSION_HEADER, session.version);
        }
        request
    }
}

fn invalid(reason: impl Into<String>) -> UpstreamError {
    UpstreamError::Invalid(reason.into())
}

fn send_error(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout(CONNECT_TIMEOUT.as_millis() as u64)
    } else {
        UpstreamError::Unreachable
    }
}

fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The `result` of a JSON-RPC response, or its `error` as [`UpstreamError::Rpc`].
fn result_of(message: Value) -> Result<Value, UpstreamError> {
    let Value::Object(mut map) = message else {
        return Err(invalid("the response is not an object"));
    };
    if let Some(error) = map.remove("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(1000)
            .collect();
        return Err(UpstreamError::Rpc { code, message });
    }
    map.remove("result")
        .ok_or_else(|| invalid("the response has neither `result` nor `error`"))
}
