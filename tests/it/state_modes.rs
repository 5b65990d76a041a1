//! The broker's state is owner-only: the state directory 0700, the decision log, the state
//! database (with their `-wal`/`-shm` files) and the revocation marker 0600, on a fresh start
//! and after a start over files an earlier version left readable by everyone.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use crate::support::{Options, TestApp};

const FILES: &[&str] = &[
    "decisions.db",
    "decisions.db-wal",
    "decisions.db-shm",
    "state.db",
    "state.db-wal",
    "state.db-shm",
    "state.revocations",
    "broker-signing-ed25519.pk8",
];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("`{}`: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[track_caller]
fn assert_owner_only(state: &Path) {
    assert_eq!(mode(state), 0o700, "state directory");
    for name in FILES {
        assert_eq!(mode(&state.join(name)), 0o600, "{name}");
    }
}

async fn exercise(app: &TestApp) {
    let token = app.token("agent", "", &[]);
    let reply = app
        .invoke(Some(&token), "demo___echo", json!({"message": "hi"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[tokio::test]
async fn state_files_are_owner_only_and_too_open_ones_are_restricted_at_start() {
    let app = TestApp::spawn().await;
    exercise(&app).await;
    let state = app.dir.path().join("state");
    // While the broker runs, the WAL and shared-memory files exist too.
    assert_owner_only(&state);

    let kept = app.stop_keep().await;
    // As an earlier version left them (or a careless copy): readable by everyone.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in FILES {
        let path = state.join(name);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let app = TestApp::spawn_with(Options {
        reuse: Some(kept),
        ..Options::default()
    })
    .await;
    exercise(&app).await;
    assert_owner_only(&state);
    app.stop().await;
}

#[tokio::test]
async fn log_archive_files_are_owner_only() {
    let app = TestApp::spawn().await;
    exercise(&app).await;
    let config = app.config_path();
    let out = app.dir.path().join("archive.jsonl");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["log", "archive", "--config"])
        .arg(&config)
        .args(["--before", &i64::MAX.to_string(), "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(mode(&out), 0o600);
    app.stop().await;
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// `serve --dev` (the real binary, on a copy of the repository's dev config) creates the same
/// owner-only state, its dev issuer key included.
#[tokio::test]
async fn dev_mode_state_is_owner_only() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let repo = crate::support::repo();
    std::fs::copy(repo.join("toolgate.toml"), dir.path().join("toolgate.toml")).unwrap();
    copy_tree(&repo.join("policies"), &dir.path().join("policies"));
    copy_tree(&repo.join("schemas"), &dir.path().join("schemas"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["--log-format", "json", "serve", "--dev", "--config"])
        .arg(dir.path().join("toolgate.toml"))
        .env("TOOLGATE__SERVER__LISTEN", "\"127.0.0.1:0\"")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let listening = line.contains("toolgate listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    let state = dir.path().join(".toolgate");
    // Read before the child is stopped, asserted after, so a failure never leaves it running.
    let mut modes = vec![(
        "state",
        std::fs::metadata(&state).map(|m| m.permissions().mode() & 0o777),
    )];
    for name in [
        "decisions.db",
        "state.db",
        "state.revocations",
        "dev-issuer-ed25519.pk8",
    ] {
        let found = std::fs::metadata(state.join(name)).map(|m| m.permissions().mode() & 0o777);
        modes.push((name, found));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("toolgate listening")),
        "{seen:?}"
    );
    for (name, found) in modes {
        let wanted = if name == "state" { 0o700 } else { 0o600 };
        assert_eq!(found.unwrap(), wanted, "{name}");
    }
}
