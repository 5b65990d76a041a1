//! `[[issuers]]`: the trusted token issuers, their key sources and the bounds on their tokens.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;

use jsonwebtoken::Algorithm;

use serde::Deserialize;

use super::{ConfigError, check_http_url, check_range, invalid};

/// Algorithms an issuer may be configured with: asymmetric signatures only (RFC 8725 §3.1).
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Clock-skew tolerance is capped: a larger leeway silently extends every token's life.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

/// `[[issuers]]`: one trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; at least one is mandatory.
    pub audiences: Vec<String>,
    /// A JWKS file holding the issuer's public keys (one of `jwks_file`, `jwks_url`,
    /// `discovery`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched and refreshed in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Find the JWKS URL by OIDC discovery (`{issuer}/.well-known/openid-configuration`).
    #[serde(default)]
    pub discovery: bool,
    /// How remote keys are fetched and refreshed.
    #[serde(default)]
    pub remote_keys: RemoteKeysConfig,
    /// Accepted signature algorithms (asymmetric only).
    pub algorithms: Vec<String>,
    /// Clock-skew tolerance for `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Longest accepted token lifetime `exp - iat`, in seconds.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_seconds: u64,
    /// Claim holding the caller's groups (mapped to Cedar `Group` parents).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Require the RFC 9068 `typ: at+jwt` header (turn off only for IdPs that do not send it).
    #[serde(default = "default_true")]
    pub require_at_jwt_typ: bool,
    /// Refuse tokens without a `jti`.
    #[serde(default)]
    pub require_jti: bool,
    /// Accept each `jti` once (implies `require_jti`); a second use is `token_replayed`.
    #[serde(default)]
    pub jti_single_use: bool,
    /// The algorithms and key source as validation parsed them; `None` only before validation.
    #[serde(skip)]
    pub checked: Option<CheckedIssuer>,
}

/// An issuer's settings as validation parsed them once, for `auth` to take as they are.
#[derive(Debug, Clone)]
pub struct CheckedIssuer {
    /// The accepted signature algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Where the issuer's keys come from.
    pub keys: IssuerKeySource,
}

/// Where an issuer's verification keys come from: exactly one source.
#[derive(Debug, Clone)]
pub enum IssuerKeySource {
    /// A JWKS file (relative to the config file's directory).
    File(PathBuf),
    /// A JWKS URL.
    JwksUrl(reqwest::Url),
    /// The issuer's OIDC discovery document, which names the JWKS URL.
    Discovery(reqwest::Url),
}

fn default_true() -> bool {
    true
}

/// `[issuers.remote_keys]`: refresh and fetch bounds for `jwks_url` and `discovery`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteKeysConfig {
    /// Shortest refresh interval, whatever `Cache-Control` says.
    pub min_refresh_seconds: u64,
    /// Longest refresh interval; also used when the response has no `max-age`.
    pub max_refresh_seconds: u64,
    /// Least time between two refetches caused by an unknown `kid`: attacker-chosen `kid`s
    /// cannot make us fetch more often than this.
    pub unknown_kid_min_interval_seconds: u64,
    /// How long the last good key set keeps serving while the IdP is unreachable; after
    /// that the issuer fails closed (`keys_unavailable`).
    pub max_staleness_seconds: u64,
    /// Total time allowed for one fetch.
    pub fetch_timeout_ms: u64,
    /// Largest discovery document or JWKS accepted, in bytes.
    pub max_response_bytes: usize,
}

impl Default for RemoteKeysConfig {
    fn default() -> Self {
        Self {
            min_refresh_seconds: 60,
            max_refresh_seconds: 3600,
            unknown_kid_min_interval_seconds: 10,
            // Long enough to ride out an IdP outage, short enough that a key removed for
            // compromise stops working within the day even if we cannot reach the IdP.
            max_staleness_seconds: 6 * 3600,
            fetch_timeout_ms: 5000,
            max_response_bytes: 256 * 1024,
        }
    }
}

fn default_leeway() -> u64 {
    30
}
fn default_max_lifetime() -> u64 {
    // Short-lived tokens limit what a stolen token is worth (OWASP NHI7).
    3600
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}

/// Checks `[[issuers]]` (each issuer, and none listed twice) and fills each one's `checked`
/// settings; `admin_audience` is `admin.audience`, which no agent audience may equal.
pub(super) fn validate(
    issuers: &mut [IssuerConfig],
    admin_audience: &str,
) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for (i, iss) in issuers.iter_mut().enumerate() {
        let key = |field: &str| format!("issuers[{i}].{field}");
        if iss.issuer.is_empty() {
            return Err(invalid(key("issuer"), "must not be empty"));
        }
        if !seen.insert(iss.issuer.clone()) {
            return Err(invalid(
                key("issuer"),
                format!("`{}` is listed twice", iss.issuer),
            ));
        }
        let checked = iss.validate(&key, admin_audience)?;
        iss.remote_keys.validate(&key)?;
        iss.checked = Some(checked);
    }
    Ok(())
}

impl IssuerConfig {
    /// Checks one issuer's own keys and parses them; `key` names a field of it.
    fn validate(
        &self,
        key: &dyn Fn(&str) -> String,
        admin_audience: &str,
    ) -> Result<CheckedIssuer, ConfigError> {
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(invalid(
                key("audiences"),
                "at least one non-empty audience is required; there is no audience-optional mode",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                key("algorithms"),
                "at least one algorithm is required",
            ));
        }
        let mut algorithms = Vec::new();
        for alg in &self.algorithms {
            let parsed = Algorithm::from_str(alg)
                .ok()
                .filter(|_| ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()));
            let Some(parsed) = parsed else {
                return Err(invalid(
                    key("algorithms"),
                    format!(
                        "`{alg}` is not allowed: only asymmetric algorithms ({}) are accepted; `none` and HMAC never are",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ),
                ));
            };
            algorithms.push(parsed);
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(invalid(
                key("leeway_seconds"),
                format!("must be at most {MAX_LEEWAY_SECONDS}"),
            ));
        }
        check_range(
            &key("max_lifetime_seconds"),
            self.max_lifetime_seconds as usize,
            60,
            86_400,
        )?;
        if self.audiences.iter().any(|a| a == admin_audience) {
            return Err(invalid(
                key("audiences"),
                format!(
                    "`{admin_audience}` is the admin audience (`admin.audience`); agent audiences must differ"
                ),
            ));
        }
        if self.groups_claim.is_empty() {
            return Err(invalid(key("groups_claim"), "must not be empty"));
        }
        let sources = usize::from(self.jwks_file.is_some())
            + usize::from(self.jwks_url.is_some())
            + usize::from(self.discovery);
        if sources != 1 {
            return Err(invalid(
                key("jwks_file"),
                "give exactly one key source: `jwks_file`, `jwks_url` or `discovery = true`",
            ));
        }
        let keys = match (&self.jwks_file, &self.jwks_url) {
            (Some(file), _) => IssuerKeySource::File(file.clone()),
            (None, Some(url)) => IssuerKeySource::JwksUrl(check_http_url(&key("jwks_url"), url)?),
            (None, None) => {
                check_http_url(&key("issuer"), &self.issuer)?;
                let base = self.issuer.trim_end_matches('/');
                let url = format!("{base}/.well-known/openid-configuration");
                IssuerKeySource::Discovery(check_http_url(&key("issuer"), &url)?)
            }
        };
        Ok(CheckedIssuer { algorithms, keys })
    }
}

impl RemoteKeysConfig {
    /// Checks the refresh and fetch bounds; `key` names a field of the issuer.
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        check_range(
            &key("remote_keys.min_refresh_seconds"),
            self.min_refresh_seconds as usize,
            1,
            86_400,
        )?;
        check_range(
            &key("remote_keys.max_refresh_seconds"),
            self.max_refresh_seconds as usize,
            self.min_refresh_seconds as usize,
            86_400,
        )?;
        check_range(
            &key("remote_keys.unknown_kid_min_interval_seconds"),
            self.unknown_kid_min_interval_seconds as usize,
            1,
            3600,
        )?;
        check_range(
            &key("remote_keys.max_staleness_seconds"),
            self.max_staleness_seconds as usize,
            self.min_refresh_seconds as usize,
            7 * 86_400,
        )?;
        check_range(
            &key("remote_keys.fetch_timeout_ms"),
            self.fetch_timeout_ms as usize,
            100,
            60_000,
        )?;
        check_range(
            &key("remote_keys.max_response_bytes"),
            self.max_response_bytes,
            1024,
            4 * 1024 * 1024,
        )?;
        Ok(())
    }
}
