//! The daemon's long-running tasks and their supervisors: pollers and alerting restart with
//! the new settings when a reload changes the config (their state is in the database, so
//! nothing is lost), storage monitors re-read their settings each round, retention runs
//! hourly.

use super::Shared;
use crate::alerting::{delivery, evaluator};
use crate::config::Config;
use crate::config::rule::RuleKind;
use crate::model::clock::SharedClock;
use crate::model::text::format_time;
use crate::sources::registry_api::poller::{self, PollerContext};
use crate::sources::storage::Monitor;
use crate::store::{Leases, Sink, Store};
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
        plans: s.plans.clone(),
        clock: s.clock.clone(),
    };
    let mut config = s.config.clone();
    loop {
        let generation = stop.child_token();
        let (registries, policies) = {
            let c = config.borrow_and_update();
            (c.registries.clone(), c.retention.clone())
        };
        let mut tasks = JoinSet::new();
        for r in registries {
            tasks.spawn(poller::run(
                r,
                policies.clone(),
                ctx.clone(),
                generation.clone(),
            ));
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
    feed_start: i64,
    stop: CancellationToken,
) {
    // Committed audit events, for audit_match rules: the writer sends each new one; on a
    // database shared by several agents, rows committed by any agent are read back instead.
    let (tap, mut events) = mpsc::unbounded_channel();
    let shared = s.store.is_shared();
    let mut config = s.config.clone();
    // One agent evaluates the rules and delivers (always this one on SQLite); the states
    // and the outbox are read when it takes the lease, so it goes on where the last left.
    let mut lease = s.leases.watch("alerting");
    loop {
        if !wait_for(&mut lease, true, &stop).await {
            return;
        }
        let generation = stop.child_token();
        let c = config.borrow_and_update().clone();
        let matches_rows = c.rules.iter().any(|r| r.kind == RuleKind::AuditMatch);
        if !shared {
            // Only while a rule reads them: the writer clones every row it commits for the
            // tap (20,000 clones and evaluations in a 1 M-line catch-up, for nothing).
            let wanted = matches_rows.then(|| tap.clone());
            if let Err(e) = s.sink.set_event_tap(wanted).await {
                tracing::error!(error = %e, "audit_match rules will not see audit events");
            }
        }
        let states = match s.store.reader().and_then(|db| evaluator::load_states(&db)) {
            Ok(states) => states,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the alert states; alerting is off");
                return;
            }
        };
        warn_orphaned_outbox(&c, &s.store);
        let (mut workers, notifiers) = delivery_workers(&s, &c, &generation);
        if shared {
            workers.spawn(feed_committed(
                s.store.clone(),
                s.sink.clone(),
                Feed {
                    start: feed_start,
                    rows: matches_rows,
                },
                tap.clone(),
                generation.clone(),
            ));
        }
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
                lost = wait_for(&mut lease, false, &stop) => lost,
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

/// How often the alerting agent reads the rows other agents committed.
const FEED_EVERY: Duration = Duration::from_millis(500);
/// Rows read back per query.
const FEED_PAGE: u64 = 1000;

/// Where the alerting feed is in the shared trail, kept in the database next to the
/// forwarders' cursors (a name no `[[forward]]` is given in practice: it is shown nowhere).
const FEED_CURSOR: &str = "(alerting)";

/// Where the alerting feed starts and whether it reads the rows at all.
struct Feed {
    /// The last row when this agent connected.
    start: i64,
    /// False when no `audit_match` rule would see them: then only the cursor moves on (one
    /// `max(id)` per round instead of every row of every agent read back), so a rule added
    /// later matches what is committed from then on, as on SQLite.
    rows: bool,
}

/// Sends every audit row committed (by any agent) after the feed's stored cursor to `tap`,
/// in id order, until `stop`, moving the cursor after each page. So the next holder of the
/// alerting lease goes on where the last one left, rows committed while nobody held it (a
/// few seconds after its holder died, or before the first agent took it) included. With no
/// cursor stored yet (a database new to alerting) it starts after `start`, the last row
/// when this agent connected: older rows were never meant for these rules. Without an
/// `audit_match` rule ([`Feed::rows`] false) it moves the cursor without reading the rows.
/// A holder that dies between sending a page and storing the cursor leaves those rows to be
/// matched again by the next one; the stored alert states keep that from notifying twice.
async fn feed_committed(
    store: Store,
    sink: crate::store::Sink,
    feed: Feed,
    tap: crate::store::EventTap,
    stop: CancellationToken,
) {
    let Feed {
        start,
        rows: read_rows,
    } = feed;
    let mut cursor: Option<i64> = None;
    let mut db: Option<crate::store::Reader> = None;
    while !stop.is_cancelled() {
        let (reader, read) = {
            let (store, db, after) = (store.clone(), db.take(), cursor);
            tokio::task::spawn_blocking(move || {
                let db = match db {
                    Some(db) => db,
                    None => match store.reader() {
                        Ok(db) => db,
                        Err(e) => return (None, Err(e)),
                    },
                };
                let read = match after {
                    None => db
                        .forward_cursor(FEED_CURSOR)
                        .map(|stored| (stored.unwrap_or(start), Vec::new())),
                    Some(after) if !read_rows => {
                        db.last_id().map(|last| (last.max(after), Vec::new()))
                    }
                    Some(after) => db
                        .event_rows(&crate::store::Filter {
                            after_id: Some(after),
                            limit: Some(FEED_PAGE),
                            ..Default::default()
                        })
                        .map(|rows| (rows.last().map_or(after, |r| r.id), rows)),
                };
                (Some(db), read)
            })
            .await
            .unwrap_or_else(|e| (None, Err(crate::store::StoreError::Batch(e.to_string()))))
        };
        match read {
            Ok((last, rows)) => {
                db = reader;
                let moved = cursor.is_some_and(|c| c < last);
                cursor = Some(last);
                for e in rows.iter().filter_map(crate::store::AuditRow::to_event) {
                    let _ = tap.send(e);
                }
                if moved {
                    if let Err(e) = sink.store_forward_cursor(FEED_CURSOR, last).await {
                        tracing::warn!(error = %e, "alerting: cannot store how far it read the trail");
                    }
                }
                // A full page: more are waiting, read on at once (a busy trail).
                if rows.len() as u64 == FEED_PAGE {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "alerting: cannot read committed audit rows"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(FEED_EVERY) => {}
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

/// A storage monitor per registry with storage configured at start-up, until `stop`.
pub(super) async fn run_storage_monitors(s: Shared, stop: CancellationToken) {
    let monitors: Vec<Monitor> = crate::sources::storage::monitored(&s.config.borrow())
        .into_iter()
        .map(|(registry, _)| Monitor {
            registry,
            config: s.config.clone(),
            metrics: s.metrics.storage.clone(),
            sink: s.sink.clone(),
            clock: s.clock.clone(),
            store: s.store.clone(),
            observed: s.observed.clone(),
            stop: stop.clone(),
        })
        .collect();
    let mut tasks = JoinSet::new();
    for m in monitors {
        tasks.spawn(m.run());
    }
    while tasks.join_next().await.is_some() {}
}

/// The singleton tasks agents on one PostgreSQL take turns at, one lease each.
pub(super) const LEASES: &[&str] = &[
    "inventory",
    "storage",
    "reports",
    "retention",
    "alerting",
    "forward",
];

/// Runs `task` while this agent holds `lease`: started when it is taken, cancelled (and
/// awaited) when it is lost, started again when it is taken again. On SQLite every lease is
/// held from the start, so the task simply runs until `stop`.
pub(super) async fn while_held<F, Fut>(
    leases: Leases,
    lease: &'static str,
    stop: CancellationToken,
    mut task: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut held = leases.watch(lease);
    loop {
        if !wait_for(&mut held, true, &stop).await {
            return;
        }
        let generation = stop.child_token();
        let run = task(generation.clone());
        tokio::pin!(run);
        tokio::select! {
            _ = &mut run => return,
            lost = wait_for(&mut held, false, &stop) => {
                generation.cancel();
                run.await;
                if !lost {
                    return;
                }
                tracing::warn!(lease, "lease lost: another agent does it now");
            }
        }
    }
}

/// Waits until `held` is `want`; false when `stop` came first (or the lease thread ended).
async fn wait_for(held: &mut watch::Receiver<bool>, want: bool, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        r = held.wait_for(|h| *h == want) => r.is_ok(),
    }
}

/// Copies the leases and the database's reachability into the metrics, every second.
pub(super) async fn publish_leases(s: Shared, stop: CancellationToken) {
    loop {
        s.metrics.database_up.set(s.leases.database_up() as i64);
        for (lease, held) in s.leases.states() {
            s.metrics
                .lease_held
                .with_label_values(&[lease])
                .set(held as i64);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
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
