//! Alerting: rules over the traffic windows and the registry probes, a persisted state
//! machine per rule and group, and notifications delivered through a durable outbox.
//!
//! - [`engine`]: pure observation and state transitions (time passed in).
//! - [`decide`]: the evaluator's decision step, pure: state rows and outbox rows per rule.
//! - [`evaluator`]: the evaluator task (woken by the tailers as lines arrive, by committed
//!   audit events, and every second).
//! - [`delivery`]: one worker per channel draining its outbox through
//!   [`crate::channels`].
//! - [`silence`]: silences and maintenance windows holding notifications back.
//! - State changes and the outbox rows they cause are committed in one transaction by the
//!   database's single writer, so a crash can neither lose a notification nor send one for
//!   a state that was not stored.

pub mod decide;
pub mod delivery;
pub mod engine;
pub mod evaluator;
pub mod silence;

use crate::channels::notification::{Notification, rfc3339, sha2_256};
use crate::config::rule::{RuleConfig, RuleKind};
use crate::model::template;
use engine::{AlertState, Notify};
use std::collections::BTreeMap;

/// The summary of a rule that has none of its own.
fn default_summary(kind: RuleKind) -> &'static str {
    match kind {
        // A tag is not a value over a threshold: name it.
        RuleKind::UnsignedImage => {
            "{{ rule }} {{ status }}: {{ labels.repository }}:{{ labels.tag }} on {{ labels.registry }} has no signature a trusted key verifies ({{ value }} attached)"
        }
        _ => {
            "{{ rule }} {{ status }}: {{ value }} (threshold {{ threshold }}) on {{ labels.registry }}"
        }
    }
}

/// The notification for a state change of `rule`.
pub fn notification_for(
    rule: &RuleConfig,
    state: &AlertState,
    notify: Notify,
    now: time::OffsetDateTime,
) -> Notification {
    let mut labels = rule.labels.clone();
    labels.extend(state.labels.clone());
    labels.insert("alertname".into(), rule.name.clone());
    labels.insert("severity".into(), rule.severity.as_str().into());
    let resolved = notify == Notify::Resolved;
    let status = if resolved { "resolved" } else { "firing" };
    let vars = template::Vars {
        rule: &rule.name,
        status,
        severity: rule.severity.as_str(),
        value: state.value,
        threshold: rule.threshold,
        window: &crate::config::duration::humane(rule.window),
        labels: &labels,
    };
    let mut annotations = BTreeMap::new();
    let summary = rule
        .summary
        .clone()
        .unwrap_or_else(|| default_summary(rule.kind).into());
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
        severity: rule.severity.as_str().into(),
        labels,
        annotations,
        value: state.value,
        starts_at: rfc3339(state.fired_at.unwrap_or(state.since)),
        ends_at: resolved.then(|| rfc3339(now)),
        sent_for: rfc3339(now),
        test: false,
    }
}
