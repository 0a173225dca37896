//! The TOML configuration: what regwatch watches, where it stores, where it listens.
//!
//! Loading never stops at the first mistake: [`load`] returns every problem it finds, each
//! with file, line, column and key (see [`diagnose`]).

pub mod alerting;
pub mod diagnose;
pub mod duration;
pub mod report;
pub mod schedule;
pub mod secret;

use diagnose::{Diagnostic, KeyPath, Locator};
use secret::{Secret, SecretSource};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration `regwatch run` uses without `--config`: a registry on the usual local
/// port, the database in the working directory.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Where a configuration came from; relative paths in it are resolved against its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Embedded => f.write_str("(built-in default config)"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryConfig>,
    #[serde(default, rename = "log")]
    pub logs: Vec<LogConfig>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<crate::config::alerting::RuleConfig>,
    #[serde(default, rename = "channel")]
    pub channels: Vec<crate::config::alerting::ChannelConfig>,
    #[serde(default)]
    pub maintenance: Vec<crate::config::alerting::MaintenanceConfig>,
    #[serde(default, rename = "report")]
    pub reports: Vec<crate::config::report::ReportConfig>,
    #[serde(skip)]
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Token for `/api/v1/*` and `POST /notifications`; after loading, the resolved value
    /// whichever of the three keys gave it.
    pub api_token: Option<Secret>,
    pub api_token_file: Option<PathBuf>,
    pub api_token_env: Option<String>,
    #[serde(skip)]
    pub api_token_source: Option<SecretSource>,
    /// Largest request body accepted (notification envelopes); larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Longest time one HTTP request may take before it is answered 408.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "duration::required"
    )]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(default = "default_db_path")]
    pub path: PathBuf,
    /// How long audit rows are kept; `"off"` keeps them forever.
    #[serde(default = "default_retention", deserialize_with = "duration::optional")]
    pub retention: Option<Duration>,
    /// Events waiting for the writer; when full, sources wait (back-pressure), nothing is dropped.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub name: String,
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    #[serde(skip)]
    pub password_source: Option<SecretSource>,
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "duration::required"
    )]
    pub poll_interval: Duration,
    #[serde(
        default = "default_registry_timeout",
        deserialize_with = "duration::required"
    )]
    pub timeout: Duration,
    /// How often `GET /v2/` is probed (up, latency); cheaper and more frequent than the
    /// inventory, which runs every `poll_interval`.
    #[serde(
        default = "default_probe_interval",
        deserialize_with = "duration::required"
    )]
    pub probe_interval: Duration,
    /// Most requests in flight to this registry at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// `n` for `/v2/_catalog` pages.
    #[serde(default = "default_catalog_page_size")]
    pub catalog_page_size: usize,
    /// Naming policy: every repository name must match this regex (anchored by the user).
    pub repository_pattern: Option<String>,
    /// Naming policy: every tag must match this regex.
    pub tag_pattern: Option<String>,
    #[serde(skip)]
    pub repository_regex: Option<regex::Regex>,
    #[serde(skip)]
    pub tag_regex: Option<regex::Regex>,
    /// The registry's `storage.filesystem.rootdirectory`, when regwatch runs on its host.
    pub storage_root: Option<PathBuf>,
    /// How often the filesystem usage of `storage_root` is read and sampled for the forecast.
    #[serde(
        default = "default_storage_usage_interval",
        deserialize_with = "duration::required"
    )]
    pub storage_usage_interval: Duration,
    /// How often the storage tree is walked (blobs, reclaimable bytes, upload debris).
    #[serde(
        default = "default_storage_interval",
        deserialize_with = "duration::required"
    )]
    pub storage_interval: Duration,
    /// An unfinished upload older than this counts as debris.
    #[serde(
        default = "default_upload_max_age",
        deserialize_with = "duration::required"
    )]
    pub upload_max_age: Duration,
    /// How much usage history the growth trend and "days until full" look at.
    #[serde(
        default = "default_forecast_window",
        deserialize_with = "duration::required"
    )]
    pub forecast_window: Duration,
    /// The bearer token this registry sends with its notifications (its `endpoints[].headers`);
    /// it also tells regwatch which registry an envelope came from.
    pub notifications_token: Option<Secret>,
    pub notifications_token_file: Option<PathBuf>,
    pub notifications_token_env: Option<String>,
    #[serde(skip)]
    pub notifications_token_source: Option<SecretSource>,
    /// Record pulls, pushes and deletes seen in this registry's logs in the audit trail
    /// (for registries that send no notifications; failed logins are always recorded).
    #[serde(default)]
    pub audit_from_logs: bool,
}

/// A log file to tail (`[[log]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Names the log in metrics (`log` label) and checkpoints: keep it stable.
    pub name: String,
    /// The `[[registry]]` whose traffic this is.
    pub registry: String,
    /// A file, or files: `*` and `?` in the file name follow every matching file (e.g.
    /// `/var/log/nginx/*.access.log`), each with its own checkpoint.
    pub path: PathBuf,
    /// nginx_combined, nginx_json, nginx_error, registry_json (also logstash), registry_text,
    /// registry_access, or regex.
    pub format: String,
    /// Where to start in a file seen for the first time: "end" (default) or "beginning".
    /// After a rotation or a restart the checkpoint decides.
    #[serde(default = "default_start_at")]
    pub start_at: String,
    /// Count this log's traffic (false for a second log of the same requests, e.g. the
    /// registry's own access log behind an nginx that is tailed too).
    #[serde(default = "default_true")]
    pub counts: bool,
    /// Longer lines are cut here (and counted); nothing is buffered past it.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// How often to look for new lines when the filesystem sends no change events.
    #[serde(default = "default_log_poll", deserialize_with = "duration::required")]
    pub poll_interval: Duration,
    /// `regex` format: a regex with named groups (time, addr, user, method, path, status,
    /// bytes, duration, user_agent, request_id, failed_user, …).
    pub pattern: Option<String>,
    /// `regex` format: auto, rfc3339, clf, unix, or a `time` format description.
    pub time_format: Option<String>,
    /// `nginx_error`: the server's UTC offset (its log has local time without a zone), e.g.
    /// "+01:00".
    pub utc_offset: Option<String>,
    /// `nginx_json`: the JSON key of each field where it differs from the defaults.
    pub json_fields: Option<crate::formats::log::NginxJsonFields>,
    /// The parsed format, set by validation.
    #[serde(skip)]
    pub parsed_format: Option<crate::formats::log::LogFormat>,
}

/// Equal when the user's settings are (`parsed_format` follows from them): a reload
/// restarts the tailers only when this changes.
impl PartialEq for LogConfig {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let LogConfig {
            name,
            registry,
            path,
            format,
            start_at,
            counts,
            max_line_bytes,
            poll_interval,
            pattern,
            time_format,
            utc_offset,
            json_fields,
            parsed_format: _,
        } = self;
        *name == other.name
            && *registry == other.registry
            && *path == other.path
            && *format == other.format
            && *start_at == other.start_at
            && *counts == other.counts
            && *max_line_bytes == other.max_line_bytes
            && *poll_interval == other.poll_interval
            && *pattern == other.pattern
            && *time_format == other.time_format
            && *utc_offset == other.utc_offset
            && *json_fields == other.json_fields
    }
}

fn default_start_at() -> String {
    "end".into()
}
fn default_true() -> bool {
    true
}
fn default_max_line() -> usize {
    64 * 1024
}
fn default_log_poll() -> Duration {
    Duration::from_millis(250)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10708))
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_db_path() -> PathBuf {
    PathBuf::from("regwatch.db")
}
fn default_retention() -> Option<Duration> {
    Some(Duration::from_secs(400 * 86400))
}
fn default_queue() -> usize {
    10_000
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_registry_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_concurrency() -> usize {
    8
}
fn default_catalog_page_size() -> usize {
    100
}
fn default_storage_usage_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_storage_interval() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_upload_max_age() -> Duration {
    Duration::from_secs(86400)
}
fn default_forecast_window() -> Duration {
    Duration::from_secs(7 * 86400)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            api_token: None,
            api_token_file: None,
            api_token_env: None,
            api_token_source: None,
            max_body_bytes: default_max_body(),
            request_timeout: default_request_timeout(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: default_db_path(),
            retention: default_retention(),
            queue_capacity: default_queue(),
        }
    }
}

/// Every mistake found in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub origin: Origin,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        for d in &self.diagnostics {
            writeln!(
                f,
                "{}:{}:{}: {}: {}",
                self.origin, d.line, d.column, d.key, d.message
            )?;
            if !d.source_line.trim().is_empty() {
                writeln!(f, "    {} | {}", d.line, d.source_line)?;
            }
        }
        write!(
            f,
            "{n} error{} in {}",
            if n == 1 { "" } else { "s" },
            self.origin
        )
    }
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let origin = Origin::File(path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        diagnostics: vec![Diagnostic {
            line: 0,
            column: 0,
            key: "(file)".into(),
            message: format!("cannot read config file: {e}"),
            source_line: String::new(),
        }],
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, origin, &base)
}

/// Loads `--config FILE`, or the built-in default without one.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => load_file(p),
        None => parse(DEFAULT_CONFIG, Origin::Embedded, Path::new(".")),
    }
}

/// Parses and validates config text; `base` resolves relative paths.
pub fn parse(text: &str, origin: Origin, base: &Path) -> Result<Config, ConfigError> {
    let (config, mut diagnostics) = diagnose::deserialize_all::<Config>(text);
    let locator = Locator::new(text);
    let config = config.map(|mut c| {
        diagnostics.extend(c.validate_and_resolve(base, &locator));
        c.origin = Some(origin.clone());
        c
    });
    diagnostics.sort_by_key(|d| (d.line, d.column));
    diagnostics.dedup();
    match config {
        Some(c) if diagnostics.is_empty() => Ok(c),
        _ => Err(ConfigError {
            origin,
            diagnostics,
        }),
    }
}

impl Config {
    /// Checks what serde cannot (names, URLs, ranges), reads secrets, resolves paths.
    fn validate_and_resolve(&mut self, base: &Path, loc: &Locator<'_>) -> Vec<Diagnostic> {
        let mut errs = Vec::new();
        let mut err = |path: KeyPath, msg: String| errs.push(loc.at_path(&path, msg));

        let server = KeyPath::default().key("server");
        if let Err((suffix, msg)) = secret::resolve_into(
            &mut self.server.api_token,
            &mut self.server.api_token_source,
            self.server.api_token_file.as_deref(),
            self.server.api_token_env.as_deref(),
            base,
        ) {
            err(server.clone().key(&format!("api_token{suffix}")), msg);
        }
        if self.server.request_timeout.is_zero() {
            err(
                server.key("request_timeout"),
                "must be greater than 0".into(),
            );
        }

        let db = KeyPath::default().key("database");
        if self.database.path.as_os_str().is_empty() {
            err(db.clone().key("path"), "must not be empty".into());
        } else {
            self.database.path = base.join(&self.database.path);
        }
        if self.server.max_body_bytes < 1024 {
            err(
                KeyPath::default().key("server").key("max_body_bytes"),
                "must be at least 1024".into(),
            );
        }
        if self.database.queue_capacity == 0 {
            err(db.key("queue_capacity"), "must be at least 1".into());
        }

        let mut names = HashSet::new();
        for (i, r) in self.registries.iter_mut().enumerate() {
            let at = KeyPath::default().key("registry").index(i);
            if let Err(msg) = crate::config::unique_name("registry", &r.name, &mut names) {
                err(at.clone().key("name"), msg);
            }
            match reqwest::Url::parse(&r.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(u) => err(
                    at.clone().key("url"),
                    format!(
                        "unsupported URL {:?}: expected http:// or https:// with a host (scheme was {:?})",
                        r.url,
                        u.scheme()
                    ),
                ),
                Err(e) => err(
                    at.clone().key("url"),
                    format!(
                        "invalid URL {:?} ({e}): expected e.g. \"http://127.0.0.1:5000\"",
                        r.url
                    ),
                ),
            }
            if let Err((suffix, msg)) = secret::resolve_into(
                &mut r.password,
                &mut r.password_source,
                r.password_file.as_deref(),
                r.password_env.as_deref(),
                base,
            ) {
                err(at.clone().key(&format!("password{suffix}")), msg);
            }
            if let Err((suffix, msg)) = secret::resolve_into(
                &mut r.notifications_token,
                &mut r.notifications_token_source,
                r.notifications_token_file.as_deref(),
                r.notifications_token_env.as_deref(),
                base,
            ) {
                err(at.clone().key(&format!("notifications_token{suffix}")), msg);
            }
            if r.password.is_some() && r.username.is_none() {
                err(
                    at.clone().key("username"),
                    "a password is set but no username: basic auth needs both".into(),
                );
            }
            if r.poll_interval < Duration::from_secs(1) {
                err(
                    at.clone().key("poll_interval"),
                    "must be at least 1s".into(),
                );
            }
            if r.timeout.is_zero() {
                err(at.clone().key("timeout"), "must be greater than 0".into());
            }
            if r.probe_interval < Duration::from_secs(1) {
                err(
                    at.clone().key("probe_interval"),
                    "must be at least 1s".into(),
                );
            }
            if !(1..=256).contains(&r.concurrency) {
                err(
                    at.clone().key("concurrency"),
                    format!("must be between 1 and 256 (was {})", r.concurrency),
                );
            }
            if !(1..=10_000).contains(&r.catalog_page_size) {
                err(
                    at.clone().key("catalog_page_size"),
                    format!("must be between 1 and 10000 (was {})", r.catalog_page_size),
                );
            }
            for (key, pattern, slot) in [
                (
                    "repository_pattern",
                    &r.repository_pattern,
                    &mut r.repository_regex,
                ),
                ("tag_pattern", &r.tag_pattern, &mut r.tag_regex),
            ] {
                if let Some(p) = pattern {
                    match regex::Regex::new(p) {
                        Ok(re) => *slot = Some(re),
                        Err(e) => err(
                            at.clone().key(key),
                            format!("invalid regex {p:?}: {}", one_line(&e.to_string())),
                        ),
                    }
                }
            }
            if let Some(root) = &r.storage_root {
                let resolved = base.join(root);
                if !resolved.is_dir() {
                    err(
                        at.clone().key("storage_root"),
                        format!("{} is not a directory", resolved.display()),
                    );
                }
                r.storage_root = Some(resolved);
            }
            for (key, value) in [
                ("storage_usage_interval", r.storage_usage_interval),
                ("storage_interval", r.storage_interval),
            ] {
                if value < Duration::from_secs(1) {
                    err(at.clone().key(key), "must be at least 1s".into());
                }
            }
            if r.forecast_window < Duration::from_secs(60) {
                err(
                    at.clone().key("forecast_window"),
                    "must be at least 1m (a trend needs history)".into(),
                );
            }
        }
        let mut log_names = HashSet::new();
        let registry_names_owned: Vec<String> =
            self.registries.iter().map(|r| r.name.clone()).collect();
        let registry_names: Vec<&str> = registry_names_owned.iter().map(String::as_str).collect();
        for (i, l) in self.logs.iter_mut().enumerate() {
            let at = KeyPath::default().key("log").index(i);
            if let Err(msg) = crate::config::unique_name("log", &l.name, &mut log_names) {
                err(at.clone().key("name"), msg);
            }
            if !registry_names.contains(&l.registry.as_str()) {
                let hint = diagnose::suggest(&l.registry, &registry_names)
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                err(
                    at.clone().key("registry"),
                    format!("no [[registry]] is named {:?}{hint}", l.registry),
                );
            }
            l.path = base.join(&l.path);
            let in_dir = l
                .path
                .parent()
                .is_some_and(|d| d.to_string_lossy().contains(['*', '?']));
            if in_dir {
                err(
                    at.clone().key("path"),
                    "wildcards (* ?) are allowed in the file name only, not in directories".into(),
                );
            }
            if !matches!(l.start_at.as_str(), "end" | "beginning") {
                err(
                    at.clone().key("start_at"),
                    format!("expected \"end\" or \"beginning\", not {:?}", l.start_at),
                );
            }
            if l.max_line_bytes < 256 {
                err(
                    at.clone().key("max_line_bytes"),
                    "must be at least 256".into(),
                );
            }
            use crate::formats::log::{LogFormat, NginxErrorOptions, RegexFormat};
            let format = match l.format.as_str() {
                "regex" => match &l.pattern {
                    None => {
                        err(
                            at.clone().key("pattern"),
                            "the regex format needs a pattern with named groups".into(),
                        );
                        None
                    }
                    Some(p) => {
                        match RegexFormat::new(p, l.time_format.as_deref().unwrap_or("auto")) {
                            Ok(r) => Some(LogFormat::Regex(Box::new(r))),
                            Err(e) => {
                                err(at.clone().key("pattern"), e.to_string());
                                None
                            }
                        }
                    }
                },
                "nginx_error" => {
                    let offset = match &l.utc_offset {
                        None => Some(time::UtcOffset::UTC),
                        Some(o) => match time::UtcOffset::parse(
                            o,
                            time::macros::format_description!(
                                "[offset_hour sign:mandatory]:[offset_minute]"
                            ),
                        ) {
                            Ok(o) => Some(o),
                            Err(_) => {
                                err(
                                    at.clone().key("utc_offset"),
                                    format!("invalid offset {o:?}: expected e.g. \"+01:00\""),
                                );
                                None
                            }
                        },
                    };
                    offset.map(|utc_offset| LogFormat::NginxError(NginxErrorOptions { utc_offset }))
                }
                "nginx_json" => Some(LogFormat::NginxJson(Box::new(
                    l.json_fields.clone().unwrap_or_default(),
                ))),
                other => match LogFormat::from_name(other) {
                    Some(f) => Some(f),
                    None => {
                        let names = [
                            "nginx_combined",
                            "nginx_json",
                            "nginx_error",
                            "registry_json",
                            "registry_logstash",
                            "registry_text",
                            "registry_access",
                            "regex",
                        ];
                        let hint = diagnose::suggest(other, &names)
                            .map(|s| format!("did you mean {s:?}? "))
                            .unwrap_or_default();
                        err(
                            at.clone().key("format"),
                            format!(
                                "unknown log format {other:?}: {hint}expected one of {}",
                                names.join(", ")
                            ),
                        );
                        None
                    }
                },
            };
            if l.pattern.is_some() && l.format != "regex" {
                err(
                    at.clone().key("pattern"),
                    "pattern is only used by format = \"regex\"".into(),
                );
            }
            l.parsed_format = format;
        }
        errs.extend(crate::config::alerting::validate(
            &mut self.rules,
            &mut self.channels,
            &mut self.maintenance,
            &registry_names_owned
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            base,
            loc,
        ));
        errs.extend(crate::config::report::validate(
            &mut self.reports,
            &registry_names_owned
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            &self.channels,
            base,
            loc,
        ));
        let mut err = |path: KeyPath, msg: String| errs.push(loc.at_path(&path, msg));
        if self.registries.is_empty() {
            err(
                KeyPath::default().key("registry"),
                "no [[registry]] configured: regwatch needs at least one registry to watch".into(),
            );
        }
        errs
    }

    pub fn registry(&self, name: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.name == name)
    }

    /// What `regwatch check` prints: one screen, no secret values.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let origin = self.origin.clone().unwrap_or(Origin::Embedded);
        let _ = writeln!(s, "config      {origin}: OK");
        let token = match &self.server.api_token_source {
            Some(src) => format!("API token {src}"),
            None => "no API token (the audit API and /notifications will refuse requests)".into(),
        };
        let _ = writeln!(
            s,
            "listen      http://{} ({token}; request timeout {})",
            self.server.listen,
            duration::humane(self.server.request_timeout)
        );
        let retention = self
            .database
            .retention
            .map(duration::humane)
            .unwrap_or_else(|| "forever".into());
        let _ = writeln!(
            s,
            "database    {} (retention {retention})",
            self.database.path.display()
        );
        let _ = writeln!(s, "registries  {}", self.registries.len());
        for r in &self.registries {
            let auth = match (&r.username, &r.password_source) {
                (Some(u), Some(src)) => format!("user {u}, password {src}"),
                (Some(u), None) => format!("user {u}, no password"),
                _ => "anonymous".into(),
            };
            let storage = r
                .storage_root
                .as_ref()
                .map(|p| {
                    format!(
                        ", storage {} (usage every {}, walk every {}, uploads stale after {}, forecast over {})",
                        p.display(),
                        duration::humane(r.storage_usage_interval),
                        duration::humane(r.storage_interval),
                        duration::humane(r.upload_max_age),
                        duration::humane(r.forecast_window)
                    )
                })
                .unwrap_or_default();
            let notify = r
                .notifications_token_source
                .as_ref()
                .map(|src| format!(", notifications token {src}"))
                .unwrap_or_default();
            let policy = match (&r.repository_pattern, &r.tag_pattern) {
                (None, None) => String::new(),
                (repo, tag) => format!(
                    ", naming policy{}{}",
                    repo.as_deref()
                        .map(|p| format!(" repositories {p:?}"))
                        .unwrap_or_default(),
                    tag.as_deref()
                        .map(|p| format!(" tags {p:?}"))
                        .unwrap_or_default()
                ),
            };
            let _ = writeln!(
                s,
                "  {:<12} {} ({auth}; probe every {}, inventory every {}, timeout {}, {} concurrent requests, catalog pages of {}{policy}{storage}{notify})",
                r.name,
                r.url,
                duration::humane(r.probe_interval),
                duration::humane(r.poll_interval),
                duration::humane(r.timeout),
                r.concurrency,
                r.catalog_page_size
            );
        }
        if !self.logs.is_empty() {
            let _ = writeln!(s, "logs        {}", self.logs.len());
            for l in &self.logs {
                let _ = writeln!(
                    s,
                    "  {:<12} {} ({} for {}{})",
                    l.name,
                    l.path.display(),
                    l.format,
                    l.registry,
                    if l.counts { "" } else { "; not counted" }
                );
            }
        }
        if !self.rules.is_empty() {
            let _ = writeln!(s, "rules       {}", self.rules.len());
            for r in &self.rules {
                let _ = writeln!(
                    s,
                    "  {:<12} {} > {} (window {}, for {}; {} → {})",
                    r.name,
                    r.kind,
                    r.threshold,
                    duration::humane(r.window),
                    duration::humane(r.for_),
                    r.severity,
                    if r.channels.is_empty() {
                        "no channels".to_string()
                    } else {
                        r.channels.join(", ")
                    }
                );
            }
        }
        if !self.channels.is_empty() {
            let _ = writeln!(s, "channels    {}", self.channels.len());
            for c in &self.channels {
                let target = match c.kind.as_str() {
                    "email" => format!(
                        "{}:{} ({}) to {}",
                        c.smtp_host.as_deref().unwrap_or(""),
                        c.smtp_port
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "default port".into()),
                        c.tls,
                        c.to.join(", ")
                    ),
                    // Only scheme and host: webhook URLs (Slack, Teams) carry their token in
                    // the path, and check never prints secrets.
                    _ => c
                        .url
                        .as_deref()
                        .and_then(|u| reqwest::Url::parse(u).ok())
                        .map(|u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")))
                        .unwrap_or_default(),
                };
                let secret = c
                    .secret_source
                    .as_ref()
                    .map(|src| format!(", signed with a secret {src}"))
                    .or_else(|| {
                        c.password_source
                            .as_ref()
                            .map(|src| format!(", password {src}"))
                    })
                    .unwrap_or_default();
                let _ = writeln!(s, "  {:<12} {} {target}{secret}", c.name, c.kind);
            }
        }
        for m in &self.maintenance {
            let _ = writeln!(
                s,
                "maintenance {} ({} UTC for {})",
                m.name,
                m.schedule,
                duration::humane(m.duration)
            );
        }
        if !self.reports.is_empty() {
            let _ = writeln!(s, "reports     {}", self.reports.len());
            for r in &self.reports {
                let _ = writeln!(
                    s,
                    "  {:<12} {} of the last {} at \"{}\" UTC to {}",
                    r.name,
                    r.format,
                    duration::humane(r.period),
                    r.schedule,
                    r.output.display()
                );
            }
        }
        s
    }
}

/// regex errors are multi-line ASCII art; a diagnostic is one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a `name` key: valid characters, and not used by another entry of the same kind
/// (`seen` collects them). The error message names the kind.
pub(crate) fn unique_name(
    kind: &str,
    name: &str,
    seen: &mut std::collections::HashSet<String>,
) -> Result<(), String> {
    if !valid_name(name) {
        return Err(format!(
            "invalid {kind} name {name:?}: expected 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'"
        ));
    }
    if !seen.insert(name.to_string()) {
        return Err(format!(
            "duplicate {kind} name {name:?}: names must be unique"
        ));
    }
    Ok(())
}

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, Origin::File("t.toml".into()), Path::new("/")) {
            Ok(_) => vec![],
            Err(e) => e
                .diagnostics
                .iter()
                .map(|d| format!("{}:{} {}: {}", d.line, d.column, d.key, d.message))
                .collect(),
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = load(None).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:10708");
        assert_eq!(c.registries[0].url, "http://127.0.0.1:5000");
        assert_eq!(c.database.path, Path::new("./regwatch.db"));
    }

    #[test]
    fn reports_every_mistake_with_position() {
        let e = errors(
            "[server]\nlisen = \"127.0.0.1:1\"\n\n[[registry]]\nname = \"a\"\nurl = \"ftp://x\"\npoll_interval = \"fast\"\n",
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("2:1 server.lisen: unknown key `lisen`; did you mean `listen`?"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("6:1 registry[0].url: unsupported URL"),
            "{}",
            e[1]
        );
        assert!(
            e[2].starts_with("7:17 registry[0].poll_interval: invalid duration"),
            "{}",
            e[2]
        );
    }

    #[test]
    fn wrong_type_and_missing_key() {
        let e = errors("[[registry]]\nname = 5\n\n[[registry]]\nname = \"b\"\n");
        assert!(
            e.iter().any(|l| l
                .starts_with("2:8 registry[0].name: invalid type: integer `5`, expected a string")),
            "{e:#?}"
        );
        assert!(
            e.iter().any(|l| l.contains("missing required key `url`")),
            "{e:#?}"
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let e = errors("[server]\nlisten = \"127.0.0.1:1\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("2:"), "{}", e[0]);
        assert!(e[0].contains("invalid TOML"), "{}", e[0]);
    }

    #[test]
    fn poller_keys_have_defaults_and_are_validated() {
        let c = parse(
            "[[registry]]\nname = \"a\"\nurl = \"http://x\"\n",
            Origin::Embedded,
            Path::new("/"),
        )
        .unwrap();
        let r = &c.registries[0];
        assert_eq!(r.probe_interval, Duration::from_secs(15));
        assert_eq!((r.concurrency, r.catalog_page_size), (8, 100));
        assert!(r.repository_regex.is_none());
        let e = errors(
            "[[registry]]\nname = \"a\"\nurl = \"http://x\"\nconcurrency = 0\nrepository_pattern = \"^(team\"\ntag_pattern = \"^v[0-9]+$\"\nprobe_interval = \"10ms\"\n",
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("4:1 registry[0].concurrency: must be between 1 and 256"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("5:1 registry[0].repository_pattern: invalid regex"),
            "{}",
            e[1]
        );
        assert!(!e[1].contains('\n'));
        assert!(
            e[2].starts_with("7:1 registry[0].probe_interval: must be at least 1s"),
            "{}",
            e[2]
        );
    }

    #[test]
    fn duplicate_names_and_missing_registry() {
        let e = errors(
            "[[registry]]\nname = \"a\"\nurl = \"http://x\"\n[[registry]]\nname = \"a\"\nurl = \"http://y\"\n",
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with("5:1 registry[1].name: duplicate registry name"),
            "{}",
            e[0]
        );
        let e = errors("[server]\n");
        assert!(e[0].contains("no [[registry]] configured"), "{e:#?}");
    }

    #[test]
    fn storage_settings_default_and_validate() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[registry]]\nname = \"a\"\nurl = \"http://x\"\nstorage_root = {:?}\n",
            dir.path().display().to_string()
        );
        let c = parse(&text, Origin::Embedded, Path::new("/")).unwrap();
        let r = &c.registries[0];
        assert_eq!(r.storage_usage_interval, Duration::from_secs(60));
        assert_eq!(r.storage_interval, Duration::from_secs(900));
        assert_eq!(r.upload_max_age, Duration::from_secs(86400));
        assert_eq!(r.forecast_window, Duration::from_secs(7 * 86400));
        assert!(
            c.summary()
                .contains("walk every 15m, uploads stale after 1d, forecast over 7d"),
            "{}",
            c.summary()
        );
        let e = errors(
            "[[registry]]\nname = \"a\"\nurl = \"http://x\"\nstorage_interval = \"0s\"\nforecast_window = \"10s\"\nupload_max_age = \"soon\"\n",
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("4:1 registry[0].storage_interval: must be at least 1s"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("5:1 registry[0].forecast_window: must be at least 1m"),
            "{}",
            e[1]
        );
        assert!(
            e[2].starts_with("6:18 registry[0].upload_max_age: invalid duration"),
            "{}",
            e[2]
        );
    }
}
