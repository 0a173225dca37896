//! `[[registry]]`: a registry to watch — its API (URL, credentials, poll and probe timing),
//! its naming policy, its storage on this host and the token of its notifications. The raw
//! table as written, and the checked settings with secrets read and regexes compiled.

use super::diagnose::{Errors, KeyPath};
use super::duration;
use super::keys::{self, SignatureKey};
use super::names::unique_name;
use super::secret::{self, Resolved, Secret, SecretFields};
use super::storage::{self, RawS3, S3Storage};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[[registry]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) name: String,
    url: String,
    username: Option<String>,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "duration::required"
    )]
    poll_interval: Duration,
    #[serde(
        default = "default_registry_timeout",
        deserialize_with = "duration::required"
    )]
    timeout: Duration,
    #[serde(
        default = "default_probe_interval",
        deserialize_with = "duration::required"
    )]
    probe_interval: Duration,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default = "default_catalog_page_size")]
    catalog_page_size: usize,
    repository_pattern: Option<String>,
    tag_pattern: Option<String>,
    storage_root: Option<PathBuf>,
    s3: Option<RawS3>,
    registry_config: Option<PathBuf>,
    capacity_bytes: Option<u64>,
    #[serde(
        default = "default_storage_usage_interval",
        deserialize_with = "duration::required"
    )]
    storage_usage_interval: Duration,
    #[serde(
        default = "default_storage_interval",
        deserialize_with = "duration::required"
    )]
    storage_interval: Duration,
    #[serde(
        default = "default_upload_max_age",
        deserialize_with = "duration::required"
    )]
    upload_max_age: Duration,
    #[serde(
        default = "default_forecast_window",
        deserialize_with = "duration::required"
    )]
    forecast_window: Duration,
    notifications_token: Option<Secret>,
    notifications_token_file: Option<PathBuf>,
    notifications_token_env: Option<String>,
    #[serde(default)]
    audit_from_logs: bool,
    #[serde(default)]
    signature_keys: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub name: String,
    /// An http:// or https:// URL with a host, as written.
    pub url: String,
    pub username: Option<String>,
    /// Only with a `username` (basic auth needs both).
    pub password: Option<Resolved>,
    /// How often the whole inventory is read.
    pub poll_interval: Duration,
    pub timeout: Duration,
    /// How often `GET /v2/` is probed (up, latency); cheaper and more frequent than the
    /// inventory, which runs every `poll_interval`.
    pub probe_interval: Duration,
    /// Most requests in flight to this registry at once (1-256).
    pub concurrency: usize,
    /// `n` for `/v2/_catalog` pages (1-10000).
    pub catalog_page_size: usize,
    /// Naming policy: every repository name must match this regex (anchored by the user).
    pub repository_pattern: Option<regex::Regex>,
    /// Naming policy: every tag must match this regex.
    pub tag_pattern: Option<regex::Regex>,
    /// The registry's `storage.filesystem.rootdirectory`, when regwatch runs on its host;
    /// resolved against the config file's directory, and a directory. Also set from
    /// `registry_config` when the registry's file names a filesystem storage.
    pub storage_root: Option<PathBuf>,
    /// The registry's S3 bucket (`[registry.s3]`, or the `storage.s3` of `registry_config`);
    /// never together with `storage_root`.
    pub s3: Option<S3Storage>,
    /// The registry's own config file the storage was read from, if any.
    pub registry_config: Option<PathBuf>,
    /// S3 only: the bucket's quota, so usage ratio, storage rules and forecast work (S3 has
    /// no "disk full" of its own).
    pub capacity_bytes: Option<u64>,
    /// How often the filesystem usage of `storage_root` is read and sampled for the forecast.
    pub storage_usage_interval: Duration,
    /// How often the storage tree is walked (blobs, reclaimable bytes, upload debris).
    pub storage_interval: Duration,
    /// An unfinished upload older than this counts as debris.
    pub upload_max_age: Duration,
    /// How much usage history the growth trend and "days until full" look at.
    pub forecast_window: Duration,
    /// The bearer token this registry sends with its notifications (its
    /// `endpoints[].headers`); it also tells regwatch which registry an envelope came from.
    pub notifications_token: Option<Resolved>,
    /// Record pulls, pushes and deletes seen in this registry's logs in the audit trail
    /// (for registries that send no notifications; failed logins are always recorded).
    pub audit_from_logs: bool,
    /// The public keys (cosign, ECDSA P-256) whose signatures make an image `verified`;
    /// read and checked at load. Empty: signatures are detected and counted, none verifies.
    pub signature_keys: Vec<SignatureKey>,
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

/// Checks every `[[registry]]`; `None` when one of them has a mistake (reported).
pub(super) fn registries(
    raw: Vec<RawRegistry>,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<Vec<RegistryConfig>> {
    let mut names = HashSet::new();
    let checked: Vec<Option<RegistryConfig>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = KeyPath::default().key("registry").index(i);
            registry(r, &at, base, &mut names, errs)
        })
        .collect();
    checked.into_iter().collect()
}

fn registry(
    r: RawRegistry,
    at: &KeyPath,
    base: &Path,
    names: &mut HashSet<String>,
    errs: &mut Errors<'_>,
) -> Option<RegistryConfig> {
    if let Err(msg) = unique_name("registry", &r.name, names) {
        errs.at_key(at, "name", msg);
    }
    check_url(&r.url, at, errs);
    let (password, notifications_token) = secrets(&r, at, base, errs);
    check_timing(&r, at, errs);
    check_limits(&r, at, errs);
    let repository_pattern = pattern(
        at,
        "repository_pattern",
        r.repository_pattern.as_deref(),
        errs,
    );
    let tag_pattern = pattern(at, "tag_pattern", r.tag_pattern.as_deref(), errs);
    let storage = storage::check(
        storage::Given {
            storage_root: r.storage_root.as_deref(),
            s3: r.s3.as_ref(),
            registry_config: r.registry_config.as_deref(),
            capacity_bytes: r.capacity_bytes,
        },
        at,
        base,
        errs,
    );
    check_storage(&r, at, errs);
    let signature_keys = signature_keys(&r.signature_keys, at, base, errs);
    let storage = storage?;
    Some(RegistryConfig {
        name: r.name,
        url: r.url,
        username: r.username,
        password: password?,
        poll_interval: r.poll_interval,
        timeout: r.timeout,
        probe_interval: r.probe_interval,
        concurrency: r.concurrency,
        catalog_page_size: r.catalog_page_size,
        repository_pattern: repository_pattern?,
        tag_pattern: tag_pattern?,
        storage_root: storage.root,
        s3: storage.s3,
        registry_config: storage.registry_config,
        capacity_bytes: r.capacity_bytes,
        storage_usage_interval: r.storage_usage_interval,
        storage_interval: r.storage_interval,
        upload_max_age: r.upload_max_age,
        forecast_window: r.forecast_window,
        notifications_token: notifications_token?,
        audit_from_logs: r.audit_from_logs,
        signature_keys: signature_keys?,
    })
}

/// Reads every `signature_keys` file (relative paths from the config's directory); each
/// one that is not a P-256 public key is an error at its entry.
fn signature_keys(
    paths: &[PathBuf],
    at: &KeyPath,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<Vec<SignatureKey>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, p) in paths.iter().enumerate() {
        let name = p.display().to_string();
        let here = at.clone().key("signature_keys").index(i);
        if out.iter().any(|k: &SignatureKey| k.name == name) {
            errs.at(&here, format!("{name} is listed twice"));
            ok = false;
            continue;
        }
        match keys::read(&base.join(p)) {
            Ok(key) => out.push(SignatureKey { name, key }),
            Err(e) => {
                errs.at(&here, e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn check_url(url: &str, at: &KeyPath, errs: &mut Errors<'_>) {
    match reqwest::Url::parse(url) {
        // Rejected rather than redacted: the URL is shown by `check`, the landing page and
        // every poller error, and a credential has a key of its own that is never printed.
        Ok(u) if !u.username().is_empty() || u.password().is_some() => errs.at_secret_key(
            at,
            "url",
            "the URL holds credentials (user:password@): give them as username and \
             password_file (or password_env) instead, which are never printed",
        ),
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(u) => errs.at_key(
            at,
            "url",
            format!(
                "unsupported URL {url:?}: expected http:// or https:// with a host (scheme was {:?})",
                u.scheme()
            ),
        ),
        // Unparsable, yet perhaps with a credential in it: not echoed then.
        Err(e) if url.contains('@') => errs.at_secret_key(
            at,
            "url",
            format!("invalid URL ({e}): expected e.g. \"http://127.0.0.1:5000\""),
        ),
        Err(e) => errs.at_key(
            at,
            "url",
            format!("invalid URL {url:?} ({e}): expected e.g. \"http://127.0.0.1:5000\""),
        ),
    }
}

type Checked<T> = Option<Option<T>>;

/// Reads the password and the notifications token; a password needs a username.
fn secrets(
    r: &RawRegistry,
    at: &KeyPath,
    base: &Path,
    errs: &mut Errors<'_>,
) -> (Checked<Resolved>, Checked<Resolved>) {
    let password = SecretFields {
        inline: r.password.as_ref(),
        file: r.password_file.as_deref(),
        env: r.password_env.as_deref(),
    };
    let password = secret::read(errs, at, "password", password, base);
    let token = SecretFields {
        inline: r.notifications_token.as_ref(),
        file: r.notifications_token_file.as_deref(),
        env: r.notifications_token_env.as_deref(),
    };
    let token = secret::read(errs, at, "notifications_token", token, base);
    if password.is_set() && r.username.is_none() {
        errs.at_key(
            at,
            "username",
            "a password is set but no username: basic auth needs both",
        );
    }
    (password.checked(), token.checked())
}

fn check_timing(r: &RawRegistry, at: &KeyPath, errs: &mut Errors<'_>) {
    if r.poll_interval < Duration::from_secs(1) {
        errs.at_key(at, "poll_interval", "must be at least 1s");
    }
    if r.timeout.is_zero() {
        errs.at_key(at, "timeout", "must be greater than 0");
    }
    if r.probe_interval < Duration::from_secs(1) {
        errs.at_key(at, "probe_interval", "must be at least 1s");
    }
}

fn check_limits(r: &RawRegistry, at: &KeyPath, errs: &mut Errors<'_>) {
    if !(1..=256).contains(&r.concurrency) {
        errs.at_key(
            at,
            "concurrency",
            format!("must be between 1 and 256 (was {})", r.concurrency),
        );
    }
    if !(1..=10_000).contains(&r.catalog_page_size) {
        errs.at_key(
            at,
            "catalog_page_size",
            format!("must be between 1 and 10000 (was {})", r.catalog_page_size),
        );
    }
}

/// Compiles a naming-policy regex; `Some(None)` when none is configured.
fn pattern(
    at: &KeyPath,
    key: &str,
    pattern: Option<&str>,
    errs: &mut Errors<'_>,
) -> Checked<regex::Regex> {
    let Some(p) = pattern else {
        return Some(None);
    };
    match regex::Regex::new(p) {
        Ok(re) => Some(Some(re)),
        Err(e) => {
            errs.at_key(
                at,
                key,
                format!("invalid regex {p:?}: {}", one_line(&e.to_string())),
            );
            None
        }
    }
}

/// The storage timing (where the storage is, [`storage::check`] decides).
fn check_storage(r: &RawRegistry, at: &KeyPath, errs: &mut Errors<'_>) {
    for (key, value) in [
        ("storage_usage_interval", r.storage_usage_interval),
        ("storage_interval", r.storage_interval),
    ] {
        if value < Duration::from_secs(1) {
            errs.at_key(at, key, "must be at least 1s");
        }
    }
    if r.forecast_window < Duration::from_secs(60) {
        errs.at_key(
            at,
            "forecast_window",
            "must be at least 1m (a trend needs history)",
        );
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
