//! The verified-token cache: a token seen before skips parsing and signature verification,
//! never the time, revocation and replay checks.
//!
//! Entries are keyed by the SHA-256 of the compact token and remember the key set that
//! verified them; a key-set change (rotation, refresh) makes them miss. The cache is bounded
//! in entries; each entry holds at most one token's claims (`limits.max_token_bytes`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{KeySet, VerifiedToken};

/// One cached verification.
pub struct CachedToken {
    /// The verified facts, shared with every request that presents the token.
    pub verified: Arc<VerifiedToken>,
    /// Index of the issuer that verified it.
    pub issuer: usize,
    /// `nbf`, re-checked on every hit.
    pub not_before: Option<i64>,
    /// The key set that verified it; a different current set means a miss.
    pub keys: Arc<KeySet>,
}

/// A bounded map from token hash to its verification.
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Arc<CachedToken>>>,
    capacity: usize,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The entry for `hash`, if any.
    pub fn get(&self, hash: &[u8; 32]) -> Option<Arc<CachedToken>> {
        self.entries.lock().ok()?.get(hash).cloned()
    }

    /// Stores an entry. When full, expired entries are dropped first; if the cache is still
    /// full, it is emptied (a miss only costs a verification).
    pub fn insert(&self, hash: [u8; 32], entry: CachedToken, now: i64) {
        if !self.enabled() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.verified.expires_at >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(hash, Arc::new(entry));
    }

    /// Drops an entry.
    pub fn remove(&self, hash: &[u8; 32]) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(hash);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}
