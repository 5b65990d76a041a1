//! Stage 1: authentication. Verifies the bearer JWT (asymmetric signature, issuer, audience,
//! time claims, lifetime) and turns it into a [`VerifiedToken`] the later stages read.
//!
//! The order of checks is fixed and stops at the first failure: size, shape, header,
//! issuer, algorithm, key, signature, claims. Nothing but the size check and base64/JSON
//! decoding runs before the signature is verified, and the unverified `iss` is used only to
//! choose which issuer's keys to try.

mod cache;
mod checks;
mod claims;
mod error;
mod json;
mod jws;
pub mod keys;
pub mod remote;
pub mod revocation;
mod revocation_view;
mod revoked;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use claims::Claims;
pub use error::TokenError;
pub use jws::{Jws, JwsHeader, decode_jws, verify_jws_signature};
pub use keys::{KeySet, KeySetError};
pub use revocation::{RevocationError, RevocationStore, TokenFacts};

use crate::config::{Config, IssuerConfig, IssuerKeySource};
use checks::{Audiences, check_claims, numeric_date};
use jws::{TokenParts, decode_parts};

/// Deepest RFC 8693 `act` nesting accepted; deeper chains are refused, not truncated.
pub const MAX_DELEGATION_DEPTH: usize = 4;

/// An error setting up the authenticator.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A JWKS file could not be read.
    #[error("cannot read JWKS file `{path}` for issuer `{issuer}`: {source}")]
    ReadJwks {
        /// The issuer.
        issuer: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A remote key source could not be set up.
    #[error("remote keys for issuer `{issuer}`: {source}")]
    Remote {
        /// The issuer.
        issuer: String,
        /// What was wrong.
        source: remote::RemoteKeysError,
    },
    /// The config was not validated, so the issuer's typed settings are missing.
    #[error("issuer `{issuer}`: config not validated")]
    Unvalidated {
        /// The issuer.
        issuer: String,
    },
    /// A JWKS file has no usable key.
    #[error("JWKS file `{path}` for issuer `{issuer}`: {source}")]
    BadJwks {
        /// The issuer.
        issuer: String,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: KeySetError,
    },
}

/// The facts of a verified token that the later stages use.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerifiedToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `aud`, as a list.
    pub audiences: Vec<String>,
    /// `scope` (space-delimited) and `scp` (array), normalised into one set.
    pub scopes: BTreeSet<String>,
    /// Groups from the issuer's groups claim.
    pub groups: Vec<String>,
    /// `client_id`, if present.
    pub client_id: Option<String>,
    /// `jti`, if present.
    pub jti: Option<String>,
    /// The `kid` of the key that verified the token.
    pub kid: Option<String>,
    /// The verified algorithm.
    pub algorithm: String,
    /// `iat`, if present.
    pub issued_at: Option<i64>,
    /// `exp`.
    pub expires_at: i64,
    /// The RFC 8693 delegation chain: the `sub` of each nested `act`, the current actor first.
    pub actors: Vec<String>,
    /// Every claim, for principal tags.
    #[serde(skip)]
    pub claims: Claims,
    /// SHA-256 of the compact token, hex: lets the log correlate without storing the token.
    pub token_sha256: String,
}

struct Issuer {
    config: IssuerConfig,
    algorithms: Vec<Algorithm>,
    source: KeySource,
    keys: Arc<ArcSwap<KeySet>>,
    /// Rejected reloads of a JWKS file, for `/admin/status`.
    reloads: std::sync::Mutex<KeyReloads>,
}

/// Rejected reloads of one issuer's JWKS file.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeyReloads {
    /// Reloads rejected since start (the last good key set kept serving).
    pub rejected: u64,
    /// The last rejection; cleared by the next reload that loads the file.
    pub last_error: Option<KeyReloadError>,
}

/// Why a JWKS file reload was rejected, and when.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyReloadError {
    /// What was wrong with the file.
    pub error: String,
    /// When, in Unix seconds.
    pub at: i64,
}

/// One issuer's keys as `/admin/status` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuerKeys {
    /// The issuer.
    pub issuer: String,
    /// `file` or `remote`.
    pub source: &'static str,
    /// Usable keys in the set now (0: every token of the issuer is refused).
    pub keys: usize,
    /// Rejected JWKS file reloads (always empty for a remote source).
    pub reloads: KeyReloads,
}

enum KeySource {
    File(PathBuf),
    Remote(Arc<remote::RemoteKeys>),
}

/// Verifies bearer tokens against the configured issuers.
pub struct Authenticator {
    issuers: Vec<Issuer>,
    max_token_bytes: usize,
    /// Tokens verified before; a hit skips parsing and the signature only.
    cache: cache::TokenCache,
    /// Revocations and seen single-use `jti`s; absent in offline tools (`token verify`).
    revocations: Option<Arc<RevocationStore>>,
    /// The admin audience, refused in agent tokens.
    admin_audience: [String; 1],
    /// Every issuer's agent audiences, refused in admin tokens.
    agent_audiences: Vec<String>,
}

impl Authenticator {
    /// Builds the authenticator, loading every issuer's key set once.
    pub fn from_config(config: &Config) -> Result<Self, AuthSetupError> {
        let mut issuers = Vec::new();
        for iss in &config.issuers {
            let checked = iss
                .checked
                .as_ref()
                .ok_or_else(|| AuthSetupError::Unvalidated {
                    issuer: iss.issuer.clone(),
                })?;
            let keys = Arc::new(ArcSwap::from_pointee(KeySet::default()));
            let remote = |source| {
                remote::RemoteKeys::new(iss, source, keys.clone())
                    .map(|r| KeySource::Remote(Arc::new(r)))
                    .map_err(|source| AuthSetupError::Remote {
                        issuer: iss.issuer.clone(),
                        source,
                    })
            };
            let source = match &checked.keys {
                IssuerKeySource::File(file) => {
                    let path = config.resolve(file);
                    keys.store(Arc::new(load_key_set(&iss.issuer, &path)?));
                    KeySource::File(path)
                }
                IssuerKeySource::JwksUrl(url) => remote(remote::Source::JwksUrl(url.clone()))?,
                IssuerKeySource::Discovery(url) => remote(remote::Source::Discovery(url.clone()))?,
            };
            let algorithms = checked.algorithms.clone();
            issuers.push(Issuer {
                config: iss.clone(),
                algorithms,
                source,
                keys,
                reloads: Default::default(),
            });
        }
        Ok(Self {
            issuers,
            max_token_bytes: config.limits.max_token_bytes,
            cache: cache::TokenCache::new(config.limits.token_cache_entries),
            revocations: None,
            admin_audience: [config.admin.audience.clone()],
            agent_audiences: config
                .issuers
                .iter()
                .flat_map(|i| i.audiences.iter().cloned())
                .collect(),
        })
    }

    /// Checks revocations and single-use `jti`s in `store` as the last verification step.
    pub fn with_revocations(mut self, store: Arc<RevocationStore>) -> Self {
        self.revocations = Some(store);
        self
    }

    /// The revocation store, if one is attached.
    pub fn revocations(&self) -> Option<&RevocationStore> {
        self.revocations.as_deref()
    }

    /// Re-reads every issuer's JWKS file. The file is the truth: a key it no longer lists is
    /// withdrawn, and a file listing no usable key (`{"keys":[]}`) withdraws them all. A file
    /// that cannot be read or is not a JWKS keeps the last good set, and the rejection is kept
    /// for [`Self::key_status`]. An unchanged file keeps its set (and the tokens cached
    /// against it).
    pub fn reload_keys(&self) -> Vec<AuthSetupError> {
        let mut errors = Vec::new();
        for issuer in &self.issuers {
            let KeySource::File(path) = &issuer.source else {
                continue;
            };
            let loaded = read_jwks_file(&issuer.config.issuer, path).and_then(|text| {
                parse_key_set(
                    &issuer.config.issuer,
                    path,
                    &text,
                    KeySet::from_jwks_str_allow_empty,
                )
            });
            let mut reloads = issuer
                .reloads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match loaded {
                Ok(keys) => {
                    reloads.last_error = None;
                    if keys.same_keys(&issuer.keys.load()) {
                        continue;
                    }
                    if keys.is_empty() {
                        tracing::warn!(issuer = %issuer.config.issuer, "JWKS file lists no usable key: every token of this issuer is refused");
                    } else {
                        tracing::info!(issuer = %issuer.config.issuer, keys = keys.len(), "JWKS file reloaded");
                    }
                    issuer.keys.store(Arc::new(keys));
                }
                Err(e) => {
                    reloads.rejected += 1;
                    reloads.last_error = Some(KeyReloadError {
                        error: e.to_string(),
                        at: unix_now(),
                    });
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// Each issuer's key count and rejected JWKS file reloads.
    pub fn key_status(&self) -> Vec<IssuerKeys> {
        self.issuers
            .iter()
            .map(|i| IssuerKeys {
                issuer: i.config.issuer.clone(),
                source: match i.source {
                    KeySource::File(_) => "file",
                    KeySource::Remote(_) => "remote",
                },
                keys: i.keys.load().len(),
                reloads: i
                    .reloads
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            })
            .collect()
    }

    /// The JWKS files issuers read their keys from.
    pub fn key_files(&self) -> Vec<PathBuf> {
        self.issuers
            .iter()
            .filter_map(|i| match &i.source {
                KeySource::File(path) => Some(path.clone()),
                KeySource::Remote(_) => None,
            })
            .collect()
    }

    /// Starts the background refresh of every remote key source (needs a Tokio runtime).
    /// Each loop ends by itself once the authenticator is dropped.
    pub fn start_refresh(&self) {
        for issuer in &self.issuers {
            if let KeySource::Remote(remote) = &issuer.source {
                remote.spawn_refresh_loop();
            }
        }
    }

    /// Fetches every remote key set once, now (for one-shot tools like `token verify`).
    pub async fn refresh_remote(&self) {
        for issuer in &self.issuers {
            if let KeySource::Remote(remote) = &issuer.source {
                remote.refresh().await;
            }
        }
    }

    /// Whether every issuer has at least one key, and remote ones a fresh enough set.
    pub fn ready(&self) -> bool {
        let now = unix_now();
        !self.issuers.is_empty()
            && self.issuers.iter().all(|i| {
                !i.keys.load().is_empty()
                    && match &i.source {
                        KeySource::File(_) => true,
                        KeySource::Remote(r) => r.fresh(now),
                    }
            })
    }

    /// [`Self::verify`], but an unknown `kid` or missing keys of a remote issuer first
    /// trigger a (rate-limited, single-flight) refetch and one retry.
    pub async fn verify_fresh(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        self.with_refetch(token, || self.verify(token)).await
    }

    /// [`Self::verify_for_audience`] with the same refetch-on-unknown-`kid` as
    /// [`Self::verify_fresh`].
    pub async fn verify_for_audience_fresh(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<VerifiedToken, TokenError> {
        self.with_refetch(token, || self.verify_for_audience(token, audience))
            .await
    }

    async fn with_refetch<T>(
        &self,
        token: &str,
        attempt: impl Fn() -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        match attempt() {
            Err(e @ (TokenError::UnknownKid | TokenError::KeysUnavailable)) => {
                // Only a well-formed token naming a remote issuer gets here; the refetch is
                // rate-limited per issuer, so a stream of invented kids costs the IdP at most
                // one fetch per interval.
                let remote = self
                    .decode_parts(token)
                    .ok()
                    .and_then(|parts| self.issuer_for(&parts.claims).ok())
                    .and_then(|issuer| match &issuer.source {
                        KeySource::Remote(r) => Some(r.clone()),
                        KeySource::File(_) => None,
                    });
                match remote {
                    Some(r) if r.refetch_on_demand().await => attempt(),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    /// Verifies a compact JWT at the current time.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies a compact JWT as of `now` (Unix seconds) for one of the issuer's audiences.
    /// The facts are shared with the verified-token cache: a hit copies none of them.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Arc<VerifiedToken>, TokenError> {
        if !self.cache.enabled() || token.len() > self.max_token_bytes {
            return self
                .verify_uncached(token, now)
                .map(|(v, _, _)| Arc::new(v));
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.get(&hash) {
            let issuer = &self.issuers[hit.issuer];
            if Arc::ptr_eq(&hit.keys, &issuer.keys.load()) {
                // Skip the signature, never the clock, staleness, revocation or replay checks.
                keys_usable(issuer, now)?;
                let leeway = issuer.config.leeway_seconds as i64;
                if now > hit.verified.expires_at + leeway {
                    self.cache.remove(&hash);
                    return Err(TokenError::Expired);
                }
                if hit.not_before.is_some_and(|nbf| nbf > now + leeway) {
                    return Err(TokenError::NotYetValid);
                }
                self.check_revocation(issuer, &hit.verified, now)?;
                return Ok(Arc::clone(&hit.verified));
            }
            self.cache.remove(&hash);
        }
        let (verified, issuer_index, not_before) = self.verify_uncached(token, now)?;
        let verified = Arc::new(verified);
        let keys = self.issuers[issuer_index].keys.load_full();
        self.cache.insert(
            hash,
            cache::CachedToken {
                verified: Arc::clone(&verified),
                issuer: issuer_index,
                not_before,
                keys,
            },
            now,
        );
        Ok(verified)
    }

    /// The full verification, returning the issuer's index and `nbf` for the cache.
    fn verify_uncached(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(VerifiedToken, usize, Option<i64>), TokenError> {
        let parts = self.decode_parts(token)?;
        let issuer = self.issuer_for(&parts.claims)?;
        let index = self
            .issuers
            .iter()
            .position(|i| std::ptr::eq(i, issuer))
            .unwrap_or_default();
        verify_signature(issuer, &parts, token)?;
        let not_before = numeric_date(&parts.claims, "nbf").ok().flatten();
        let audiences = Audiences {
            accepted: &issuer.config.audiences,
            refused: &self.admin_audience,
        };
        let verified = check_claims(issuer, parts, token, now, audiences)?;
        self.check_revocation(issuer, &verified, now)?;
        Ok((verified, index, not_before))
    }

    /// Number of tokens in the verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Verifies a token that must carry `audience` instead of the issuer's agent audiences
    /// (admin tokens), and must name no agent audience of any issuer.
    pub fn verify_for_audience(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<VerifiedToken, TokenError> {
        let parts = self.decode_parts(token)?;
        let issuer = self.issuer_for(&parts.claims)?;
        verify_signature(issuer, &parts, token)?;
        let now = unix_now();
        let audiences = Audiences {
            accepted: &[audience.to_owned()],
            refused: &self.agent_audiences,
        };
        let verified = check_claims(issuer, parts, token, now, audiences)?;
        self.check_revocation(issuer, &verified, now)?;
        Ok(verified)
    }

    /// Step 5: revoked `jti`, subject or issuer cut-off, then single-use `jti`. Runs last, so
    /// only tokens that are otherwise valid are recorded as used. A state database that cannot
    /// answer refuses the token (fail closed).
    fn check_revocation(
        &self,
        issuer: &Issuer,
        token: &VerifiedToken,
        now: i64,
    ) -> Result<(), TokenError> {
        let Some(store) = &self.revocations else {
            return Ok(());
        };
        let unavailable = |e: RevocationError| {
            tracing::error!(error = %e, "revocation check failed; token refused");
            TokenError::StateUnavailable
        };
        if store
            .is_revoked(
                TokenFacts {
                    issuer: &token.issuer,
                    subject: &token.subject,
                    jti: token.jti.as_deref(),
                    issued_at: token.issued_at,
                },
                now,
            )
            .map_err(unavailable)?
        {
            return Err(TokenError::Revoked);
        }
        if issuer.config.jti_single_use {
            let jti = token
                .jti
                .as_deref()
                .ok_or(TokenError::MissingClaim("jti"))?;
            let until = token.expires_at + issuer.config.leeway_seconds as i64;
            if !store
                .first_use(&token.issuer, jti, until, now)
                .map_err(unavailable)?
            {
                return Err(TokenError::Replayed);
            }
        }
        Ok(())
    }

    /// Checks only the signature and the algorithm-to-key binding, reading no claims: for
    /// diagnosing a key-set problem (`token verify --signature-only`). The payload is never
    /// parsed, so any JWS is checked, not only JWT claims. Without `iss` to go by, the key is
    /// the one whose `kid` the header names (or, without `kid`, the only key) among all the
    /// issuers' keys; a `kid` that two issuers both hold is refused, never guessed.
    pub fn verify_signature_only<'a>(&self, token: &'a str) -> Result<Jws<'a>, TokenError> {
        let jws = decode_jws(token, self.max_token_bytes)?;
        jws.payload()?;
        let kid = jws.header.kid.as_deref();
        let mut holders = self
            .issuers
            .iter()
            .filter(|i| i.keys.load().find(kid).is_ok());
        let issuer = match (holders.next(), holders.next()) {
            (Some(issuer), None) => issuer,
            _ if self.issuers.iter().all(|i| i.keys.load().is_empty()) => {
                return Err(TokenError::KeysUnavailable);
            }
            _ => return Err(TokenError::UnknownKid),
        };
        keys_usable(issuer, unix_now())?;
        jws.verify(&issuer.keys.load(), &issuer.algorithms)?;
        Ok(jws)
    }

    fn decode_parts(&self, token: &str) -> Result<TokenParts, TokenError> {
        // Size first: nothing is decoded for a token over the limit.
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge {
                limit: self.max_token_bytes,
            });
        }
        decode_parts(token)
    }

    fn issuer_for(&self, claims: &Map<String, Value>) -> Result<&Issuer, TokenError> {
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(TokenError::InvalidClaim("iss")),
            None => return Err(TokenError::MissingClaim("iss")),
        };
        self.issuers
            .iter()
            .find(|i| i.config.issuer == *iss)
            .ok_or(TokenError::UnknownIssuer)
    }
}

fn load_key_set(issuer: &str, path: &Path) -> Result<KeySet, AuthSetupError> {
    let text = read_jwks_file(issuer, path)?;
    parse_key_set(issuer, path, &text, KeySet::from_jwks_str)
}

fn read_jwks_file(issuer: &str, path: &Path) -> Result<String, AuthSetupError> {
    std::fs::read_to_string(path).map_err(|source| AuthSetupError::ReadJwks {
        issuer: issuer.to_owned(),
        path: path.to_path_buf(),
        source,
    })
}

/// A JWKS parser: [`KeySet::from_jwks_str`] or [`KeySet::from_jwks_str_allow_empty`].
type ParseJwks = fn(&str) -> Result<(KeySet, Vec<String>), KeySetError>;

/// Parses a JWKS file's text with `parse`, logging the keys it skipped.
fn parse_key_set(
    issuer: &str,
    path: &Path,
    text: &str,
    parse: ParseJwks,
) -> Result<KeySet, AuthSetupError> {
    let (keys, warnings) = parse(text).map_err(|source| AuthSetupError::BadJwks {
        issuer: issuer.to_owned(),
        path: path.to_path_buf(),
        source,
    })?;
    for warning in warnings {
        tracing::warn!(issuer, path = %path.display(), %warning, "verification key skipped");
    }
    Ok(keys)
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Extracts the token from an `Authorization` header value (`Bearer <token>`, scheme case-insensitive).
pub fn bearer_token(header: Option<&str>) -> Result<&str, TokenError> {
    let value = header.ok_or(TokenError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::NotBearer);
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

/// A remote issuer whose IdP has been unreachable longer than the allowed staleness fails
/// closed, for verified and cached tokens alike.
fn keys_usable(issuer: &Issuer, now: i64) -> Result<(), TokenError> {
    if let KeySource::Remote(remote) = &issuer.source
        && !remote.fresh(now)
    {
        return Err(TokenError::KeysUnavailable);
    }
    Ok(())
}

fn verify_signature(issuer: &Issuer, parts: &TokenParts, token: &str) -> Result<(), TokenError> {
    keys_usable(issuer, unix_now())?;
    verify_jws_signature(
        &issuer.keys.load(),
        &issuer.algorithms,
        &parts.alg,
        parts.kid.as_deref(),
        &token.as_bytes()[..parts.signed_len],
        &parts.signature,
    )
}

#[cfg(test)]
mod tests;
