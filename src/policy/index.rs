//! The policy index: for each tool, only the policies whose scope can match a call to it, and
//! for principals named by `principal == ...` policies, those policies too. Built once per
//! load; a decision then evaluates a small set instead of scanning every policy.
//!
//! Why the decision is unchanged: a policy left out of a call's set has an action scope that
//! cannot match the call's action, or a `principal ==` scope naming another principal. Such a
//! policy is never satisfied for the call, so it can neither permit, forbid, determine nor
//! error (Cedar evaluates conditions only after the scope matches). The property test in
//! `tests/it/policy_index.rs` checks this against the whole set over random policies.

use std::collections::HashMap;

use cedar_policy::{ActionConstraint, EntityUid, Policy, PolicySet, PrincipalConstraint};

/// The policies that can apply to one tool.
struct ToolPolicies {
    /// Policies for any principal (scope `principal`, `in`, `is`, `is ... in`).
    general: PolicySet,
    /// For each principal named in a `principal ==` scope: `general` plus those policies.
    by_principal: HashMap<EntityUid, PolicySet>,
}

/// Per-tool policy sets, keyed by tool id.
pub struct PolicyIndex {
    by_tool: HashMap<String, ToolPolicies>,
}

impl PolicyIndex {
    /// Splits `policies` by the tools (actions in the `call_tool` group) they can apply to.
    pub fn build<'a>(
        policies: &PolicySet,
        tools: impl IntoIterator<Item = (&'a str, EntityUid)>,
        call_tool: &EntityUid,
    ) -> Result<Self, String> {
        let mut by_tool = HashMap::new();
        for (tool_id, action) in tools {
            let mut general = PolicySet::new();
            let mut specific: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
            for policy in policies.policies() {
                if !action_may_match(&policy.action_constraint(), &action, call_tool) {
                    continue;
                }
                match policy.principal_constraint() {
                    PrincipalConstraint::Eq(principal) => {
                        specific.entry(principal).or_default().push(policy.clone());
                    }
                    PrincipalConstraint::Any
                    | PrincipalConstraint::In(_)
                    | PrincipalConstraint::Is(_)
                    | PrincipalConstraint::IsIn(_, _) => {
                        general.add(policy.clone()).map_err(|e| e.to_string())?;
                    }
                }
            }
            let mut by_principal = HashMap::with_capacity(specific.len());
            for (principal, extra) in specific {
                let mut set = general.clone();
                for policy in extra {
                    set.add(policy).map_err(|e| e.to_string())?;
                }
                by_principal.insert(principal, set);
            }
            by_tool.insert(
                tool_id.to_owned(),
                ToolPolicies {
                    general,
                    by_principal,
                },
            );
        }
        Ok(Self { by_tool })
    }

    /// The policies that can apply to `principal` calling `tool_id`.
    pub fn policies_for(&self, tool_id: &str, principal: &EntityUid) -> Option<&PolicySet> {
        let tool = self.by_tool.get(tool_id)?;
        Some(tool.by_principal.get(principal).unwrap_or(&tool.general))
    }
}

/// Whether an action scope can match `action`, whose only ancestor is the `call_tool` group.
fn action_may_match(
    constraint: &ActionConstraint,
    action: &EntityUid,
    call_tool: &EntityUid,
) -> bool {
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => a == action,
        ActionConstraint::In(list) => list.iter().any(|a| a == action || a == call_tool),
    }
}
