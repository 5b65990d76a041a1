//! Policy hot reload triggers for a running server: the directory watcher and SIGHUP. Both
//! call [`App::reload_policies`] on a blocking thread; `POST /admin/policies/reload` is the
//! third trigger (in `http::policy_admin`).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::app::App;

/// Reloads off the async workers; the outcome is logged and counted by the engine.
async fn reload(app: Arc<App>) {
    let _ = tokio::task::spawn_blocking(move || app.reload_policies()).await;
}

/// Starts the reload triggers. Abort the handles before dropping the app: they hold it.
pub fn spawn(app: &Arc<App>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let interval = app.config.policy.watch_interval_ms;
    if interval > 0 {
        let watched = app.clone();
        tasks.push(tokio::spawn(crate::policy::watch::watch(
            app.policies_dir.clone(),
            app.schema_stub.clone(),
            Duration::from_millis(interval),
            move || reload(watched.clone()),
        )));
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
                        tracing::info!("SIGHUP: reloading policies and upstream tools");
                        crate::mcp::upstreams::refresh_all(&signalled).await;
                        reload(signalled.clone()).await;
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
