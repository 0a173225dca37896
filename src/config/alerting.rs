//! `[[rule]]` and `[[channel]]`: what to alert on and where to send it.

use crate::config::diagnose::{Diagnostic, KeyPath, Locator};
use crate::config::duration;
use crate::config::secret::{self, Secret, SecretSource};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The rule kinds regwatch knows.
pub const RULE_KINDS: &[&str] = &[
    "auth_failures",
    "pull_failure_rate",
    "registry_down",
    "storage_usage",
    "storage_forecast",
    "audit_match",
];

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

pub const CHANNEL_KINDS: &[&str] = &["email", "webhook", "alertmanager", "slack", "teams"];

/// One alert rule (`[[rule]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in notifications, `/api/v1/alerts` and the `rule` label: keep it stable
    /// (states are stored under it).
    pub name: String,
    pub kind: String,
    /// Only this registry; every registry when absent.
    pub registry: Option<String>,
    /// The rule fires when the value is **above** this: a count for `auth_failures`, a
    /// ratio (0.05 = 5 %) for `pull_failure_rate` and `storage_usage`, days for
    /// `storage_forecast` (fires when fewer days are left).
    #[serde(default)]
    pub threshold: f64,
    /// The sliding window counted (`auth_failures` ≤ 1m, `pull_failure_rate` ≤ 5m).
    #[serde(default = "default_window", deserialize_with = "duration::required")]
    pub window: Duration,
    /// How long the condition must hold before the alert fires (pending until then).
    #[serde(
        default = "zero",
        rename = "for",
        deserialize_with = "duration::required"
    )]
    pub for_: Duration,
    /// `auth_failures`: count per `user`, per `address`, or `none` (all together).
    #[serde(default = "default_group_by")]
    pub group_by: String,
    /// `pull_failure_rate`: fewer pulls than this in the window never fire.
    #[serde(default = "default_min_pulls")]
    pub min_pulls: u64,
    /// Gauge-driven rules (`storage_*`, `registry_down`) are checked this often; log-driven
    /// ones on every line that changes their count, and every second for windows sliding.
    #[serde(default = "default_interval", deserialize_with = "duration::required")]
    pub interval: Duration,
    #[serde(default = "default_severity")]
    pub severity: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Templated (`{{ value }}`, `{{ registry }}`, `{{ labels.address }}`, …).
    pub summary: Option<String>,
    pub description: Option<String>,
    /// Further annotations, templated like `summary`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `audit_match`: the audit event's fields that must match (`action`, `repository`,
    /// `tag`, `actor`, `registry`, `source`, `address`; `*` globs), e.g.
    /// `{ action = "delete", repository = "prod/*" }`.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// `audit_match`: only events whose actor is missing or not one of these (e.g. a push by
    /// anyone but the CI account).
    #[serde(default)]
    pub known_actors: Vec<String>,
    /// `[[channel]]` names notified.
    #[serde(default)]
    pub channels: Vec<String>,
    /// While firing, notify again this often.
    #[serde(default = "default_repeat", deserialize_with = "duration::required")]
    pub repeat_interval: Duration,
    #[serde(default = "default_true")]
    pub send_resolved: bool,
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

/// Where notifications go (`[[channel]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    /// email, webhook, alertmanager, slack, teams.
    pub kind: String,
    /// webhook, slack, teams: the URL posted to; alertmanager: its base URL
    /// (`http://host:9093`; regwatch posts to `/api/v2/alerts`).
    pub url: Option<String>,
    /// webhook: HMAC-SHA256 key; the signature of the body is sent in
    /// `X-Regwatch-Signature: sha256=<hex>`.
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    #[serde(skip)]
    pub secret_source: Option<SecretSource>,
    /// email: the SMTP server.
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    /// email: `starttls` (default; port 587), `tls` (implicit TLS; port 465) or `none`
    /// (port 25; only on a trusted network).
    #[serde(default = "default_tls")]
    pub tls: String,
    /// email: a PEM CA certificate to trust for the SMTP server besides the public roots
    /// (an internal CA, a self-signed relay).
    pub tls_ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    #[serde(skip)]
    pub password_source: Option<SecretSource>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// email: subject and text body templates (an HTML part is built from the same values).
    pub subject: Option<String>,
    pub body: Option<String>,
    /// alertmanager: how often a firing alert is re-sent (Alertmanager resolves an alert it
    /// has not heard of for its `resolve_timeout`, 5m by default).
    #[serde(default = "default_resend", deserialize_with = "duration::required")]
    pub resend_interval: Duration,
    /// Longest time one delivery attempt may take.
    #[serde(default = "default_timeout", deserialize_with = "duration::required")]
    pub timeout: Duration,
}

fn default_resend() -> Duration {
    Duration::from_secs(60)
}
fn default_tls() -> String {
    "starttls".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A recurring maintenance window (`[[maintenance]]`): notifications for matching alerts
/// are held back while it is open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    pub name: String,
    /// When it opens: a 5-field crontab expression in UTC, e.g. "0 2 * * SUN".
    pub schedule: String,
    /// How long it stays open.
    #[serde(deserialize_with = "duration::required")]
    pub duration: Duration,
    /// Labels the alerts must have (`alertname` = the rule, `registry`, `address`, …;
    /// `*` globs); none: every alert.
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    #[serde(skip)]
    pub parsed: Option<croner::Cron>,
}

impl MaintenanceConfig {
    pub fn window(&self) -> Option<crate::alerting::silence::Window> {
        Some(crate::alerting::silence::Window {
            name: self.name.clone(),
            schedule: self.parsed.clone()?,
            duration: self.duration,
            matchers: self.matchers.clone(),
        })
    }
}

/// Validates rules, channels and maintenance windows, reads channel secrets.
/// `registries`: the configured names.
pub fn validate(
    rules: &mut [RuleConfig],
    channels: &mut [ChannelConfig],
    maintenance: &mut [MaintenanceConfig],
    registries: &[&str],
    base: &Path,
    loc: &Locator<'_>,
) -> Vec<Diagnostic> {
    let mut errs = Vec::new();
    let mut err = |path: KeyPath, msg: String| errs.push(loc.at_path(&path, msg));
    let mut channel_names = HashSet::new();
    for (i, c) in channels.iter_mut().enumerate() {
        let at = KeyPath::default().key("channel").index(i);
        if let Err(msg) = crate::config::unique_name("channel", &c.name, &mut channel_names) {
            err(at.clone().key("name"), msg);
        }
        if !CHANNEL_KINDS.contains(&c.kind.as_str()) {
            err(
                at.clone().key("kind"),
                format!(
                    "unknown channel kind {:?}: expected one of {}",
                    c.kind,
                    CHANNEL_KINDS.join(", ")
                ),
            );
            continue;
        }
        if let Err((suffix, msg)) = secret::resolve_into(
            &mut c.secret,
            &mut c.secret_source,
            c.secret_file.as_deref(),
            c.secret_env.as_deref(),
            base,
        ) {
            err(at.clone().key(&format!("secret{suffix}")), msg);
        }
        if let Err((suffix, msg)) = secret::resolve_into(
            &mut c.password,
            &mut c.password_source,
            c.password_file.as_deref(),
            c.password_env.as_deref(),
            base,
        ) {
            err(at.clone().key(&format!("password{suffix}")), msg);
        }
        if c.timeout.is_zero() {
            err(at.clone().key("timeout"), "must be greater than 0".into());
        }
        if c.resend_interval < Duration::from_secs(1) {
            err(
                at.clone().key("resend_interval"),
                "must be at least 1s".into(),
            );
        }
        match c.kind.as_str() {
            "email" => {
                if c.smtp_host.is_none() {
                    err(
                        at.clone().key("smtp_host"),
                        "an email channel needs smtp_host".into(),
                    );
                }
                if c.from
                    .as_deref()
                    .and_then(|f| f.parse::<lettre::message::Mailbox>().ok())
                    .is_none()
                {
                    err(
                        at.clone().key("from"),
                        format!(
                            "expected a sender address such as \"regwatch@example.com\", not {:?}",
                            c.from.as_deref().unwrap_or("")
                        ),
                    );
                }
                if c.to.is_empty() {
                    err(
                        at.clone().key("to"),
                        "an email channel needs at least one recipient".into(),
                    );
                }
                for t in &c.to {
                    if t.parse::<lettre::message::Mailbox>().is_err() {
                        err(at.clone().key("to"), format!("invalid recipient {t:?}"));
                    }
                }
                if !matches!(c.tls.as_str(), "starttls" | "tls" | "none") {
                    err(
                        at.clone().key("tls"),
                        format!(
                            "expected \"starttls\", \"tls\" or \"none\", not {:?}",
                            c.tls
                        ),
                    );
                }
                if let Some(ca) = &c.tls_ca_file {
                    let path = base.join(ca);
                    match std::fs::read(&path) {
                        Ok(pem)
                            if lettre::transport::smtp::client::Certificate::from_pem(&pem)
                                .is_ok() => {}
                        Ok(_) => err(
                            at.clone().key("tls_ca_file"),
                            format!("{} is not a PEM certificate", path.display()),
                        ),
                        Err(e) => err(
                            at.clone().key("tls_ca_file"),
                            format!("cannot read {}: {e}", path.display()),
                        ),
                    }
                    c.tls_ca_file = Some(path);
                }
                if c.password.is_some() && c.username.is_none() {
                    err(
                        at.clone().key("username"),
                        "a password is set but no username".into(),
                    );
                }
            }
            _ => match c.url.as_deref().map(reqwest::Url::parse) {
                Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => {}
                Some(_) => err(
                    at.clone().key("url"),
                    format!(
                        "expected an http:// or https:// URL, not {:?}",
                        c.url.as_deref().unwrap_or("")
                    ),
                ),
                None => err(
                    at.clone().key("url"),
                    format!("a {} channel needs url", c.kind),
                ),
            },
        }
        if c.secret.is_some() && c.kind != "webhook" {
            err(
                at.clone().key("secret"),
                "only webhook channels sign their requests".into(),
            );
        }
    }

    for (i, m) in maintenance.iter_mut().enumerate() {
        let at = KeyPath::default().key("maintenance").index(i);
        match crate::config::schedule::parse(&m.schedule) {
            Ok(c) => m.parsed = Some(c),
            Err(e) => err(at.clone().key("schedule"), e),
        }
        if m.duration.is_zero() {
            err(at.clone().key("duration"), "must be greater than 0".into());
        }
    }

    let mut rule_names = HashSet::new();
    for (i, r) in rules.iter_mut().enumerate() {
        let at = KeyPath::default().key("rule").index(i);
        if let Err(msg) = crate::config::unique_name("rule", &r.name, &mut rule_names) {
            err(at.clone().key("name"), msg);
        }
        if !RULE_KINDS.contains(&r.kind.as_str()) {
            err(
                at.clone().key("kind"),
                format!(
                    "unknown rule kind {:?}: expected one of {}",
                    r.kind,
                    RULE_KINDS.join(", ")
                ),
            );
        }
        if let Some(reg) = &r.registry
            && !registries.contains(&reg.as_str())
        {
            err(
                at.clone().key("registry"),
                format!("no [[registry]] is named {reg:?}"),
            );
        }
        let max_window = match r.kind.as_str() {
            "auth_failures" => Some(60),
            "pull_failure_rate" => Some(300),
            _ => None,
        };
        if let Some(max) = max_window
            && (r.window < Duration::from_secs(1) || r.window > Duration::from_secs(max))
        {
            err(
                at.clone().key("window"),
                format!("must be between 1s and {max}s for {}", r.kind),
            );
        }
        if r.kind == "auth_failures" && !matches!(r.group_by.as_str(), "user" | "address" | "none")
        {
            err(
                at.clone().key("group_by"),
                format!(
                    "expected \"user\", \"address\" or \"none\", not {:?}",
                    r.group_by
                ),
            );
        }
        for k in r.filter.keys() {
            if !AUDIT_FIELDS.contains(&k.as_str()) {
                err(
                    at.clone().key("filter"),
                    format!(
                        "unknown audit field {k:?}: expected one of {}",
                        AUDIT_FIELDS.join(", ")
                    ),
                );
            }
        }
        if (!r.filter.is_empty() || !r.known_actors.is_empty()) && r.kind != "audit_match" {
            err(
                at.clone().key("filter"),
                "filter and known_actors are only used by kind = \"audit_match\"".into(),
            );
        }
        if r.interval < Duration::from_secs(1) {
            err(at.clone().key("interval"), "must be at least 1s".into());
        }
        if r.repeat_interval < Duration::from_secs(1) {
            err(
                at.clone().key("repeat_interval"),
                "must be at least 1s".into(),
            );
        }
        if !r.threshold.is_finite() || r.threshold < 0.0 {
            err(at.clone().key("threshold"), "must be a number ≥ 0".into());
        }
        for ch in &r.channels {
            if !channels.iter().any(|c| &c.name == ch) {
                err(
                    at.clone().key("channels"),
                    format!("no [[channel]] is named {ch:?}"),
                );
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use crate::config::{Origin, parse};
    use std::path::Path;

    const BASE: &str = "[[registry]]\nname = \"main\"\nurl = \"http://x\"\n";

    fn errors(extra: &str) -> Vec<String> {
        match parse(&format!("{BASE}{extra}"), Origin::Embedded, Path::new("/")) {
            Ok(_) => vec![],
            Err(e) => e
                .diagnostics
                .iter()
                .map(|d| format!("{}:{} {}: {}", d.line, d.column, d.key, d.message))
                .collect(),
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
    fn check_never_prints_webhook_urls_or_secrets() {
        let c = parse(
            &format!(
                "{BASE}[[channel]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/SECRETTOKEN\"\n\
                 [[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://h.example/x\"\nsecret = \"hmac-key\"\n"
            ),
            Origin::Embedded,
            Path::new("/"),
        )
        .unwrap();
        let s = c.summary();
        assert!(
            s.contains("chat         slack https://hooks.slack.com/…"),
            "{s}"
        );
        assert!(!s.contains("SECRETTOKEN"), "{s}");
        assert!(!s.contains("hmac-key"), "{s}");
        assert!(!format!("{c:?}").contains("hmac-key"));
    }
}
