//! Upstream MCP servers as tool sources: discovery at start-up, refresh, and status.
//!
//! At start-up, before the policy set is loaded, every upstream is connected and its tools
//! are listed and mapped ([`super::upstream_tool`]), so the first set is validated with
//! them. Later listings are installed by `crate::reload` with `App::replace_tools`, which
//! regenerates and revalidates the policy set first. An unreachable upstream does not stop the
//! broker: its last good listing, kept in `<state_dir>/upstreams/<name>.json`, is registered
//! instead (calls then fail like any backend's until it is back), or, on a first start, its
//! tools are absent. Its status says why, and it is retried every `retry_interval_ms`. A running upstream's tools are refreshed on
//! `notifications/tools/list_changed` (on any response stream, or on its GET listen stream),
//! on SIGHUP and on `POST /admin/policies/reload`. If an upstream becomes unreachable later,
//! its last listed tools stay registered and their calls fail like any backend's (502, then
//! the circuit breaker).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::client::{ClientOptions, McpClient, UpstreamError};
use super::{SkipReason, UpstreamLink, listed_name, upstream_tool};
use crate::config::{Config, UpstreamConfig};
use crate::tools::Tool;
use crate::tools::breaker::CircuitBreaker;

/// After a listen stream ends normally, wait this long before opening another.
const LISTEN_RECONNECT: Duration = Duration::from_secs(1);

/// An upstream could not be set up from the config (the broker refuses to start).
#[derive(Debug, thiserror::Error)]
#[error("upstream `{name}`: {reason}")]
pub struct UpstreamSetupError {
    /// The upstream.
    pub name: String,
    /// What is wrong (never the credential itself).
    pub reason: String,
}

/// One upstream's state, as `/readyz` and `/admin/status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    /// The upstream's name.
    pub name: String,
    /// The last attempt to list its tools succeeded.
    pub connected: bool,
    /// Tools registered from it.
    pub tools: usize,
    /// Tools it listed that were not registered (see the log for each reason).
    pub skipped: usize,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The tools come from the listing saved at the last successful connection, not from a
    /// live one (the upstream was unreachable at start-up).
    pub from_saved_listing: bool,
}

struct State {
    tools: Vec<Arc<Tool>>,
    /// SHA-256 of the last listing, to install a new registry only when it changed.
    fingerprint: Option<[u8; 32]>,
    status: UpstreamStatus,
}

/// One upstream: its config, its link (client and limits), its current tools.
pub struct Upstream {
    config: UpstreamConfig,
    link: Arc<UpstreamLink>,
    state: Mutex<State>,
    /// Where the last good listing is kept.
    saved_listing: PathBuf,
}

/// Every configured upstream.
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    /// Serialises registry installs, so that an older listing never replaces a newer one.
    install: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("count", &self.list.len())
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Builds a client for every `[[upstreams]]` entry; connects to none yet.
    pub fn from_config(config: &Config) -> Result<Self, UpstreamSetupError> {
        let mut list = Vec::new();
        for up in &config.upstreams {
            let error = |reason: String| UpstreamSetupError {
                name: up.name.clone(),
                reason,
            };
            let checked = up
                .checked
                .as_ref()
                .ok_or_else(|| error("config not validated".to_owned()))?;
            let credential =
                super::load_credential(config, &up.name, &up.credential_env, &up.credential_file)
                    .map_err(|e| error(e.to_string()))?;
            let client = McpClient::new(ClientOptions {
                name: up.name.clone(),
                url: checked.url.clone(),
                credential,
                timeout: Duration::from_millis(up.timeout_ms),
                max_response_bytes: up.max_response_bytes,
                max_tools: up.max_tools,
            })
            .map_err(|e| error(e.to_string()))?;
            let link = UpstreamLink {
                client,
                audience: checked.audience.clone(),
                concurrency: tokio::sync::Semaphore::new(up.max_concurrent),
                max_concurrent: up.max_concurrent,
                breaker: CircuitBreaker::new(
                    up.circuit_failures,
                    Duration::from_millis(up.circuit_cooldown_ms),
                ),
            };
            list.push(Arc::new(Upstream {
                saved_listing: config
                    .state_dir()
                    .join("upstreams")
                    .join(format!("{}.json", up.name)),
                config: up.clone(),
                link: Arc::new(link),
                state: Mutex::new(State {
                    tools: Vec::new(),
                    fingerprint: None,
                    status: UpstreamStatus {
                        name: up.name.clone(),
                        connected: false,
                        tools: 0,
                        skipped: 0,
                        error: Some("not connected yet".to_owned()),
                        from_saved_listing: false,
                    },
                }),
            }));
        }
        Ok(Self {
            list,
            install: tokio::sync::Mutex::new(()),
        })
    }

    /// Lists every upstream's tools before the app exists, so that the first policy set is
    /// validated with them (a policy may name an upstream tool's action). `server::build` is
    /// synchronous, so this runs on a thread of its own with its own runtime, through
    /// throw-away clients (their connections die with that runtime). Each upstream is bounded
    /// by its timeout; one that fails is only marked down. Blocking.
    pub fn discover_blocking(&self) -> Vec<Arc<Tool>> {
        if self.list.is_empty() {
            return Vec::new();
        }
        let list = self.list.clone();
        let worker = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the upstream discovery runtime");
                    return;
                }
            };
            runtime.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for up in list {
                    tasks.spawn(async move {
                        match McpClient::new(up.link.client.options().clone()) {
                            Ok(client) => {
                                up.refresh_with(&client).await;
                            }
                            Err(e) => up.failed(&UpstreamError::Invalid(e.to_string())),
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            });
        });
        if worker.join().is_err() {
            tracing::error!("upstream discovery failed");
        }
        for up in &self.list {
            if !up.connected() {
                up.adopt_saved_listing();
            }
        }
        self.tools()
    }

    /// Whether no upstream is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every upstream's current tools.
    pub fn tools(&self) -> Vec<Arc<Tool>> {
        self.list
            .iter()
            .flat_map(|u| u.lock().tools.clone())
            .collect()
    }

    /// Refreshes every upstream (concurrently); whether any listing changed. The outcome is
    /// logged and reflected in each upstream's status.
    pub async fn refresh_all(&self) -> bool {
        let mut tasks = tokio::task::JoinSet::new();
        for up in &self.list {
            let up = up.clone();
            tasks.spawn(async move { up.refresh().await });
        }
        let mut changed = false;
        while let Some(result) = tasks.join_next().await {
            changed |= result.unwrap_or(false);
        }
        changed
    }

    /// Held while a registry is installed, so that an older listing never replaces a newer one.
    pub async fn install_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.install.lock().await
    }

    /// Makes the next refresh install again, even if the listings are the same (the last
    /// install was rejected).
    pub fn forget_fingerprints(&self) {
        for up in &self.list {
            up.lock().fingerprint = None;
        }
    }

    /// Starts the background refreshers and listen streams (start-up discovery has already
    /// listed the tools); `install` is called after a refresh that changed a listing. Abort
    /// the handles before dropping what `install` holds.
    pub fn start<F, Fut>(&self, install: F) -> Vec<JoinHandle<()>>
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = Vec::new();
        for up in &self.list {
            tasks.push(tokio::spawn(refresher(up.clone(), install.clone())));
            tasks.push(tokio::spawn(listener(up.clone())));
        }
        tasks
    }

    /// Every upstream's status.
    pub fn statuses(&self) -> Vec<UpstreamStatus> {
        self.list.iter().map(|u| u.lock().status.clone()).collect()
    }
}

impl Upstream {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists the upstream's tools and keeps the mapped ones; whether the listing changed.
    async fn refresh(&self) -> bool {
        self.refresh_with(&self.link.client).await
    }

    /// [`Upstream::refresh`] through `client`.
    async fn refresh_with(&self, client: &McpClient) -> bool {
        let name = &self.config.name;
        let listed = match client.list_tools().await {
            Ok(listed) => listed,
            Err(e) => {
                self.failed(&e);
                return false;
            }
        };
        let changed = self.adopt(&listed, true);
        if changed {
            let (path, listing) = (self.saved_listing.clone(), listed);
            let url = self.config.url.clone();
            let saved =
                tokio::task::spawn_blocking(move || save_listing(&path, &url, listing)).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(upstream = %name, error = %e, "cannot save the upstream's listing; a restart while it is down will start without its tools");
            }
        }
        changed
    }

    /// Maps a listing to tools and makes it current; whether it differs from the last one.
    fn adopt(&self, listed: &[Value], live: bool) -> bool {
        let name = &self.config.name;
        let fingerprint: [u8; 32] =
            Sha256::digest(Value::Array(listed.to_vec()).to_string()).into();
        let mut tools = Vec::new();
        let mut skipped = 0;
        for entry in listed {
            match upstream_tool(&self.config, &self.link, entry) {
                Ok(tool) => tools.push(Arc::new(tool)),
                Err(SkipReason::NotAllowed) => {}
                Err(reason) => {
                    skipped += 1;
                    let tool: String = listed_name(entry).unwrap_or("").chars().take(80).collect();
                    tracing::warn!(upstream = %name, tool = %tool, reason = %reason, "upstream tool skipped");
                }
            }
        }
        let mut state = self.lock();
        let changed = state.fingerprint != Some(fingerprint);
        if live && !state.status.connected {
            tracing::info!(upstream = %name, tools = tools.len(), skipped, "upstream connected");
        }
        state.status = UpstreamStatus {
            name: name.clone(),
            connected: live,
            tools: tools.len(),
            skipped,
            error: if live {
                None
            } else {
                state.status.error.take()
            },
            from_saved_listing: !live,
        };
        state.fingerprint = Some(fingerprint);
        state.tools = tools;
        changed
    }

    /// At start-up, for an upstream that could not be reached: registers the listing saved
    /// at its last successful connection, if there is one for the same URL.
    fn adopt_saved_listing(&self) {
        let name = &self.config.name;
        match load_listing(&self.saved_listing, &self.config.url) {
            Ok(Some(listed)) => {
                self.adopt(&listed, false);
                // Not the live listing: the first live one must be installed even if equal.
                self.lock().fingerprint = None;
                tracing::warn!(upstream = %name, tools = listed.len(), "upstream unreachable at start-up: registering its last saved listing until it is back");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(upstream = %name, error = %e, "the upstream's saved listing cannot be read; starting without its tools");
            }
        }
    }

    fn failed(&self, error: &UpstreamError) {
        let mut state = self.lock();
        if state.status.connected || state.status.error.as_deref() != Some(&error.to_string()) {
            tracing::warn!(upstream = %self.config.name, error = %error, "upstream unavailable; its tools keep their last listing");
        }
        state.status.connected = false;
        state.status.error = Some(error.to_string());
    }

    fn connected(&self) -> bool {
        self.lock().status.connected
    }
}

/// The saved form of an upstream's listing.
#[derive(serde::Deserialize, Serialize)]
struct SavedListing {
    url: String,
    tools: Vec<Value>,
}

/// Writes the listing beside its final place and renames it there, so a crash never leaves a
/// half-written file.
fn save_listing(path: &Path, url: &str, tools: Vec<Value>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_vec(&SavedListing {
        url: url.to_owned(),
        tools,
    })?;
    let staging = path.with_extension("json.tmp");
    std::fs::write(&staging, text)?;
    std::fs::rename(&staging, path)
}

/// The saved listing for `url`; `None` if there is none, or it was saved for another URL.
fn load_listing(path: &Path, url: &str) -> std::io::Result<Option<Vec<Value>>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let saved: SavedListing = serde_json::from_slice(&text)?;
    Ok((saved.url == url).then_some(saved.tools))
}

/// Refreshes on a `tools/list_changed` notification, and retries while the upstream is down;
/// calls `install` after a refresh that changed the listing.
async fn refresher<F, Fut>(up: Arc<Upstream>, install: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let retry = Duration::from_millis(up.config.retry_interval_ms);
    loop {
        let down = !up.connected();
        tokio::select! {
            () = up.link.client.changed().notified() => {}
            () = tokio::time::sleep(retry), if down => {}
        }
        if up.refresh().await {
            install().await;
        }
    }
}

/// Keeps a GET listen stream open to the upstream, if it offers one, for its notifications.
async fn listener(up: Arc<Upstream>) {
    let retry = Duration::from_millis(up.config.retry_interval_ms);
    loop {
        match up.link.client.listen().await {
            Ok(false) => {
                tracing::debug!(upstream = %up.config.name, "upstream offers no listen stream");
                return;
            }
            Ok(true) => tokio::time::sleep(LISTEN_RECONNECT).await,
            Err(e) => {
                tracing::debug!(upstream = %up.config.name, error = %e, "upstream listen stream failed");
                tokio::time::sleep(retry).await;
            }
        }
    }
}
