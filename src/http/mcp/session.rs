//! MCP sessions (2025-03-26 to 2025-11-25): bound to the authenticated principal, bounded
//! in all and per principal, forgotten after an idle time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::envelope::{Reply, error_response};
use super::protocol::codes;
use crate::auth::VerifiedToken;

pub(crate) fn missing_session() -> Reply {
    Reply::Rejected {
        status: 400,
        message: error_response(
            Value::Null,
            codes::INVALID_REQUEST,
            "the `Mcp-Session-Id` header is required: call `initialize` first",
        ),
    }
}

/// Unknown, expired, or another principal's: the client must start a new session.
pub(crate) fn unknown_session() -> Reply {
    Reply::Rejected {
        status: 404,
        message: error_response(
            Value::Null,
            codes::INVALID_REQUEST,
            "session not found: call `initialize` again",
        ),
    }
}

/// Who a session belongs to: issuer, subject and the delegation chain.
pub(crate) fn principal_key(token: &VerifiedToken) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [&token.issuer, &token.subject]
        .into_iter()
        .chain(token.actors.iter())
    {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize().into()
}

pub(crate) struct Session {
    principal: [u8; 32],
    protocol_version: &'static str,
    last_used: Instant,
}

/// Live sessions, bounded in all and per principal, forgotten after an idle time.
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    max: usize,
    per_principal: usize,
    idle: Duration,
}

impl Sessions {
    pub(crate) fn new(max: usize, per_principal: usize, idle: Duration) -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            max,
            per_principal,
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session; `None` when the broker holds `max` sessions already.
    pub(crate) fn open(
        &self,
        principal: [u8; 32],
        protocol_version: &'static str,
    ) -> Option<String> {
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, s| now.duration_since(s.last_used) < self.idle);
        let mut own: Vec<(&String, Instant)> = live
            .iter()
            .filter(|(_, s)| s.principal == principal)
            .map(|(id, s)| (id, s.last_used))
            .collect();
        if own.len() >= self.per_principal {
            own.sort_by_key(|(_, used)| *used);
            let evict: Vec<String> = own[..=own.len() - self.per_principal]
                .iter()
                .map(|(id, _)| (*id).clone())
                .collect();
            for id in evict {
                live.remove(&id);
            }
        }
        if live.len() >= self.max {
            return None;
        }
        // 122 random bits from the OS generator: not guessable, visible ASCII.
        let id = uuid::Uuid::new_v4().simple().to_string();
        live.insert(
            id.clone(),
            Session {
                principal,
                protocol_version,
                last_used: now,
            },
        );
        Some(id)
    }

    /// The session's protocol version if it is live and belongs to `principal`.
    pub(crate) fn touch(&self, id: &str, principal: &[u8; 32]) -> Option<&'static str> {
        let now = Instant::now();
        let mut live = self.lock();
        let session = live.get_mut(id)?;
        if now.duration_since(session.last_used) >= self.idle {
            live.remove(id);
            return None;
        }
        if session.principal != *principal {
            return None;
        }
        session.last_used = now;
        Some(session.protocol_version)
    }

    pub(crate) fn close(&self, id: &str, principal: &[u8; 32]) -> bool {
        let mut live = self.lock();
        match live.get(id) {
            Some(s) if s.principal == *principal => live.remove(id).is_some(),
            _ => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bound_to_their_principal_and_bounded() {
        let sessions = Sessions::new(3, 2, Duration::from_secs(60));
        let (alice, bob) = ([1; 32], [2; 32]);
        let a1 = sessions.open(alice, "2025-11-25").unwrap();
        assert_eq!(sessions.touch(&a1, &alice), Some("2025-11-25"));
        assert_eq!(
            sessions.touch(&a1, &bob),
            None,
            "another principal's session"
        );
        assert!(!sessions.close(&a1, &bob));
        let a2 = sessions.open(alice, "2025-06-18").unwrap();
        // A third session for alice evicts her least recently used one.
        assert_eq!(sessions.touch(&a2, &alice), Some("2025-06-18"));
        let a3 = sessions.open(alice, "2025-11-25").unwrap();
        assert_eq!(sessions.touch(&a1, &alice), None);
        assert!(sessions.touch(&a3, &alice).is_some());
        let _b1 = sessions.open(bob, "2025-11-25").unwrap();
        // The broker-wide bound refuses a fourth.
        assert_eq!(sessions.len(), 3);
        assert!(sessions.open([3; 32], "2025-11-25").is_none());
        assert!(sessions.close(&a3, &alice));
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::new(10, 10, Duration::from_millis(0));
        let id = sessions.open([1; 32], "2025-11-25").unwrap();
        assert_eq!(sessions.touch(&id, &[1; 32]), None);
    }
}
