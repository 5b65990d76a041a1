//! Change detection for hot reload: a poll-based fingerprint of the policy directory and the
//! schema stub, or of any list of files such as JWKS files (no platform file-notification
//! crate; one directory listing and a few small reads per interval). A change triggers a reload only once the files have stayed unchanged
//! for a whole interval, so an editor's or a deploy's burst of writes loads once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The files whose content decides the policy set: `*.cedar` and `entities.json` of the
/// directory, and the schema stub.
pub fn fingerprint(policies_dir: &Path, schema_stub: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(policies_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "cedar")
                        || p.file_name().is_some_and(|n| n == super::ENTITIES_FILE)
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.push(schema_stub.to_owned());
    fingerprint_files(&files)
}

/// A fingerprint of the names and contents of `files`.
pub fn fingerprint_files(files: &[PathBuf]) -> String {
    let mut hasher = Sha256::new();
    for path in files {
        let name = path.to_string_lossy();
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        // An unreadable file fingerprints as missing; the reload then reports why.
        let content = std::fs::read(path).unwrap_or_default();
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(&content);
    }
    hex::encode(hasher.finalize())
}

/// Polls `fingerprint` every `interval` and calls `reload` after a change has settled (with
/// `settle`) or as soon as it is seen; `what` names the files in the log. Runs until dropped.
pub async fn watch<P, F, Fut>(
    what: &'static str,
    fingerprint: P,
    interval: Duration,
    settle: bool,
    mut reload: F,
) where
    P: Fn() -> String + Clone + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let compute = || {
        let fingerprint = fingerprint.clone();
        async move {
            tokio::task::spawn_blocking(fingerprint)
                .await
                .unwrap_or_default()
        }
    };
    let mut seen = compute().await;
    let mut pending = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = compute().await;
        if now != seen {
            seen = now;
            pending = settle;
            if !settle {
                tracing::info!("{what} changed: reloading");
                reload().await;
            }
        } else if pending {
            pending = false;
            tracing::info!("{what} changed: reloading");
            reload().await;
        }
    }
}
