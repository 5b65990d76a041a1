//! `serve --dev` as a user runs it: the real binary from an empty directory (the built-in dev
//! setup, as an installed binary) and from a copy of the checkout whose edits take effect.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::Value;

use crate::support::{Reply, repo};

/// A `toolgate serve --dev` process, stopped when dropped.
struct DevBroker {
    child: Child,
    banner: String,
    /// Kept open: a broker whose stdout is closed dies at its next print.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `toolgate` in `cwd` as a user would, on an ephemeral port.
fn toolgate(cwd: &Path, args: &[&str], stderr: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
    command
        .args(args)
        .current_dir(cwd)
        .env("TOOLGATE__SERVER__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap());
    command
}

/// Starts `serve --dev` in `cwd` and reads its banner up to its last line.
fn serve_dev(cwd: &Path, logs: &Path) -> DevBroker {
    let stderr = logs.join("stderr");
    let mut child = toolgate(cwd, &["serve", "--dev"], &stderr).spawn().unwrap();
    let mut banner = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !banner.contains("Decisions are in") {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.wait();
            panic!(
                "serve --dev stopped before its banner:\n{banner}\n{}",
                std::fs::read_to_string(&stderr).unwrap()
            );
        };
        banner.push_str(&line);
        banner.push('\n');
    }
    DevBroker {
        child,
        banner,
        _stdout: lines,
    }
}

/// The banner's `export NAME=value` value.
fn exported(banner: &str, name: &str) -> String {
    let prefix = format!("export {name}=");
    let line = banner
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in the banner:\n{banner}"));
    let value = &line[prefix.len()..];
    value.split_whitespace().next().unwrap().to_owned()
}

/// Makes the banner's first printed call ("Allowed: ...") as pasted, with `token` for
/// `$REPORTING_TOKEN`.
async fn printed_allowed_call(banner: &str, token: &str) -> Reply {
    let call: Vec<&str> = banner
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("Allowed: the reporting agent"))
        .skip(1)
        .take(3)
        .collect();
    let url = call[0]
        .strip_prefix("curl -s -X POST ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no curl line in the banner:\n{banner}"));
    assert!(call[1].contains("Bearer $REPORTING_TOKEN"), "{banner}");
    let body = call[2]
        .strip_prefix("-d '")
        .and_then(|b| b.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no request body in the banner:\n{banner}"));
    serde_json::from_str::<Value>(body).unwrap();
    Reply::read(
        reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(
                files(&path)
                    .into_iter()
                    .map(|f| path.strip_prefix(dir).unwrap().join(f)),
            );
        } else {
            out.push(path.strip_prefix(dir).unwrap().to_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn serve_dev_runs_from_an_empty_directory_on_the_built_in_setup() {
    let cwd = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let broker = serve_dev(cwd.path(), logs.path());
    let defaults = cwd.path().join(".toolgate/dev-defaults");
    assert!(
        broker.banner.contains(&format!(
            "Config, policies and schemas: built in, written to `{}`",
            defaults.display()
        )),
        "{}",
        broker.banner
    );

    let token = exported(&broker.banner, "REPORTING_TOKEN");
    let reply = printed_allowed_call(&broker.banner, &token).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["decision"], "allow");
    assert_eq!(
        reply.body["result"]["content"],
        "Q3: revenue up 12%, costs flat."
    );

    // The written setup is the repository's, private to the user, and the working directory
    // holds nothing but the state directory.
    let written = files(&defaults);
    assert_eq!(written.len(), 11, "{written:?}");
    for file in &written {
        let repo_copy = std::fs::read(repo().join(file)).unwrap();
        assert_eq!(
            std::fs::read(defaults.join(file)).unwrap(),
            repo_copy,
            "{file:?}"
        );
        #[cfg(unix)]
        assert_eq!(mode(&defaults.join(file)), 0o600, "{file:?}");
    }
    #[cfg(unix)]
    for dir in [
        "",
        "dev-defaults",
        "dev-defaults/policies",
        "dev-defaults/schemas/tools",
    ] {
        assert_eq!(
            mode(&cwd.path().join(".toolgate").join(dir)),
            0o700,
            "{dir}"
        );
    }
    let names: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".toolgate"]);

    // `token mint` outside a checkout signs with the same dev key.
    let minted = toolgate(
        cwd.path(),
        &[
            "token",
            "mint",
            "--sub",
            "reporting-agent",
            "--scope",
            "files:read",
            "--group",
            "reporting",
        ],
        &logs.path().join("mint-stderr"),
    )
    .output()
    .unwrap();
    assert!(minted.status.success(), "{minted:?}");
    let minted = String::from_utf8(minted.stdout).unwrap();
    let reply = printed_allowed_call(&broker.banner, minted.trim()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[tokio::test]
async fn serve_dev_in_a_checkout_reads_the_checkout_files_with_their_edits() {
    let checkout = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("toolgate.toml"),
        checkout.path().join("toolgate.toml"),
    )
    .unwrap();
    for dir in ["policies", "schemas"] {
        for file in files(&repo().join(dir)) {
            let to = checkout.path().join(dir).join(&file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo().join(dir).join(&file), to).unwrap();
        }
    }
    // The edit: reporting agents may read only an archive, not the reports.
    let demo = checkout.path().join("policies/demo.cedar");
    let edited = std::fs::read_to_string(&demo)
        .unwrap()
        .replace(r#"like "/srv/reports/*""#, r#"like "/srv/archive/*""#);
    assert!(edited.contains("/srv/archive/*"));
    std::fs::write(&demo, edited).unwrap();

    let broker = serve_dev(checkout.path(), logs.path());
    assert!(
        broker.banner.contains(&format!(
            "Config, policies and schemas: `{}`",
            checkout.path().join("toolgate.toml").display()
        )),
        "{}",
        broker.banner
    );
    let token = exported(&broker.banner, "REPORTING_TOKEN");
    let reply = printed_allowed_call(&broker.banner, &token).await;
    assert_eq!(reply.status, 403, "{:?}", reply.body);
    assert_eq!(reply.body["decision"], "deny");
    assert!(
        !checkout.path().join(".toolgate/dev-defaults").exists(),
        "a checkout runs on its own files"
    );
}
