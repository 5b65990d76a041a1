//! The official MCP Python SDK, for interop tests against clients and servers nobody here
//! wrote. `.ci/run` installs it into a virtualenv and exports `TOOLGATE_MCP_PYTHON`; without
//! that variable the first test that needs it installs the same pinned version into
//! `target/tmp/mcp-venv` (one download from PyPI, then reused).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The pinned SDK version (its client negotiates 2026-07-28 first and falls back to the
/// `initialize` handshake, as current agent frameworks do).
pub const MCP_SDK: &str = "mcp==2.3.0";

/// The Python interpreter that has the MCP SDK.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(python) = std::env::var_os("TOOLGATE_MCP_PYTHON") {
                return PathBuf::from(python);
            }
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-venv");
            let python = venv.join("bin/python");
            if !sdk_importable(&python) {
                install(&venv);
            }
            assert!(
                sdk_importable(&python),
                "the MCP Python SDK is not importable from `{}`",
                python.display()
            );
            python
        })
        .clone()
}

/// A script from `tests/mcp/`.
pub fn script(name: &str) -> PathBuf {
    crate::support::repo().join("tests/mcp").join(name)
}

fn sdk_importable(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import mcp, httpx2"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Builds the venv beside its final place and renames it there, so that concurrent test
/// processes (nextest) never see a half-installed one.
fn install(venv: &Path) {
    let staging = venv.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("running python3");
        assert!(
            out.status.success(),
            "installing the MCP Python SDK ({MCP_SDK}) failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(&staging));
    run(Command::new(staging.join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        MCP_SDK,
    ]));
    if std::fs::rename(&staging, venv).is_err() {
        // Another process installed it first.
        let _ = std::fs::remove_dir_all(&staging);
    }
}
