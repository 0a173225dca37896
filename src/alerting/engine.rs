//! Rule evaluation and the alert state machine, as pure functions: what is observed and the
//! time are passed in, the changes come out. No clock reads, no I/O, no sleeping in tests.
//!
//! inactive → pending (condition holds, `for` not yet over) → firing → resolved; a pending
//! alert whose condition stops holding goes back to inactive without a notification.

use crate::config::rule::{GroupBy, RuleConfig, RuleKind};
use crate::model::signatures::{SignatureStatus, TagSignature};
use crate::model::traffic::RegistryStats;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "inactive" => Phase::Inactive,
            "pending" => Phase::Pending,
            "firing" => Phase::Firing,
            "resolved" => Phase::Resolved,
            _ => return None,
        })
    }
}

/// The state of one alert: a rule and one group key (e.g. one address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub rule: String,
    /// `registry=main,address=10.0.0.5`: the group labels, sorted.
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub phase: Phase,
    /// When the current phase began.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// When it last started firing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub fired_at: Option<OffsetDateTime>,
    /// When every channel was last notified (firing or repeat).
    #[serde(with = "time::serde::rfc3339::option")]
    pub notified_at: Option<OffsetDateTime>,
    /// When Alertmanager channels were last re-sent the firing alert.
    #[serde(with = "time::serde::rfc3339::option")]
    pub refreshed_at: Option<OffsetDateTime>,
    /// The value observed at the last change.
    pub value: f64,
    /// How many times this alert has fired; part of each notification's idempotency key.
    pub sequence: i64,
    /// Its firing notification was held back by a silence or maintenance window: it is sent
    /// when that ends while the alert still fires, and a resolve before then sends nothing
    /// (the receivers never heard of it).
    #[serde(default)]
    pub held: bool,
}

/// A group whose value is over the threshold now.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Breach {
    pub fn key(&self) -> String {
        group_key(&self.labels)
    }
}

pub fn group_key(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a change asks to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    /// It started firing: every channel.
    Firing,
    /// Still firing after `repeat_interval`: every channel again.
    Repeat,
    /// Still firing: Alertmanager channels only, so Alertmanager does not time it out.
    Refresh,
    /// It stopped: every channel, if `send_resolved`.
    Resolved,
}

impl Notify {
    pub fn as_str(self) -> &'static str {
        match self {
            Notify::Firing => "firing",
            Notify::Repeat => "repeat",
            Notify::Refresh => "refresh",
            Notify::Resolved => "resolved",
        }
    }
}

/// The timing parameters of a rule the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub for_: Duration,
    pub repeat_interval: Duration,
    /// Alertmanager re-send period (None without an Alertmanager channel).
    pub refresh: Option<Duration>,
    pub send_resolved: bool,
}

impl Timing {
    /// `alertmanager_resend`: the shortest `resend_interval` of the rule's Alertmanager
    /// channels, if it has any.
    pub fn of(rule: &RuleConfig, alertmanager_resend: Option<Duration>) -> Timing {
        Timing {
            for_: rule.for_,
            repeat_interval: rule.repeat_interval,
            refresh: alertmanager_resend,
            send_resolved: rule.send_resolved,
        }
    }
}

/// One state change and what it asks to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub state: AlertState,
    pub notify: Option<Notify>,
}

fn elapsed(now: OffsetDateTime, since: OffsetDateTime) -> Duration {
    let d = now - since;
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// Steps every alert of `rule` given the groups breaching now. `states` are the rule's
/// current states by key. Returns only what changed.
pub fn evaluate(
    rule: &str,
    timing: Timing,
    states: &HashMap<String, AlertState>,
    breaches: &[Breach],
    now: OffsetDateTime,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for b in breaches {
        let key = b.key();
        seen.insert(key.clone());
        changes.extend(breaching(rule, &key, b, states.get(&key), timing, now));
    }
    let mut gone: Vec<&AlertState> = states.values().filter(|s| !seen.contains(&s.key)).collect();
    gone.sort_by(|a, b| a.key.cmp(&b.key));
    changes.extend(
        gone.into_iter()
            .filter_map(|s| not_breaching(s, timing, now)),
    );
    changes
}

/// The step of one alert whose group breaches now (`prev`: its state, if any).
fn breaching(
    rule: &str,
    key: &str,
    b: &Breach,
    prev: Option<&AlertState>,
    timing: Timing,
    now: OffsetDateTime,
) -> Option<Change> {
    let fire = |prev: Option<&AlertState>| Change {
        state: AlertState {
            rule: rule.to_string(),
            key: key.to_string(),
            labels: b.labels.clone(),
            phase: Phase::Firing,
            since: now,
            fired_at: Some(now),
            notified_at: Some(now),
            refreshed_at: Some(now),
            value: b.value,
            sequence: prev.map(|p| p.sequence).unwrap_or(0) + 1,
            held: false,
        },
        notify: Some(Notify::Firing),
    };
    match prev {
        None
        | Some(AlertState {
            phase: Phase::Inactive | Phase::Resolved,
            ..
        }) => Some(if timing.for_.is_zero() {
            fire(prev)
        } else {
            Change {
                state: AlertState {
                    rule: rule.to_string(),
                    key: key.to_string(),
                    labels: b.labels.clone(),
                    phase: Phase::Pending,
                    since: now,
                    fired_at: prev.and_then(|p| p.fired_at),
                    notified_at: prev.and_then(|p| p.notified_at),
                    refreshed_at: None,
                    value: b.value,
                    sequence: prev.map(|p| p.sequence).unwrap_or(0),
                    held: false,
                },
                notify: None,
            }
        }),
        Some(s) if s.phase == Phase::Pending => {
            (elapsed(now, s.since) >= timing.for_).then(|| fire(Some(s)))
        }
        Some(s) => still_firing(s, b, timing, now),
    }
}

/// A firing alert whose group still breaches: a repeat to every channel when
/// `repeat_interval` has passed, else a refresh for Alertmanager when it is due.
fn still_firing(s: &AlertState, b: &Breach, timing: Timing, now: OffsetDateTime) -> Option<Change> {
    let last = s.notified_at.unwrap_or(s.since);
    let mut next = s.clone();
    next.value = b.value;
    if elapsed(now, last) >= timing.repeat_interval {
        next.notified_at = Some(now);
        next.refreshed_at = Some(now);
        return Some(Change {
            state: next,
            notify: Some(Notify::Repeat),
        });
    }
    let every = timing.refresh?;
    (elapsed(now, s.refreshed_at.unwrap_or(s.since)) >= every).then(|| {
        next.refreshed_at = Some(now);
        Change {
            state: next,
            notify: Some(Notify::Refresh),
        }
    })
}

/// The step of one alert whose group does not breach now.
fn not_breaching(s: &AlertState, timing: Timing, now: OffsetDateTime) -> Option<Change> {
    let (phase, notify) = match s.phase {
        Phase::Pending => (Phase::Inactive, None),
        Phase::Firing => (
            Phase::Resolved,
            timing.send_resolved.then_some(Notify::Resolved),
        ),
        Phase::Inactive | Phase::Resolved => return None,
    };
    let mut next = s.clone();
    next.phase = phase;
    next.since = now;
    Some(Change {
        state: next,
        notify,
    })
}

/// The groups of a log-driven rule over its threshold in `stats` at `now` (unix seconds).
pub fn observe_traffic(
    rule: &RuleConfig,
    registry: &str,
    stats: &RegistryStats,
    now: i64,
) -> Vec<Breach> {
    let secs = rule.window.as_secs().max(1) as usize;
    let base = || {
        let mut l = BTreeMap::new();
        l.insert("registry".to_string(), registry.to_string());
        l
    };
    match rule.kind {
        RuleKind::AuthFailures => {
            let over = |w: &crate::model::traffic::KeyedWindow, label: &str| {
                w.over(now, secs, rule.threshold)
                    .into_iter()
                    .map(|(k, n)| {
                        let mut labels = base();
                        labels.insert(label.to_string(), k);
                        Breach {
                            labels,
                            value: n as f64,
                        }
                    })
                    .collect::<Vec<_>>()
            };
            match rule.group_by {
                GroupBy::User => over(&stats.auth_by_user, "user"),
                GroupBy::Address => over(&stats.auth_by_address, "address"),
                GroupBy::None => {
                    let n = stats.auth_total(now, secs);
                    if n as f64 > rule.threshold {
                        vec![Breach {
                            labels: base(),
                            value: n as f64,
                        }]
                    } else {
                        vec![]
                    }
                }
            }
        }
        RuleKind::PullFailureRate => {
            let (failed, total) = stats.pull_counts(now, secs);
            if total == 0 || total < rule.min_pulls {
                return vec![];
            }
            let ratio = failed as f64 / total as f64;
            if ratio > rule.threshold {
                vec![Breach {
                    labels: base(),
                    value: ratio,
                }]
            } else {
                vec![]
            }
        }
        _ => vec![],
    }
}

/// The group labels of an audit event for an `audit_match` rule, if the event matches.
pub fn audit_match(
    rule: &RuleConfig,
    e: &crate::model::event::Event,
) -> Option<BTreeMap<String, String>> {
    use crate::model::glob;
    let field = |name: &str| -> Option<&str> {
        match name {
            "action" => Some(e.action.as_str()),
            "repository" => e.repository.as_deref(),
            "tag" => e.tag.as_deref(),
            "actor" => e.actor.as_deref(),
            "registry" => e.registry.as_deref(),
            "source" => Some(e.source.as_str()),
            "address" => e.remote_addr.as_deref(),
            _ => None,
        }
    };
    let all = rule
        .filter
        .iter()
        .all(|(k, pattern)| field(k).is_some_and(|v| glob::matches(pattern, v)));
    if !all {
        return None;
    }
    if !rule.known_actors.is_empty()
        && e.actor
            .as_deref()
            .is_some_and(|a| rule.known_actors.iter().any(|k| k == a))
    {
        return None;
    }
    if let Some(r) = &rule.registry
        && e.registry.as_deref() != Some(r.as_str())
    {
        return None;
    }
    let mut labels = BTreeMap::new();
    for k in ["registry", "action", "repository", "actor"] {
        if let Some(v) = field(k) {
            labels.insert(k.to_string(), v.to_string());
        }
    }
    Some(labels)
}

/// Matching audit events of one rule seen recently, per group: their times (unix seconds).
pub type Recent = HashMap<String, (BTreeMap<String, String>, Vec<i64>)>;

/// Records a matching event.
pub fn remember(recent: &mut Recent, labels: BTreeMap<String, String>, at: i64) {
    let key = group_key(&labels);
    recent
        .entry(key)
        .or_insert_with(|| (labels, Vec::new()))
        .1
        .push(at);
}

/// `audit_match`: the groups with more than `threshold` matching events in the window
/// (threshold 0: any). Forgets what is older than the window.
pub fn observe_recent(rule: &RuleConfig, recent: &mut Recent, now: i64) -> Vec<Breach> {
    let from = now - rule.window.as_secs() as i64;
    recent.retain(|_, (_, times)| {
        times.retain(|t| *t > from);
        !times.is_empty()
    });
    let mut out: Vec<Breach> = recent
        .values()
        .filter(|(_, times)| times.len() as f64 > rule.threshold)
        .map(|(labels, times)| Breach {
            labels: labels.clone(),
            value: times.len() as f64,
        })
        .collect();
    out.sort_by_key(|b| b.key());
    out
}

/// A gauge-driven rule over one value per registry: `storage_usage` (a used ratio, fires
/// above the threshold) and `storage_forecast` (days until full, fires **below** it). `None`
/// (no measurement yet) never fires. The storage walk feeds these (see runner.rs).
pub fn observe_gauge(rule: &RuleConfig, registry: &str, value: Option<f64>) -> Vec<Breach> {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return vec![];
    };
    let breach = if rule.kind == RuleKind::StorageForecast {
        v < rule.threshold
    } else {
        v > rule.threshold
    };
    if !breach {
        return vec![];
    }
    let mut labels = BTreeMap::new();
    labels.insert("registry".to_string(), registry.to_string());
    vec![Breach { labels, value: v }]
}

/// `unsigned_image`: the tags of `registry` in the rule's `repositories` whose signature is not
/// `verified` once `grace` has passed since the poll first saw them at their digest; one
/// group per repository and tag, the value the number of (unverifying) signatures attached.
pub fn observe_unsigned(
    rule: &RuleConfig,
    registry: &str,
    tags: &[TagSignature],
    now: OffsetDateTime,
) -> Vec<Breach> {
    use crate::model::glob;
    let mut out: Vec<Breach> = tags
        .iter()
        .filter(|t| t.signature != SignatureStatus::Verified)
        .filter(|t| elapsed(now, t.first_seen) >= rule.grace)
        .filter(|t| {
            rule.repositories
                .iter()
                .any(|p| glob::matches(p, &t.repository))
        })
        .map(|t| {
            let mut labels = BTreeMap::new();
            labels.insert("registry".to_string(), registry.to_string());
            labels.insert("repository".to_string(), t.repository.clone());
            labels.insert("tag".to_string(), t.tag.clone());
            Breach {
                labels,
                value: t.signatures as f64,
            }
        })
        .collect();
    out.sort_by_key(|b| b.key());
    out
}

/// `registry_down`: a registry whose probe fails is a breach (value 1); `for` says for how
/// long it must fail before the alert fires.
pub fn observe_up(registry: &str, up: bool) -> Vec<Breach> {
    if up {
        return vec![];
    }
    let mut labels = BTreeMap::new();
    labels.insert("registry".to_string(), registry.to_string());
    vec![Breach { labels, value: 1.0 }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

    fn timing(for_secs: u64) -> Timing {
        Timing {
            for_: Duration::from_secs(for_secs),
            repeat_interval: Duration::from_secs(3600),
            refresh: None,
            send_resolved: true,
        }
    }

    fn breach(addr: &str, v: f64) -> Breach {
        let mut labels = BTreeMap::new();
        labels.insert("registry".into(), "main".into());
        labels.insert("address".into(), addr.into());
        Breach { labels, value: v }
    }

    /// Applies changes the way the runner does.
    fn apply(states: &mut HashMap<String, AlertState>, changes: &[Change]) {
        for c in changes {
            states.insert(c.state.key.clone(), c.state.clone());
        }
    }

    fn s(secs: i64) -> OffsetDateTime {
        T0 + time::Duration::seconds(secs)
    }

    #[test]
    fn fires_at_once_without_for_and_resolves_once() {
        let mut st = HashMap::new();
        let c = evaluate("auth", timing(0), &st, &[breach("10.0.0.5", 11.0)], s(0));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].notify, Some(Notify::Firing));
        assert_eq!(c[0].state.phase, Phase::Firing);
        assert_eq!(c[0].state.key, "address=10.0.0.5,registry=main");
        assert_eq!(c[0].state.sequence, 1);
        apply(&mut st, &c);
        // Still over: nothing new (no duplicate notification).
        assert!(evaluate("auth", timing(0), &st, &[breach("10.0.0.5", 12.0)], s(5)).is_empty());
        // Over no more: resolved, once.
        let c = evaluate("auth", timing(0), &st, &[], s(70));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].notify, Some(Notify::Resolved));
        assert_eq!(c[0].state.phase, Phase::Resolved);
        apply(&mut st, &c);
        assert!(evaluate("auth", timing(0), &st, &[], s(71)).is_empty());
        // Again over: fires again with the next sequence number.
        let c = evaluate("auth", timing(0), &st, &[breach("10.0.0.5", 11.0)], s(100));
        assert_eq!(c[0].notify, Some(Notify::Firing));
        assert_eq!(c[0].state.sequence, 2);
    }

    #[test]
    fn pending_until_for_has_passed_and_back_to_inactive_without_notification() {
        let mut st = HashMap::new();
        let c = evaluate("r", timing(30), &st, &[breach("a", 1.0)], s(0));
        assert_eq!((c[0].state.phase, c[0].notify), (Phase::Pending, None));
        apply(&mut st, &c);
        assert!(evaluate("r", timing(30), &st, &[breach("a", 1.0)], s(29)).is_empty());
        let c = evaluate("r", timing(30), &st, &[breach("a", 1.0)], s(30));
        assert_eq!(
            (c[0].state.phase, c[0].notify),
            (Phase::Firing, Some(Notify::Firing))
        );

        let mut st = HashMap::new();
        let c = evaluate("r", timing(30), &st, &[breach("a", 1.0)], s(0));
        apply(&mut st, &c);
        let c = evaluate("r", timing(30), &st, &[], s(10));
        assert_eq!((c[0].state.phase, c[0].notify), (Phase::Inactive, None));
    }

    #[test]
    fn repeats_after_repeat_interval_and_refreshes_alertmanager_in_between() {
        let t = Timing {
            for_: Duration::ZERO,
            repeat_interval: Duration::from_secs(600),
            refresh: Some(Duration::from_secs(60)),
            send_resolved: false,
        };
        let mut st = HashMap::new();
        let c = evaluate("r", t, &st, &[breach("a", 1.0)], s(0));
        apply(&mut st, &c);
        assert!(evaluate("r", t, &st, &[breach("a", 1.0)], s(59)).is_empty());
        let c = evaluate("r", t, &st, &[breach("a", 1.0)], s(60));
        assert_eq!(c[0].notify, Some(Notify::Refresh));
        apply(&mut st, &c);
        assert!(evaluate("r", t, &st, &[breach("a", 1.0)], s(100)).is_empty());
        let c = evaluate("r", t, &st, &[breach("a", 1.0)], s(600));
        assert_eq!(c[0].notify, Some(Notify::Repeat));
        apply(&mut st, &c);
        // send_resolved = false: the state changes, nothing is sent.
        let c = evaluate("r", t, &st, &[], s(700));
        assert_eq!((c[0].state.phase, c[0].notify), (Phase::Resolved, None));
    }

    #[test]
    fn groups_are_independent() {
        let mut st = HashMap::new();
        let c = evaluate(
            "r",
            timing(0),
            &st,
            &[breach("a", 11.0), breach("b", 20.0)],
            s(0),
        );
        apply(&mut st, &c);
        let c = evaluate("r", timing(0), &st, &[breach("b", 21.0)], s(10));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].state.labels["address"], "a");
        assert_eq!(c[0].notify, Some(Notify::Resolved));
    }

    fn rule(kind: &str, threshold: f64, window: u64) -> RuleConfig {
        let text = format!(
            "[[registry]]\nname = \"main\"\nurl = \"http://x\"\n[[rule]]\nname = \"r\"\nkind = \"{kind}\"\nthreshold = {threshold}\nwindow = \"{window}s\"\nmin_pulls = 20\n"
        );
        crate::config::parse(
            &text,
            crate::config::Origin::Embedded,
            std::path::Path::new("/"),
        )
        .unwrap()
        .rules
        .remove(0)
    }

    #[test]
    fn eleven_failed_logins_in_a_minute_from_one_address_breach_more_than_ten() {
        let r = rule("auth_failures", 10.0, 60);
        let mut stats = RegistryStats::default();
        for i in 0..10 {
            stats.auth_failure(1000 + i, Some("bob"), Some("10.0.0.5"));
        }
        assert!(
            observe_traffic(&r, "main", &stats, 1010).is_empty(),
            "10 is not more than 10"
        );
        stats.auth_failure(1011, Some("alice"), Some("10.0.0.5"));
        let b = observe_traffic(&r, "main", &stats, 1011);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].labels["address"], "10.0.0.5");
        assert_eq!(b[0].value, 11.0);
        // A minute after the first failure it no longer holds.
        assert!(observe_traffic(&r, "main", &stats, 1060).is_empty());

        let mut by_user = rule("auth_failures", 10.0, 60);
        by_user.group_by = GroupBy::User;
        assert!(
            observe_traffic(&by_user, "main", &stats, 1011).is_empty(),
            "bob 10, alice 1"
        );
        let mut all = rule("auth_failures", 10.0, 60);
        all.group_by = GroupBy::None;
        assert_eq!(observe_traffic(&all, "main", &stats, 1011)[0].value, 11.0);
    }

    #[test]
    fn audit_match_deletes_in_prod_and_pushes_by_unknown_actors() {
        use crate::model::event::{Action, Event, Source};
        let mut r = rule("audit_match", 0.0, 60);
        r.filter.insert("action".into(), "delete".into());
        r.filter.insert("repository".into(), "prod/*".into());
        let mut e = Event::new(T0, Action::Delete, Source::Notification);
        e.registry = Some("main".into());
        e.repository = Some("prod/app".into());
        e.actor = Some("alice".into());
        let labels = audit_match(&r, &e).expect("a delete in prod/* matches");
        assert_eq!(labels["repository"], "prod/app");
        assert_eq!(labels["actor"], "alice");
        e.repository = Some("dev/app".into());
        assert!(audit_match(&r, &e).is_none());

        let mut unknown = rule("audit_match", 0.0, 60);
        unknown.filter.insert("action".into(), "push".into());
        unknown.known_actors = vec!["ci".into()];
        let mut p = Event::new(T0, Action::Push, Source::Notification);
        p.actor = Some("ci".into());
        assert!(audit_match(&unknown, &p).is_none(), "ci is known");
        p.actor = Some("mallory".into());
        assert!(audit_match(&unknown, &p).is_some());

        let mut recent = Recent::new();
        remember(&mut recent, labels, 1000);
        assert_eq!(observe_recent(&r, &mut recent, 1030).len(), 1);
        assert!(
            observe_recent(&r, &mut recent, 1060).is_empty(),
            "a minute later"
        );
        assert!(recent.is_empty(), "forgotten");
    }

    #[test]
    fn storage_rules_fire_above_usage_and_below_days_left() {
        let usage = rule("storage_usage", 0.85, 60);
        assert!(observe_gauge(&usage, "main", Some(0.85)).is_empty());
        assert_eq!(observe_gauge(&usage, "main", Some(0.9))[0].value, 0.9);
        assert!(observe_gauge(&usage, "main", None).is_empty());
        let forecast = rule("storage_forecast", 14.0, 60);
        assert_eq!(observe_gauge(&forecast, "main", Some(9.5))[0].value, 9.5);
        assert!(observe_gauge(&forecast, "main", Some(30.0)).is_empty());
        assert!(observe_gauge(&forecast, "main", Some(f64::INFINITY)).is_empty());
    }

    #[test]
    fn unsigned_image_waits_out_the_grace_and_watches_only_its_repositories() {
        let mut r = rule("unsigned_image", 0.0, 60);
        r.repositories = vec!["prod/*".into()];
        assert_eq!(r.grace, Duration::from_secs(600), "the default grace");
        let tag = |repo: &str, tag: &str, signature, signatures, seen: i64| TagSignature {
            repository: repo.into(),
            tag: tag.into(),
            digest: format!("sha256:{tag}"),
            signature,
            signatures,
            first_seen: s(seen),
        };
        let tags = [
            tag("prod/app", "1.0", SignatureStatus::None, 0, 0),
            tag("prod/app", "1.1", SignatureStatus::Verified, 1, 0),
            tag("prod/app", "2.0", SignatureStatus::Unverified, 2, 0),
            tag("prod/app", "new", SignatureStatus::None, 0, 500),
            tag("dev/app", "1.0", SignatureStatus::None, 0, 0),
        ];
        let b = observe_unsigned(&r, "main", &tags, s(599));
        assert!(b.is_empty(), "inside the grace: {b:?}");
        let b = observe_unsigned(&r, "main", &tags, s(600));
        let keys: Vec<String> = b.iter().map(Breach::key).collect();
        assert_eq!(
            keys,
            [
                "registry=main,repository=prod/app,tag=1.0",
                "registry=main,repository=prod/app,tag=2.0"
            ]
        );
        assert_eq!((b[0].value, b[1].value), (0.0, 2.0));
        // The young tag's grace ends later; dev/* is not watched at all.
        assert_eq!(observe_unsigned(&r, "main", &tags, s(1100)).len(), 3);
        // A clock that went back does not fire early.
        assert!(observe_unsigned(&r, "main", &tags, s(-100)).is_empty());
    }

    #[test]
    fn pull_failure_rate_needs_min_pulls() {
        let r = rule("pull_failure_rate", 0.05, 60);
        let mut stats = RegistryStats::default();
        for i in 0..10 {
            stats.pull(1000 + i, true);
        }
        assert!(
            observe_traffic(&r, "main", &stats, 1010).is_empty(),
            "10 < min_pulls"
        );
        for i in 0..10 {
            stats.pull(1000 + i, false);
        }
        let b = observe_traffic(&r, "main", &stats, 1010);
        assert_eq!(b[0].value, 0.5);
        for i in 0..200 {
            stats.pull(1020 + i % 30, false);
        }
        assert!(
            observe_traffic(&r, "main", &stats, 1050).is_empty(),
            "10 of 220 is 4.5 %"
        );
    }
}
