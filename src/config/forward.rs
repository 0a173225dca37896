//! `[[forward]]`: shipping the audit trail to a SIEM. The raw table as written (every kind's
//! keys in one table) and the checked forwarder: its [`Selection`] (the audit filters, as
//! lists), and a [`ForwardKind`] holding only its own kind's settings — RFC 5424 syslog
//! over TCP or TLS, or CloudEvents over HTTP.

use super::diagnose::{Errors, KeyPath};
use super::duration;
use super::names::unique_name;
use super::secret::{self, Resolved, Secret, SecretFields};
use crate::model::event::Action;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[[forward]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    name: String,
    kind: String,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    registries: Vec<String>,
    #[serde(default = "default_batch_size")]
    batch_size: u64,
    #[serde(default = "default_timeout", deserialize_with = "duration::required")]
    timeout: Duration,
    address: Option<String>,
    transport: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_server_name: Option<String>,
    facility: Option<String>,
    app_name: Option<String>,
    hostname: Option<String>,
    enterprise_number: Option<u32>,
    url: Option<String>,
    source: Option<String>,
    secret: Option<Secret>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
}

/// A checked `[[forward]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// Names the forwarder in metrics, logs and its stored cursor.
    pub name: String,
    pub selection: Selection,
    /// Most rows sent in one batch (one write, one POST), and so the most a crash between
    /// a send and the cursor commit can repeat.
    pub batch_size: usize,
    /// Longest time one connect or send may take.
    pub timeout: Duration,
    pub kind: ForwardKind,
}

/// Which audit rows are forwarded: every list narrows, an empty one means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub actions: Vec<Action>,
    /// Globs in the syntax of the audit filters (`prod/*`).
    pub repositories: Vec<String>,
    /// Configured registry names.
    pub registries: Vec<String>,
}

/// A forwarder's kind, with the settings only that kind has.
#[derive(Debug, Clone, PartialEq)]
pub enum ForwardKind {
    Syslog(SyslogForward),
    CloudEvents(CloudEventsForward),
}

impl ForwardKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ForwardKind::Syslog(_) => "syslog",
            ForwardKind::CloudEvents(_) => "cloudevents",
        }
    }
}

/// RFC 5424 messages, octet-counted (RFC 6587) on a TCP or TLS (RFC 5425) stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogForward {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// Only with `transport = "tls"`.
    pub tls: Option<TlsSettings>,
    /// 0-23 (RFC 5424 table 1); `local0` (16) by default.
    pub facility: u8,
    /// APP-NAME; `regwatch` by default.
    pub app_name: String,
    /// HOSTNAME; the machine's host name when absent.
    pub hostname: Option<String>,
    /// The private enterprise number of the SD-ID `regwatch@<number>`.
    pub enterprise_number: u32,
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
}

/// The files of a TLS syslog connection, resolved against the config's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM CA certificates to trust; the public web roots without it.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its key (PEM), for receivers that require one.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The name the server certificate must carry; the host of `address` by default.
    pub server_name: Option<String>,
}

/// CloudEvents 1.0, structured JSON, POSTed in batches.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEventsForward {
    pub url: String,
    /// The events' `source` attribute.
    pub source: String,
    /// HMAC-SHA256 key; the body's signature goes in `X-Regwatch-Signature`, as webhooks.
    pub secret: Option<Resolved>,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// RFC 5424's facility names, in code order.
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// IANA's example enterprise number (RFC 5612), until a site sets its own.
pub const DEFAULT_ENTERPRISE_NUMBER: u32 = 32473;

fn default_batch_size() -> u64 {
    100
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Checks every `[[forward]]`; `registries` are the configured registry names.
pub(super) fn forwards(
    raw: Vec<RawForward>,
    registries: &[&str],
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<Vec<ForwardConfig>> {
    let mut names = HashSet::new();
    let checked: Vec<Option<ForwardConfig>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = KeyPath::default().key("forward").index(i);
            forward(f, &at, registries, base, &mut names, errs)
        })
        .collect();
    checked.into_iter().collect()
}

fn forward(
    f: RawForward,
    at: &KeyPath,
    registries: &[&str],
    base: &Path,
    names: &mut HashSet<String>,
    errs: &mut Errors<'_>,
) -> Option<ForwardConfig> {
    if let Err(msg) = unique_name("forward", &f.name, names) {
        errs.at_key(at, "name", msg);
    }
    let selection = selection(&f, at, registries, errs);
    if !(1..=10_000).contains(&f.batch_size) {
        errs.at_key(at, "batch_size", "must be between 1 and 10000");
    }
    if f.timeout.is_zero() {
        errs.at_key(at, "timeout", "must be greater than 0");
    }
    let kind = match f.kind.as_str() {
        "syslog" => {
            check_unused(&f, at, &SYSLOG_ONLY_NOT, "syslog", errs);
            syslog(&f, at, base, errs).map(ForwardKind::Syslog)
        }
        "cloudevents" => {
            check_unused(&f, at, &CLOUDEVENTS_ONLY_NOT, "cloudevents", errs);
            cloudevents(&f, at, base, errs).map(ForwardKind::CloudEvents)
        }
        other => {
            errs.at_key(
                at,
                "kind",
                format!("unknown forward kind {other:?}: expected syslog or cloudevents"),
            );
            None
        }
    };
    Some(ForwardConfig {
        name: f.name,
        selection: selection?,
        batch_size: f.batch_size as usize,
        timeout: f.timeout,
        kind: kind?,
    })
}

fn selection(
    f: &RawForward,
    at: &KeyPath,
    registries: &[&str],
    errs: &mut Errors<'_>,
) -> Option<Selection> {
    let mut ok = true;
    let mut actions = Vec::new();
    for (j, a) in f.actions.iter().enumerate() {
        match Action::parse(a) {
            Some(a) => actions.push(a),
            None => {
                ok = false;
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                errs.at(
                    &at.clone().key("actions").index(j),
                    format!("unknown action {a:?}: expected one of {}", known.join(", ")),
                );
            }
        }
    }
    for (j, r) in f.registries.iter().enumerate() {
        if !registries.contains(&r.as_str()) {
            ok = false;
            errs.at(
                &at.clone().key("registries").index(j),
                format!("no [[registry]] is named {r:?}"),
            );
        }
    }
    for (j, r) in f.repositories.iter().enumerate() {
        if r.is_empty() {
            ok = false;
            errs.at(
                &at.clone().key("repositories").index(j),
                "an empty repository pattern matches nothing",
            );
        }
    }
    ok.then(|| Selection {
        actions,
        repositories: f.repositories.clone(),
        registries: f.registries.clone(),
    })
}

/// The keys each kind does not use (checked against [`given_keys`]).
const SYSLOG_ONLY_NOT: [&str; 5] = ["url", "source", "secret", "secret_file", "secret_env"];
const CLOUDEVENTS_ONLY_NOT: [&str; 10] = [
    "address",
    "transport",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_server_name",
    "facility",
    "app_name",
    "hostname",
    "enterprise_number",
];

fn given_keys(f: &RawForward) -> [(&'static str, bool); 15] {
    [
        ("url", f.url.is_some()),
        ("source", f.source.is_some()),
        ("secret", f.secret.is_some()),
        ("secret_file", f.secret_file.is_some()),
        ("secret_env", f.secret_env.is_some()),
        ("address", f.address.is_some()),
        ("transport", f.transport.is_some()),
        ("tls_ca_file", f.tls_ca_file.is_some()),
        ("tls_cert_file", f.tls_cert_file.is_some()),
        ("tls_key_file", f.tls_key_file.is_some()),
        ("tls_server_name", f.tls_server_name.is_some()),
        ("facility", f.facility.is_some()),
        ("app_name", f.app_name.is_some()),
        ("hostname", f.hostname.is_some()),
        ("enterprise_number", f.enterprise_number.is_some()),
    ]
}

/// A key of the other kind: a located error rather than silently ignored.
fn check_unused(f: &RawForward, at: &KeyPath, unused: &[&str], kind: &str, errs: &mut Errors<'_>) {
    for (key, given) in given_keys(f) {
        if given && unused.contains(&key) {
            errs.at_key(at, key, format!("{key} is not used by {kind} forwarders"));
        }
    }
}

fn syslog(
    f: &RawForward,
    at: &KeyPath,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<SyslogForward> {
    let address = match f.address.as_deref().map(host_port) {
        Some(Ok(hp)) => Some(hp),
        Some(Err(msg)) => {
            errs.at_key(at, "address", msg);
            None
        }
        None => {
            errs.at_key(
                at,
                "address",
                "a syslog forwarder needs address = \"host:port\"",
            );
            None
        }
    };
    let transport = match f.transport.as_deref().unwrap_or("tcp") {
        "tcp" => Some(Transport::Tcp),
        "tls" => Some(Transport::Tls),
        other => {
            errs.at_key(
                at,
                "transport",
                format!("expected \"tcp\" or \"tls\", not {other:?}"),
            );
            None
        }
    };
    let tls = tls_settings(f, transport, at, base, errs);
    let facility = facility(f.facility.as_deref(), at, errs);
    let app_name = f.app_name.clone().unwrap_or_else(|| "regwatch".into());
    if !header_field(&app_name, 48) {
        errs.at_key(
            at,
            "app_name",
            "expected 1-48 printable ASCII characters without spaces (RFC 5424 APP-NAME)",
        );
    }
    if let Some(h) = &f.hostname
        && !header_field(h, 255)
    {
        errs.at_key(
            at,
            "hostname",
            "expected 1-255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)",
        );
    }
    let (host, port) = address?;
    Some(SyslogForward {
        host,
        port,
        transport: transport?,
        tls: tls?,
        facility: facility?,
        app_name,
        hostname: f.hostname.clone(),
        enterprise_number: f.enterprise_number.unwrap_or(DEFAULT_ENTERPRISE_NUMBER),
    })
}

/// `host:port` (an IPv6 host in brackets).
fn host_port(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("expected \"host:port\", such as \"siem.example.com:6514\", not {text:?}");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// RFC 5424 header fields: PRINTUSASCII (33-126), at most `max` characters.
fn header_field(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b))
}

fn facility(name: Option<&str>, at: &KeyPath, errs: &mut Errors<'_>) -> Option<u8> {
    let name = name.unwrap_or("local0");
    let code = FACILITIES.iter().position(|f| *f == name);
    if code.is_none() {
        errs.at_key(
            at,
            "facility",
            format!(
                "unknown facility {name:?}: expected one of {}",
                FACILITIES.join(", ")
            ),
        );
    }
    code.map(|c| c as u8)
}

/// `Some(None)` for TCP; the TLS files checked now, so a wrong path is a located error at
/// start-up rather than a connection that never comes up.
fn tls_settings(
    f: &RawForward,
    transport: Option<Transport>,
    at: &KeyPath,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<Option<TlsSettings>> {
    let tls_keys = [
        ("tls_ca_file", f.tls_ca_file.is_some()),
        ("tls_cert_file", f.tls_cert_file.is_some()),
        ("tls_key_file", f.tls_key_file.is_some()),
        ("tls_server_name", f.tls_server_name.is_some()),
    ];
    if transport != Some(Transport::Tls) {
        if transport == Some(Transport::Tcp) {
            for (key, _) in tls_keys.iter().filter(|(_, given)| *given) {
                errs.at_key(at, key, format!("{key} needs transport = \"tls\""));
            }
        }
        return Some(None);
    }
    let mut ok = true;
    let mut readable = |key: &str, path: &Option<PathBuf>, marker: &str| -> Option<PathBuf> {
        let path = base.join(path.as_ref()?);
        match std::fs::read_to_string(&path) {
            Ok(text) if text.contains(marker) => {}
            Ok(_) => {
                ok = false;
                errs.at_key(at, key, format!("{} is not a PEM file", path.display()));
            }
            Err(e) => {
                ok = false;
                errs.at_key(at, key, format!("cannot read {}: {e}", path.display()));
            }
        }
        Some(path)
    };
    let ca_file = readable("tls_ca_file", &f.tls_ca_file, "-----BEGIN CERTIFICATE-----");
    let cert = readable(
        "tls_cert_file",
        &f.tls_cert_file,
        "-----BEGIN CERTIFICATE-----",
    );
    let key = readable("tls_key_file", &f.tls_key_file, "PRIVATE KEY-----");
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            errs.at_key(
                at,
                "tls_cert_file",
                "a client certificate needs tls_key_file",
            );
            return None;
        }
        (None, Some(_)) => {
            errs.at_key(at, "tls_key_file", "a client key needs tls_cert_file");
            return None;
        }
    };
    ok.then_some(Some(TlsSettings {
        ca_file,
        client,
        server_name: f.tls_server_name.clone(),
    }))
}

fn cloudevents(
    f: &RawForward,
    at: &KeyPath,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<CloudEventsForward> {
    let fields = SecretFields {
        inline: f.secret.as_ref(),
        file: f.secret_file.as_deref(),
        env: f.secret_env.as_deref(),
    };
    let secret = secret::read(errs, at, "secret", fields, base).checked();
    let url = match &f.url {
        None => {
            errs.at_key(at, "url", "a cloudevents forwarder needs url");
            None
        }
        Some(u) => match reqwest::Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(u.clone()),
            _ => {
                errs.at_key(
                    at,
                    "url",
                    format!("expected an http:// or https:// URL, not {u:?}"),
                );
                None
            }
        },
    };
    let source = f.source.clone().unwrap_or_else(|| "/regwatch".into());
    if source.is_empty() {
        errs.at_key(
            at,
            "source",
            "must not be empty (CloudEvents requires a source)",
        );
    }
    Some(CloudEventsForward {
        url: url?,
        source,
        secret: secret?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Origin, parse};

    const BASE: &str = "[[registry]]\nname = \"main\"\nurl = \"http://x\"\n";

    fn load(extra: &str) -> Result<Config, Vec<String>> {
        parse(&format!("{BASE}{extra}"), Origin::Embedded, Path::new("/")).map_err(|e| e.lines())
    }

    #[test]
    fn syslog_and_cloudevents_get_their_settings_and_defaults() {
        let c = load(
            "[[forward]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"127.0.0.1:6514\"\nactions = [\"push\", \"auth_failure\"]\nregistries = [\"main\"]\n\
             [[forward]]\nname = \"ce\"\nkind = \"cloudevents\"\nurl = \"https://ce.example/in\"\nsecret = \"k\"\nbatch_size = 5\n",
        )
        .unwrap();
        let f = &c.forwards[0];
        assert_eq!(f.selection.actions, [Action::Push, Action::AuthFailure]);
        assert_eq!(f.batch_size, 100);
        let ForwardKind::Syslog(s) = &f.kind else {
            panic!("{f:?}")
        };
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 6514));
        assert_eq!(
            (s.transport, s.facility, s.enterprise_number),
            (Transport::Tcp, 16, 32473)
        );
        assert_eq!(s.app_name, "regwatch");
        let ForwardKind::CloudEvents(ce) = &c.forwards[1].kind else {
            panic!("{:?}", c.forwards[1])
        };
        assert_eq!(ce.source, "/regwatch");
        assert_eq!(ce.secret.as_ref().unwrap().value.expose(), "k");
        assert_eq!(c.forwards[1].batch_size, 5);
    }

    #[test]
    fn mistakes_are_located_at_their_keys() {
        let e = load(
            "[[forward]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"nowhere\"\nfacility = \"local9\"\nactions = [\"push\", \"pushed\"]\nregistries = [\"other\"]\nurl = \"http://x\"\ntls_ca_file = \"/ca.pem\"\n\
             [[forward]]\nname = \"siem\"\nkind = \"kafka\"\n\
             [[forward]]\nname = \"t\"\nkind = \"syslog\"\naddress = \"h:1\"\ntransport = \"tls\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
        )
        .unwrap_err();
        let want = [
            "7:1 forward[0].address: expected \"host:port\"",
            "8:1 forward[0].facility: unknown facility \"local9\"",
            "9:1 forward[0].actions[1]: unknown action \"pushed\"",
            "10:1 forward[0].registries[0]: no [[registry]] is named \"other\"",
            "11:1 forward[0].url: url is not used by syslog forwarders",
            "12:1 forward[0].tls_ca_file: tls_ca_file needs transport = \"tls\"",
            "14:1 forward[1].name: duplicate forward name \"siem\"",
            "15:1 forward[1].kind: unknown forward kind \"kafka\"",
            "21:1 forward[2].tls_ca_file: cannot read /nonexistent/ca.pem",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for (got, want) in e.iter().zip(want) {
            assert!(got.starts_with(want), "{got}\n  wanted {want}");
        }
    }
}
