//! The broker's own Ed25519 signing keys (assertions to backends), with rotation.
//!
//! On disk, in the state directory:
//! - `broker-signing-ed25519.pk8`: the first key, created on first start (0600). Other parts
//!   of the broker (audit checkpoints) load this file with [`SigningKey::load_or_create`].
//! - `broker-keys/manifest.json`: written by the first `toolgate keys rotate`; lists every key
//!   (`kid`, `file` relative to the state dir, `sign_from`, `publish_until`, Unix seconds).
//! - `broker-keys/<kid>.pk8`: keys added by rotation (0600).
//!
//! Without a manifest the key ring is the first key alone. With one, the signing key at time
//! `t` is the published key with the latest `sign_from <= t`, and the JWKS holds every key
//! whose `publish_until` is unset or later than `t`. A new key is published `delay` before it
//! signs (so verifiers' cached JWKS learn it first) and the old one stays published for
//! [`RETIRE_GRACE_SECS`] after the switch (so assertions it signed still verify).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::assertion::{ASSERTION_LIFETIME_SECS, VERIFY_LEEWAY_SECS};
use crate::signing::{BROKER_KEY_FILE, SigningError, SigningKey, write_private};

/// Directory of rotated keys and the manifest, relative to the state directory.
pub const BROKER_KEYS_DIR: &str = "broker-keys";
/// The manifest's file name inside [`BROKER_KEYS_DIR`].
pub const MANIFEST_FILE: &str = "manifest.json";

/// How long `/.well-known/jwks.json` may be cached; a rotation delay shorter than this risks
/// assertions signed by a key a verifier has not fetched yet.
pub const JWKS_MAX_AGE_SECS: u64 = 300;

/// `Cache-Control` of the JWKS response; must agree with [`JWKS_MAX_AGE_SECS`].
pub const JWKS_CACHE_CONTROL: &str = "public, max-age=300";

/// Default delay between publishing a new key and signing with it: twice the JWKS max-age.
pub const DEFAULT_ROTATION_DELAY_SECS: u64 = 2 * JWKS_MAX_AGE_SECS;

/// A replaced key stays published this long after the switch: the longest an assertion it
/// signed can still be accepted (its lifetime plus the verifier's leeway).
pub const RETIRE_GRACE_SECS: i64 = ASSERTION_LIFETIME_SECS + VERIFY_LEEWAY_SECS as i64;

/// The manifest is re-read at most this often when the running broker signs or serves keys.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// One key in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Key id (derived from the public key).
    pub kid: String,
    /// Private key file, relative to the state directory.
    pub file: String,
    /// Signing starts at this Unix time.
    pub sign_from: i64,
    /// Removed from the JWKS at this Unix time; `None` while current.
    pub publish_until: Option<i64>,
}

/// `broker-keys/manifest.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Every key not yet pruned.
    pub keys: Vec<KeyEntry>,
}

/// An error loading or rotating broker keys.
#[derive(Debug, thiserror::Error)]
pub enum BrokerKeyError {
    /// A key file.
    #[error("{0}")]
    Key(#[from] SigningError),
    /// The manifest could not be read or written.
    #[error("broker key manifest `{path}`: {reason}")]
    Manifest {
        /// The manifest file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The manifest names a key file outside the state directory.
    #[error("broker key manifest names an unsafe file `{0}`")]
    UnsafeFile(String),
    /// No key may sign at this time.
    #[error("no broker key is valid for signing now")]
    NoSigningKey,
}

struct Loaded {
    entries: Vec<(KeyEntry, Arc<SigningKey>)>,
}

impl Loaded {
    fn signer(&self, now: i64) -> Option<&Arc<SigningKey>> {
        self.entries
            .iter()
            .filter(|(e, _)| e.sign_from <= now && e.publish_until.is_none_or(|u| u > now))
            .max_by_key(|(e, _)| e.sign_from)
            .map(|(_, k)| k)
    }

    fn jwks(&self, now: i64) -> Value {
        let keys: Vec<Value> = self
            .entries
            .iter()
            .filter(|(e, _)| e.publish_until.is_none_or(|u| u > now))
            .map(|(_, k)| k.public_jwk())
            .collect();
        json!({ "keys": keys })
    }
}

/// The broker's key ring, re-read from disk when the manifest changes.
pub struct BrokerKeys {
    state_dir: PathBuf,
    loaded: ArcSwap<Loaded>,
    checked: Mutex<(Instant, Option<SystemTime>)>,
}

impl std::fmt::Debug for BrokerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerKeys")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    crate::auth::unix_now()
}

fn manifest_path(state_dir: &Path) -> PathBuf {
    state_dir.join(BROKER_KEYS_DIR).join(MANIFEST_FILE)
}

fn manifest_mtime(state_dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(manifest_path(state_dir))
        .and_then(|m| m.modified())
        .ok()
}

/// Reads the manifest, or `None` if there is none yet.
fn read_manifest(state_dir: &Path) -> Result<Option<Manifest>, BrokerKeyError> {
    let path = manifest_path(state_dir);
    let error = |reason: String| BrokerKeyError::Manifest {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).map_err(|e| error(e.to_string()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(e.to_string())),
    }
}

/// Only plain names inside the state directory: a manifest must not point at other files.
fn key_path(state_dir: &Path, file: &str) -> Result<PathBuf, BrokerKeyError> {
    let relative = Path::new(file);
    let safe = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe || file.is_empty() {
        return Err(BrokerKeyError::UnsafeFile(file.to_owned()));
    }
    Ok(state_dir.join(relative))
}

/// The manifest in force: the file, or the first key alone.
fn current_manifest(state_dir: &Path) -> Result<Manifest, BrokerKeyError> {
    if let Some(m) = read_manifest(state_dir)? {
        return Ok(m);
    }
    let (key, created) = SigningKey::load_or_create(&state_dir.join(BROKER_KEY_FILE))?;
    if created {
        tracing::info!(kid = key.kid(), "broker signing key created");
    }
    Ok(Manifest {
        keys: vec![KeyEntry {
            kid: key.kid().to_owned(),
            file: BROKER_KEY_FILE.to_owned(),
            sign_from: 0,
            publish_until: None,
        }],
    })
}

fn load(state_dir: &Path) -> Result<Loaded, BrokerKeyError> {
    let manifest = current_manifest(state_dir)?;
    let mut entries = Vec::new();
    for entry in manifest.keys {
        let key = SigningKey::load(&key_path(state_dir, &entry.file)?)?;
        if key.kid() != entry.kid {
            return Err(BrokerKeyError::Manifest {
                path: manifest_path(state_dir).display().to_string(),
                reason: format!("file `{}` does not hold key `{}`", entry.file, entry.kid),
            });
        }
        entries.push((entry, Arc::new(key)));
    }
    Ok(Loaded { entries })
}

impl BrokerKeys {
    /// Loads the key ring from `state_dir`, creating the first key if there is none.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, BrokerKeyError> {
        let mtime = manifest_mtime(state_dir);
        let loaded = load(state_dir)?;
        if loaded.signer(unix_now()).is_none() {
            return Err(BrokerKeyError::NoSigningKey);
        }
        Ok(Self {
            state_dir: state_dir.to_owned(),
            loaded: ArcSwap::from_pointee(loaded),
            checked: Mutex::new((Instant::now(), mtime)),
        })
    }

    /// Re-reads the ring if the manifest changed; a ring that fails to load keeps the last
    /// good one (and says so in the log).
    fn refresh(&self) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.0.elapsed() < RELOAD_INTERVAL {
            return;
        }
        let mtime = manifest_mtime(&self.state_dir);
        checked.0 = Instant::now();
        if mtime == checked.1 {
            return;
        }
        match load(&self.state_dir) {
            Ok(loaded) => {
                self.loaded.store(Arc::new(loaded));
                checked.1 = mtime;
                tracing::info!("broker key ring reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "broker key ring reload failed; keeping the last good one")
            }
        }
    }

    /// The key that signs now.
    pub fn signer(&self) -> Result<Arc<SigningKey>, BrokerKeyError> {
        self.refresh();
        self.loaded
            .load()
            .signer(unix_now())
            .cloned()
            .ok_or(BrokerKeyError::NoSigningKey)
    }

    /// The public keys a verifier should trust now, as a JWKS.
    pub fn jwks(&self) -> Value {
        self.refresh();
        self.loaded.load().jwks(unix_now())
    }
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// The new key's id.
    pub new_kid: String,
    /// When the new key starts signing (Unix seconds).
    pub sign_from: i64,
    /// Keys now scheduled to leave the JWKS, with the time.
    pub retiring: Vec<(String, i64)>,
    /// Keys pruned (already past `publish_until`): removed from the manifest and their
    /// rotated key files deleted.
    pub pruned: Vec<String>,
}

/// Adds a new key that signs from `now + delay_secs`; every older key leaves the JWKS
/// [`RETIRE_GRACE_SECS`] after that. Keys already retired are pruned. The manifest is
/// replaced atomically (write then rename).
pub fn rotate(state_dir: &Path, delay_secs: u64, now: i64) -> Result<Rotation, BrokerKeyError> {
    let mut manifest = current_manifest(state_dir)?;
    let dir = state_dir.join(BROKER_KEYS_DIR);
    let io = |path: &Path, e: std::io::Error| BrokerKeyError::Manifest {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;

    let (retired, kept): (Vec<KeyEntry>, Vec<KeyEntry>) = manifest
        .keys
        .into_iter()
        .partition(|e| e.publish_until.is_some_and(|u| u <= now));
    let mut pruned = Vec::new();
    for entry in retired {
        // The first key's file is left in place: other components may still load it.
        if entry.file != BROKER_KEY_FILE {
            let path = key_path(state_dir, &entry.file)?;
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io(&path, e));
            }
        }
        pruned.push(entry.kid);
    }
    manifest.keys = kept;

    let (key, bytes) = SigningKey::generate()?;
    let file = format!("{BROKER_KEYS_DIR}/{}.pk8", key.kid());
    let path = key_path(state_dir, &file)?;
    write_private(&path, &bytes).map_err(|e| io(&path, e))?;
    let sign_from = now + delay_secs as i64;
    let retire_at = sign_from + RETIRE_GRACE_SECS;
    let mut retiring = Vec::new();
    for entry in &mut manifest.keys {
        let until = entry.publish_until.map_or(retire_at, |u| u.min(retire_at));
        entry.publish_until = Some(until);
        retiring.push((entry.kid.clone(), until));
    }
    manifest.keys.push(KeyEntry {
        kid: key.kid().to_owned(),
        file,
        sign_from,
        publish_until: None,
    });

    let target = manifest_path(state_dir);
    let temp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| BrokerKeyError::Manifest {
        path: target.display().to_string(),
        reason: e.to_string(),
    })?;
    let _ = std::fs::remove_file(&temp);
    std::fs::write(&temp, text).map_err(|e| io(&temp, e))?;
    std::fs::rename(&temp, &target).map_err(|e| io(&target, e))?;
    Ok(Rotation {
        new_kid: key.kid().to_owned(),
        sign_from,
        retiring,
        pruned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_publishes_first_then_switches_then_retires() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let first = BrokerKeys::load_or_create(state).unwrap();
        let old_kid = first.signer().unwrap().kid().to_owned();

        let now = 1_000_000;
        let r = rotate(state, 600, now).unwrap();
        assert_eq!(r.sign_from, now + 600);
        assert_eq!(
            r.retiring,
            vec![(old_kid.clone(), now + 600 + RETIRE_GRACE_SECS)]
        );
        let ring = load(state).unwrap();
        let kids = |v: Value| -> Vec<String> {
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        // Before the switch: both published, the old one signs.
        assert_eq!(
            kids(ring.jwks(now)),
            vec![old_kid.clone(), r.new_kid.clone()]
        );
        assert_eq!(ring.signer(now).unwrap().kid(), old_kid);
        // After the switch: the new one signs, the old one is still published.
        assert_eq!(ring.signer(now + 600).unwrap().kid(), r.new_kid);
        assert_eq!(kids(ring.jwks(now + 600)).len(), 2);
        // After the grace: only the new one.
        let later = now + 600 + RETIRE_GRACE_SECS;
        assert_eq!(kids(ring.jwks(later)), vec![r.new_kid.clone()]);

        // The next rotation prunes the retired first key but leaves its file.
        let r2 = rotate(state, 0, later + 1).unwrap();
        assert_eq!(r2.pruned, vec![old_kid]);
        assert!(state.join(BROKER_KEY_FILE).exists());
        let ring = load(state).unwrap();
        assert_eq!(ring.signer(later + 1).unwrap().kid(), r2.new_kid);
        assert_eq!(kids(ring.jwks(later + 1)).len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn rotated_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let r = rotate(dir.path(), 0, 10).unwrap();
        for file in [
            BROKER_KEY_FILE.to_owned(),
            format!("{BROKER_KEYS_DIR}/{}.pk8", r.new_kid),
        ] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn manifest_cannot_point_outside_the_state_dir() {
        assert!(key_path(Path::new("/s"), "../etc/passwd").is_err());
        assert!(key_path(Path::new("/s"), "/etc/passwd").is_err());
        assert!(key_path(Path::new("/s"), "broker-keys/a.pk8").is_ok());
    }
}
