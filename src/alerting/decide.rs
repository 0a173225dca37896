//! The evaluator's decision step, as a pure function: given one rule, its stored states,
//! the groups breaching now, the silences and windows in force and the time, what changes
//! and which notifications go to which channels. No clock, no locks, no I/O: the
//! evaluator gathers the inputs, commits the [`Decision`] and logs its [`Notice`]s.

use super::engine::{self, AlertState, Breach, Change, Notify, Phase, Timing};
use super::silence::{self, Silence};
use crate::config::channel::{ChannelConfig, ChannelKind};
use crate::config::maintenance::MaintenanceConfig;
use crate::config::rule::{RuleConfig, RuleKind};
use crate::store::{AlertStateRow, OutboxRow};
use std::collections::HashMap;
use time::OffsetDateTime;

/// What is true for every rule in one evaluation.
pub struct Context<'a> {
    pub now: OffsetDateTime,
    /// When the evaluator started: the traffic windows were empty then.
    pub started: OffsetDateTime,
    pub channels: &'a [ChannelConfig],
    pub silences: &'a [Silence],
    pub windows: &'a [MaintenanceConfig],
}

/// What one change did about its notification, for the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Queued for the rule's channels.
    Queued { notify: Notify },
    /// Held back by a silence or a maintenance window (named): the state still changed.
    HeldBack { notify: Notify, why: String },
}

/// One rule's decision: the rows to store (in one transaction) and the changes to apply in
/// memory once they are stored.
#[derive(Debug, Default)]
pub struct Decision {
    pub states: Vec<AlertStateRow>,
    pub outbox: Vec<OutboxRow>,
    pub applied: Vec<(Change, Option<Notice>)>,
}

/// Rules judged as events arrive (log lines, committed audit events); the others judge
/// measurements every `interval`.
pub fn log_driven(kind: RuleKind) -> bool {
    matches!(
        kind,
        RuleKind::AuthFailures | RuleKind::PullFailureRate | RuleKind::AuditMatch
    )
}

/// Decides for `rule` given its `states` and the groups breaching now.
pub fn decide(
    rule: &RuleConfig,
    states: &HashMap<String, AlertState>,
    breaches: &[Breach],
    cx: &Context<'_>,
) -> Decision {
    let resend = cx
        .channels
        .iter()
        .filter(|ch| rule.channels.contains(&ch.name))
        .filter_map(|ch| ch.kind.resend_interval())
        .min();
    let mut changes = engine::evaluate(
        &rule.name,
        Timing::of(rule, resend),
        states,
        breaches,
        cx.now,
    );
    changes.extend(released(rule, states, &changes, cx));
    // The traffic windows start empty after a restart: a firing log-driven alert is not
    // resolved before its window has refilled (or every restart would resolve, and
    // re-fire, it).
    if log_driven(rule.kind) && cx.now - cx.started < rule.window {
        changes.retain(|c| c.state.phase != Phase::Resolved);
    }
    let mut decision = Decision::default();
    for change in changes {
        record(rule, states, change, cx, &mut decision);
    }
    decision
}

/// Firing alerts whose notification a silence held back and that nothing silences any
/// more: announced now, not at the next `repeat_interval`.
fn released(
    rule: &RuleConfig,
    states: &HashMap<String, AlertState>,
    changes: &[Change],
    cx: &Context<'_>,
) -> Vec<Change> {
    let mut held: Vec<&AlertState> = states
        .values()
        .filter(|s| s.phase == Phase::Firing && s.held)
        .filter(|s| !changes.iter().any(|c| c.state.key == s.key))
        .collect();
    held.sort_by(|a, b| a.key.cmp(&b.key));
    held.into_iter()
        .filter(|s| {
            let n = super::notification_for(rule, s, Notify::Firing, cx.now);
            silence::suppressed(&n.labels, cx.now, cx.silences, cx.windows).is_none()
        })
        .map(|s| {
            let mut next = s.clone();
            next.notified_at = Some(cx.now);
            next.refreshed_at = Some(cx.now);
            Change {
                state: next,
                notify: Some(Notify::Firing),
            }
        })
        .collect()
}

/// Adds one change to the decision: its state row and, unless silenced, its outbox rows.
fn record(
    rule: &RuleConfig,
    states: &HashMap<String, AlertState>,
    mut c: Change,
    cx: &Context<'_>,
    decision: &mut Decision,
) {
    if c.notify == Some(Notify::Resolved) && states.get(&c.state.key).is_some_and(|s| s.held) {
        // Nobody was told it fired: nothing to resolve.
        c.notify = None;
    }
    let notification = c.notify.map(|notify| {
        let n = super::notification_for(rule, &c.state, notify, cx.now);
        let quiet = silence::suppressed(&n.labels, cx.now, cx.silences, cx.windows);
        (notify, n, quiet)
    });
    c.state.held = match &notification {
        _ if c.state.phase != Phase::Firing => false,
        Some((Notify::Firing | Notify::Repeat, _, quiet)) => quiet.is_some(),
        _ => c.state.held,
    };
    decision.states.push(AlertStateRow {
        rule: rule.name.clone(),
        key: c.state.key.clone(),
        phase: c.state.phase.as_str(),
        state: serde_json::to_string(&c.state).expect("an alert state serialises"),
    });
    let notice = notification.map(|(notify, n, quiet)| match quiet {
        Some(why) => Notice::HeldBack { notify, why },
        None => {
            let payload = serde_json::to_string(&n).expect("a notification serialises");
            for ch in rule.channels.iter().filter(|ch| receives(ch, notify, cx)) {
                decision.outbox.push(OutboxRow {
                    idempotency_key: n.idempotency_key.clone(),
                    channel: ch.clone(),
                    payload: payload.clone(),
                });
            }
            Notice::Queued { notify }
        }
    });
    decision.applied.push((c, notice));
}

/// A refresh only keeps Alertmanager from timing a firing alert out; the other channels
/// get everything else.
fn receives(channel: &str, notify: Notify, cx: &Context<'_>) -> bool {
    notify != Notify::Refresh
        || cx
            .channels
            .iter()
            .any(|x| x.name == channel && matches!(x.kind, ChannelKind::Alertmanager { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, parse};
    use std::collections::BTreeMap;
    use std::path::Path;
    use time::macros::datetime;

    const CONFIG: &str = r#"
[[registry]]
name = "main"
url = "http://x"

[[rule]]
name = "guessing"
kind = "auth_failures"
threshold = 10
window = "1m"
channels = ["hook", "am"]

[[rule]]
name = "hook-only"
kind = "auth_failures"
threshold = 10
window = "1m"
channels = ["hook"]

[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:1/hook"

[[channel]]
name = "am"
kind = "alertmanager"
url = "http://127.0.0.1:1"
resend_interval = "1m"
"#;

    fn breach(address: &str, value: f64) -> Breach {
        let mut labels = BTreeMap::new();
        labels.insert("registry".to_string(), "main".to_string());
        labels.insert("address".to_string(), address.to_string());
        Breach { labels, value }
    }

    fn silence(address: &str, until: OffsetDateTime) -> Silence {
        let mut matchers = BTreeMap::new();
        matchers.insert("address".to_string(), address.to_string());
        Silence {
            id: 3,
            matchers,
            starts_at: datetime!(2026-11-28 00:00 UTC),
            ends_at: until,
            created_by: "ops".into(),
            comment: "pentest".into(),
        }
    }

    fn states(decision: &Decision) -> HashMap<String, AlertState> {
        decision
            .applied
            .iter()
            .map(|(c, _)| (c.state.key.clone(), c.state.clone()))
            .collect()
    }

    #[test]
    fn fires_to_every_channel_then_refreshes_alertmanager_only() {
        let config = parse(CONFIG, Origin::Embedded, Path::new("/")).unwrap();
        let rule = &config.rules[0];
        let t0 = datetime!(2026-11-28 10:00 UTC);
        let cx = |now| Context {
            now,
            started: t0 - time::Duration::hours(1),
            channels: &config.channels,
            silences: &[],
            windows: &[],
        };
        let first = decide(rule, &HashMap::new(), &[breach("10.0.0.5", 11.0)], &cx(t0));
        let channels: Vec<&str> = first.outbox.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(channels, ["hook", "am"]);
        assert_eq!(
            first.applied[0].1,
            Some(Notice::Queued {
                notify: Notify::Firing
            })
        );
        assert_eq!(first.states[0].phase, "firing");
        // A minute later, still breaching: Alertmanager is re-sent the alert, the webhook
        // is not bothered.
        let later = t0 + time::Duration::minutes(1);
        let again = decide(
            rule,
            &states(&first),
            &[breach("10.0.0.5", 12.0)],
            &cx(later),
        );
        let channels: Vec<&str> = again.outbox.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(channels, ["am"]);
    }

    #[test]
    fn a_silenced_firing_is_held_then_sent_when_the_silence_ends_and_never_resolved_if_unannounced()
    {
        let config = parse(CONFIG, Origin::Embedded, Path::new("/")).unwrap();
        let rule = &config.rules[1];
        let t0 = datetime!(2026-11-28 10:00 UTC);
        let until = t0 + time::Duration::minutes(5);
        let quiet = [silence("10.0.0.*", until)];
        let cx = |now, silences| Context {
            now,
            started: t0 - time::Duration::hours(1),
            channels: &config.channels,
            silences,
            windows: &[],
        };
        let held = decide(
            rule,
            &HashMap::new(),
            &[breach("10.0.0.5", 11.0)],
            &cx(t0, &quiet),
        );
        assert!(held.outbox.is_empty(), "silenced: nothing sent");
        assert!(matches!(held.applied[0].1, Some(Notice::HeldBack { .. })));
        assert!(held.applied[0].0.state.held);
        // The silence ends while the alert still fires: the firing goes out now.
        let after = until + time::Duration::seconds(1);
        let released = decide(
            rule,
            &states(&held),
            &[breach("10.0.0.5", 11.0)],
            &cx(after, &quiet),
        );
        let channels: Vec<&str> = released.outbox.iter().map(|o| o.channel.as_str()).collect();
        assert_eq!(channels, ["hook"]);
        assert!(!released.applied[0].0.state.held);
        // Had it resolved while still held, nobody would be told anything.
        let resolved = decide(
            rule,
            &states(&held),
            &[],
            &cx(t0 + time::Duration::minutes(2), &quiet),
        );
        assert_eq!(resolved.states[0].phase, "resolved");
        assert!(resolved.outbox.is_empty());
        assert_eq!(resolved.applied[0].1, None);
    }

    #[test]
    fn a_restart_does_not_resolve_a_log_driven_alert_before_its_window_refilled() {
        let config = parse(CONFIG, Origin::Embedded, Path::new("/")).unwrap();
        let rule = &config.rules[0];
        let t0 = datetime!(2026-11-28 10:00 UTC);
        let long_ago = Context {
            now: t0,
            started: t0 - time::Duration::hours(1),
            channels: &config.channels,
            silences: &[],
            windows: &[],
        };
        let fired = decide(
            rule,
            &HashMap::new(),
            &[breach("10.0.0.5", 11.0)],
            &long_ago,
        );
        let restarted = Context {
            now: t0 + time::Duration::seconds(30),
            started: t0,
            ..long_ago
        };
        assert!(
            decide(rule, &states(&fired), &[], &restarted)
                .states
                .is_empty()
        );
        let refilled = Context {
            now: t0 + time::Duration::seconds(61),
            started: t0,
            ..long_ago
        };
        let d = decide(rule, &states(&fired), &[], &refilled);
        assert_eq!(d.states[0].phase, "resolved");
        assert_eq!(d.outbox.len(), 2);
    }
}
