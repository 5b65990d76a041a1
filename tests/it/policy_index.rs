//! Property test of the policy index: over random policy sets and random requests, the indexed
//! decision equals the decision of the whole set, with the same determining policies and errors.

use std::collections::BTreeSet;

use serde_json::json;
use toolgate::auth::VerifiedToken;
use toolgate::config::Config;
use toolgate::policy::{CallFacts, PolicyEngine};
use toolgate::tools::Registry;

use crate::support::repo;
use crate::verified_token::TokenBuilder;

/// A small deterministic generator (xorshift64*), so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const TOOLS: &[&str] = &["t0", "t1", "t2", "t3"];
const AGENTS: &[&str] = &["a0", "a1", "a2", "a3"];
const GROUPS: &[&str] = &["g0", "g1", "g2"];

fn random_policy(rng: &mut Rng, id: usize) -> String {
    let effect = if rng.below(4) == 0 {
        "forbid"
    } else {
        "permit"
    };
    let principal = match rng.below(5) {
        0 => "principal".to_owned(),
        1 | 2 => format!("principal == Toolgate::Agent::\"{}\"", rng.pick(AGENTS)),
        3 => format!("principal in Toolgate::Group::\"{}\"", rng.pick(GROUPS)),
        _ => "principal is Toolgate::User".to_owned(),
    };
    let action = match rng.below(4) {
        0 => "action".to_owned(),
        1 => "action in Toolgate::Action::\"call_tool\"".to_owned(),
        2 => format!("action == Toolgate::Action::\"srv___{}\"", rng.pick(TOOLS)),
        _ => format!(
            "action in [Toolgate::Action::\"srv___{}\", Toolgate::Action::\"srv___{}\"]",
            rng.pick(TOOLS),
            rng.pick(TOOLS)
        ),
    };
    let resource = match rng.below(3) {
        0 => format!("resource == Toolgate::Tool::\"srv___{}\"", rng.pick(TOOLS)),
        _ => "resource".to_owned(),
    };
    let condition = match rng.below(5) {
        0 => format!(" when {{ context.input.n < {} }}", rng.below(10)),
        1 => format!(" unless {{ principal.sub == \"{}\" }}", rng.pick(AGENTS)),
        2 => " when { principal.hasTag(\"level\") && principal.getTag(\"level\") == \"high\" }"
            .to_owned(),
        // Overflows (an evaluation error) for n >= 2: the index must keep errors identical too.
        3 => " when { context.input.n * 4611686018427387904 > 1 }".to_owned(),
        _ => String::new(),
    };
    format!("@id(\"p{id}\")\n{effect} ({principal}, {action}, {resource}){condition};\n")
}

fn token(rng: &mut Rng) -> VerifiedToken {
    let subject = rng.pick(AGENTS).to_owned();
    let groups: Vec<String> = GROUPS
        .iter()
        .filter(|_| rng.below(2) == 0)
        .map(|g| (*g).to_owned())
        .collect();
    let actors = if rng.below(4) == 0 {
        vec!["a9".to_owned()]
    } else {
        Vec::new()
    };
    let claims = if rng.below(2) == 0 {
        json!({ "level": "high" })
    } else {
        json!({})
    };
    TokenBuilder::new(&subject)
        .audience("toolgate-test")
        .groups(&groups)
        .actors(&actors)
        .claims(claims)
        .build()
}

#[test]
fn indexed_decisions_equal_whole_set_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let mut config_text = String::new();
    for t in TOOLS {
        config_text.push_str(&format!(
            "[[tools]]\nserver = \"srv\"\nname = \"{t}\"\ninput_schema = {{ type = \"object\", properties = {{ n = {{ type = \"integer\" }} }}, required = [\"n\"] }}\nbackend = {{ kind = \"http\", url = \"http://127.0.0.1:9/\" }}\n"
        ));
    }
    let config = Config::from_toml_str(&config_text, dir.path(), dir.path(), Vec::new()).unwrap();
    let registry = Registry::from_config(&config, None).unwrap();
    let stub = repo().join("schemas/toolgate.cedarschema");

    let mut rng = Rng(0x5EED_1DE4);
    let mut compared = 0;
    let mut allowed = 0;
    let mut errored = 0;
    for round in 0..12 {
        let policies = dir.path().join(format!("policies-{round}"));
        std::fs::create_dir(&policies).unwrap();
        let count = 5 + rng.below(60) as usize;
        let text: String = (0..count).map(|i| random_policy(&mut rng, i)).collect();
        std::fs::write(policies.join("random.cedar"), &text).unwrap();
        let snapshot = match PolicyEngine::load(&stub, &policies, &registry) {
            Ok(s) => s,
            Err(e) => panic!("round {round}: generated policies must validate: {e}\n{text}"),
        };
        let engine = PolicyEngine::new(snapshot);
        for _ in 0..150 {
            let token = token(&mut rng);
            let tool = registry.get(&format!("srv___{}", rng.pick(TOOLS))).unwrap();
            let arguments = json!({ "n": rng.below(10) });
            let facts = CallFacts {
                tool,
                arguments: &arguments,
                arguments_text: None,
                request_id: "r",
                now: 1_795_452_137,
                logged_arguments: None,
            };
            let indexed = engine.decide(&token, &facts).unwrap();
            let whole = engine.decide_unindexed(&token, &facts).unwrap();
            let sorted = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
            assert_eq!(
                indexed.allowed, whole.allowed,
                "round {round}: {token:?} {}\n{text}",
                tool.id
            );
            assert_eq!(
                sorted(&indexed.determining_policies),
                sorted(&whole.determining_policies),
                "round {round}\n{text}"
            );
            assert_eq!(
                sorted(&indexed.errors),
                sorted(&whole.errors),
                "round {round}\n{text}"
            );
            compared += 1;
            allowed += usize::from(whole.allowed);
            errored += usize::from(!whole.errors.is_empty());
        }
    }
    // The generator must exercise both outcomes, or the comparison proves little.
    assert!(
        allowed > compared / 10 && allowed < compared * 9 / 10,
        "{allowed} of {compared} allowed"
    );
    assert!(errored > 0, "no request hit an erroring policy");
}
