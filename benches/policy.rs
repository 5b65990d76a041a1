//! A full Cedar decision (`PolicyEngine::decide`: request and principal built, all policies
//! evaluated) at 10, 100, 1,000 and 10,000 policies. Run with `cargo bench --bench policy`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;

use toolgate::auth::VerifiedToken;
use toolgate::config::Config;
use toolgate::policy::{CallFacts, PolicyEngine};
use toolgate::tools::{DemoUrls, Registry};

#[path = "../tests/it/verified_token.rs"]
mod verified_token;
use verified_token::TokenBuilder;

/// The broker's allocator (see `src/main.rs`), so decisions are timed as the broker makes them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn registry(repo: &Path) -> Registry {
    let config = Config::load(&repo.join("toolgate.toml")).unwrap();
    let demo = DemoUrls::placeholder().unwrap();
    Registry::from_config(&config, Some(&demo)).unwrap()
}

/// `n` policies: one permit per group on `files___read_file` with a path condition, every
/// tenth a forbid, so each decision evaluates the whole set.
fn policies(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        if i % 10 == 9 {
            text.push_str(&format!(
                "@id(\"f{i}\")\nforbid (principal in Toolgate::Group::\"g{i}\", action in Toolgate::Action::\"call_tool\", resource)\nwhen {{ context.input has path && context.input.path like \"*..*\" }};\n"
            ));
        } else {
            text.push_str(&format!(
                "@id(\"p{i}\")\npermit (principal in Toolgate::Group::\"g{i}\", action == Toolgate::Action::\"files___read_file\", resource)\nwhen {{ context.input.path like \"/srv/r{i}/*\" }};\n"
            ));
        }
    }
    text
}

fn token(group: String) -> VerifiedToken {
    TokenBuilder::new("reporting-agent")
        .issuer("https://bench")
        .scopes(&["files:read"])
        .groups(&[group.as_str(), "reporting"])
        .jti("bench")
        .times(0, 300)
        .claims(json!({ "sub": "reporting-agent", "groups": [group] }))
        .build()
}

fn decide_at_policy_counts(c: &mut Criterion) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tools = registry(repo);
    let tool = tools.get("files___read_file").unwrap().clone();
    let mut group = c.benchmark_group("policy/decide");
    for n in [10usize, 100, 1_000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bench.cedar"), policies(n)).unwrap();
        let snapshot = PolicyEngine::load(
            &repo.join("schemas/toolgate.cedarschema"),
            dir.path(),
            &tools,
        )
        .unwrap();
        let engine = PolicyEngine::new(snapshot);
        // The last permit group: an allow that only the last permit decides.
        let last = (0..n).rev().find(|i| i % 10 != 9).unwrap();
        let token = token(format!("g{last}"));
        let arguments = json!({ "path": format!("/srv/r{last}/q3.txt") });
        let facts = CallFacts {
            tool: &tool,
            arguments: &arguments,
            arguments_text: None,
            request_id: "bench",
            now: 1_767_607_200,
            logged_arguments: None,
        };
        let decision = engine.decide(&token, &facts).unwrap();
        assert!(decision.allowed, "{:?}", decision.determining_policies);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| engine.decide(black_box(&token), black_box(&facts)).unwrap())
        });
    }
    group.finish();
}

/// 10,000 policies spread over 1,000 agents and 50 tools (`principal == Agent::"agent-i"`,
/// ten per agent): the policy index evaluates one agent's policies on one tool, the whole set
/// scans all 10,000. Same decision either way (see tests/it/policy_index.rs).
fn decide_spread_over_agents_and_tools(c: &mut Criterion) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    for t in 0..50 {
        config.push_str(&format!(
            "[[tools]]\nserver = \"srv\"\nname = \"t{t}\"\ninput_schema = {{ type = \"object\", properties = {{ n = {{ type = \"integer\" }} }}, required = [\"n\"] }}\nbackend = {{ kind = \"http\", url = \"http://127.0.0.1:9/\" }}\n"
        ));
    }
    let config = Config::from_toml_str(&config, dir.path(), dir.path(), Vec::new()).unwrap();
    let tools = Registry::from_config(&config, None).unwrap();
    let mut text = String::new();
    for i in 0..10_000 {
        let (agent, tool) = (i / 10, (i * 7) % 50);
        text.push_str(&format!(
            "@id(\"p{i}\")\npermit (principal == Toolgate::Agent::\"agent-{agent}\", action == Toolgate::Action::\"srv___t{tool}\", resource)\nwhen {{ context.input.n < {} }};\n",
            i % 100 + 1
        ));
    }
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("spread.cedar"), text).unwrap();
    let snapshot = PolicyEngine::load(
        &repo.join("schemas/toolgate.cedarschema"),
        &policies,
        &tools,
    )
    .unwrap();
    let engine = PolicyEngine::new(snapshot);
    // Agent 999's policies are the last ten; p9999 is on tool (9999 * 7) % 50 = 43.
    let mut token = token("none".to_owned());
    token.subject = "agent-999".to_owned();
    let tool = tools.get("srv___t43").unwrap().clone();
    let arguments = json!({ "n": 5 });
    let facts = CallFacts {
        tool: &tool,
        arguments: &arguments,
        arguments_text: None,
        request_id: "bench",
        now: 1_767_607_200,
        logged_arguments: None,
    };
    let indexed = engine.decide(&token, &facts).unwrap();
    let whole = engine.decide_unindexed(&token, &facts).unwrap();
    assert!(indexed.allowed && whole.allowed);
    assert_eq!(indexed.determining_policies, whole.determining_policies);
    print_spread_latency(&engine, &tools);
    let mut group = c.benchmark_group("policy/decide_10000_spread");
    group.bench_function("indexed", |b| {
        b.iter(|| engine.decide(black_box(&token), black_box(&facts)).unwrap())
    });
    group.sample_size(10);
    group.bench_function("whole_set", |b| {
        b.iter(|| {
            engine
                .decide_unindexed(black_box(&token), black_box(&facts))
                .unwrap()
        })
    });
    group.finish();
}

/// The target is a percentile (p99 ≤ 50 µs), which criterion does not report: time
/// 20,000 single decisions by every agent on each of its tools, and print p50/p99/p99.9.
fn print_spread_latency(engine: &PolicyEngine, tools: &Registry) {
    let tokens: Vec<_> = (0..1000)
        .map(|a| {
            let mut t = token("none".to_owned());
            t.subject = format!("agent-{a}");
            t
        })
        .collect();
    let arguments = json!({ "n": 5 });
    let mut times = Vec::with_capacity(20_000);
    for k in 0..20_000usize {
        let (agent, i) = (k % 1000, (k % 1000) * 10 + (k / 1000) % 10);
        let tool = tools.get(&format!("srv___t{}", (i * 7) % 50)).unwrap();
        let facts = CallFacts {
            tool,
            arguments: &arguments,
            arguments_text: None,
            request_id: "bench",
            now: 1_767_607_200,
            logged_arguments: None,
        };
        let start = std::time::Instant::now();
        black_box(engine.decide(&tokens[agent], &facts).unwrap());
        times.push(start.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "policy/decide_10000_spread/indexed, one decision at a time over 1,000 agents and their tools ({} decisions): p50 {:?}, p99 {:?}, p99.9 {:?}",
        times.len(),
        at(0.50),
        at(0.99),
        at(0.999)
    );
}

criterion_group!(
    benches,
    decide_at_policy_counts,
    decide_spread_over_agents_and_tools
);
criterion_main!(benches);
