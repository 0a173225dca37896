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
}

/// `[database]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    #[serde(default = "default_db_path")]
    path: PathBuf,
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
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Resolved against the config file's directory.
    pub path: PathBuf,
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
        }
    }
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase {
            path: default_db_path(),
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
    Some(ServerConfig {
        listen: raw.listen,
        api_token: api_token?,
        max_body_bytes: raw.max_body_bytes,
        request_timeout: raw.request_timeout,
        header_read_timeout: raw.header_read_timeout,
        max_connections: raw.max_connections,
    })
}

/// Checks `[database]` and resolves its path against `base`.
pub(super) fn database(
    raw: RawDatabase,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<DatabaseConfig> {
    let at = KeyPath::default().key("database");
    let path = if raw.path.as_os_str().is_empty() {
        errs.at_key(&at, "path", "must not be empty");
        None
    } else {
        Some(base.join(&raw.path))
    };
    if raw.queue_capacity == 0 {
        errs.at_key(&at, "queue_capacity", "must be at least 1");
    }
    Some(DatabaseConfig {
        path: path?,
        retention: raw.retention,
        queue_capacity: raw.queue_capacity,
    })
}
