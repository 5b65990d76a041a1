//! Writes the load test's broker setup into a directory: an RS256 issuer (JWKS from an RSA
//! private key in PKCS#1 DER that `bench/load.sh` makes with openssl), a config with one tool
//! on a loopback backend, a small realistic policy set, a token and request bodies.
//!
//! ```text
//! cargo run --release --features examples --example bench_setup -- DIR BACKEND_URL LISTEN
//! ```

use std::path::PathBuf;

use anyhow::Context;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: bench_setup DIR BACKEND_URL LISTEN")?,
    );
    let backend = args.next().context("missing BACKEND_URL")?;
    let listen = args.next().context("missing LISTEN")?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));

    let der = std::fs::read(dir.join("rsa.der")).context("reading rsa.der (PKCS#1 DER)")?;
    let key = EncodingKey::from_rsa_der(&der);
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256)?;
    jwk.common.key_id = Some("bench-rsa".to_owned());
    std::fs::write(dir.join("jwks.json"), json!({ "keys": [jwk] }).to_string())?;

    let config = format!(
        r#"[server]
listen = "{listen}"
state_dir = "state"

[[issuers]]
issuer = "https://idp.bench"
audiences = ["toolgate-bench"]
jwks_file = "jwks.json"
algorithms = ["RS256"]

[policy]
dir = "policies"
schema = "{schema}"

[[tools]]
server = "bench"
name = "echo"
input_schema = {{ type = "object", properties = {{ message = {{ type = "string" }}, count = {{ type = "integer" }} }}, required = ["message"] }}
annotations = {{ read_only = true, destructive = false }}
backend = {{ kind = "http", url = "{backend}" }}
"#,
        schema = repo.join("schemas/toolgate.cedarschema").display(),
    );
    std::fs::write(dir.join("toolgate.toml"), config)?;

    // Ten policies: the bench tool's permit plus nine that do not apply to it.
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    let mut text = String::from(
        "@id(\"bench-echo\")\npermit (principal in Toolgate::Group::\"bench\", action == Toolgate::Action::\"bench___echo\", resource)\nwhen { context.input.message like \"hello*\" };\n",
    );
    for i in 0..8 {
        text.push_str(&format!(
            "@id(\"other-{i}\")\npermit (principal == Toolgate::Agent::\"agent-{i}\", action == Toolgate::Action::\"bench___echo\", resource)\nwhen {{ context.input has count && context.input.count < {i} }};\n"
        ));
    }
    text.push_str("@id(\"no-destructive\")\nforbid (principal, action in Toolgate::Action::\"call_tool\", resource) when { resource.destructive };\n");
    std::fs::write(policies.join("bench.cedar"), text)?;

    let now = toolgate::auth::unix_now();
    let claims = json!({
        "iss": "https://idp.bench", "sub": "bench-agent", "aud": "toolgate-bench",
        "iat": now, "exp": now + 3000, "scope": "tools:call", "groups": ["bench"],
    });
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some("bench-rsa".to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &key)?;
    std::fs::write(dir.join("token"), token)?;
    std::fs::write(
        dir.join("invoke.json"),
        json!({ "arguments": { "message": "hello world" } }).to_string(),
    )?;
    std::fs::write(
        dir.join("authorize.json"),
        json!({ "tool": "bench___echo", "arguments": { "message": "hello world" } }).to_string(),
    )?;
    println!("bench setup written to {}", dir.display());
    Ok(())
}
