//! Hot reload triggers for a running server. Policies: the directory watcher and SIGHUP call
//! [`App::reload_policies`] on a blocking thread; `POST /admin/policies/reload` is the third
//! trigger (in `http::policy_admin`). Issuer JWKS files: their own watcher (at the first poll
//! that sees a change) and SIGHUP re-read them; a file that cannot be read or parsed keeps its
//! last good key set. SIGHUP also re-lists the upstream MCP servers' tools first.
//!
//! Upstream tools are installed here, above the pipeline, so that the upstream manager in
//! `tools::upstream` needs nothing from `app`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::app::App;

/// Reloads off the async workers; the outcome is logged and counted by the engine.
async fn reload(app: Arc<App>) {
    let _ = tokio::task::spawn_blocking(move || app.reload_policies()).await;
}

/// Re-reads the issuers' JWKS files off the async workers. A changed key set also empties
/// the verified-token cache for that issuer (entries are tied to the set they were checked
/// against).
async fn reload_keys(app: Arc<App>) {
    let _ = tokio::task::spawn_blocking(move || {
        for error in app.authenticator.reload_keys() {
            tracing::error!(error = %error, "JWKS file reload rejected: the last good key set keeps serving");
        }
    })
    .await;
}

/// Starts the reload triggers. Abort the handles before dropping the app: they hold it.
pub fn spawn(app: &Arc<App>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let interval = app.config.policy.watch_interval_ms;
    if interval > 0 {
        let watched = app.clone();
        let (dir, stub) = (app.policies_dir.clone(), app.schema_stub.clone());
        tasks.push(tokio::spawn(crate::policy::watch::watch(
            "policy files",
            move || crate::policy::watch::fingerprint(&dir, &stub),
            Duration::from_millis(interval),
            true,
            move || reload(watched.clone()),
        )));
        let key_files = app.authenticator.key_files();
        if !key_files.is_empty() {
            let watched = app.clone();
            tasks.push(tokio::spawn(crate::policy::watch::watch(
                "issuer JWKS files",
                move || crate::policy::watch::fingerprint_files(&key_files),
                Duration::from_millis(interval),
                // A withdrawn key must stop verifying within one interval. Waiting for the
                // file to settle buys nothing here: a half-written JWKS is not JSON, so it is
                // only reported and the last good set keeps serving until the next poll.
                false,
                move || reload_keys(watched.clone()),
            )));
        }
    }
    #[cfg(unix)]
    {
        // Registered now, not in the task: a SIGHUP arriving before the task first runs must
        // not hit the default action (terminating the process).
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hangup) => {
                let signalled = app.clone();
                tasks.push(tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading upstream tools, policies and JWKS files");
                        refresh_upstreams(&signalled).await;
                        reload(signalled.clone()).await;
                        reload_keys(signalled.clone()).await;
                    }
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: reload by file change or the admin API")
            }
        }
    }
    tasks
}

/// Re-lists every upstream's tools and installs a new registry if any listing changed.
pub async fn refresh_upstreams(app: &Arc<App>) {
    if app.upstreams.is_empty() {
        return;
    }
    if app.upstreams.refresh_all().await {
        install_upstream_tools(app).await;
    }
}

/// Starts the upstreams' background refreshers and listen streams. Abort the handles before
/// dropping the app: they hold it.
pub fn spawn_upstream_watchers(app: &Arc<App>) -> Vec<JoinHandle<()>> {
    let installer = app.clone();
    app.upstreams.start(move || {
        let app = installer.clone();
        async move { install_upstream_tools(&app).await }
    })
}

/// Builds the registry (configured tools plus every upstream's current tools) and installs
/// it; a policy set that does not validate for it leaves the current one serving.
async fn install_upstream_tools(app: &Arc<App>) {
    let _serial = app.upstreams.install_guard().await;
    let upstream_tools = app.upstreams.tools();
    let worker = app.clone();
    let result = tokio::task::spawn_blocking(move || {
        let registry = worker.tools().with_upstream_tools(upstream_tools);
        let count = registry.len();
        worker
            .replace_tools(registry)
            .map(|outcome| (outcome, count))
    })
    .await;
    match result {
        Ok(Ok((outcome, count))) => tracing::info!(
            tools = count,
            policy_set_hash = %outcome.policy_set_hash,
            "tool registry replaced with upstream tools"
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "upstream tools rejected: the policy set does not validate for them; the previous registry keeps serving");
            // The next refresh installs again, even if the listings are the same.
            app.upstreams.forget_fingerprints();
        }
        Err(e) => tracing::error!(error = %e, "registry install task failed"),
    }
}
