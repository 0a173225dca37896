//! The evaluator task: wakes when a tailer saw a line that changes a window, when the writer
//! committed audit events, and every second; gathers what each due rule observes, lets
//! [`decide`](super::decide) decide, and has the writer store the state changes with their
//! outbox rows in one transaction before applying them in memory.

use super::decide::{self, Context, Decision, Notice};
use super::engine::{self, AlertState, Breach, Phase};
use super::silence::Silences;
use crate::config::channel::ChannelConfig;
use crate::config::maintenance::MaintenanceConfig;
use crate::config::rule::{RuleConfig, RuleKind};
use crate::metrics::Metrics;
use crate::model::Event;
use crate::model::clock::SharedClock;
use crate::model::observed::Observations;
use crate::model::signatures::SignatureFacts;
use crate::model::traffic::Traffic;
use crate::store::{AlertUpdate, Reader, Sink, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{Notify as Wake, mpsc};
use tokio_util::sync::CancellationToken;

/// Alert states by rule, then by group key.
pub type States = HashMap<String, HashMap<String, AlertState>>;

/// How the tailers wake the evaluator: a bounded channel of one, so a burst of lines costs
/// one evaluation and a tailer never waits for it.
pub fn wake_channel() -> (mpsc::Sender<()>, mpsc::Receiver<()>) {
    mpsc::channel(1)
}

/// Loads every stored alert state (so a restart neither re-notifies nor forgets).
pub fn load_states(db: &Reader) -> Result<States, StoreError> {
    let mut out = States::new();
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
    /// Each registry's image tags and signature verdicts at its last poll (`unsigned_image`).
    pub signatures: SignatureFacts,
    pub metrics: Arc<Metrics>,
    pub sink: Sink,
    pub clock: SharedClock,
    pub states: States,
    /// Woken after each commit that added outbox rows.
    pub workers: HashMap<String, Arc<Wake>>,
    pub silences: Silences,
    pub windows: Vec<MaintenanceConfig>,
}

/// What the evaluator keeps between rounds.
struct Round {
    /// Matching audit events per `audit_match` rule.
    recent: HashMap<String, engine::Recent>,
    /// When each gauge-driven rule was last evaluated.
    last_gauge: HashMap<String, OffsetDateTime>,
    started: OffsetDateTime,
}

impl Evaluator {
    /// Runs until `shutdown`: on every wake from a tailer, every batch of committed audit
    /// events, and every second.
    pub async fn run(
        mut self,
        wake: &mut mpsc::Receiver<()>,
        events: &mut mpsc::UnboundedReceiver<Event>,
        shutdown: CancellationToken,
    ) {
        let mut round = Round {
            recent: HashMap::new(),
            last_gauge: HashMap::new(),
            started: self.clock.now(),
        };
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
                    self.remember(&batch, &mut round);
                }
            }
            self.evaluate(&mut round).await;
        }
    }

    /// Keeps the committed events that `audit_match` rules match.
    fn remember(&self, batch: &[Event], round: &mut Round) {
        let now = self.clock.now().unix_timestamp();
        for rule in self.rules.iter().filter(|r| r.kind == RuleKind::AuditMatch) {
            for e in batch {
                if let Some(labels) = engine::audit_match(rule, e) {
                    engine::remember(
                        round.recent.entry(rule.name.clone()).or_default(),
                        labels,
                        e.time.unix_timestamp().min(now),
                    );
                }
            }
        }
    }

    /// One evaluation of every due rule, committed as one update.
    async fn evaluate(&mut self, round: &mut Round) {
        let now = self.clock.now();
        // A copy: nothing the HTTP side needs stays locked while rules are judged.
        let silences = self.silences.read().expect("silences lock").clone();
        let cx = Context {
            now,
            started: round.started,
            channels: &self.channels,
            silences: &silences,
            windows: &self.windows,
        };
        let empty = HashMap::new();
        let mut decisions = Vec::new();
        for rule in &self.rules {
            if !decide::log_driven(rule.kind) {
                let due = round
                    .last_gauge
                    .get(&rule.name)
                    .is_none_or(|t| now - *t >= rule.interval);
                if !due {
                    continue;
                }
                round.last_gauge.insert(rule.name.clone(), now);
            }
            let breaches = self.observe(rule, round, now);
            let states = self.states.get(&rule.name).unwrap_or(&empty);
            decisions.push((
                rule.name.clone(),
                decide::decide(rule, states, &breaches, &cx),
            ));
        }
        self.commit(decisions).await;
    }

    /// The groups of `rule` breaching now, over every registry it watches.
    fn observe(&self, rule: &RuleConfig, round: &mut Round, now: OffsetDateTime) -> Vec<Breach> {
        let unix = now.unix_timestamp();
        if rule.kind == RuleKind::AuditMatch {
            return engine::observe_recent(
                rule,
                round.recent.entry(rule.name.clone()).or_default(),
                unix,
            );
        }
        let mut breaches = Vec::new();
        for reg in &self.registries {
            if rule.registry.as_ref().is_some_and(|r| r != reg) {
                continue;
            }
            let seen = self.observed.get(reg);
            match rule.kind {
                RuleKind::AuthFailures | RuleKind::PullFailureRate => {
                    if let Some(stats) = self.traffic.get(reg) {
                        let stats = stats.lock().expect("stats lock");
                        breaches.extend(engine::observe_traffic(rule, reg, &stats, unix));
                    }
                }
                // The storage monitor's latest measurement; absent (no storage, no sample
                // yet, no forecast yet) means nothing to judge.
                RuleKind::StorageUsage => {
                    breaches.extend(engine::observe_gauge(rule, reg, seen.storage_used_ratio));
                }
                RuleKind::StorageForecast => {
                    let days = seen.storage_days_until_full;
                    breaches.extend(engine::observe_gauge(rule, reg, days));
                }
                // Not probed yet counts as down.
                RuleKind::RegistryDown => {
                    breaches.extend(engine::observe_up(reg, seen.up.unwrap_or(false)));
                }
                RuleKind::UnsignedImage => match self.signatures.get(reg) {
                    Some(tags) => breaches.extend(engine::observe_unsigned(rule, reg, &tags, now)),
                    // Never polled (nor restored): nothing is known, so what fires or waits
                    // stays as it is instead of resolving for lack of data.
                    None => breaches.extend(self.unchanged(rule, reg)),
                },
                RuleKind::AuditMatch => {}
            }
        }
        breaches
    }

    /// The breaches that keep `rule`'s pending and firing alerts on `registry` as they are.
    fn unchanged(&self, rule: &RuleConfig, registry: &str) -> Vec<Breach> {
        let Some(states) = self.states.get(&rule.name) else {
            return Vec::new();
        };
        states
            .values()
            .filter(|s| matches!(s.phase, Phase::Pending | Phase::Firing))
            .filter(|s| s.labels.get("registry").map(String::as_str) == Some(registry))
            .map(|s| Breach {
                labels: s.labels.clone(),
                value: s.value,
            })
            .collect()
    }

    /// Stores the decisions' rows; only once they are stored are the changes applied in
    /// memory and the channels' workers woken (a failed commit is retried next round).
    async fn commit(&mut self, decisions: Vec<(String, Decision)>) {
        let mut update = AlertUpdate::default();
        for (_, d) in &decisions {
            update.states.extend(d.states.iter().cloned());
            update.outbox.extend(d.outbox.iter().cloned());
        }
        if update.states.is_empty() {
            return;
        }
        let wake: HashSet<String> = update.outbox.iter().map(|o| o.channel.clone()).collect();
        if let Err(e) = self.sink.store_alerts(update).await {
            tracing::error!(error = %e, "alert states not stored");
            return;
        }
        for (rule, d) in decisions {
            for (c, notice) in d.applied {
                log_change(&rule, &c, notice.as_ref());
                let per_rule = self.states.entry(c.state.rule.clone()).or_default();
                if c.state.phase == Phase::Inactive {
                    per_rule.remove(&c.state.key);
                } else {
                    per_rule.insert(c.state.key.clone(), c.state);
                }
            }
        }
        self.publish_firing();
        for ch in wake {
            if let Some(w) = self.workers.get(&ch) {
                w.notify_one();
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

fn log_change(rule: &str, c: &engine::Change, notice: Option<&Notice>) {
    let phase = c.state.phase.as_str();
    match notice {
        Some(Notice::Queued { notify }) => tracing::info!(
            rule, key = %c.state.key, reason = notify.as_str(), value = c.state.value,
            "alert {phase}"
        ),
        // The state still changes; only the notification is held back.
        Some(Notice::HeldBack { notify, why }) => tracing::info!(
            rule, key = %c.state.key, reason = notify.as_str(),
            "alert {phase} (notification held back by {why})"
        ),
        None => {}
    }
}
