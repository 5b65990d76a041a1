//! Dev mode (`serve --dev`, `token mint`): the repository's dev setup built into the binary, a
//! local token issuer whose key lives in the state directory, and in-process demo tool backends
//! on loopback. For trying toolgate out only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::auth::unix_now;
use crate::config::Config;
use crate::signing::SigningKey;
use crate::tools::DemoUrls;

/// File name of the dev issuer's private key inside the state directory.
pub const DEV_KEY_FILE: &str = "dev-issuer-ed25519.pk8";

/// The config file dev mode looks for in the working directory, as in a checkout.
pub const CHECKOUT_CONFIG: &str = "toolgate.toml";

/// Subdirectory of the state directory that the built-in dev setup is written to.
pub const DEFAULTS_DIR: &str = "dev-defaults";

/// The repository's dev config, built in.
const DEFAULT_CONFIG: &str = include_str!("../toolgate.toml");

/// The repository's dev setup (every file `serve --dev` reads), built in so that an installed
/// binary runs dev mode from any directory. A unit test keeps this list equal to the files.
const DEFAULT_FILES: &[(&str, &str)] = &[
    (CHECKOUT_CONFIG, DEFAULT_CONFIG),
    (
        "policies/delegation.cedar",
        include_str!("../policies/delegation.cedar"),
    ),
    (
        "policies/demo.cedar",
        include_str!("../policies/demo.cedar"),
    ),
    (
        "policies/entities.json",
        include_str!("../policies/entities.json"),
    ),
    (
        "policies/guardrails.cedar",
        include_str!("../policies/guardrails.cedar"),
    ),
    (
        "policies/payments.cedar",
        include_str!("../policies/payments.cedar"),
    ),
    (
        "schemas/toolgate.cedarschema",
        include_str!("../schemas/toolgate.cedarschema"),
    ),
    (
        "schemas/tools/delete_file.json",
        include_str!("../schemas/tools/delete_file.json"),
    ),
    (
        "schemas/tools/echo.json",
        include_str!("../schemas/tools/echo.json"),
    ),
    (
        "schemas/tools/read_file.json",
        include_str!("../schemas/tools/read_file.json"),
    ),
    (
        "schemas/tools/transfer.json",
        include_str!("../schemas/tools/transfer.json"),
    ),
];

/// The config dev mode runs on, and where its config, policies and schemas come from.
pub struct DevConfig {
    /// The config, loaded and validated.
    pub config: Config,
    /// Where its files come from.
    pub files: DevFiles,
}

/// Where dev mode's config, policies and schemas come from.
pub enum DevFiles {
    /// A config file on disk (a checkout's, or `--config`), absolute.
    ConfigFile(PathBuf),
    /// The built-in setup, written to this directory.
    BuiltIn(PathBuf),
}

/// Loads `path`; when it is the checkout's `toolgate.toml` and absent (an installed binary run
/// outside a checkout), uses the built-in dev setup instead (see [`write_defaults`]).
pub fn load_config(path: &Path) -> anyhow::Result<DevConfig> {
    if path != Path::new(CHECKOUT_CONFIG) || path.exists() {
        let config =
            Config::load(path).with_context(|| format!("loading config `{}`", path.display()))?;
        let path =
            std::path::absolute(path).with_context(|| format!("resolving `{}`", path.display()))?;
        return Ok(DevConfig {
            config,
            files: DevFiles::ConfigFile(path),
        });
    }
    let cwd = std::env::current_dir().context("reading the working directory")?;
    // First read as if `./toolgate.toml` existed, so the state stays where a checkout keeps it
    // (`./.toolgate`, or an override from the environment) ...
    let mut config = Config::from_toml_str(DEFAULT_CONFIG, path, &cwd, std::env::vars())
        .context("loading the built-in dev config")?;
    let state_dir = config.state_dir();
    config.server.state_dir.clone_from(&state_dir);
    config.audit.db = config.audit.db.as_deref().map(|db| config.resolve(db));
    for issuer in &mut config.issuers {
        issuer.jwks_file = issuer.jwks_file.as_deref().map(|f| cwd.join(f));
    }
    // ... then read the config's own files (policies, schemas) from the written copies.
    let defaults = write_defaults(&state_dir)?;
    config.base_dir.clone_from(&defaults);
    config.validate()?;
    Ok(DevConfig {
        config,
        files: DevFiles::BuiltIn(defaults),
    })
}

/// Writes the built-in dev setup into `<state_dir>/dev-defaults` (directories 0700, files 0600),
/// replacing what an earlier start wrote, so that it always matches the binary.
pub fn write_defaults(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let root = state_dir.join(DEFAULTS_DIR);
    for (name, text) in DEFAULT_FILES {
        let path = root.join(name);
        let dir = path.parent().unwrap_or(&root);
        create_private_dir(dir).with_context(|| format!("creating `{}`", dir.display()))?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("replacing `{}`", path.display()));
            }
            _ => {}
        }
        crate::signing::write_private(&path, text.as_bytes())
            .with_context(|| format!("writing `{}`", path.display()))?;
    }
    Ok(root)
}

/// Creates `dir` and missing parents with mode 0700, and sets 0700 on `dir` if it existed.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// The dev issuer: the first configured issuer, signing with a key kept in the state directory.
pub struct DevIssuer {
    /// The signing key.
    pub key: SigningKey,
    /// `iss` of minted tokens.
    pub issuer: String,
    /// Default `aud` of minted tokens.
    pub audience: String,
    /// Whether the key was created just now.
    pub created: bool,
}

/// Claims of a minted token.
#[derive(Debug, Clone, Serialize)]
pub struct MintClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Token id.
    pub jti: String,
    /// Space-separated scopes.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// RFC 8693 actor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
}

/// Options for minting a dev token.
#[derive(Debug, Clone, Default)]
pub struct MintOptions {
    /// Subject.
    pub sub: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Audience (default: the issuer's first audience).
    pub aud: Option<String>,
    /// Lifetime in seconds.
    pub ttl: i64,
    /// Groups.
    pub groups: Vec<String>,
    /// Acting agent (RFC 8693 `act.sub`), making `sub` the user it acts for.
    pub act: Option<String>,
}

impl DevIssuer {
    /// Loads or creates the dev key and writes the issuer's JWKS file with its public key.
    pub fn ensure(config: &Config) -> anyhow::Result<Self> {
        let issuer = config
            .issuers
            .first()
            .context("dev mode needs at least one `[[issuers]]` entry: the dev issuer")?;
        let key_path = config.state_dir().join(DEV_KEY_FILE);
        let (key, created) = SigningKey::load_or_create(&key_path).context("dev issuer key")?;
        let jwks_file = issuer
            .jwks_file
            .as_ref()
            .context("the dev issuer needs a `jwks_file` key source")?;
        let jwks_path: PathBuf = config.resolve(jwks_file);
        if let Some(dir) = jwks_path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating `{}`", dir.display()))?;
        }
        let jwks = serde_json::to_string_pretty(&key.jwks())?;
        std::fs::write(&jwks_path, jwks)
            .with_context(|| format!("writing `{}`", jwks_path.display()))?;
        let audience = issuer
            .audiences
            .first()
            .cloned()
            .context("the dev issuer has no audience")?;
        Ok(Self {
            key,
            issuer: issuer.issuer.clone(),
            audience,
            created,
        })
    }

    /// Mints an access token (`typ: at+jwt`).
    pub fn mint(&self, options: &MintOptions) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = MintClaims {
            iss: self.issuer.clone(),
            sub: options.sub.clone(),
            aud: options.aud.clone().unwrap_or_else(|| self.audience.clone()),
            iat: now,
            exp: now + options.ttl,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: options.scope.clone(),
            groups: options.groups.clone(),
            act: options.act.as_ref().map(|a| json!({ "sub": a })),
        };
        Ok(self.key.sign("at+jwt", &claims)?)
    }
}

/// Files the demo `files` backend serves.
fn demo_files() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        (
            "/srv/reports/q3-summary.txt",
            "Q3: revenue up 12%, costs flat.",
        ),
        (
            "/srv/reports/q4-forecast.txt",
            "Q4: forecast pending board review.",
        ),
        ("/etc/passwd", "root:x:0:0:root:/root:/bin/bash"),
    ])
}

/// Starts the demo backends on loopback ephemeral ports; they stop with the runtime.
pub async fn start_demo_backends() -> anyhow::Result<DemoUrls> {
    let echo = Router::new().route(
        "/echo",
        post(|Json(args): Json<Value>| async move { Json(json!({ "echo": args })) }),
    );
    let files =
        Router::new()
            .route(
                "/read_file",
                post(|Json(args): Json<Value>| async move {
                    let path = args.get("path").and_then(Value::as_str).unwrap_or_default();
                    match demo_files().get(path) {
                        Some(content) => (
                            StatusCode::OK,
                            Json(json!({ "path": path, "content": content })),
                        ),
                        None => (
                            StatusCode::NOT_FOUND,
                            Json(json!({ "error": "no such file" })),
                        ),
                    }
                }),
            )
            .route(
                "/delete_file",
                post(|Json(args): Json<Value>| async move {
                    Json(json!({ "deleted": args.get("path") }))
                }),
            );
    // A pretend payment rail: it only acknowledges, nothing moves.
    let payments = Router::new().route(
        "/transfer",
        post(|Json(args): Json<Value>| async move {
            Json(json!({
                "status": "accepted",
                "transfer_id": uuid::Uuid::new_v4().to_string(),
                "amount": args.get("amount"),
                "currency": args.get("currency"),
            }))
        }),
    );
    Ok(DemoUrls {
        echo: spawn_loopback(echo).await?,
        files: spawn_loopback(files).await?,
        payments: spawn_loopback(payments).await?,
    })
}

async fn spawn_loopback(router: Router) -> anyhow::Result<reqwest::Url> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a demo backend")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "demo backend stopped");
        }
    });
    Ok(reqwest::Url::parse(&format!("http://{addr}/"))?)
}

/// The banner printed by `serve --dev`: a warning, where the setup comes from and
/// ready-to-paste curl commands.
pub fn banner(
    dev: &DevConfig,
    issuer: &DevIssuer,
    listen: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let config = &dev.config;
    let files = match &dev.files {
        DevFiles::BuiltIn(dir) => format!(
            "built in, written to `{}` at each start;\n   \
             to change them, copy that directory's files into a directory of your own and run\n   \
             `toolgate serve --dev` there (it reads ./toolgate.toml when present).",
            dir.display()
        ),
        DevFiles::ConfigFile(path) => format!(
            "`{}` and the policies and schemas it names.",
            path.display()
        ),
    };
    let ttl = config
        .issuers
        .first()
        .map(|i| i.max_lifetime_seconds as i64)
        .unwrap_or(3600);
    let reporting = issuer.mint(&MintOptions {
        sub: "reporting-agent".to_owned(),
        scope: "files:read".to_owned(),
        ttl,
        groups: vec!["reporting".to_owned()],
        ..MintOptions::default()
    })?;
    let intern = issuer.mint(&MintOptions {
        sub: "intern-agent".to_owned(),
        scope: String::new(),
        ttl,
        ..MintOptions::default()
    })?;
    let payments = issuer.mint(&MintOptions {
        sub: "bob".to_owned(),
        scope: "payments:write".to_owned(),
        ttl,
        groups: vec!["finance".to_owned()],
        act: Some("payments-agent".to_owned()),
        ..MintOptions::default()
    })?;
    let base = format!("http://{listen}");
    Ok(format!(
        r#"
  ============================================================================
   toolgate DEV MODE: for trying out only. A local dev issuer signs tokens with
   a key in `{state}`; demo tools run in-process. Never expose this to a network.
  ============================================================================

  Config, policies and schemas: {files}

  Tokens (valid {ttl} s; mint more with `toolgate token mint --sub NAME`):
    export REPORTING_TOKEN={reporting}
    export INTERN_TOKEN={intern}
    export PAYMENTS_TOKEN={payments}   # payments-agent acting for bob (group finance)

  Allowed: the reporting agent reads a report
    curl -s -X POST {base}/v1/tools/files___read_file/invoke \
      -H "Authorization: Bearer $REPORTING_TOKEN" -H 'Content-Type: application/json' \
      -d '{{"arguments": {{"path": "/srv/reports/q3-summary.txt"}}}}'

  Denied by policy: the same agent tries /etc/passwd
    curl -s -X POST {base}/v1/tools/files___read_file/invoke \
      -H "Authorization: Bearer $REPORTING_TOKEN" -H 'Content-Type: application/json' \
      -d '{{"arguments": {{"path": "/etc/passwd"}}}}'

  Allowed below 500 EUR, denied from 500 (policies/payments.cedar):
    curl -s -X POST {base}/v1/tools/payments___transfer/invoke \
      -H "Authorization: Bearer $PAYMENTS_TOKEN" -H 'Content-Type: application/json' \
      -d '{{"arguments": {{"amount": 120.50, "currency": "EUR", "to_account": "DE02120300000000202051"}}}}'

  The intern agent may only echo; its tool list shows that:
    curl -s {base}/v1/tools -H "Authorization: Bearer $INTERN_TOKEN"

  MCP clients (agent frameworks) connect to {base}/mcp with the same tokens as
  `Authorization: Bearer`; see examples/mcp_client.py.

  Decisions are in {db} (sqlite3 it, or see README.md).
"#,
        state = config.state_dir().display(),
        db = config.audit_db().display(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the repository's dev setup is built in, so the built-in setup is the one
    /// a checkout runs.
    #[test]
    fn the_built_in_setup_is_the_repository_dev_setup() {
        fn files(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(root, &path, out);
                } else {
                    let name = path.strip_prefix(root).unwrap().to_str().unwrap();
                    out.push(name.replace('\\', "/"));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut on_disk = Vec::new();
        files(root, &root.join("policies"), &mut on_disk);
        files(root, &root.join("schemas"), &mut on_disk);
        on_disk.sort();
        on_disk.insert(0, CHECKOUT_CONFIG.to_owned());
        let built_in: Vec<&str> = DEFAULT_FILES.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, built_in);
    }
}
