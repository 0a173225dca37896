//! The TOML configuration: what regwatch watches, where it stores, where it listens.
//!
//! Loading is two passes. serde reads the text into raw structs that mirror the file
//! (defaults, `deny_unknown_fields`, humane durations); then each section's checks run on
//! the raw values and build the typed settings the rest of regwatch uses (enums, parsed
//! schedules and formats, read secrets, resolved paths). Loading never stops at the first
//! mistake: [`load`] returns every problem it finds, each with file, line, column and key
//! (see [`diagnose`]).

pub mod channel;
pub mod diagnose;
pub mod duration;
pub mod forward;
pub mod keys;
pub mod listen;
pub mod log;
pub mod maintenance;
mod names;
pub mod registry;
pub mod report;
pub mod retention;
pub mod rule;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod storage;
mod summary;

use channel::{ChannelConfig, RawChannel};
use diagnose::{Diagnostic, Errors, KeyPath, Locator};
use forward::{ForwardConfig, RawForward};
use listen::{ListenConfig, RawListen};
use log::{LogConfig, RawLog};
use maintenance::{MaintenanceConfig, RawMaintenance};
use registry::RawRegistry;
use report::{RawReport, ReportConfig};
use retention::RawRetention;
use rule::{RawRule, RuleConfig};
use serde::Deserialize;
use server::{RawDatabase, RawServer};
use std::fmt;
use std::path::{Path, PathBuf};

pub use registry::RegistryConfig;
pub use server::{DatabaseConfig, DatabaseTarget, ServerConfig};

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

/// A loaded and checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    /// At least one.
    pub registries: Vec<RegistryConfig>,
    pub logs: Vec<LogConfig>,
    pub rules: Vec<RuleConfig>,
    pub channels: Vec<ChannelConfig>,
    pub maintenance: Vec<MaintenanceConfig>,
    pub reports: Vec<ReportConfig>,
    /// `[[retention]]` policies for cleanup plans.
    pub retention: Vec<crate::model::retention::Policy>,
    /// `[[forward]]`: where the audit trail is shipped.
    pub forwards: Vec<ForwardConfig>,
    /// `[[listen]]`: inputs besides the HTTP server (Harbor's audit log forwarding).
    pub listens: Vec<ListenConfig>,
    pub origin: Origin,
    /// The keys whose secret is written inline in the file (`server.api_token`, …).
    pub inline_secrets: Vec<String>,
    /// What is allowed but unwise (inline secrets in a file every user can read): `check`
    /// prints them, `run` logs them.
    pub warnings: Vec<String>,
}

/// The file as written: what serde reads before the checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default, rename = "registry")]
    registries: Vec<RawRegistry>,
    #[serde(default, rename = "log")]
    logs: Vec<RawLog>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    #[serde(default, rename = "channel")]
    channels: Vec<RawChannel>,
    #[serde(default)]
    maintenance: Vec<RawMaintenance>,
    #[serde(default, rename = "report")]
    reports: Vec<RawReport>,
    #[serde(default)]
    retention: Vec<RawRetention>,
    #[serde(default, rename = "forward")]
    forwards: Vec<RawForward>,
    #[serde(default, rename = "listen")]
    listens: Vec<RawListen>,
}

/// Every mistake found in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub origin: Origin,
    pub diagnostics: Vec<Diagnostic>,
}

#[cfg(test)]
impl ConfigError {
    /// Each mistake as `line:column key: message`, for tests that assert where it is.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.diagnostics
            .iter()
            .map(|d| format!("{}:{} {}: {}", d.line, d.column, d.key, d.message))
            .collect()
    }
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
    let mut config = parse(&text, origin, &base)?;
    config
        .warnings
        .extend(readable_secrets(path, &config.inline_secrets));
    Ok(config)
}

/// A warning when `path` is readable by every user and holds secrets inline.
fn readable_secrets(path: &Path, inline: &[String]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0 && !inline.is_empty()).then(|| {
        format!(
            "{} is readable by every user (mode {:03o}) and holds secrets inline ({}): \
             chmod 600 it, or move them to *_file / *_env keys",
            path.display(),
            mode & 0o777,
            inline.join(", ")
        )
    })
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
    let (raw, mut diagnostics) = diagnose::deserialize_all::<RawConfig>(text);
    let locator = Locator::new(text);
    let mut errs = Errors::new(&locator);
    let config = raw.and_then(|raw| raw.check(base, origin.clone(), &mut errs));
    diagnostics.extend(errs.into_vec());
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

impl RawConfig {
    /// Checks what serde cannot (names, URLs, ranges, references between tables), reads
    /// secrets, resolves paths, and builds the typed config; `None` when a mistake was
    /// reported in `errs`.
    fn check(self, base: &Path, origin: Origin, errs: &mut Errors<'_>) -> Option<Config> {
        let registry_names: Vec<String> = self.registries.iter().map(|r| r.name.clone()).collect();
        let registry_names: Vec<&str> = registry_names.iter().map(String::as_str).collect();
        let channel_kinds: Vec<(String, String)> = self
            .channels
            .iter()
            .map(|c| (c.name.clone(), c.kind.clone()))
            .collect();
        let channel_kinds: Vec<(&str, &str)> = channel_kinds
            .iter()
            .map(|(n, k)| (n.as_str(), k.as_str()))
            .collect();
        let channel_names: Vec<&str> = channel_kinds.iter().map(|(n, _)| *n).collect();

        let server = server::server(self.server, base, errs);
        let database = server::database(self.database, base, errs);
        let registries = registry::registries(self.registries, base, errs);
        let logs = log::logs(self.logs, &registry_names, base, errs);
        let channels = channel::channels(self.channels, base, errs);
        let maintenance = maintenance::maintenance(self.maintenance, errs);
        let rule_refs = rule::Known {
            registries: &registry_names,
            channels: &channel_names,
        };
        let rules = rule::rules(self.rules, &rule_refs, errs);
        let policy_names: Vec<String> = self
            .retention
            .iter()
            .map(|p| p.name().to_string())
            .collect();
        let policy_names: Vec<&str> = policy_names.iter().map(String::as_str).collect();
        let report_refs = report::Known {
            registries: &registry_names,
            channels: &channel_kinds,
            policies: &policy_names,
        };
        let reports = report::reports(self.reports, &report_refs, base, errs);
        let retention = retention::retention(self.retention, &registry_names, errs);
        let forwards = forward::forwards(self.forwards, &registry_names, base, errs);
        let http = server.as_ref().map(|s| s.listen);
        let listens = listen::listens(self.listens, &registry_names, http, errs);
        if registry_names.is_empty() {
            errs.at(
                &KeyPath::default().key("registry"),
                "no [[registry]] configured: regwatch needs at least one registry to watch",
            );
        }
        Some(Config {
            server: server?,
            database: database?,
            registries: registries?,
            logs: logs?,
            rules: rules?,
            channels: channels?,
            maintenance: maintenance?,
            reports: reports?,
            retention: retention?,
            forwards: forwards?,
            listens: listens?,
            origin,
            inline_secrets: errs.inline_secrets().to_vec(),
            warnings: Vec::new(),
        })
    }
}

impl Config {
    pub fn registry(&self, name: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, Origin::File("t.toml".into()), Path::new("/")) {
            Ok(_) => vec![],
            Err(e) => e.lines(),
        }
    }

    #[test]
    fn database_is_a_path_or_a_postgres_url_never_shown() {
        let reg = "[[registry]]\nname = \"a\"\nurl = \"http://127.0.0.1:5000\"\n";
        let e = errors(&format!(
            "[database]\npath = \"a.db\"\nurl = \"postgres://u:pw@h/db\"\n{reg}"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("2:1 database.path: give either path"),
            "{e:?}"
        );
        let e = errors(&format!("[database]\nurl = \"mysql://u:pw@h/db\"\n{reg}"));
        assert!(
            e[0].contains("database.url: expected a PostgreSQL URL"),
            "{e:?}"
        );
        assert!(!e[0].contains("pw@"), "{e:?}");
        let e = errors(&format!(
            "[database]\nurl_env = \"REGWATCH_TEST_NEVER_SET\"\n{reg}"
        ));
        assert!(
            e[0].contains("database.url_env: environment variable"),
            "{e:?}"
        );

        let text = format!(
            "[server]\nagent = \"eu-1\"\n[database]\nurl = \"postgres://u:hunter2@db:5432/trail\"\n{reg}"
        );
        let c = parse(&text, Origin::File("t.toml".into()), Path::new("/")).unwrap();
        assert_eq!(c.server.agent, "eu-1");
        let shown = format!("{} {:?}", c.database.target, c.database);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(matches!(c.database.target, DatabaseTarget::Postgres(_)));
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = load(None).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:10708");
        assert_eq!(c.registries[0].url, "http://127.0.0.1:5000");
        assert_eq!(
            c.database.target,
            DatabaseTarget::Sqlite(Path::new("./regwatch.db").to_path_buf())
        );
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
        assert!(r.repository_pattern.is_none());
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
