//! The alerting tasks: the evaluator (rules → state changes + outbox rows, committed by the
//! writer) and one delivery worker per channel (outbox → channel, with capped exponential
//! backoff).

use super::engine::{self, AlertState, Breach, Notify, Phase, Timing};
use crate::channels::Notification;
use crate::config::channel::{ChannelConfig, ChannelKind};
use crate::config::maintenance::MaintenanceConfig;
use crate::config::rule::{RuleConfig, RuleKind};
use crate::metrics::Metrics;
use crate::model::clock::SharedClock;
use crate::model::observed::Observations;
use crate::model::traffic::Traffic;
use crate::store::{
    AlertStateRow, AlertUpdate, DeliveryOutcome, OutboxEntry, OutboxRow, Reader, Sink, Store,
    StoreError,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify as Wake, mpsc};
use tokio_util::sync::CancellationToken;

/// First retry after a failed delivery; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts: a receiver that comes back is served within this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Outbox rows read per query by one worker.
const BATCH: i64 = 50;

/// The wait before attempt `attempts + 1` (attempts already failed ≥ 1).
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// How the tailers wake the evaluator: a bounded channel of one, so a burst of lines costs
/// one evaluation and a tailer never waits for it.
pub fn wake_channel() -> (mpsc::Sender<()>, mpsc::Receiver<()>) {
    mpsc::channel(1)
}

/// Loads every stored alert state (so a restart neither re-notifies nor forgets).
pub fn load_states(
    db: &Reader,
) -> Result<HashMap<String, HashMap<String, AlertState>>, StoreError> {
    let mut out: HashMap<String, HashMap<String, AlertState>> = HashMap::new();
    for row in db.alert_states()? {
        match serde_json::from_str::<AlertState>(&row.state) {
            Ok(s) => {
                out.entry(row.rule).or_default().insert(row.key, s);
            }
            Err(e) => {
                tracing::warn!(rule = %row.rule, key = %row.key, error = %e, "unreadable alert state ignored")
            }
        }
    }
    Ok(out)
}

pub struct Evaluator {
    pub rules: Vec<RuleConfig>,
    pub channels: Vec<ChannelConfig>,
    pub registries: Vec<String>,
    pub traffic: Arc<Traffic>,
    /// The latest probe and storage measurements (for the gauge-driven rules).
    pub observed: Observations,
    pub metrics: Arc<Metrics>,
    pub sink: Sink,
    pub clock: SharedClock,
    pub states: HashMap<String, HashMap<String, AlertState>>,
    /// Woken after each commit that added outbox rows.
    pub workers: HashMap<String, Arc<Wake>>,
    pub silences: super::silence::Silences,
    pub windows: Vec<MaintenanceConfig>,
}

impl Evaluator {
    /// Rules evaluated as events arrive (log lines, committed audit events).
    fn is_log_driven(rule: &RuleConfig) -> bool {
        matches!(
            rule.kind,
            RuleKind::AuthFailures | RuleKind::PullFailureRate | RuleKind::AuditMatch
        )
    }

    /// Runs until `shutdown`: on every wake from a tailer, and every second.
    pub async fn run(
        mut self,
        wake: &mut mpsc::Receiver<()>,
        events: &mut mpsc::UnboundedReceiver<crate::model::event::Event>,
        shutdown: CancellationToken,
    ) {
        let mut recent: HashMap<String, engine::Recent> = HashMap::new();
        let started = self.clock.now();
        let mut last_gauge: HashMap<String, time::OffsetDateTime> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish_firing();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                Some(()) = wake.recv() => {}
                Some(e) = events.recv() => {
                    let mut batch = vec![e];
                    while let Ok(e) = events.try_recv() {
                        batch.push(e);
                    }
                    for rule in self.rules.iter().filter(|r| r.kind == RuleKind::AuditMatch) {
                        for e in &batch {
                            if let Some(labels) = engine::audit_match(rule, e) {
                                engine::remember(
                                    recent.entry(rule.name.clone()).or_default(),
                                    labels,
                                    e.time.unix_timestamp().min(self.clock.now().unix_timestamp()),
                                );
                            }
                        }
                    }
                }
            }
            let now = self.clock.now();
            let unix = now.unix_timestamp();
            let mut update = AlertUpdate::default();
            let mut applied: Vec<engine::Change> = Vec::new();
            for rule in &self.rules {
                let log_driven = Self::is_log_driven(rule);
                if !log_driven {
                    let due = last_gauge
                        .get(&rule.name)
                        .is_none_or(|t| now - *t >= rule.interval);
                    if !due {
                        continue;
                    }
                    last_gauge.insert(rule.name.clone(), now);
                }
                let mut breaches: Vec<Breach> = Vec::new();
                for reg in &self.registries {
                    if rule.registry.as_ref().is_some_and(|r| r != reg) {
                        continue;
                    }
                    match rule.kind {
                        RuleKind::AuthFailures | RuleKind::PullFailureRate => {
                            if let Some(stats) = self.traffic.get(reg) {
                                let stats = stats.lock().expect("stats lock");
                                breaches.extend(engine::observe_traffic(rule, reg, &stats, unix));
                            }
                        }
                        RuleKind::AuditMatch => {}
                        // The storage monitor's latest measurement; absent (no storage_root,
                        // no sample yet, no forecast yet) means nothing to judge.
                        RuleKind::StorageUsage => {
                            let v = self.observed.get(reg).storage_used_ratio;
                            breaches.extend(engine::observe_gauge(rule, reg, v));
                        }
                        RuleKind::StorageForecast => {
                            let v = self.observed.get(reg).storage_days_until_full;
                            breaches.extend(engine::observe_gauge(rule, reg, v));
                        }
                        // Not probed yet counts as down, as the gauge's initial 0 did.
                        RuleKind::RegistryDown => {
                            let up = self.observed.get(reg).up.unwrap_or(false);
                            breaches.extend(engine::observe_up(reg, up));
                        }
                    }
                }
                if rule.kind == RuleKind::AuditMatch {
                    breaches = engine::observe_recent(
                        rule,
                        recent.entry(rule.name.clone()).or_default(),
                        unix,
                    );
                }
                let resend = self
                    .channels
                    .iter()
                    .filter(|ch| rule.channels.contains(&ch.name))
                    .filter_map(|ch| ch.kind.resend_interval())
                    .min();
                let empty = HashMap::new();
                let states = self.states.get(&rule.name).unwrap_or(&empty);
                let mut changes =
                    engine::evaluate(&rule.name, Timing::of(rule, resend), states, &breaches, now);
                // A firing notification held back by a silence that has ended since: send it
                // now, not at the next repeat_interval.
                let mut held: Vec<&engine::AlertState> = states
                    .values()
                    .filter(|s| s.phase == Phase::Firing && s.held)
                    .filter(|s| !changes.iter().any(|c| c.state.key == s.key))
                    .collect();
                held.sort_by(|a, b| a.key.cmp(&b.key));
                for s in held {
                    let n = super::notification_for(rule, s, Notify::Firing, now);
                    let silences = self.silences.read().expect("silences lock");
                    if super::silence::suppressed(&n.labels, now, &silences, &self.windows)
                        .is_none()
                    {
                        let mut next = s.clone();
                        next.notified_at = Some(now);
                        next.refreshed_at = Some(now);
                        changes.push(engine::Change {
                            state: next,
                            notify: Some(Notify::Firing),
                        });
                    }
                }
                // The traffic windows start empty after a restart: a firing log-driven alert
                // is not resolved before its window has refilled (or it would be resolved,
                // and re-fired, by every restart).
                if log_driven && now - started < rule.window {
                    changes.retain(|c| c.state.phase != Phase::Resolved);
                }
                for mut c in changes {
                    if c.notify == Some(Notify::Resolved)
                        && states.get(&c.state.key).is_some_and(|s| s.held)
                    {
                        // Nobody was told it fired: nothing to resolve.
                        c.notify = None;
                    }
                    let notification = c.notify.map(|notify| {
                        let n = super::notification_for(rule, &c.state, notify, now);
                        let quiet = super::silence::suppressed(
                            &n.labels,
                            now,
                            &self.silences.read().expect("silences lock"),
                            &self.windows,
                        );
                        (notify, n, quiet)
                    });
                    c.state.held = match &notification {
                        _ if c.state.phase != Phase::Firing => false,
                        Some((Notify::Firing | Notify::Repeat, _, quiet)) => quiet.is_some(),
                        _ => c.state.held,
                    };
                    update.states.push(AlertStateRow {
                        rule: rule.name.clone(),
                        key: c.state.key.clone(),
                        phase: c.state.phase.as_str(),
                        state: serde_json::to_string(&c.state).expect("state serialises"),
                    });
                    if let Some((notify, n, quiet)) = notification {
                        if let Some(why) = quiet {
                            // The state still changes; only the notification is held back.
                            tracing::info!(
                                rule = %rule.name, key = %c.state.key, reason = notify.as_str(),
                                "alert {} (notification held back by {why})", c.state.phase.as_str()
                            );
                            applied.push(c);
                            continue;
                        }
                        let payload = serde_json::to_string(&n).expect("notification serialises");
                        for ch in &rule.channels {
                            let is_am = self.channels.iter().any(|x| {
                                &x.name == ch && matches!(x.kind, ChannelKind::Alertmanager { .. })
                            });
                            if notify == Notify::Refresh && !is_am {
                                continue;
                            }
                            update.outbox.push(OutboxRow {
                                idempotency_key: n.idempotency_key.clone(),
                                channel: ch.clone(),
                                payload: payload.clone(),
                            });
                        }
                        tracing::info!(
                            rule = %rule.name, key = %c.state.key, reason = notify.as_str(),
                            value = c.state.value, "alert {}", c.state.phase.as_str()
                        );
                    }
                    applied.push(c);
                }
            }
            if update.states.is_empty() {
                continue;
            }
            let wake_channels: std::collections::HashSet<String> =
                update.outbox.iter().map(|o| o.channel.clone()).collect();
            match self.sink.store_alerts(update).await {
                Ok(()) => {
                    for c in applied {
                        let per_rule = self.states.entry(c.state.rule.clone()).or_default();
                        if c.state.phase == Phase::Inactive {
                            per_rule.remove(&c.state.key);
                        } else {
                            per_rule.insert(c.state.key.clone(), c.state);
                        }
                    }
                    self.publish_firing();
                    for ch in wake_channels {
                        if let Some(w) = self.workers.get(&ch) {
                            w.notify_one();
                        }
                    }
                }
                // Not applied in memory either: the next evaluation tries again.
                Err(e) => tracing::error!(error = %e, "alert states not stored"),
            }
        }
    }

    fn publish_firing(&self) {
        for rule in &self.rules {
            let n = self
                .states
                .get(&rule.name)
                .map(|m| m.values().filter(|s| s.phase == Phase::Firing).count())
                .unwrap_or(0);
            self.metrics
                .alerts
                .firing
                .with_label_values(&[&rule.name])
                .set(n as i64);
        }
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Delivers one channel's outbox, oldest first, until `shutdown`. A failure backs the row off
/// (1 s, 2 s, 4 s … capped at a minute); later rows of the same alert wait for it (see
/// [`due_in_order`]).
pub async fn deliver_channel(
    channel: ChannelConfig,
    store: Store,
    sink: Sink,
    metrics: Arc<Metrics>,
    wake: Arc<Wake>,
    shutdown: CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(channel.timeout)
        .build()
        .expect("a reqwest client builds");
    let sent = metrics
        .alerts
        .notifications_total
        .with_label_values(&[&channel.name]);
    let failed = metrics
        .alerts
        .notifications_failed_total
        .with_label_values(&[&channel.name]);
    let mut conn = None;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if conn.is_none() {
            conn = store
                .reader()
                .map_err(|e| tracing::error!(error = %e, "outbox: cannot open the database"))
                .ok();
        }
        let (due, next) = match conn.as_ref().map(|c| read_due(c, &channel.name)) {
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                tracing::error!(channel = %channel.name, error = %e, "outbox: read failed");
                conn = None;
                (Vec::new(), None)
            }
            None => (Vec::new(), None),
        };
        if let Some(c) = conn.as_ref() {
            update_pending(c, &metrics);
        }
        let mut progressed = false;
        for (id, attempts, payload) in due {
            let n: Notification = match serde_json::from_str(&payload) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(id, error = %e, "outbox row unreadable; dropped");
                    let _ = sink
                        .store_delivery(DeliveryOutcome {
                            outbox_id: id,
                            channel: channel.name.clone(),
                            idempotency_key: String::new(),
                            error: None,
                            retry_at_ms: 0,
                        })
                        .await;
                    continue;
                }
            };
            let result = tokio::select! {
                r = crate::channels::deliver(&channel, &client, &n) => r,
                _ = shutdown.cancelled() => return,
            };
            let error = match result {
                Ok(()) => {
                    sent.inc();
                    tracing::info!(channel = %channel.name, rule = %n.rule, status = %n.status, "notification delivered");
                    None
                }
                Err(e) => {
                    failed.inc();
                    tracing::warn!(channel = %channel.name, rule = %n.rule, attempt = attempts + 1, error = %e, "notification not delivered; will retry");
                    Some(e.to_string())
                }
            };
            let failed_now = error.is_some();
            let retry_at_ms = now_ms() + backoff(attempts as u32 + 1).as_millis() as i64;
            if let Err(e) = sink
                .store_delivery(DeliveryOutcome {
                    outbox_id: id,
                    channel: channel.name.clone(),
                    idempotency_key: n.idempotency_key.clone(),
                    error,
                    retry_at_ms,
                })
                .await
            {
                tracing::error!(error = %e, "delivery outcome not stored");
                return;
            }
            progressed |= !failed_now;
            if failed_now {
                // The receiver is down: the rows behind this one would fail the same way.
                break;
            }
        }
        if let Some(c) = conn.as_ref() {
            update_pending(c, &metrics);
        }
        if progressed {
            continue;
        }
        let wait = match next {
            Some(at) => Duration::from_millis((at - now_ms()).clamp(10, 1000) as u64),
            None => Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

type DueRows = (Vec<(i64, i64, String)>, Option<i64>);

/// Most outbox rows of one channel looked at per round; a longer backlog is reached as the
/// head is delivered.
const LOOKAHEAD: i64 = 1000;

fn read_due(db: &Reader, channel: &str) -> Result<DueRows, StoreError> {
    Ok(due_in_order(
        db.outbox(channel, LOOKAHEAD)?,
        now_ms(),
        BATCH as usize,
    ))
}

/// Which of `rows` (in id order) may be sent now, at most `batch`, and when the next
/// held-back one is due. A row waits while an older row *of the same alert* is still in
/// the outbox: a receiver must never see "resolved" before the "firing" it ends (for
/// Alertmanager that would leave the alert open). Other alerts are not held up by one
/// that a receiver keeps refusing.
fn due_in_order(rows: Vec<OutboxEntry>, now_ms: i64, batch: usize) -> DueRows {
    #[derive(serde::Deserialize)]
    struct Identity {
        rule: String,
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
    }
    let mut seen = std::collections::HashSet::new();
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    for row in rows {
        // An unreadable payload is its own alert (the worker drops it when it is due).
        let identity = serde_json::from_str::<Identity>(&row.payload)
            .map(|i| (i.rule, i.labels))
            .map_err(|_| row.id);
        if !seen.insert(identity) {
            continue;
        }
        if row.next_attempt_ms <= now_ms && due.len() < batch {
            due.push((row.id, row.attempts, row.payload));
        } else {
            next = Some(next.map_or(row.next_attempt_ms, |n: i64| n.min(row.next_attempt_ms)));
        }
    }
    (due, next)
}

fn update_pending(db: &Reader, metrics: &Metrics) {
    if let Ok(n) = db.outbox_pending() {
        metrics.alerts.outbox_pending.set(n);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_is_capped() {
        use std::time::Duration;
        assert_eq!(super::backoff(1), Duration::from_secs(1));
        assert_eq!(super::backoff(2), Duration::from_secs(2));
        assert_eq!(super::backoff(4), Duration::from_secs(8));
        assert_eq!(super::backoff(7), Duration::from_secs(60));
        assert_eq!(super::backoff(1000), Duration::from_secs(60));
    }

    fn row(id: i64, rule: &str, address: &str, status: &str, next: i64) -> super::OutboxEntry {
        super::OutboxEntry {
            id,
            attempts: 0,
            payload: serde_json::json!({
                "rule": rule, "status": status, "labels": {"address": address}
            })
            .to_string(),
            next_attempt_ms: next,
        }
    }

    fn ids(due: &super::DueRows) -> Vec<i64> {
        due.0.iter().map(|r| r.0).collect()
    }

    #[test]
    fn resolved_waits_for_its_firing_but_other_alerts_do_not() {
        // Row 1 (firing) failed and backs off until 5000; its resolved (2) is due but must
        // wait. Another address's alert (3) goes now.
        let rows = vec![
            row(1, "guessing", "10.0.0.5", "firing", 5000),
            row(2, "guessing", "10.0.0.5", "resolved", 1000),
            row(3, "guessing", "10.0.0.6", "firing", 1000),
        ];
        let due = super::due_in_order(rows.clone(), 2000, 50);
        assert_eq!(ids(&due), vec![3]);
        assert_eq!(due.1, Some(5000));
        // Once the firing is due, only it goes; the resolved follows in a later round.
        let due = super::due_in_order(rows[..2].to_vec(), 6000, 50);
        assert_eq!(ids(&due), vec![1]);
        let due = super::due_in_order(rows[1..2].to_vec(), 6000, 50);
        assert_eq!(ids(&due), vec![2]);
    }

    #[test]
    fn due_rows_are_capped_by_the_batch_and_unreadable_ones_stand_alone() {
        let mut rows: Vec<_> = (1..=5)
            .map(|i| row(i, "r", &format!("a{i}"), "firing", 0))
            .collect();
        rows.push(super::OutboxEntry {
            id: 6,
            attempts: 0,
            payload: "not json".into(),
            next_attempt_ms: 0,
        });
        assert_eq!(
            ids(&super::due_in_order(rows.clone(), 10, 3)),
            vec![1, 2, 3]
        );
        assert_eq!(
            ids(&super::due_in_order(rows, 10, 50)),
            vec![1, 2, 3, 4, 5, 6]
        );
    }
}
