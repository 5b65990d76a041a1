//! Stage 1 key source: a remote JWKS (by URL or OIDC discovery), refreshed in the background
//! on a schedule that honours `Cache-Control` within configured bounds, and refetched on an
//! unknown `kid` at most once per minimum interval (single-flight), so attacker-chosen `kid`s
//! cannot amplify traffic to the IdP. The last good key set serves while the IdP is
//! unreachable, up to a maximum staleness; after that the issuer fails closed.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use reqwest::Url;
use reqwest::header::{ACCEPT, CACHE_CONTROL};

use super::keys::{KeySet, KeySetError};
use crate::config::{IssuerConfig, RemoteKeysConfig};

/// Why a fetch of remote keys failed. Logged; callers only ever see `keys_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum RemoteKeysError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The request failed (connect, timeout, read).
    #[error("request to `{url}` failed: {message}")]
    Request {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The server answered with a non-success status.
    #[error("`{url}` answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The response is larger than allowed.
    #[error("response from `{url}` exceeds {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The discovery document is not usable.
    #[error("discovery document: {0}")]
    Discovery(String),
    /// The JWKS has no usable key.
    #[error("{0}")]
    Jwks(KeySetError),
}

/// Where the keys are fetched from: a JWKS URL, or the discovery document naming one.
pub enum Source {
    /// A JWKS URL.
    JwksUrl(Url),
    /// An OIDC discovery document URL.
    Discovery(Url),
}

/// One issuer's remote key source and the state of its refreshes.
pub struct RemoteKeys {
    issuer: String,
    source: Source,
    settings: RemoteKeysConfig,
    client: reqwest::Client,
    keys: Arc<ArcSwap<KeySet>>,
    /// Unix seconds of the last successful fetch (0: never).
    last_success: AtomicI64,
    /// Bumped on every successful fetch, so waiters can tell one happened while they queued.
    generation: AtomicU64,
    /// Single flight: one fetch at a time per issuer.
    fetch_lock: tokio::sync::Mutex<()>,
    /// When the last unknown-`kid` refetch started.
    last_on_demand: Mutex<Option<Instant>>,
    /// When the next scheduled refresh is due; every fetch (scheduled or on demand) sets it
    /// from the response's `Cache-Control`.
    next_due: Mutex<Instant>,
    /// Wakes the refresh loop when `next_due` changes.
    rescheduled: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    /// Sets up fetching `config`'s keys from `source`; `keys` is where fetched key sets are
    /// published. Nothing is fetched yet.
    pub fn new(
        config: &IssuerConfig,
        source: Source,
        keys: Arc<ArcSwap<KeySet>>,
    ) -> Result<Self, RemoteKeysError> {
        let settings = config.remote_keys.clone();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.fetch_timeout_ms))
            .timeout(Duration::from_millis(settings.fetch_timeout_ms))
            // A redirect could lead the fetch anywhere; key URLs are configured exactly.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("toolgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteKeysError::Client(e.to_string()))?;
        Ok(Self {
            issuer: config.issuer.clone(),
            source,
            settings,
            client,
            keys,
            last_success: AtomicI64::new(0),
            generation: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
            last_on_demand: Mutex::new(None),
            next_due: Mutex::new(Instant::now()),
            rescheduled: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Whether the key set is recent enough to use at `now` (Unix seconds).
    pub fn fresh(&self, now: i64) -> bool {
        let last = self.last_success.load(Ordering::Acquire);
        last > 0 && now - last <= self.settings.max_staleness_seconds as i64
    }

    /// Fetches now (waiting for any fetch in flight); on failure the last good set stays and
    /// the next attempt is due after the minimum interval.
    pub async fn refresh(&self) {
        let _flight = self.fetch_lock.lock().await;
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(issuer = %self.issuer, error = %e, "key refresh failed; keeping the last good key set");
            self.schedule(Duration::from_secs(self.settings.min_refresh_seconds));
        }
    }

    fn schedule(&self, after: Duration) {
        if let Ok(mut due) = self.next_due.lock() {
            *due = Instant::now() + after;
        }
        self.rescheduled.notify_one();
    }

    fn due(&self) -> Instant {
        self.next_due
            .lock()
            .map(|d| *d)
            .unwrap_or_else(|_| Instant::now())
    }

    /// Refetches because a token named a `kid` we do not have (or keys are missing). Returns
    /// whether a new key set may now be in place: true if a fetch succeeded, by us or by a
    /// concurrent caller we waited for. At most one such fetch per minimum interval.
    pub async fn refetch_on_demand(&self) -> bool {
        let seen = self.generation.load(Ordering::Acquire);
        let _flight = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        {
            let Ok(mut last) = self.last_on_demand.lock() else {
                return false;
            };
            let min = Duration::from_secs(self.settings.unknown_kid_min_interval_seconds);
            if last.is_some_and(|t| t.elapsed() < min) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.fetch_and_store().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "key refetch for an unknown kid failed");
                false
            }
        }
    }

    /// Runs scheduled refreshes until the key source is dropped (the loop holds only a weak
    /// reference, so it ends at its next wake-up).
    pub fn spawn_refresh_loop(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let rescheduled = self.rescheduled.clone();
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { break };
                let due = this.due();
                if due <= Instant::now() {
                    this.refresh().await;
                    continue;
                }
                drop(this);
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = rescheduled.notified() => {}
                }
            }
        })
    }

    async fn fetch_and_store(&self) -> Result<(), RemoteKeysError> {
        let jwks_url = match &self.source {
            Source::JwksUrl(url) => url.clone(),
            Source::Discovery(url) => self.discover(url).await?,
        };
        let (body, max_age) = self.get_bounded(&jwks_url).await?;
        let text = String::from_utf8(body)
            .map_err(|_| RemoteKeysError::Jwks(KeySetError::NotJwks("not UTF-8".to_owned())))?;
        let (keys, warnings) = KeySet::from_jwks_str(&text).map_err(RemoteKeysError::Jwks)?;
        for warning in warnings {
            tracing::warn!(issuer = %self.issuer, url = %jwks_url, %warning, "verification key skipped");
        }
        let count = keys.len();
        self.keys.store(Arc::new(keys));
        self.last_success
            .store(super::unix_now(), Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let s = &self.settings;
        // Refresh well before the set would go stale, whatever the IdP's cache header says.
        let before_stale = (s.max_staleness_seconds / 2).max(s.min_refresh_seconds);
        let next = max_age
            .unwrap_or(s.max_refresh_seconds)
            .clamp(s.min_refresh_seconds, s.max_refresh_seconds)
            .min(before_stale);
        tracing::info!(issuer = %self.issuer, keys = count, next_refresh_s = next, "issuer keys fetched");
        self.schedule(Duration::from_secs(next));
        Ok(())
    }

    /// Reads the discovery document and returns its `jwks_uri`.
    async fn discover(&self, url: &Url) -> Result<Url, RemoteKeysError> {
        let (body, _) = self.get_bounded(url).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| RemoteKeysError::Discovery("not JSON".to_owned()))?;
        // OIDC Discovery §4.3: the document must name the issuer we asked about.
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            return Err(RemoteKeysError::Discovery(
                "`issuer` does not match the configured issuer".to_owned(),
            ));
        }
        let uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| RemoteKeysError::Discovery("no `jwks_uri`".to_owned()))?;
        let parsed =
            Url::parse(uri).map_err(|_| RemoteKeysError::Discovery("bad `jwks_uri`".to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RemoteKeysError::Discovery(
                "`jwks_uri` is not http or https".to_owned(),
            ));
        }
        Ok(parsed)
    }

    /// GETs `url` within the size cap; returns the body and any `Cache-Control` max-age.
    async fn get_bounded(&self, url: &Url) -> Result<(Vec<u8>, Option<u64>), RemoteKeysError> {
        let failed = |e: reqwest::Error| RemoteKeysError::Request {
            url: url.to_string(),
            message: e.to_string(),
        };
        let limit = self.settings.max_response_bytes;
        let too_large = || RemoteKeysError::TooLarge {
            url: url.to_string(),
            limit,
        };
        let mut response = self
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(RemoteKeysError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let max_age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// The freshness lifetime a `Cache-Control` value grants: `max-age`, or 0 for
/// `no-cache`/`no-store` (the caller clamps it to the configured bounds).
pub fn cache_max_age(value: &str) -> Option<u64> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(0);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            max_age = n.trim_matches('"').parse().ok();
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::cache_max_age;

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(cache_max_age("public, max-age=300"), Some(300));
        assert_eq!(cache_max_age("max-age=\"60\""), Some(60));
        assert_eq!(cache_max_age("no-store"), Some(0));
        assert_eq!(cache_max_age("public"), None);
        assert_eq!(cache_max_age("max-age=-1"), None);
    }
}
