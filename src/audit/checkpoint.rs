//! Signed checkpoints of the decision log: the broker signs (head hash, sequence number, time)
//! with its own Ed25519 key, so an auditor holding the public key can tell a truncated or
//! rewritten log from the one the broker wrote, without trusting the broker's disk.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::{AuditError, Head, now_ms};
use crate::signing::SigningKey;

pub use crate::signing::BROKER_KEY_FILE;

/// The JWS `typ` of a checkpoint, so that no other token signed by the key passes for one.
pub const CHECKPOINT_TYP: &str = "toolgate-checkpoint+jwt";

/// When the writer signs checkpoints, and with which key.
#[derive(Clone)]
pub struct CheckpointOptions {
    /// The broker's key.
    pub key: Arc<SigningKey>,
    /// A checkpoint after this many records (0: not by count).
    pub every_records: u64,
    /// A checkpoint after this long with uncovered records (`None`: not by time).
    pub interval: Option<Duration>,
}

impl std::fmt::Debug for CheckpointOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointOptions")
            .field("kid", &self.key.kid())
            .field("every_records", &self.every_records)
            .field("interval", &self.interval)
            .finish()
    }
}

/// What a checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    /// Sequence number of the last record covered; also the number of records since genesis.
    pub seq: i64,
    /// That record's chain hash.
    pub head: String,
    /// When the checkpoint was made, Unix milliseconds.
    pub time_ms: i64,
    /// `periodic`, `shutdown` or `archive`.
    pub reason: String,
}

/// A checkpoint as stored in the `checkpoints` table or an archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// Sequence number covered.
    pub seq: i64,
    /// Head hash covered.
    pub head: String,
    /// Time, Unix milliseconds.
    pub time_ms: i64,
    /// Why it was made.
    pub reason: String,
    /// Key id of the signing key.
    pub kid: String,
    /// The compact JWS over [`CheckpointClaims`].
    pub jws: String,
}

/// Signs a checkpoint of `head`.
pub fn sign(key: &SigningKey, head: &Head, reason: &str) -> Result<StoredCheckpoint, AuditError> {
    let claims = CheckpointClaims {
        seq: head.seq,
        head: head.hash.clone(),
        time_ms: now_ms(),
        reason: reason.to_owned(),
    };
    let jws = key
        .sign(CHECKPOINT_TYP, &claims)
        .map_err(|e| AuditError::Unavailable(e.to_string()))?;
    Ok(StoredCheckpoint {
        seq: claims.seq,
        head: claims.head,
        time_ms: claims.time_ms,
        reason: claims.reason,
        kid: key.kid().to_owned(),
        jws,
    })
}

/// Signs a checkpoint of `head` and stores it in the `checkpoints` table.
pub fn store(
    conn: &Connection,
    key: &SigningKey,
    head: &Head,
    reason: &str,
) -> Result<(), AuditError> {
    let cp = sign(key, head, reason)?;
    insert(conn, &cp)
}

/// Stores an already signed checkpoint.
pub fn insert(conn: &Connection, cp: &StoredCheckpoint) -> Result<(), AuditError> {
    conn.execute(
        "INSERT INTO checkpoints (seq, head, time_ms, reason, kid, jws) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![cp.seq, cp.head, cp.time_ms, cp.reason, cp.kid, cp.jws],
    )
    .map_err(|e| AuditError::Unavailable(e.to_string()))?;
    Ok(())
}

/// Every stored checkpoint, oldest first.
pub fn load_all(conn: &Connection) -> rusqlite::Result<Vec<StoredCheckpoint>> {
    load_range(conn, i64::MIN, i64::MAX)
}

/// The stored checkpoints about records after `after` up to `through`, oldest first.
pub fn load_range(
    conn: &Connection,
    after: i64,
    through: i64,
) -> rusqlite::Result<Vec<StoredCheckpoint>> {
    let mut stmt = conn.prepare(
        "SELECT seq, head, time_ms, reason, kid, jws FROM checkpoints
         WHERE seq > ?1 AND seq <= ?2 ORDER BY id",
    )?;
    stmt.query_map([after, through], |r| {
        Ok(StoredCheckpoint {
            seq: r.get(0)?,
            head: r.get(1)?,
            time_ms: r.get(2)?,
            reason: r.get(3)?,
            kid: r.get(4)?,
            jws: r.get(5)?,
        })
    })?
    .collect()
}

/// A checkpoint as a line of a JSONL export or archive: `{"checkpoint": {...}}`.
pub fn jsonl_line(cp: &StoredCheckpoint) -> String {
    serde_json::json!({ "checkpoint": cp }).to_string()
}

/// Loads the broker key from the state directory, creating it on first use.
pub fn broker_key(state_dir: &Path) -> Result<SigningKey, crate::signing::SigningError> {
    SigningKey::load_or_create(&state_dir.join(BROKER_KEY_FILE)).map(|(key, _)| key)
}

/// Checks a checkpoint's signature against `keys` (by `kid`) and that the signed claims are
/// the stored ones. Returns why not.
pub fn check_signature(cp: &StoredCheckpoint, keys: &JwkSet) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(&cp.jws).map_err(|e| e.to_string())?;
    if header.alg != Algorithm::EdDSA {
        return Err(format!("unexpected algorithm `{:?}`", header.alg));
    }
    if header.typ.as_deref() != Some(CHECKPOINT_TYP) {
        return Err("not a checkpoint (wrong `typ`)".to_owned());
    }
    let kid = header.kid.unwrap_or_default();
    let jwk = keys
        .find(&kid)
        .ok_or_else(|| format!("no key with id `{kid}`"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<CheckpointClaims>(&cp.jws, &key, &validation)
        .map_err(|e| format!("bad signature: {e}"))?;
    let c = data.claims;
    if c.seq != cp.seq || c.head != cp.head || c.time_ms != cp.time_ms || c.reason != cp.reason {
        return Err("stored fields differ from the signed ones".to_owned());
    }
    Ok(())
}

/// A JWKS holding the public half of `key`.
pub fn jwks_of(key: &SigningKey) -> Result<JwkSet, String> {
    serde_json::from_value(key.jwks()).map_err(|e| e.to_string())
}
