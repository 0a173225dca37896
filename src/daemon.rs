//! `regwatch run`: starts the store, the HTTP listener and the sources; handles SIGTERM,
//! SIGINT (graceful stop, nothing accepted is lost) and SIGHUP (config reload).

use crate::audit::{AuditSink, AuditWriter};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::{self, Config};
use crate::event::{Action, Event, Source};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long in-flight HTTP requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(config_path: Option<PathBuf>, config: Config) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new());
    let counter = metrics.audit_events_total.clone();
    let writer = AuditWriter::start(
        &config.database.path,
        config.database.queue_capacity,
        Box::new(move |actions| {
            for a in actions {
                counter.with_label_values(&[a]).inc();
            }
        }),
    )?;
    let sink = writer.sink();

    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let request_timeout = config.server.request_timeout;
    let max_body = config.server.max_body_bytes;
    let db_path = config.database.path.clone();
    let retention = config.database.retention;
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        config: config_rx,
        sink: sink.clone(),
        db_path,
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(
        axum::serve(listener, http::router(state, request_timeout, max_body))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    record(
        &sink,
        Event::new(clock.now(), Action::MonitorStart, Source::Daemon).with_detail(format!(
            "regwatch {} ({})",
            crate::metrics::VERSION,
            crate::metrics::REVISION
        )),
    )
    .await;
    ready.store(true, Ordering::Release);
    let retention_task = retention
        .map(|keep| tokio::spawn(retain(sink.clone(), keep, clock.clone(), shutdown.clone())));
    let monitored: Vec<String> = crate::sources::storage::monitored(&config_tx.borrow())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let storage_tasks: Vec<_> = monitored
        .into_iter()
        .map(|registry| {
            tokio::spawn(
                crate::sources::storage::Monitor {
                    registry,
                    config: config_tx.subscribe(),
                    metrics: metrics.storage.clone(),
                    sink: sink.clone(),
                    clock: clock.clone(),
                    db_path: config_tx.borrow().database.path.clone(),
                    stop: shutdown.clone(),
                }
                .run(),
            )
        })
        .collect();
    {
        let c = config_tx.borrow();
        tracing::info!(
            listen = %listen,
            database = %c.database.path.display(),
            registries = c.registries.len(),
            "regwatch started"
        );
    }

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let reason = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => reload(config_path.as_deref(), &config_tx, &metrics, &sink, &*clock).await,
        }
    };

    tracing::info!(signal = reason, "stopping");
    if let Some(t) = retention_task {
        t.abort();
    }
    ready.store(false, Ordering::Release);
    shutdown.cancel();
    for t in storage_tasks {
        // They stop at the next await on the token; a walk thread still running is left
        // to finish on its own (its result is dropped).
        let _ = t.await;
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => {
            tracing::warn!("HTTP requests still running after {DRAIN_TIMEOUT:?}; closing them")
        }
    }
    record(
        &sink,
        Event::new(clock.now(), Action::MonitorStop, Source::Daemon)
            .with_detail(format!("stopped by {reason}")),
    )
    .await;
    writer.close().await;
    tracing::info!("stopped; every accepted event is committed");
    Ok(())
}

/// How often retention runs; rows become due at most this late.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Deletes audit rows older than `keep`, at start-up and then hourly.
async fn retain(sink: AuditSink, keep: Duration, clock: SharedClock, stop: CancellationToken) {
    loop {
        let cutoff = clock.now() - keep;
        match sink.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(rows = n, before = %crate::audit::format_time(cutoff), "retention deleted old audit rows")
            }
            Err(e) => tracing::error!(error = %e, "retention failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
        }
    }
}

async fn record(sink: &AuditSink, event: Event) {
    if let Err(e) = sink.enqueue(event).await {
        tracing::error!(error = %e, "cannot record regwatch's own event in the audit trail");
    }
}

/// SIGHUP: validate the file first; keep the running config when it is invalid.
async fn reload(
    path: Option<&std::path::Path>,
    config_tx: &watch::Sender<Arc<Config>>,
    metrics: &Metrics,
    sink: &AuditSink,
    clock: &dyn Clock,
) {
    match config::load(path) {
        Ok(new) => {
            let old = config_tx.borrow().clone();
            if new.server.listen != old.server.listen {
                tracing::warn!(
                    old = %old.server.listen, new = %new.server.listen,
                    "server.listen changed; the new address takes effect after a restart"
                );
            }
            if new.database.path != old.database.path {
                tracing::warn!(
                    old = %old.database.path.display(), new = %new.database.path.display(),
                    "database.path changed; the new database is used after a restart"
                );
            }
            let before: Vec<_> = crate::sources::storage::monitored(&old)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            for (name, _) in crate::sources::storage::monitored(&new) {
                if !before.contains(&name) {
                    tracing::warn!(
                        registry = %name,
                        "storage monitoring of a registry that had no storage_root starts after a restart"
                    );
                }
            }
            let registries = new.registries.len();
            config_tx.send_replace(Arc::new(new));
            metrics.reload_succeeded();
            tracing::info!(registries, "configuration reloaded");
            record(
                sink,
                Event::new(clock.now(), Action::ConfigReload, Source::Daemon)
                    .with_detail("reloaded"),
            )
            .await;
        }
        Err(e) => {
            metrics.reload_failed();
            tracing::error!("configuration reload failed, keeping the running configuration:\n{e}");
            record(
                sink,
                Event::new(clock.now(), Action::ConfigReload, Source::Daemon)
                    .with_detail(format!("rejected: {} error(s)", e.diagnostics.len())),
            )
            .await;
        }
    }
}
