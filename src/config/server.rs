//! `[server]` (where regwatch listens, its API token, request limits) and `[database]` (where
//! the audit trail is kept and for how long): the raw tables as written, and the checked
//! settings the daemon uses.

use super::diagnose::{Errors, KeyPath};
use super::duration;
use super::secret::{self, Resolved, Secret, SecretFields};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[server]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    api_token: Option<Secret>,
    api_token_file: Option<PathBuf>,
    api_token_env: Option<String>,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "duration::required"
    )]
    request_timeout: Duration,
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "duration::required"
    )]
    header_read_timeout: Duration,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// This agent's name on the rows it writes (several agents on one PostgreSQL).
    agent: Option<String>,
}

/// `[database]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    /// A SQLite file; the default when no `url*` key is given.
    path: Option<PathBuf>,
    /// A PostgreSQL URL (it may hold a password, so it is a secret).
    url: Option<Secret>,
    url_file: Option<PathBuf>,
    url_env: Option<String>,
    #[serde(default = "default_retention", deserialize_with = "duration::optional")]
    retention: Option<Duration>,
    #[serde(default = "default_queue")]
    queue_capacity: usize,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Token for `/api/v1/*` and `POST /notifications`, whichever of `api_token`,
    /// `api_token_file` and `api_token_env` gave it.
    pub api_token: Option<Resolved>,
    /// Largest request body accepted (notification envelopes); larger ones get 413.
    pub max_body_bytes: usize,
    /// Longest time one HTTP request may take before it is answered 408.
    pub request_timeout: Duration,
    /// A connection that has not sent a whole request head in this time (a slow client, or
    /// an idle keep-alive connection) is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// This agent's name (`[server] agent`, by default the host name): recorded on the rows
    /// it writes to a shared database and exported on its metrics.
    pub agent: String,
}

/// Where the audit trail is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// `path`: a SQLite file, resolved against the config file's directory.
    Sqlite(PathBuf),
    /// `url`, `url_file` or `url_env`: a PostgreSQL database shared by several agents. The
    /// URL is a [`Secret`] (it may carry the password) and is never printed.
    Postgres(Resolved),
}

impl std::fmt::Display for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTarget::Sqlite(p) => write!(f, "{}", p.display()),
            DatabaseTarget::Postgres(r) => write!(f, "PostgreSQL (url {})", r.source),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub target: DatabaseTarget,
    /// How long audit rows are kept; `None` (`"off"`) keeps them forever.
    pub retention: Option<Duration>,
    /// Events waiting for the writer; when full, sources wait (back-pressure), nothing is
    /// dropped.
    pub queue_capacity: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10708))
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    512
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

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            api_token: None,
            api_token_file: None,
            api_token_env: None,
            max_body_bytes: default_max_body(),
            request_timeout: default_request_timeout(),
            header_read_timeout: default_header_read_timeout(),
            max_connections: default_max_connections(),
            agent: None,
        }
    }
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase {
            path: None,
            url: None,
            url_file: None,
            url_env: None,
            retention: default_retention(),
            queue_capacity: default_queue(),
        }
    }
}

/// Checks `[server]` and reads its token.
pub(super) fn server(raw: RawServer, base: &Path, errs: &mut Errors<'_>) -> Option<ServerConfig> {
    let at = KeyPath::default().key("server");
    let fields = SecretFields {
        inline: raw.api_token.as_ref(),
        file: raw.api_token_file.as_deref(),
        env: raw.api_token_env.as_deref(),
    };
    let api_token = secret::read(errs, &at, "api_token", fields, base).checked();
    if raw.request_timeout.is_zero() {
        errs.at_key(&at, "request_timeout", "must be greater than 0");
    }
    if raw.header_read_timeout.is_zero() {
        errs.at_key(&at, "header_read_timeout", "must be greater than 0");
    }
    if raw.max_connections == 0 {
        errs.at_key(&at, "max_connections", "must be at least 1");
    }
    if raw.max_body_bytes < 1024 {
        errs.at_key(&at, "max_body_bytes", "must be at least 1024");
    }
    let agent = match raw.agent {
        Some(a) if a.trim().is_empty() => {
            errs.at_key(&at, "agent", "must not be empty");
            None
        }
        Some(a) => Some(a),
        None => Some(host_name()),
    };
    Some(ServerConfig {
        listen: raw.listen,
        api_token: api_token?,
        max_body_bytes: raw.max_body_bytes,
        request_timeout: raw.request_timeout,
        header_read_timeout: raw.header_read_timeout,
        max_connections: raw.max_connections,
        agent: agent?,
    })
}

/// The machine's host name (the default agent name); `regwatch` if it has none.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "regwatch".to_string(),
    }
}

/// Checks `[database]` and resolves its path against `base`.
pub(super) fn database(
    raw: RawDatabase,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<DatabaseConfig> {
    let at = KeyPath::default().key("database");
    let fields = SecretFields {
        inline: raw.url.as_ref(),
        file: raw.url_file.as_deref(),
        env: raw.url_env.as_deref(),
    };
    let url_given = fields.inline.is_some() || fields.file.is_some() || fields.env.is_some();
    let url = secret::read(errs, &at, "url", fields, base).checked();
    let target = match (raw.path, url) {
        (Some(_), _) if url_given => {
            errs.at_key(
                &at,
                "path",
                "give either path (SQLite) or url/url_file/url_env (PostgreSQL), not both",
            );
            None
        }
        (_, None) => None,
        (_, Some(Some(url))) => postgres_url(url, &at, errs),
        (Some(p), Some(None)) if p.as_os_str().is_empty() => {
            errs.at_key(&at, "path", "must not be empty");
            None
        }
        (path, Some(None)) => Some(DatabaseTarget::Sqlite(
            base.join(path.unwrap_or_else(default_db_path)),
        )),
    };
    if raw.queue_capacity == 0 {
        errs.at_key(&at, "queue_capacity", "must be at least 1");
    }
    Some(DatabaseConfig {
        target: target?,
        retention: raw.retention,
        queue_capacity: raw.queue_capacity,
    })
}

/// A PostgreSQL URL must say it is one (`postgres://` or `postgresql://`); the rest is
/// checked when connecting (and any error there names the host, never the password).
fn postgres_url(url: Resolved, at: &KeyPath, errs: &mut Errors<'_>) -> Option<DatabaseTarget> {
    let v = url.value.expose();
    // The client's own parser, so a URL accepted here connects as written. Its messages
    // name the part that is wrong, not the value.
    let parsed = v.parse::<postgres::Config>();
    if (v.starts_with("postgres://") || v.starts_with("postgresql://")) && parsed.is_ok() {
        return Some(DatabaseTarget::Postgres(url));
    }
    let key = match url.source {
        secret::SecretSource::Inline => "url",
        secret::SecretSource::File(_) => "url_file",
        secret::SecretSource::Env(_) => "url_env",
    };
    let why = parsed.err().map(|e| format!(" ({e})")).unwrap_or_default();
    errs.at_key(
        at,
        key,
        format!("expected a PostgreSQL URL (postgres://user@host:5432/regwatch){why}"),
    );
    None
}
