//! The daemon's long-running tasks and their supervisors: pollers and alerting restart with
//! the new settings when a reload changes the config (their state is in the database, so
//! nothing is lost), storage monitors re-read their settings each round, retention runs
//! hourly.

use super::Shared;
use crate::alerting::{delivery, evaluator};
use crate::config::Config;
use crate::model::clock::SharedClock;
use crate::model::text::format_time;
use crate::sources::registry_api::poller::{self, PollerContext};
use crate::sources::storage::Monitor;
use crate::store::{Sink, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One poller per configured registry; restarted with the new settings when a reload
/// changes the registries (the previous inventory is in the database, so nothing is lost).
pub(super) async fn supervise_pollers(s: Shared, stop: CancellationToken) {
    let ctx = PollerContext {
        metrics: s.metrics.registries.clone(),
        sink: s.sink.clone(),
        store: s.store.clone(),
        observed: s.observed.clone(),
        signatures: s.signatures.clone(),
        reports: s.reports.clone(),
        clock: s.clock.clone(),
    };
    let mut config = s.config.clone();
    loop {
        let generation = stop.child_token();
        let registries = config.borrow_and_update().registries.clone();
        let mut tasks = JoinSet::new();
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
        ctx.signatures
            .retain(|name| config.borrow().registry(name).is_some());
    }
}

/// The rule evaluator and one delivery worker per channel; restarted with the new rules and
/// channels on a reload (states and the outbox are in the database, so nothing is lost).
pub(super) async fn supervise_alerting(
    s: Shared,
    mut wake: mpsc::Receiver<()>,
    stop: CancellationToken,
) {
    // Committed audit events, for audit_match rules (the writer sends each new one).
    let (tap, mut events) = mpsc::unbounded_channel();
    if let Err(e) = s.sink.set_event_tap(tap).await {
        tracing::error!(error = %e, "audit_match rules will not see audit events");
    }
    let mut config = s.config.clone();
    loop {
        let generation = stop.child_token();
        let c = config.borrow_and_update().clone();
        let states = match s.store.reader().and_then(|db| evaluator::load_states(&db)) {
            Ok(states) => states,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the alert states; alerting is off");
                return;
            }
        };
        warn_orphaned_outbox(&c, &s.store);
        let (mut workers, notifiers) = delivery_workers(&s, &c, &generation);
        let evaluator = evaluator::Evaluator {
            rules: c.rules.clone(),
            channels: c.channels.clone(),
            registries: c.registries.iter().map(|r| r.name.clone()).collect(),
            traffic: s.traffic.clone(),
            observed: s.observed.clone(),
            signatures: s.signatures.clone(),
            metrics: s.metrics.clone(),
            sink: s.sink.clone(),
            clock: s.clock.clone(),
            states,
            workers: notifiers,
            silences: s.silences.clone(),
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
        while workers.join_next().await.is_some() {}
        if !changed {
            return;
        }
    }
}

/// A delivery worker per channel, and the handles the evaluator wakes them with.
fn delivery_workers(
    s: &Shared,
    c: &Config,
    stop: &CancellationToken,
) -> (JoinSet<()>, HashMap<String, Arc<Notify>>) {
    let mut tasks = JoinSet::new();
    let mut notifiers = HashMap::new();
    for ch in &c.channels {
        let wake = Arc::new(Notify::new());
        notifiers.insert(ch.name.clone(), wake.clone());
        tasks.spawn(delivery::deliver_channel(
            ch.clone(),
            s.store.clone(),
            s.sink.clone(),
            s.metrics.clone(),
            wake,
            stop.clone(),
        ));
    }
    (tasks, notifiers)
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

/// One forwarder per `[[forward]]`; restarted when a reload changes them (the cursors are
/// in the database, so a restarted forwarder resumes where its receiver is).
pub(super) async fn supervise_forwards(s: Shared, stop: CancellationToken) {
    let mut config = s.config.clone();
    loop {
        let generation = stop.child_token();
        let forwards = config.borrow_and_update().forwards.clone();
        let mut tasks = JoinSet::new();
        for f in forwards.iter().cloned() {
            let ctx = crate::forward::Context {
                store: s.store.clone(),
                sink: s.sink.clone(),
                counters: s.metrics.forwards.counters(&f.name),
                commits: s.commits.clone(),
            };
            tasks.spawn(crate::forward::run(f, ctx, generation.clone()));
        }
        let changed = loop {
            tokio::select! {
                _ = stop.cancelled() => break false,
                r = config.changed() => {
                    if r.is_err() {
                        break false;
                    }
                    if config.borrow().forwards != forwards {
                        break true;
                    }
                }
            }
        };
        generation.cancel();
        while tasks.join_next().await.is_some() {}
        if !changed {
            return;
        }
    }
}

/// A storage monitor per registry with storage configured at start-up.
pub(super) fn storage_monitors(
    s: &Shared,
    config: &watch::Sender<Arc<Config>>,
    stop: &CancellationToken,
) -> Vec<Monitor> {
    crate::sources::storage::monitored(&config.borrow())
        .into_iter()
        .map(|(registry, _)| Monitor {
            registry,
            config: config.subscribe(),
            metrics: s.metrics.storage.clone(),
            sink: s.sink.clone(),
            clock: s.clock.clone(),
            store: s.store.clone(),
            observed: s.observed.clone(),
            stop: stop.clone(),
        })
        .collect()
}

/// How often retention runs; rows become due at most this late.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Deletes audit rows older than `keep`, at start-up and then hourly.
pub(super) async fn retain(
    sink: Sink,
    keep: Duration,
    clock: SharedClock,
    stop: CancellationToken,
) {
    loop {
        let cutoff = clock.now() - keep;
        match sink.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(rows = n, before = %format_time(cutoff), "retention deleted old audit rows")
            }
            Err(e) => tracing::error!(error = %e, "retention failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
        }
    }
}

/// How often the whole database is checked in the background.
const INTEGRITY_EVERY: Duration = Duration::from_secs(24 * 3600);

/// SQLite's structural check of every page on a read-only connection, at start and daily,
/// into `regwatch_database_integrity_ok`: the start-up check covers databases up to 512 MiB;
/// this one covers every size and damage that appears while the daemon runs.
pub(super) async fn check_integrity(
    store: Store,
    gauge: prometheus::IntGauge,
    stop: CancellationToken,
) {
    loop {
        let db = store.clone();
        let outcome = tokio::task::spawn_blocking(move || db.reader()?.integrity()).await;
        match outcome {
            Ok(Ok(Ok(()))) => gauge.set(1),
            Ok(Ok(Err(problems))) => {
                gauge.set(0);
                tracing::error!(
                    problems,
                    "the database is damaged (PRAGMA quick_check); restore it from a backup"
                );
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot run the database integrity check"),
            Err(e) => tracing::warn!(error = %e, "the database integrity check did not finish"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(INTEGRITY_EVERY) => {}
        }
    }
}
