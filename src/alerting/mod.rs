//! Alerting: rules over the traffic windows and the registry probes, a persisted state
//! machine per rule and group, and notifications delivered through a durable outbox.
//!
//! - [`engine`]: pure evaluation and state transitions (time passed in).
//! - [`runner`]: the evaluator task (woken by the tailers as lines arrive, and every second)
//!   and the delivery workers.
//! - [`channels`]: email, webhook, Alertmanager, Slack, Teams.
//! - State changes and the outbox rows they cause are committed in one transaction by the
//!   audit writer (the only write connection), so a crash can neither lose a notification
//!   nor send one for a state that was not stored.

pub mod channels;
pub mod config;
pub mod engine;
pub mod runner;
pub mod silence;
pub mod template;

use engine::{AlertState, Notify};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One notification, as stored in the outbox and as posted by the webhook channel
/// (the documented JSON payload, `version` 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub version: u32,
    /// Stable for one notification across retries and restarts: receivers can drop
    /// duplicates by it (also sent as the `Idempotency-Key` header).
    pub idempotency_key: String,
    pub rule: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// `firing`, `repeat`, `refresh` or `resolved`: why it was sent.
    pub reason: String,
    pub severity: String,
    /// The rule's labels, the group labels (registry, address, user) and `alertname`.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description` and the rule's other annotations, rendered.
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; set when resolved.
    pub ends_at: Option<String>,
    /// When the state change that caused this notification happened.
    pub sent_for: String,
    /// Set for test notifications (`regwatch alerts test`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Notification {
    /// The notification for a state change of `rule`.
    pub fn new(
        rule: &config::RuleConfig,
        state: &AlertState,
        notify: Notify,
        now: time::OffsetDateTime,
    ) -> Notification {
        let mut labels = rule.labels.clone();
        labels.extend(state.labels.clone());
        labels.insert("alertname".into(), rule.name.clone());
        labels.insert("severity".into(), rule.severity.clone());
        let resolved = notify == Notify::Resolved;
        let status = if resolved { "resolved" } else { "firing" };
        let vars = template::Vars {
            rule: &rule.name,
            status,
            severity: &rule.severity,
            value: state.value,
            threshold: rule.threshold,
            window: &crate::config::duration::humane(rule.window),
            labels: &labels,
        };
        let mut annotations = BTreeMap::new();
        let summary = rule.summary.clone().unwrap_or_else(|| {
            "{{ rule }} {{ status }}: {{ value }} (threshold {{ threshold }}) on {{ labels.registry }}".into()
        });
        annotations.insert("summary".to_string(), template::render(&summary, &vars));
        if let Some(d) = &rule.description {
            annotations.insert("description".to_string(), template::render(d, &vars));
        }
        for (k, v) in &rule.annotations {
            annotations.insert(k.clone(), template::render(v, &vars));
        }
        let key_material = format!(
            "{}\n{}\n{}\n{}\n{}",
            rule.name,
            state.key,
            state.sequence,
            notify.as_str(),
            now.unix_timestamp_nanos()
        );
        Notification {
            version: 1,
            idempotency_key: hex::encode(&sha2_256(key_material.as_bytes())[..16]),
            rule: rule.name.clone(),
            status: status.into(),
            reason: notify.as_str().into(),
            severity: rule.severity.clone(),
            labels,
            annotations,
            value: state.value,
            starts_at: rfc3339(state.fired_at.unwrap_or(state.since)),
            ends_at: resolved.then(|| rfc3339(now)),
            sent_for: rfc3339(now),
            test: false,
        }
    }

    /// A notification for `regwatch alerts test`.
    pub fn test(now: time::OffsetDateTime) -> Notification {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "regwatch-test".to_string());
        labels.insert("severity".to_string(), "info".to_string());
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".to_string(),
            "regwatch test notification: this channel works".to_string(),
        );
        Notification {
            version: 1,
            idempotency_key: hex::encode(&sha2_256(rfc3339(now).as_bytes())[..16]),
            rule: "regwatch-test".into(),
            status: "firing".into(),
            reason: "test".into(),
            severity: "info".into(),
            labels,
            annotations,
            value: 0.0,
            starts_at: rfc3339(now),
            ends_at: Some(rfc3339(now + time::Duration::minutes(5))),
            sent_for: rfc3339(now),
            test: true,
        }
    }

    pub fn summary(&self) -> &str {
        self.annotations
            .get("summary")
            .map(String::as_str)
            .unwrap_or("")
    }
}

fn sha2_256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}
