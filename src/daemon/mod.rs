//! `regwatch run`: starts the store, the HTTP listener and the sources; handles SIGTERM,
//! SIGINT (graceful stop, nothing accepted is lost) and SIGHUP (config reload).

use crate::config::{self, Config};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::model::clock::{Clock, SharedClock, SystemClock};
use crate::model::event::{Action, Event, Source};
use crate::model::observed::Observations;
use crate::model::traffic::{RegistryStats, Traffic};
use crate::sources::registry_api::Reports;
use crate::sources::registry_api::poller::{self, PollerContext};
use crate::sources::tail::follower::Follower;
use crate::sources::tail::lines::LineHandler;
use crate::sources::tail::{Files, Glob, Tail};
use crate::store::{Sink, Store};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    let store = Store::sqlite(&config.database.path);
    let writer = store.start_writer(
        config.database.queue_capacity,
        clock.clone(),
        Box::new(move |actions| {
            for a in actions {
                counter.with_label_values(&[a]).inc();
            }
        }),
    )?;
    let sink = writer.sink();

    let traffic: Arc<Traffic> = Arc::new(
        config
            .registries
            .iter()
            .map(|r| {
                metrics.init_registry(&r.name);
                (
                    r.name.clone(),
                    Arc::new(Mutex::new(RegistryStats::default())),
                )
            })
            .collect(),
    );
    let (alert_wake, alert_wake_rx) = crate::alerting::runner::wake_channel();
    let mut tails = start_tails(&config, &metrics, &traffic, &sink, &clock, &alert_wake)?;

    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let request_timeout = config.server.request_timeout;
    let max_body = config.server.max_body_bytes;
    let retention = config.database.retention;
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let ready = Arc::new(AtomicBool::new(false));
    let reports = Reports::default();
    let observed = Observations::default();
    let silences: crate::alerting::silence::Silences = Default::default();
    {
        let db = store.reader()?;
        *silences.write().expect("silences lock") = db
            .silences(clock.now())
            .context("reading the alert silences")?;
        poller::restore_reports(
            &db,
            &config_rx.borrow().registries,
            &metrics.registries,
            &reports,
        );
    }
    let state = AppState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        config: config_rx.clone(),
        sink: sink.clone(),
        store: store.clone(),
        traffic: traffic.clone(),
        reports: reports.clone(),
        silences: silences.clone(),
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
    let alerting = tokio::spawn(supervise_alerting(
        config_rx.clone(),
        AlertingContext {
            store: store.clone(),
            observed: observed.clone(),
            traffic: traffic.clone(),
            metrics: metrics.clone(),
            sink: sink.clone(),
            clock: clock.clone(),
            silences,
        },
        alert_wake_rx,
        shutdown.clone(),
    ));
    let report_task = tokio::spawn(crate::report::scheduled::run(
        config_rx.clone(),
        store.clone(),
        metrics.reports.clone(),
        clock.clone(),
        shutdown.clone(),
    ));
    let pollers = tokio::spawn(supervise_pollers(
        config_rx,
        PollerContext {
            metrics: metrics.registries.clone(),
            sink: sink.clone(),
            store: store.clone(),
            observed: observed.clone(),
            reports,
            clock: clock.clone(),
        },
        shutdown.clone(),
    ));
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
                    store: store.clone(),
                    observed: observed.clone(),
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
            _ = hup.recv() => {
                let old = config_tx.borrow().clone();
                reload(config_path.as_deref(), &config_tx, &metrics, &sink, &*clock).await;
                let new = config_tx.borrow().clone();
                if old.logs != new.logs {
                    // Each tailer commits its batch and checkpoint before it stops, and
                    // the new ones resume from those checkpoints: nothing lost or doubled.
                    std::mem::take(&mut tails).stop().await;
                    tails = start_tails(&new, &metrics, &traffic, &sink, &clock, &alert_wake)
                        .unwrap_or_else(|e| {
                            tracing::error!(error = format!("{e:#}"), "cannot restart the log tailers; no logs are tailed until the next reload");
                            Tails::default()
                        });
                }
            }
        }
    };

    tracing::info!(signal = reason, "stopping");
    if let Some(t) = retention_task {
        t.abort();
    }
    ready.store(false, Ordering::Release);
    shutdown.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, alerting).await.is_err() {
        tracing::warn!("alerting still running after {DRAIN_TIMEOUT:?}");
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, report_task)
        .await
        .is_err()
    {
        // A report being written is finished by its blocking thread or abandoned with
        // its temporary file; the output is never half-written.
        tracing::warn!("a report was still being written after {DRAIN_TIMEOUT:?}");
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, pollers).await.is_err() {
        tracing::warn!("registry pollers still running after {DRAIN_TIMEOUT:?}");
    }
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
    tails.stop().await;
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

/// The tailer threads and their stop signal.
#[derive(Default)]
struct Tails {
    stop: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Tails {
    /// Stops every tailer after its current batch is committed.
    async fn stop(self) {
        self.stop.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Starts a thread per `[[log]]`, resuming from its checkpoint.
fn start_tails(
    config: &Config,
    metrics: &Metrics,
    traffic: &Arc<Traffic>,
    sink: &Sink,
    clock: &SharedClock,
    alert_wake: &tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Tails> {
    let stop = CancellationToken::new();
    let mut threads = Vec::new();
    if config.logs.is_empty() {
        return Ok(Tails { stop, threads });
    }
    let db = Store::sqlite(&config.database.path).reader()?;
    for log in &config.logs {
        let registry = config
            .registry(&log.registry)
            .expect("validated: the log's registry exists");
        // The traffic windows are made per registry at start-up.
        let Some(stats) = traffic.get(&log.registry) else {
            tracing::warn!(log = %log.name, registry = %log.registry, "the log's registry was added by a reload; it is tailed after a restart");
            continue;
        };
        let handler = LineHandler {
            log: log.name.clone(),
            registry: log.registry.clone(),
            format: log.format.clone(),
            counts: log.counts,
            audit_requests: registry.audit_from_logs,
            stats: stats.clone(),
            counters: metrics.log_counters(&log.name, &log.registry),
            alert_wake: Some(alert_wake.clone()),
        };
        let glob = log
            .path
            .file_name()
            .is_some_and(|n| crate::model::glob::is_pattern(&n.to_string_lossy()));
        let files = if glob {
            let resume = db
                .checkpoints_of(&log.name)
                .with_context(|| format!("reading the checkpoints of log {}", log.name))?
                .into_iter()
                .map(|c| (c.log.clone(), c))
                .collect();
            Files::Glob(Glob::new(
                &log.path,
                log.start_at,
                log.max_line_bytes,
                resume,
            ))
        } else {
            let resume = db
                .checkpoint(&log.name)
                .with_context(|| format!("reading the checkpoint of log {}", log.name))?;
            Files::One(Follower::new(
                &log.name,
                &log.path,
                log.start_at,
                log.max_line_bytes,
                resume,
            ))
        };
        let tail = Tail {
            files,
            handler,
            poll_interval: log.poll_interval,
            lag: metrics.logs.lag_bytes.with_label_values(&[&log.name]),
            truncated: metrics
                .logs
                .lines_truncated_total
                .with_label_values(&[&log.name]),
        };
        let (sink, clock, stop) = (sink.clone(), clock.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("tail-{}", log.name))
                .spawn(move || tail.run(sink, clock, stop))
                .context("starting a tailer thread")?,
        );
        tracing::info!(log = %log.name, path = %log.path.display(), format = %log.format_name, "tailing");
    }
    Ok(Tails { stop, threads })
}

/// One poller per configured registry; restarted with the new settings when a reload
/// changes the registries (the previous inventory is in the database, so nothing is lost).
async fn supervise_pollers(
    mut config: watch::Receiver<Arc<Config>>,
    ctx: PollerContext,
    stop: CancellationToken,
) {
    loop {
        let generation = stop.child_token();
        let registries = config.borrow_and_update().registries.clone();
        let mut tasks = tokio::task::JoinSet::new();
        for r in registries {
            tasks.spawn(poller::run(r, ctx.clone(), generation.clone()));
        }
        let changed = tokio::select! {
            _ = stop.cancelled() => false,
            r = config.changed() => r.is_ok(),
        };
        generation.cancel();
        while tasks.join_next().await.is_some() {}
        if !changed {
            return;
        }
        ctx.reports
            .write()
            .expect("not poisoned")
            .retain(|name, _| config.borrow().registry(name).is_some());
    }
}

/// What the alerting tasks share across config reloads.
struct AlertingContext {
    store: Store,
    observed: Observations,
    traffic: Arc<Traffic>,
    metrics: Arc<Metrics>,
    sink: Sink,
    clock: SharedClock,
    silences: crate::alerting::silence::Silences,
}

/// The rule evaluator and one delivery worker per channel; restarted with the new rules and
/// channels on a reload (states and the outbox are in the database, so nothing is lost).
async fn supervise_alerting(
    mut config: watch::Receiver<Arc<Config>>,
    ctx: AlertingContext,
    mut wake: tokio::sync::mpsc::Receiver<()>,
    stop: CancellationToken,
) {
    use crate::alerting::runner;
    // Committed audit events, for audit_match rules (the writer sends each new one).
    let (tap, mut events) = tokio::sync::mpsc::unbounded_channel();
    if let Err(e) = ctx.sink.set_event_tap(tap).await {
        tracing::error!(error = %e, "audit_match rules will not see audit events");
    }
    loop {
        let generation = stop.child_token();
        let c = config.borrow_and_update().clone();
        let states = match ctx.store.reader().and_then(|db| runner::load_states(&db)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the alert states; alerting is off");
                return;
            }
        };
        warn_orphaned_outbox(&c, &ctx.store);
        let mut tasks = tokio::task::JoinSet::new();
        let mut workers = std::collections::HashMap::new();
        for ch in &c.channels {
            let w = Arc::new(tokio::sync::Notify::new());
            workers.insert(ch.name.clone(), w.clone());
            tasks.spawn(runner::deliver_channel(
                ch.clone(),
                ctx.store.clone(),
                ctx.sink.clone(),
                ctx.metrics.clone(),
                w,
                generation.clone(),
            ));
        }
        let evaluator = runner::Evaluator {
            rules: c.rules.clone(),
            channels: c.channels.clone(),
            registries: c.registries.iter().map(|r| r.name.clone()).collect(),
            traffic: ctx.traffic.clone(),
            observed: ctx.observed.clone(),
            metrics: ctx.metrics.clone(),
            sink: ctx.sink.clone(),
            clock: ctx.clock.clone(),
            states,
            workers,
            silences: ctx.silences.clone(),
            windows: c.maintenance.clone(),
        };
        let changed = {
            let run = evaluator.run(&mut wake, &mut events, generation.clone());
            tokio::pin!(run);
            tokio::select! {
                _ = stop.cancelled() => false,
                r = config.changed() => r.is_ok(),
                _ = &mut run => false,
            }
        };
        generation.cancel();
        while tasks.join_next().await.is_some() {}
        if !changed {
            return;
        }
    }
}

/// Notifications for a channel no longer configured stay in the outbox (they are not
/// dropped silently): say so at start-up and on every reload.
fn warn_orphaned_outbox(c: &Config, store: &Store) {
    let Ok(waiting) = store.reader().and_then(|db| db.outbox_by_channel()) else {
        return;
    };
    for (channel, n) in waiting {
        if !c.channels.iter().any(|ch| ch.name == channel) {
            tracing::warn!(
                channel,
                notifications = n,
                "notifications wait in the outbox for a channel that is not configured; restore the [[channel]] to deliver them"
            );
        }
    }
}

/// How often retention runs; rows become due at most this late.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Deletes audit rows older than `keep`, at start-up and then hourly.
async fn retain(sink: Sink, keep: Duration, clock: SharedClock, stop: CancellationToken) {
    loop {
        let cutoff = clock.now() - keep;
        match sink.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(rows = n, before = %crate::store::format_time(cutoff), "retention deleted old audit rows")
            }
            Err(e) => tracing::error!(error = %e, "retention failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
        }
    }
}

async fn record(sink: &Sink, event: Event) {
    if let Err(e) = sink.enqueue(event).await {
        tracing::error!(error = %e, "cannot record regwatch's own event in the audit trail");
    }
}

/// SIGHUP: validate the file first; keep the running config when it is invalid.
async fn reload(
    path: Option<&std::path::Path>,
    config_tx: &watch::Sender<Arc<Config>>,
    metrics: &Metrics,
    sink: &Sink,
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
