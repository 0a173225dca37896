//! `[[channel]]`: where notifications go. The raw table as written (every kind's keys in
//! one table), and the checked channel whose [`ChannelKind`] holds only its own kind's
//! settings: SMTP on email channels, the signing secret on webhooks, `resend_interval` on
//! Alertmanager.

use super::diagnose::{Errors, KeyPath};
use super::duration;
use super::names::unique_name;
use super::secret::{self, Read, Resolved, Secret, SecretFields};
use lettre::message::Mailbox;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[[channel]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    pub(super) name: String,
    pub(super) kind: String,
    url: Option<String>,
    secret: Option<Secret>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    /// `starttls` when absent.
    tls: Option<String>,
    tls_ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    from: Option<String>,
    to: Option<Vec<String>>,
    subject: Option<String>,
    body: Option<String>,
    /// 1m when absent.
    #[serde(default, deserialize_with = "duration::given")]
    resend_interval: Option<Duration>,
    #[serde(default = "default_timeout", deserialize_with = "duration::required")]
    timeout: Duration,
}

/// Where notifications go.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// Longest time one delivery attempt may take.
    pub timeout: Duration,
}

/// A channel's kind, with the settings only that kind has.
#[derive(Debug, Clone)]
pub enum ChannelKind {
    Email(EmailChannel),
    /// A JSON POST of the notification.
    Webhook {
        /// An http:// or https:// URL.
        url: String,
        /// HMAC-SHA256 key; the signature of the body is sent in
        /// `X-Regwatch-Signature: sha256=<hex>`.
        secret: Option<Resolved>,
    },
    Alertmanager {
        /// Its base URL (`http://host:9093`); regwatch posts to `/api/v2/alerts`.
        url: String,
        /// How often a firing alert is re-sent (Alertmanager resolves an alert it has not
        /// heard of for its `resolve_timeout`, 5m by default).
        resend_interval: Duration,
    },
    /// An incoming-webhook URL (it carries its token: never printed).
    Slack {
        url: String,
    },
    /// A Workflows webhook URL (it carries its token: never printed).
    Teams {
        url: String,
    },
}

impl ChannelKind {
    /// The name in the config.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Email(_) => "email",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Alertmanager { .. } => "alertmanager",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Teams { .. } => "teams",
        }
    }

    /// The URL posted to; `None` for email.
    pub fn url(&self) -> Option<&str> {
        match self {
            ChannelKind::Email(_) => None,
            ChannelKind::Webhook { url, .. }
            | ChannelKind::Alertmanager { url, .. }
            | ChannelKind::Slack { url }
            | ChannelKind::Teams { url } => Some(url),
        }
    }

    /// An Alertmanager channel's `resend_interval`; `None` for the other kinds.
    pub fn resend_interval(&self) -> Option<Duration> {
        match self {
            ChannelKind::Alertmanager {
                resend_interval, ..
            } => Some(*resend_interval),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An email channel: the SMTP server, the sender and the recipients.
#[derive(Debug, Clone)]
pub struct EmailChannel {
    pub smtp_host: String,
    /// Without it, the port of `tls` (587, 465 or 25).
    pub smtp_port: Option<u16>,
    pub tls: SmtpTls,
    /// A PEM CA certificate to trust for the SMTP server besides the public roots (an
    /// internal CA, a self-signed relay); resolved against the config file's directory.
    pub tls_ca_file: Option<PathBuf>,
    pub username: Option<String>,
    /// Only with a `username`.
    pub password: Option<Resolved>,
    pub from: Mailbox,
    /// At least one; each a valid mailbox, as written.
    pub to: Vec<String>,
    /// Subject and text body templates (an HTML part is built from the same values).
    pub subject: Option<String>,
    pub body: Option<String>,
}

/// How the SMTP connection is protected (`tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS, required (port 587); the default.
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
    /// Plain SMTP (port 25); only on a trusted network.
    None,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }
}

impl fmt::Display for SmtpTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel's `kind`, before the settings of that kind are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Webhook,
    Alertmanager,
    Slack,
    Teams,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Email,
        Kind::Webhook,
        Kind::Alertmanager,
        Kind::Slack,
        Kind::Teams,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Webhook => "webhook",
            Kind::Alertmanager => "alertmanager",
            Kind::Slack => "slack",
            Kind::Teams => "teams",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

fn default_resend() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Checks every `[[channel]]` and reads its secrets.
pub(super) fn channels(
    raw: Vec<RawChannel>,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<Vec<ChannelConfig>> {
    let mut names = HashSet::new();
    let checked: Vec<Option<ChannelConfig>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let at = KeyPath::default().key("channel").index(i);
            channel(c, &at, base, &mut names, errs)
        })
        .collect();
    checked.into_iter().collect()
}

/// The secrets of one channel, read whatever its kind (a wrong `*_file` is reported on any).
struct Secrets {
    secret: Read,
    password: Read,
}

fn channel(
    c: RawChannel,
    at: &KeyPath,
    base: &Path,
    names: &mut HashSet<String>,
    errs: &mut Errors<'_>,
) -> Option<ChannelConfig> {
    if let Err(msg) = unique_name("channel", &c.name, names) {
        errs.at_key(at, "name", msg);
    }
    let Some(kind) = Kind::parse(&c.kind) else {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        errs.at_key(
            at,
            "kind",
            format!(
                "unknown channel kind {:?}: expected one of {}",
                c.kind,
                names.join(", ")
            ),
        );
        return None;
    };
    let secrets = read_secrets(&c, at, base, errs);
    if c.timeout.is_zero() {
        errs.at_key(at, "timeout", "must be greater than 0");
    }
    if c.resend_interval
        .is_some_and(|r| r < Duration::from_secs(1))
    {
        errs.at_key(at, "resend_interval", "must be at least 1s");
    }
    let signed = secrets.secret.is_set();
    let settings = match kind {
        Kind::Email => email(&c, secrets.password, at, base, errs).map(ChannelKind::Email),
        Kind::Webhook => url(&c, kind, at, errs)
            .zip(secrets.secret.checked())
            .map(|(url, secret)| ChannelKind::Webhook { url, secret }),
        Kind::Alertmanager => url(&c, kind, at, errs).map(|url| ChannelKind::Alertmanager {
            url,
            resend_interval: c.resend_interval.unwrap_or_else(default_resend),
        }),
        Kind::Slack => url(&c, kind, at, errs).map(|url| ChannelKind::Slack { url }),
        Kind::Teams => url(&c, kind, at, errs).map(|url| ChannelKind::Teams { url }),
    };
    if signed && kind != Kind::Webhook {
        errs.at_key(at, "secret", "only webhook channels sign their requests");
    }
    check_other_kinds_keys(&c, kind, at, errs);
    Some(ChannelConfig {
        name: c.name,
        kind: settings?,
        timeout: c.timeout,
    })
}

fn read_secrets(c: &RawChannel, at: &KeyPath, base: &Path, errs: &mut Errors<'_>) -> Secrets {
    let secret = SecretFields {
        inline: c.secret.as_ref(),
        file: c.secret_file.as_deref(),
        env: c.secret_env.as_deref(),
    };
    let secret = secret::read(errs, at, "secret", secret, base);
    let password = SecretFields {
        inline: c.password.as_ref(),
        file: c.password_file.as_deref(),
        env: c.password_env.as_deref(),
    };
    let password = secret::read(errs, at, "password", password, base);
    Secrets { secret, password }
}

/// An email channel's settings; `password`: as read by [`read_secrets`].
fn email(
    c: &RawChannel,
    password: Read,
    at: &KeyPath,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<EmailChannel> {
    if c.smtp_host.is_none() {
        errs.at_key(at, "smtp_host", "an email channel needs smtp_host");
    }
    let from = c.from.as_deref().and_then(|f| f.parse::<Mailbox>().ok());
    if from.is_none() {
        errs.at_key(
            at,
            "from",
            format!(
                "expected a sender address such as \"regwatch@example.com\", not {:?}",
                c.from.as_deref().unwrap_or("")
            ),
        );
    }
    let to = c.to.clone().unwrap_or_default();
    check_recipients(&to, at, errs);
    let tls = smtp_tls(c.tls.as_deref().unwrap_or("starttls"), at, errs);
    let tls_ca_file = c.tls_ca_file.as_ref().map(|ca| base.join(ca));
    if let Some(path) = &tls_ca_file {
        check_ca_file(path, at, errs);
    }
    if password.is_set() && c.username.is_none() {
        errs.at_key(at, "username", "a password is set but no username");
    }
    Some(EmailChannel {
        smtp_host: c.smtp_host.clone()?,
        smtp_port: c.smtp_port,
        tls: tls?,
        tls_ca_file,
        username: c.username.clone(),
        password: password.checked()?,
        from: from?,
        to,
        subject: c.subject.clone(),
        body: c.body.clone(),
    })
}

fn check_recipients(to: &[String], at: &KeyPath, errs: &mut Errors<'_>) {
    if to.is_empty() {
        errs.at_key(at, "to", "an email channel needs at least one recipient");
    }
    for t in to {
        if t.parse::<Mailbox>().is_err() {
            errs.at_key(at, "to", format!("invalid recipient {t:?}"));
        }
    }
}

fn smtp_tls(text: &str, at: &KeyPath, errs: &mut Errors<'_>) -> Option<SmtpTls> {
    Some(match text {
        "starttls" => SmtpTls::Starttls,
        "tls" => SmtpTls::Tls,
        "none" => SmtpTls::None,
        other => {
            errs.at_key(
                at,
                "tls",
                format!("expected \"starttls\", \"tls\" or \"none\", not {other:?}"),
            );
            return None;
        }
    })
}

fn check_ca_file(path: &Path, at: &KeyPath, errs: &mut Errors<'_>) {
    match std::fs::read(path) {
        Ok(pem) if lettre::transport::smtp::client::Certificate::from_pem(&pem).is_ok() => {}
        Ok(_) => errs.at_key(
            at,
            "tls_ca_file",
            format!("{} is not a PEM certificate", path.display()),
        ),
        Err(e) => errs.at_key(
            at,
            "tls_ca_file",
            format!("cannot read {}: {e}", path.display()),
        ),
    }
}

/// The `url` of a channel that posts (every kind but email).
fn url(c: &RawChannel, kind: Kind, at: &KeyPath, errs: &mut Errors<'_>) -> Option<String> {
    let Some(url) = &c.url else {
        errs.at_key(at, "url", format!("a {} channel needs url", kind.as_str()));
        return None;
    };
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(url.clone()),
        _ => {
            errs.at_key(
                at,
                "url",
                format!("expected an http:// or https:// URL, not {url:?}"),
            );
            None
        }
    }
}

/// Keys of another kind's channel: an error each (they used to be ignored). `secret` on
/// a non-webhook channel has its own message (see [`channel`]).
fn check_other_kinds_keys(c: &RawChannel, kind: Kind, at: &KeyPath, errs: &mut Errors<'_>) {
    if kind == Kind::Email {
        if c.url.is_some() {
            errs.at_key(at, "url", "url is not used by email channels");
        }
    } else {
        let email_keys = [
            ("smtp_host", c.smtp_host.is_some()),
            ("smtp_port", c.smtp_port.is_some()),
            ("tls", c.tls.is_some()),
            ("tls_ca_file", c.tls_ca_file.is_some()),
            ("username", c.username.is_some()),
            ("password", c.password.is_some()),
            ("password_file", c.password_file.is_some()),
            ("password_env", c.password_env.is_some()),
            ("from", c.from.is_some()),
            ("to", c.to.is_some()),
            ("subject", c.subject.is_some()),
            ("body", c.body.is_some()),
        ];
        for (key, _) in email_keys.iter().filter(|(_, given)| *given) {
            errs.at_key(at, key, format!("{key} is only used by email channels"));
        }
    }
    if kind != Kind::Alertmanager && c.resend_interval.is_some() {
        errs.at_key(
            at,
            "resend_interval",
            "resend_interval is only used by alertmanager channels",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{ChannelKind, SmtpTls};
    use crate::config::{Config, Origin, parse};
    use std::path::Path;
    use std::time::Duration;

    const BASE: &str = "[[registry]]\nname = \"main\"\nurl = \"http://x\"\n";

    fn load(extra: &str) -> Result<Config, Vec<String>> {
        parse(&format!("{BASE}{extra}"), Origin::Embedded, Path::new("/")).map_err(|e| e.lines())
    }

    #[test]
    fn each_kind_gets_its_own_settings() {
        let c = load(
            "[[channel]]\nname = \"m\"\nkind = \"email\"\nsmtp_host = \"smtp.x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n\
             [[channel]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://am:9093\"\n\
             [[channel]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"http://h\"\nsecret = \"k\"\n",
        )
        .unwrap();
        let ChannelKind::Email(e) = &c.channels[0].kind else {
            panic!("{:?}", c.channels[0].kind)
        };
        assert_eq!((e.tls, e.smtp_port), (SmtpTls::Starttls, None));
        assert_eq!(e.to, ["d@e.f"]);
        assert_eq!(
            c.channels[1].kind.resend_interval(),
            Some(Duration::from_secs(60))
        );
        let ChannelKind::Webhook { url, secret } = &c.channels[2].kind else {
            panic!("{:?}", c.channels[2].kind)
        };
        assert_eq!(url, "http://h");
        assert_eq!(secret.as_ref().unwrap().value.expose(), "k");
        assert_eq!(c.channels[2].timeout, Duration::from_secs(10));
    }

    #[test]
    fn keys_of_other_kinds_are_located_errors() {
        let e = load(
            "[[channel]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"http://h\"\nsmtp_host = \"x\"\nresend_interval = \"5s\"\n\
             [[channel]]\nname = \"m\"\nkind = \"email\"\nsmtp_host = \"smtp.x\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nurl = \"http://u\"\n\
             [[channel]]\nname = \"s\"\nkind = \"slack\"\nurl = \"http://s\"\nsecret = \"k\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            [
                "8:1 channel[0].smtp_host: smtp_host is only used by email channels",
                "9:1 channel[0].resend_interval: resend_interval is only used by alertmanager channels",
                "16:1 channel[1].url: url is not used by email channels",
                "21:1 channel[2].secret: only webhook channels sign their requests",
            ]
        );
    }
}
