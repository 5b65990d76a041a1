//! The policy index: for each tool, only the policies whose scope can match a call to it, and
//! for principals named by `principal == ...` policies, those policies too. Built once per
//! load; a decision then evaluates a small set instead of scanning every policy.
//!
//! Each policy is stored once per tool it can apply to: a principal's own policies are kept
//! apart from the tool's general ones (not copied together), so memory grows with the policies,
//! not with general policies times named principals. A call by such a principal evaluates both
//! sets and combines the answers as Cedar combines policies (see [`combine`]).
//!
//! Why the decision is unchanged: a policy left out of a call's set has an action scope that
//! cannot match the call's action, or a `principal ==` scope naming another principal. Such a
//! policy is never satisfied for the call, so it can neither permit, forbid, determine nor
//! error (Cedar evaluates conditions only after the scope matches). The property test in
//! `tests/it/policy_index.rs` checks this against the whole set over random policies.

use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, Authorizer, Decision, Entities, EntityUid, Policy, PolicySet,
    PrincipalConstraint, Request, Response,
};

/// The policies that can apply to one tool.
struct ToolPolicies {
    /// Policies for any principal (scope `principal`, `in`, `is`, `is ... in`).
    general: PolicySet,
    /// For each principal named in a `principal ==` scope: those policies only.
    by_principal: HashMap<EntityUid, PolicySet>,
}

/// The policies that can apply to one call: the tool's general ones and, if the principal is
/// named by any, the principal's own. The two sets are disjoint.
#[derive(Clone, Copy)]
pub struct Applicable<'a> {
    /// The tool's policies for any principal.
    pub general: &'a PolicySet,
    /// The principal's own policies on the tool, if any.
    pub own: Option<&'a PolicySet>,
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
            for (principal, own) in specific {
                let set = PolicySet::from_policies(own).map_err(|e| e.to_string())?;
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
    pub fn policies_for(&self, tool_id: &str, principal: &EntityUid) -> Option<Applicable<'_>> {
        let tool = self.by_tool.get(tool_id)?;
        Some(Applicable {
            general: &tool.general,
            own: tool.by_principal.get(principal),
        })
    }
}

impl Applicable<'_> {
    /// Decides `request` over these policies: one evaluation when either set is all there is,
    /// otherwise both, combined by [`combine`].
    pub fn decide(
        self,
        authorizer: &Authorizer,
        request: &Request,
        entities: &Entities,
    ) -> Combined {
        let decide = |set| Combined::from(authorizer.is_authorized(request, set, entities));
        match self.own {
            None => decide(self.general),
            Some(own) if self.general.is_empty() => decide(own),
            Some(own) => combine(decide(self.general), decide(own)),
        }
    }
}

/// A decision over one or two policy sets.
pub struct Combined {
    /// Whether the call is allowed.
    pub allowed: bool,
    /// Ids of the policies that determined it.
    pub determining_policies: Vec<String>,
    /// Evaluation errors.
    pub errors: Vec<String>,
    /// Ids of the policies whose evaluation errored (and were skipped).
    pub erroring_policies: Vec<String>,
}

impl From<Response> for Combined {
    fn from(r: Response) -> Self {
        let erroring_policies = r
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                    e.policy_id().to_string()
                }
            })
            .collect();
        Self {
            allowed: r.decision() == Decision::Allow,
            determining_policies: r.diagnostics().reason().map(ToString::to_string).collect(),
            errors: r.diagnostics().errors().map(ToString::to_string).collect(),
            erroring_policies,
        }
    }
}

/// One decision from the answers of two disjoint policy sets, as Cedar decides over their
/// union: a satisfied `forbid` in either denies, with every satisfied forbid as the reason;
/// otherwise a satisfied `permit` in either allows, with every satisfied permit as the reason;
/// otherwise the default deny. A deny with reasons means a forbid was satisfied, since Cedar
/// gives permits as reasons only for an allow. Errors (skipped policies) of both are kept.
fn combine(a: Combined, b: Combined) -> Combined {
    let forbids = |c: &Combined| !c.allowed && !c.determining_policies.is_empty();
    let (allowed, determining): (bool, fn(&Combined) -> bool) = if forbids(&a) || forbids(&b) {
        (false, forbids)
    } else {
        (a.allowed || b.allowed, |c| c.allowed)
    };
    let mut combined = Combined {
        allowed,
        determining_policies: Vec::new(),
        errors: Vec::new(),
        erroring_policies: Vec::new(),
    };
    for part in [a, b] {
        if determining(&part) {
            combined
                .determining_policies
                .extend(part.determining_policies);
        }
        combined.errors.extend(part.errors);
        combined.erroring_policies.extend(part.erroring_policies);
    }
    combined
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

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(text: &str) -> EntityUid {
        text.parse().unwrap()
    }

    #[test]
    fn each_policy_is_stored_once_per_tool_not_once_per_named_principal() {
        let mut text = String::new();
        for g in 0..3 {
            text.push_str(&format!(
                "@id(\"general-{g}\") permit (principal in Toolgate::Group::\"g{g}\", action == Toolgate::Action::\"t\", resource);\n"
            ));
        }
        for a in 0..4 {
            text.push_str(&format!(
                "@id(\"own-{a}\") permit (principal == Toolgate::Agent::\"a{a}\", action == Toolgate::Action::\"t\", resource);\n"
            ));
        }
        text.push_str("@id(\"other-tool\") permit (principal, action == Toolgate::Action::\"u\", resource);\n");
        let policies: PolicySet = text.parse().unwrap();
        let index = PolicyIndex::build(
            &policies,
            [("t", uid("Toolgate::Action::\"t\""))],
            &uid("Toolgate::Action::\"call_tool\""),
        )
        .unwrap();

        let named = index
            .policies_for("t", &uid("Toolgate::Agent::\"a2\""))
            .unwrap();
        assert_eq!(named.general.num_of_policies(), 3);
        let own = named.own.unwrap();
        assert_eq!(
            own.num_of_policies(),
            1,
            "the general policies are not copied in"
        );
        let only = own.policies().next().unwrap();
        assert_eq!(only.annotation("id"), Some("own-2"));

        let unnamed = index
            .policies_for("t", &uid("Toolgate::Agent::\"z\""))
            .unwrap();
        assert_eq!(unnamed.general.num_of_policies(), 3);
        assert!(unnamed.own.is_none());
        assert!(
            index
                .policies_for("u", &uid("Toolgate::Agent::\"z\""))
                .is_none()
        );
    }
}
