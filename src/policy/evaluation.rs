//! Stage 3, deciding one call: the Cedar request built from the token and the call, evaluated
//! against the policies the index selects (or the whole set), and recorded as evaluated.

use cedar_policy::{Context, Request};

use super::{CallFacts, PolicyDecision, PolicyEngine, PolicyError, index, recorded, session_expr};
use crate::auth::VerifiedToken;

impl PolicyEngine {
    /// Decides a call in full, with or without the policy index (see [`PolicyEngine::decide`]).
    pub(super) fn decide_with(
        &self,
        token: &VerifiedToken,
        call: &CallFacts<'_>,
        indexed: bool,
    ) -> Result<PolicyDecision, PolicyError> {
        let snap = self.current.load();
        let input_type = snap.input_types.get(&call.tool.id).ok_or_else(|| {
            PolicyError::Request(format!(
                "tool `{}` is not in the loaded schema",
                call.tool.id
            ))
        })?;
        let input = input_type
            .to_cedar_exact(call.arguments, "", call.arguments_text)
            .map_err(PolicyError::Argument)?;
        let tool = snap.tool_request(&call.tool.id)?;
        let parts = self.token_parts.get(token)?;
        let context = Context::from_pairs([
            ("input".to_owned(), input),
            ("token".to_owned(), parts.context.clone()),
            (
                "session".to_owned(),
                session_expr(token, call.now, Some(call.request_id))?,
            ),
        ])
        .map_err(|e| PolicyError::Request(e.to_string()))?;
        let principal_uid = &parts.principal_uid;
        // No per-request schema validation: every part of the request is built here to the
        // schema's shape, and `load_snapshot` checked those shapes against the schema
        // (`check_request_shapes`), with the arguments typed by the same `InputType` that
        // generated the action's context type.
        let request = Request::new(
            principal_uid.clone(),
            tool.action.clone(),
            tool.resource.clone(),
            context,
            None,
        )
        .map_err(|e| PolicyError::Request(e.to_string()))?;
        let entities = parts.entities_for(snap.generation, &call.tool.id, &tool.entities)?;
        let applicable = if indexed {
            snap.index.policies_for(&call.tool.id, principal_uid)
        } else {
            None
        };
        let index::Combined {
            allowed,
            determining_policies,
            errors,
            erroring_policies,
        } = match applicable {
            Some(applicable) => applicable.decide(&self.authorizer, &request, &entities),
            None => self
                .authorizer
                .is_authorized(&request, snap.whole_set()?, &entities)
                .into(),
        };
        for error in &errors {
            tracing::warn!(tool = %call.tool.id, %error, "policy evaluation error: the erroring policy was skipped");
        }
        let request = recorded::record(
            &recorded::Prepared {
                principal: &parts.recorded_principal,
                action: &tool.recorded_action,
                resource: &tool.recorded_resource,
                token_context: &parts.recorded_context,
                token_entities: &parts.recorded_entities,
                tool_entities: &tool.recorded_entities,
            },
            input_type,
            token,
            call,
        )?;
        Ok(PolicyDecision {
            allowed,
            determining_policies,
            errors,
            erroring_policies,
            policy_set_hash: snap.policy_set_hash.clone(),
            schema_hash: snap.schema_hash.clone(),
            request,
        })
    }
}
