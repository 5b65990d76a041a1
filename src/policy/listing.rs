//! Tool listings: whether some call of a caller on a tool could be allowed, by Cedar partial
//! evaluation. Listings are only filtered with it; calls are always decided in full.

use cedar_policy::{Context, Decision as CedarDecision, PolicySet, RestrictedExpression};

use super::{PolicyEngine, index, session_expr};
use crate::auth::VerifiedToken;
use crate::tools::Tool;

impl PolicyEngine {
    /// Whether some call of this caller on this tool at time `now` could be allowed, whatever
    /// the arguments: Cedar partial evaluation with only `context.input` and the request id
    /// unknown. Everything else a call would know (principal, actor, delegation depth, token
    /// claims, time) is known, so a tool no call could reach is not listed. Used to filter
    /// tool listings only; calls are always decided in full.
    pub fn may_call(&self, token: &VerifiedToken, tool: &Tool, now: i64) -> bool {
        let snap = self.current.load();
        let (Ok(parts), Ok(tool_request)) =
            (self.token_parts.get(token), snap.tool_request(&tool.id))
        else {
            return false;
        };
        // Listing is rarer than calling: a principal with policies of its own gets the union
        // built here, so that partial evaluation sees every policy that could apply.
        let union;
        let policies = match snap.index.policies_for(&tool.id, &parts.principal_uid) {
            Some(index::Applicable {
                general,
                own: Some(own),
            }) => {
                let Ok(merged) =
                    PolicySet::from_policies(general.policies().chain(own.policies()).cloned())
                else {
                    return false;
                };
                union = merged;
                &union
            }
            Some(index::Applicable { general, own: None }) => general,
            // Not indexed means no policy can apply to this tool.
            None => return false,
        };
        let Ok(session) = session_expr(token, now, None) else {
            return false;
        };
        let Ok(context) = Context::from_pairs([
            (
                "input".to_owned(),
                RestrictedExpression::new_unknown("input"),
            ),
            ("token".to_owned(), parts.context.clone()),
            ("session".to_owned(), session),
        ]) else {
            return false;
        };
        let request = cedar_policy::RequestBuilder::default()
            .principal(parts.principal_uid.clone())
            .action(tool_request.action.clone())
            .resource(tool_request.resource.clone())
            .context(context)
            .build();
        let Ok(entities) = parts.entities_for(snap.generation, &tool.id, &tool_request.entities)
        else {
            return false;
        };
        let response = self
            .authorizer
            .is_authorized_partial(&request, policies, &entities);
        response.decision() != Some(CedarDecision::Deny)
    }
}
