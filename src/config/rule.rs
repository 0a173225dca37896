//! `[[rule]]`: what to alert on. The raw table as written, and the checked rule with its
//! kind, grouping and severity as enums.

use super::diagnose::{Errors, KeyPath};
use super::duration;
use super::names::unique_name;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

/// The audit event fields an `audit_match` filter can test.
pub const AUDIT_FIELDS: &[&str] = &[
    "action",
    "repository",
    "tag",
    "actor",
    "registry",
    "source",
    "address",
];

/// `[[rule]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    name: String,
    kind: String,
    registry: Option<String>,
    #[serde(default)]
    threshold: f64,
    #[serde(default = "default_window", deserialize_with = "duration::required")]
    window: Duration,
    #[serde(
        default = "zero",
        rename = "for",
        deserialize_with = "duration::required"
    )]
    for_: Duration,
    #[serde(default = "default_group_by")]
    group_by: String,
    #[serde(default = "default_min_pulls")]
    min_pulls: u64,
    #[serde(default = "default_interval", deserialize_with = "duration::required")]
    interval: Duration,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    summary: Option<String>,
    description: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    filter: BTreeMap<String, String>,
    #[serde(default)]
    known_actors: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default = "default_repeat", deserialize_with = "duration::required")]
    repeat_interval: Duration,
    #[serde(default = "default_true")]
    send_resolved: bool,
    repositories: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration::given")]
    grace: Option<Duration>,
}

/// One alert rule.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Names the rule in notifications, `/api/v1/alerts` and the `rule` label: keep it
    /// stable (states are stored under it).
    pub name: String,
    pub kind: RuleKind,
    /// Only this registry (one that exists); every registry when absent.
    pub registry: Option<String>,
    /// The rule fires when the value is **above** this: a count for `auth_failures`, a
    /// ratio (0.05 = 5 %) for `pull_failure_rate` and `storage_usage`, days for
    /// `storage_forecast` (fires when fewer days are left). Finite and ≥ 0.
    pub threshold: f64,
    /// The sliding window counted (`auth_failures` ≤ 1m, `pull_failure_rate` ≤ 5m).
    pub window: Duration,
    /// How long the condition must hold before the alert fires (pending until then).
    pub for_: Duration,
    /// `auth_failures`: what failed logins are counted per.
    pub group_by: GroupBy,
    /// `pull_failure_rate`: fewer pulls than this in the window never fire.
    pub min_pulls: u64,
    /// Gauge-driven rules (`storage_*`, `registry_down`) are checked this often; log-driven
    /// ones on every line that changes their count, and every second for windows sliding.
    pub interval: Duration,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    /// Templated (`{{ value }}`, `{{ registry }}`, `{{ labels.address }}`, …).
    pub summary: Option<String>,
    pub description: Option<String>,
    /// Further annotations, templated like `summary`.
    pub annotations: BTreeMap<String, String>,
    /// `audit_match`: the audit event's fields (from [`AUDIT_FIELDS`]) that must match
    /// (`*` globs), e.g. `{ action = "delete", repository = "prod/*" }`.
    pub filter: BTreeMap<String, String>,
    /// `audit_match`: only events whose actor is missing or not one of these (e.g. a push by
    /// anyone but the CI account).
    pub known_actors: Vec<String>,
    /// `[[channel]]` names notified (ones that exist).
    pub channels: Vec<String>,
    /// While firing, notify again this often.
    pub repeat_interval: Duration,
    pub send_resolved: bool,
    /// `unsigned_image`: the repositories watched (`*` globs, e.g. `prod/*`); every one when
    /// not given.
    pub repositories: Vec<String>,
    /// `unsigned_image`: how long after a tag is first seen at a digest a signature may still
    /// arrive before the tag counts as unsigned (a CI job signs right after it pushes).
    pub grace: Duration,
}

/// What a rule watches (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    AuthFailures,
    PullFailureRate,
    RegistryDown,
    StorageUsage,
    StorageForecast,
    AuditMatch,
    UnsignedImage,
}

impl RuleKind {
    pub const ALL: [RuleKind; 7] = [
        RuleKind::AuthFailures,
        RuleKind::PullFailureRate,
        RuleKind::RegistryDown,
        RuleKind::StorageUsage,
        RuleKind::StorageForecast,
        RuleKind::AuditMatch,
        RuleKind::UnsignedImage,
    ];

    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::AuthFailures => "auth_failures",
            RuleKind::PullFailureRate => "pull_failure_rate",
            RuleKind::RegistryDown => "registry_down",
            RuleKind::StorageUsage => "storage_usage",
            RuleKind::StorageForecast => "storage_forecast",
            RuleKind::AuditMatch => "audit_match",
            RuleKind::UnsignedImage => "unsigned_image",
        }
    }

    pub fn parse(s: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The longest `window` the traffic windows can count, in seconds.
    fn max_window_secs(self) -> Option<u64> {
        match self {
            RuleKind::AuthFailures => Some(60),
            RuleKind::PullFailureRate => Some(300),
            _ => None,
        }
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `auth_failures`: failed logins counted per `user`, per `address`, or all together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    User,
    Address,
    None,
}

impl GroupBy {
    fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "user" => GroupBy::User,
            "address" => GroupBy::Address,
            "none" => GroupBy::None,
            _ => return None,
        })
    }
}

/// A rule's `severity`: the `severity` label of its alerts (sent to Alertmanager as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Critical, Severity::Warning, Severity::Info];

    /// The label value (lower case, as written in the config).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn zero() -> Duration {
    Duration::ZERO
}
fn default_group_by() -> String {
    "address".into()
}
fn default_min_pulls() -> u64 {
    10
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_severity() -> String {
    "warning".into()
}
fn default_repeat() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_true() -> bool {
    true
}
fn default_grace() -> Duration {
    Duration::from_secs(600)
}

/// What a rule may refer to: the configured registry and channel names.
pub(super) struct Known<'a> {
    pub registries: &'a [&'a str],
    pub channels: &'a [&'a str],
}

/// Checks every `[[rule]]`.
pub(super) fn rules(
    raw: Vec<RawRule>,
    known: &Known<'_>,
    errs: &mut Errors<'_>,
) -> Option<Vec<RuleConfig>> {
    let mut names = HashSet::new();
    let checked: Vec<Option<RuleConfig>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = KeyPath::default().key("rule").index(i);
            rule(r, &at, known, &mut names, errs)
        })
        .collect();
    checked.into_iter().collect()
}

fn rule(
    r: RawRule,
    at: &KeyPath,
    known: &Known<'_>,
    names: &mut HashSet<String>,
    errs: &mut Errors<'_>,
) -> Option<RuleConfig> {
    if let Err(msg) = unique_name("rule", &r.name, names) {
        errs.at_key(at, "name", msg);
    }
    let kind = kind(&r.kind, at, errs);
    check_registry(r.registry.as_deref(), known.registries, at, errs);
    check_window(kind, r.window, at, errs);
    let group_by = group_by(kind, &r.group_by, at, errs);
    check_filter(kind, &r, at, errs);
    check_unsigned(kind, &r, at, errs);
    check_numbers(&r, at, errs);
    check_channels(&r.channels, known.channels, at, errs);
    let severity = severity(&r.severity, at, errs);
    Some(RuleConfig {
        name: r.name,
        kind: kind?,
        registry: r.registry,
        threshold: r.threshold,
        window: r.window,
        for_: r.for_,
        group_by: group_by?,
        min_pulls: r.min_pulls,
        interval: r.interval,
        severity: severity?,
        labels: r.labels,
        summary: r.summary,
        description: r.description,
        annotations: r.annotations,
        filter: r.filter,
        known_actors: r.known_actors,
        channels: r.channels,
        repeat_interval: r.repeat_interval,
        send_resolved: r.send_resolved,
        repositories: r.repositories.unwrap_or_else(|| vec!["*".into()]),
        grace: r.grace.unwrap_or_else(default_grace),
    })
}

fn kind(text: &str, at: &KeyPath, errs: &mut Errors<'_>) -> Option<RuleKind> {
    let kind = RuleKind::parse(text);
    if kind.is_none() {
        let names: Vec<&str> = RuleKind::ALL.iter().map(|k| k.as_str()).collect();
        errs.at_key(
            at,
            "kind",
            format!(
                "unknown rule kind {text:?}: expected one of {}",
                names.join(", ")
            ),
        );
    }
    kind
}

fn check_registry(
    registry: Option<&str>,
    registries: &[&str],
    at: &KeyPath,
    errs: &mut Errors<'_>,
) {
    if let Some(reg) = registry
        && !registries.contains(&reg)
    {
        errs.at_key(at, "registry", format!("no [[registry]] is named {reg:?}"));
    }
}

fn check_window(kind: Option<RuleKind>, window: Duration, at: &KeyPath, errs: &mut Errors<'_>) {
    let Some(kind) = kind else { return };
    if let Some(max) = kind.max_window_secs()
        && (window < Duration::from_secs(1) || window > Duration::from_secs(max))
    {
        errs.at_key(
            at,
            "window",
            format!("must be between 1s and {max}s for {kind}"),
        );
    }
}

/// `group_by` is only read by `auth_failures` rules, and only checked for them: another
/// kind with any value still loads, as it always has (it takes the default then).
fn group_by(
    kind: Option<RuleKind>,
    text: &str,
    at: &KeyPath,
    errs: &mut Errors<'_>,
) -> Option<GroupBy> {
    match GroupBy::parse(text) {
        Some(g) => Some(g),
        None if kind == Some(RuleKind::AuthFailures) => {
            errs.at_key(
                at,
                "group_by",
                format!("expected \"user\", \"address\" or \"none\", not {text:?}"),
            );
            None
        }
        None => Some(GroupBy::Address),
    }
}

fn check_filter(kind: Option<RuleKind>, r: &RawRule, at: &KeyPath, errs: &mut Errors<'_>) {
    for k in r.filter.keys() {
        if !AUDIT_FIELDS.contains(&k.as_str()) {
            errs.at_key(
                at,
                "filter",
                format!(
                    "unknown audit field {k:?}: expected one of {}",
                    AUDIT_FIELDS.join(", ")
                ),
            );
        }
    }
    if (!r.filter.is_empty() || !r.known_actors.is_empty()) && kind != Some(RuleKind::AuditMatch) {
        errs.at_key(
            at,
            "filter",
            "filter and known_actors are only used by kind = \"audit_match\"",
        );
    }
}

/// `repositories` and `grace` belong to `unsigned_image`; elsewhere they would be ignored,
/// which is worse than an error.
fn check_unsigned(kind: Option<RuleKind>, r: &RawRule, at: &KeyPath, errs: &mut Errors<'_>) {
    if kind.is_none() || kind == Some(RuleKind::UnsignedImage) {
        if r.repositories.as_ref().is_some_and(|v| v.is_empty()) {
            errs.at_key(
                at,
                "repositories",
                "an empty list watches nothing: give globs such as [\"prod/*\"], or leave it out for every repository",
            );
        }
        return;
    }
    for (key, set) in [
        ("repositories", r.repositories.is_some()),
        ("grace", r.grace.is_some()),
    ] {
        if set {
            errs.at_key(
                at,
                key,
                format!("{key} is only used by kind = \"unsigned_image\""),
            );
        }
    }
}

fn check_numbers(r: &RawRule, at: &KeyPath, errs: &mut Errors<'_>) {
    if r.interval < Duration::from_secs(1) {
        errs.at_key(at, "interval", "must be at least 1s");
    }
    if r.repeat_interval < Duration::from_secs(1) {
        errs.at_key(at, "repeat_interval", "must be at least 1s");
    }
    if !r.threshold.is_finite() || r.threshold < 0.0 {
        errs.at_key(at, "threshold", "must be a number ≥ 0");
    }
}

fn check_channels(channels: &[String], known: &[&str], at: &KeyPath, errs: &mut Errors<'_>) {
    for ch in channels {
        if !known.contains(&ch.as_str()) {
            errs.at_key(at, "channels", format!("no [[channel]] is named {ch:?}"));
        }
    }
}

fn severity(text: &str, at: &KeyPath, errs: &mut Errors<'_>) -> Option<Severity> {
    let severity = Severity::parse(text);
    if severity.is_none() {
        let names: Vec<&str> = Severity::ALL.iter().map(|s| s.as_str()).collect();
        errs.at_key(
            at,
            "severity",
            format!(
                "unknown severity {text:?}: expected one of {}",
                names.join(", ")
            ),
        );
    }
    severity
}

#[cfg(test)]
mod tests {
    use super::{GroupBy, RuleKind, Severity};
    use crate::config::{Origin, parse};
    use std::path::Path;

    const BASE: &str = "[[registry]]\nname = \"main\"\nurl = \"http://x\"\n";

    fn errors(extra: &str) -> Vec<String> {
        match parse(&format!("{BASE}{extra}"), Origin::Embedded, Path::new("/")) {
            Ok(_) => vec![],
            Err(e) => e.lines(),
        }
    }

    #[test]
    fn rules_and_channels_are_validated_with_positions() {
        let e = errors(
            "[[rule]]\nname = \"r\"\nkind = \"auth_failure\"\nchannels = [\"nope\"]\n\
             [[rule]]\nname = \"p\"\nkind = \"pull_failure_rate\"\nwindow = \"10m\"\n\
             [[channel]]\nname = \"m\"\nkind = \"email\"\nfrom = \"not an address\"\n\
             [[maintenance]]\nname = \"w\"\nschedule = \"0 0 2 * * SUN\"\nduration = \"1h\"\n",
        );
        let joined = e.join("\n");
        assert!(
            joined.contains("rule[0].kind: unknown rule kind \"auth_failure\""),
            "{joined}"
        );
        assert!(
            joined.contains("rule[0].channels: no [[channel]] is named \"nope\""),
            "{joined}"
        );
        assert!(
            joined.contains("rule[1].window: must be between 1s and 300s"),
            "{joined}"
        );
        assert!(joined.contains("channel[0].smtp_host"), "{joined}");
        assert!(joined.contains("channel[0].from"), "{joined}");
        assert!(joined.contains("channel[0].to"), "{joined}");
        assert!(
            joined.contains("maintenance[0].schedule: expected a 5-field"),
            "{joined}"
        );
    }

    #[test]
    fn severity_is_critical_warning_or_info() {
        let e = errors("[[rule]]\nname = \"r\"\nkind = \"registry_down\"\nseverity = \"high\"\n");
        assert_eq!(
            e,
            [
                "7:1 rule[0].severity: unknown severity \"high\": expected one of critical, warning, info"
            ]
        );
        let c = parse(
            &format!("{BASE}[[rule]]\nname = \"r\"\nkind = \"auth_failures\"\n"),
            Origin::Embedded,
            Path::new("/"),
        )
        .unwrap();
        let r = &c.rules[0];
        assert_eq!(
            (r.kind, r.group_by, r.severity),
            (RuleKind::AuthFailures, GroupBy::Address, Severity::Warning)
        );
        assert_eq!(r.severity.as_str(), "warning");
    }

    #[test]
    fn unsigned_image_takes_repositories_and_grace_and_nothing_else_does() {
        let c = parse(
            &format!("{BASE}[[rule]]\nname = \"u\"\nkind = \"unsigned_image\"\n"),
            Origin::Embedded,
            Path::new("/"),
        )
        .unwrap();
        let r = &c.rules[0];
        assert_eq!(r.kind, RuleKind::UnsignedImage);
        assert_eq!(r.repositories, ["*"], "every repository by default");
        assert_eq!(r.grace, std::time::Duration::from_secs(600));
        assert_eq!(
            errors("[[rule]]\nname = \"u\"\nkind = \"unsigned_image\"\nrepositories = []\n"),
            [
                "7:1 rule[0].repositories: an empty list watches nothing: give globs such as [\"prod/*\"], or leave it out for every repository"
            ]
        );
        assert_eq!(
            errors(
                "[[rule]]\nname = \"r\"\nkind = \"registry_down\"\nrepositories = [\"prod/*\"]\n"
            ),
            ["7:1 rule[0].repositories: repositories is only used by kind = \"unsigned_image\""]
        );
    }
}
