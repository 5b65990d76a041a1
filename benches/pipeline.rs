//! Benchmarks of the whole in-process pipeline without HTTP: token → tool → arguments →
//! Cedar → decision log (`App::call` with the authorize endpoint), and of its stages alone.
//! Run with `cargo bench --bench pipeline`; see BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use toolgate::app::{App, CallRequest, Decision, Endpoint};
use toolgate::signing::SigningKey;

/// The broker's allocator (see `src/main.rs`), so the work is timed as the broker does it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Setup {
    _dir: tempfile::TempDir,
    app: Arc<App>,
    authorization: String,
    runtime: tokio::runtime::Runtime,
}

fn setup(synchronous: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = SigningKey::generate().unwrap();
    std::fs::write(dir.path().join("jwks.json"), key.jwks().to_string()).unwrap();
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = format!(
        r#"[server]
state_dir = "state"
[[issuers]]
issuer = "https://idp.bench"
audiences = ["toolgate"]
jwks_file = "jwks.json"
algorithms = ["EdDSA"]
[policy]
dir = "{policies}"
schema = "{schema}"
[audit]
synchronous = "{synchronous}"
[[tools]]
server = "demo"
name = "echo"
input_schema_file = "{tools}/echo.json"
annotations = {{ read_only = true, destructive = false }}
backend = {{ kind = "http", url = "http://127.0.0.1:9/echo" }}
[[tools]]
server = "files"
name = "read_file"
input_schema_file = "{tools}/read_file.json"
required_scopes = ["files:read"]
annotations = {{ read_only = true, destructive = false }}
backend = {{ kind = "http", url = "http://127.0.0.1:9/read_file" }}
[[tools]]
server = "files"
name = "delete_file"
input_schema_file = "{tools}/delete_file.json"
backend = {{ kind = "http", url = "http://127.0.0.1:9/delete_file" }}
"#,
        policies = repo.join("policies").display(),
        schema = repo.join("schemas/toolgate.cedarschema").display(),
        tools = repo.join("schemas/tools").display(),
    );
    let path = dir.path().join("toolgate.toml");
    std::fs::write(&path, config).unwrap();
    let config = toolgate::config::Config::load(&path).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let built = runtime.block_on(async { toolgate::server::build(config, None).unwrap() });
    let now = toolgate::auth::unix_now();
    let token = key
        .sign(
            "at+jwt",
            &json!({
                "iss": "https://idp.bench", "sub": "reporting-agent", "aud": "toolgate",
                "iat": now, "exp": now + 3000, "scope": "files:read", "groups": ["reporting"],
            }),
        )
        .unwrap();
    // The writer handle is leaked on purpose: the log stays open for the whole run.
    std::mem::forget(built.audit_writer);
    Setup {
        _dir: dir,
        app: built.app,
        authorization: format!("Bearer {token}"),
        runtime,
    }
}

fn pipeline(c: &mut Criterion) {
    for synchronous in ["normal", "full"] {
        let s = setup(synchronous);
        c.bench_function(
            &format!("pipeline/authorize_allow_logged/{synchronous}"),
            |b| {
                b.iter(|| {
                    let response = s.runtime.block_on(s.app.call(
                        Endpoint::Authorize,
                        CallRequest {
                            authorization: Some(&s.authorization),
                            tool: "files___read_file",
                            arguments: Ok(json!({ "path": "/srv/reports/q3.txt" })),
                            arguments_text: None,
                            request_id: None,
                        },
                    ));
                    assert!(response.as_ref().is_ok_and(Decision::succeeded));
                    black_box(response)
                })
            },
        );
    }
}

fn stages(c: &mut Criterion) {
    let s = setup("normal");
    let token = s.authorization.trim_start_matches("Bearer ").to_owned();
    c.bench_function("stage/verify_eddsa", |b| {
        b.iter(|| black_box(s.app.authenticator.verify(black_box(&token)).unwrap()))
    });
    let verified = s.app.authenticator.verify(&token).unwrap();
    let tool = s.app.tools().get("files___read_file").unwrap().clone();
    let arguments = json!({ "path": "/srv/reports/q3.txt" });
    c.bench_function("stage/check_arguments", |b| {
        b.iter(|| tool.check_arguments(black_box(&arguments)).unwrap())
    });
    c.bench_function("stage/policy_decide", |b| {
        b.iter(|| {
            let facts = toolgate::policy::CallFacts {
                tool: &tool,
                arguments: &arguments,
                arguments_text: None,
                request_id: "bench",
                now: 1_795_452_137,
                logged_arguments: None,
            };
            let d = s.app.policy.decide(&verified, &facts).unwrap();
            assert!(d.allowed);
            black_box(d)
        })
    });
    let body = json!({ "arguments": { "path": "/srv/reports/q3.txt", "labels": ["a", "b"], "n": { "x": 1 } } });
    c.bench_function("stage/json_depth", |b| {
        b.iter(|| toolgate::http::json_depth(black_box(&body)))
    });
}

criterion_group!(benches, pipeline, stages);
criterion_main!(benches);
