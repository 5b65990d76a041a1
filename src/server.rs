//! Start-up: builds the [`App`] from a [`Config`] (every stage loaded and validated, or a
//! refusal to start that names what is wrong) and runs the HTTP server until shutdown.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::app::App;
use crate::audit::{AuditLog, AuditOptions, AuditWriterHandle};
use crate::auth::{Authenticator, RevocationStore};
use crate::config::Config;
use crate::policy::PolicyEngine;
use crate::tools::broker_keys::BrokerKeys;
use crate::tools::{DemoUrls, Dispatcher, Registry};

/// A built app and the handle that drains its decision log on shutdown.
pub struct Built {
    /// The pipeline.
    pub app: Arc<App>,
    /// Joined after the server stops, so every queued record is committed.
    pub audit_writer: AuditWriterHandle,
}

/// Loads every stage from `config`; demo backends resolve only when `demo` is given.
pub fn build(config: Config, demo: Option<&DemoUrls>) -> anyhow::Result<Built> {
    let revocations = RevocationStore::open_for(&config).context("opening the state database")?;
    let authenticator = Authenticator::from_config(&config)
        .context("loading issuer keys")?
        .with_revocations(Arc::new(revocations));
    let tools = Registry::from_config(&config, demo).context("loading the tool registry")?;
    let upstreams = crate::tools::upstream::manager::Upstreams::from_config(&config)
        .context("setting up upstreams")?;
    let tools = tools.with_upstream_tools(upstreams.discover_blocking());
    let schema_stub = config.resolve(&config.policy.schema);
    let policies_dir = config.resolve(&config.policy.dir);
    let snapshot = PolicyEngine::load(&schema_stub, &policies_dir, &tools)
        .with_context(|| format!("loading policies from `{}`", policies_dir.display()))?;
    tracing::info!(
        policies = snapshot.policy_count(),
        policy_set_hash = %snapshot.policy_set_hash,
        tools = tools.len(),
        "policy set loaded and validated"
    );
    let broker_key = crate::audit::checkpoint::broker_key(&config.state_dir())
        .context("loading the broker signing key")?;
    let (audit, audit_writer) = AuditLog::open(AuditOptions {
        path: config.audit_db(),
        synchronous: config.audit.synchronous,
        busy_timeout: std::time::Duration::from_millis(config.audit.busy_timeout_ms),
        max_batch: config.audit.max_batch,
        checkpoints: Some(crate::audit::CheckpointOptions {
            key: Arc::new(broker_key),
            every_records: config.audit.checkpoint_every,
            interval: config.audit.checkpoint_interval(),
        }),
    })
    .with_context(|| format!("opening the decision log `{}`", config.audit_db().display()))?;
    if let Some(filesystem) = crate::audit::storage::volatile_filesystem(&config.audit_db()) {
        tracing::warn!(
            path = %config.audit_db().display(),
            %filesystem,
            "the decision log is on a filesystem that does not survive a reboot: its records would be lost; set `audit.db` on a disk"
        );
    }
    let broker_keys = BrokerKeys::load_or_create(&config.state_dir())
        .context("loading the broker signing keys")?;
    let dispatcher = Dispatcher::new(Arc::new(broker_keys), config.server.broker_issuer.clone())
        .context("building the HTTP client")?;
    let app = App {
        config,
        authenticator,
        tools: arc_swap::ArcSwap::from_pointee(tools),
        policy: PolicyEngine::new(snapshot),
        audit,
        dispatcher,
        policies_dir,
        schema_stub,
        reload_lock: std::sync::Mutex::new(()),
        upstreams,
    };
    Ok(Built {
        app: Arc::new(app),
        audit_writer,
    })
}

/// Serves `built` on `listener` until `shutdown`, then drains the decision log.
pub async fn run(
    listener: TcpListener,
    built: Built,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Built { app, audit_writer } = built;
    app.authenticator.start_refresh();
    let mut reloaders = crate::reload::spawn_upstream_watchers(&app);
    reloaders.extend(crate::reload::spawn(&app));
    let served = crate::http::serve(listener, app.clone(), shutdown).await;
    for task in reloaders {
        task.abort();
        let _ = task.await;
    }
    served.context("serving HTTP")?;
    // Dropping the last App drops the log's sender; the writer then commits what is queued.
    drop(app);
    tokio::task::spawn_blocking(move || audit_writer.join())
        .await
        .context("draining the decision log")?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests and the decision log");
}

/// Binds the configured listen address.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "binding `{}` (config key `server.listen`)",
                config.server.listen
            )
        })
}
