//! The parts of a Cedar request that depend only on the token (the principal and actor
//! entities, `context.token`, and their recorded JSON, and per tool and policy load the
//! request's entities), built once per token and reused while the token keeps calling: an
//! agent sends many calls with one token.
//!
//! Entries are keyed by the token's SHA-256 and hold the token they were built from; a hit is
//! used only if that token is equal to the caller's, so a `VerifiedToken` built by hand with a
//! reused hash can never borrow another principal. The cache is bounded in entries and is
//! emptied when full (a miss only costs building the parts again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression};
use serde_json::value::RawValue;

use super::recorded::{self, RecordedToken};
use super::{PolicyError, actor_entity, principal_entity, token_expr};
use crate::auth::VerifiedToken;

/// Tokens whose parts are kept: the agents calling at one time, not every token ever seen.
const CAPACITY: usize = 256;

/// Tools whose entities are kept per token (the map is emptied when full).
const TOOLS_PER_TOKEN: usize = 16;

/// What a decision takes from its token.
pub(super) struct TokenParts {
    /// The token these parts were built from.
    token: VerifiedToken,
    /// `Agent::"<sub>"` or `User::"<sub>"`, with groups as parents and claims as tags.
    pub principal: Entity,
    /// The principal's uid.
    pub principal_uid: EntityUid,
    /// The principal's uid as Cedar's JSON, for the recorded request.
    pub recorded_principal: Box<RawValue>,
    /// The acting agent of a delegated token.
    pub actor: Option<Entity>,
    /// `context.token`.
    pub context: RestrictedExpression,
    /// `context.token` as the decision log records it.
    pub recorded_context: Box<RawValue>,
    /// The principal and actor entities as Cedar's entity JSON, for the recorded request.
    pub recorded_entities: Vec<Box<RawValue>>,
    /// For one policy load (its generation) and per tool, the tool's static entities with
    /// this token's added (adding them recomputes Cedar's transitive closure, ≈ 4% of a
    /// request's CPU).
    entities_by_tool: Mutex<(u64, HashMap<String, Arc<Entities>>)>,
}

impl TokenParts {
    fn build(token: &VerifiedToken) -> Result<Self, PolicyError> {
        let principal = principal_entity(token)?;
        let actor = actor_entity(token)?;
        let json = |e: serde_json::Error| PolicyError::Request(e.to_string());
        Ok(Self {
            token: token.clone(),
            principal_uid: principal.uid(),
            recorded_principal: recorded::uid_json(&principal.uid())?,
            recorded_entities: std::iter::once(&principal)
                .chain(&actor)
                .map(recorded::entity_json)
                .collect::<Result<_, _>>()?,
            principal,
            actor,
            context: token_expr(token)?,
            recorded_context: serde_json::value::to_raw_value(&RecordedToken(token))
                .map_err(json)?,
            entities_by_tool: Mutex::new((0, HashMap::new())),
        })
    }

    /// The entities of a request on `tool_id`: its static entities (`tool_entities`, of the
    /// policy load `generation`) with the principal and the actor, if any.
    pub fn entities_for(
        &self,
        generation: u64,
        tool_id: &str,
        tool_entities: &Entities,
    ) -> Result<Arc<Entities>, PolicyError> {
        if let Ok(cached) = self.entities_by_tool.lock()
            && cached.0 == generation
            && let Some(entities) = cached.1.get(tool_id)
        {
            return Ok(entities.clone());
        }
        let principal = std::iter::once(self.principal.clone()).chain(self.actor.clone());
        let entities = Arc::new(
            tool_entities
                .clone()
                .add_entities(principal, None)
                .map_err(|e| PolicyError::Request(e.to_string()))?,
        );
        if let Ok(mut cached) = self.entities_by_tool.lock() {
            let (cached_generation, by_tool) = &mut *cached;
            if *cached_generation != generation || by_tool.len() >= TOOLS_PER_TOKEN {
                *cached_generation = generation;
                by_tool.clear();
            }
            by_tool.insert(tool_id.to_owned(), entities.clone());
        }
        Ok(entities)
    }
}

/// A bounded map from token hash to its parts.
pub(super) struct TokenPartsCache {
    entries: Mutex<HashMap<String, Arc<TokenParts>>>,
}

impl TokenPartsCache {
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The parts of `token`, from the cache or built (and kept) now. Tokens without a hash
    /// (built in tests and policy fixtures, not received) are built every time.
    pub fn get(&self, token: &VerifiedToken) -> Result<Arc<TokenParts>, PolicyError> {
        if token.token_sha256.is_empty() {
            return TokenParts::build(token).map(Arc::new);
        }
        if let Ok(entries) = self.entries.lock()
            && let Some(parts) = entries.get(&token.token_sha256)
            && parts.token == *token
        {
            return Ok(parts.clone());
        }
        let parts = Arc::new(TokenParts::build(token)?);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(token.token_sha256.clone(), parts.clone());
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verified_token::TokenBuilder;

    fn token(subject: &str, hash: &str) -> VerifiedToken {
        TokenBuilder::new(subject)
            .groups(&["readers"])
            .algorithm("RS256")
            .token_sha256(hash)
            .build()
    }

    #[test]
    fn a_hit_is_reused_and_a_reused_hash_never_borrows_another_principal() {
        let cache = TokenPartsCache::new();
        let alice = token("alice", "h1");
        let first = cache.get(&alice).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(&alice).unwrap()));
        // A different token claiming the same hash gets its own principal.
        let mallory = cache.get(&token("mallory", "h1")).unwrap();
        assert_eq!(mallory.principal_uid.id().unescaped(), "mallory");
        assert!(!Arc::ptr_eq(&first, &mallory));
    }

    #[test]
    fn tokens_without_a_hash_are_not_kept() {
        let cache = TokenPartsCache::new();
        let a = cache.get(&token("alice", "")).unwrap();
        let b = cache.get(&token("bob", "")).unwrap();
        assert_eq!(a.principal_uid.id().unescaped(), "alice");
        assert_eq!(b.principal_uid.id().unescaped(), "bob");
        assert!(cache.entries.lock().unwrap().is_empty());
    }
}
