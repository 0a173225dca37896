//! `regwatch storage`: usage, growth trend and forecast, blobs, reclaimable bytes, upload
//! debris and the largest repositories, for each registry with storage configured (a
//! `storage_root` or an S3 bucket).
//!
//! It walks the storage itself (read-only, like `garbage-collect --dry-run`) and reads the
//! usage samples and the manifest cache the daemon stored; it does not need the daemon to be
//! running, and it writes nothing.

use crate::config::{Config, RegistryConfig, duration};
use crate::model::text::human_bytes;
use crate::sources::storage::forecast::{self, Forecast};
use crate::sources::storage::fsusage::{self, FsUsage};
use crate::sources::storage::{self as monitor, Storage, walk};
use crate::store::{Store, StoreError};
use anyhow::Context;
use serde::Serialize;
use std::io::Write;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Only this registry (by its name in the config).
    #[arg(long)]
    pub registry: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// How many of the largest repositories to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Also list the digest of every blob garbage collection would delete.
    #[arg(long)]
    pub list_reclaimable: bool,
}

#[derive(Debug, Serialize)]
struct Usage {
    capacity_bytes: u64,
    used_bytes: u64,
    available_bytes: u64,
    used_ratio: f64,
}

impl From<FsUsage> for Usage {
    fn from(u: FsUsage) -> Self {
        Usage {
            capacity_bytes: u.capacity_bytes,
            used_bytes: u.used_bytes,
            available_bytes: u.available_bytes,
            used_ratio: u.used_ratio(),
        }
    }
}

#[derive(Debug, Serialize)]
struct RegistryStorage {
    registry: String,
    /// The root directory, or the bucket (never its keys).
    storage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_root: Option<String>,
    /// `null` on S3 without `capacity_bytes` (S3 itself has no capacity).
    usage: Option<Usage>,
    /// What the storage holds, as listed (S3); the filesystem's is in `usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stored_bytes: Option<u64>,
    /// `null` without enough samples in the window.
    forecast: Option<Forecast>,
    forecast_window_seconds: u64,
    upload_max_age_seconds: u64,
    walk: walk::WalkReport,
}

const NO_STORAGE: &str = "set storage_root (the registry's storage.filesystem.rootdirectory), [registry.s3], or registry_config (the registry's config.yml)";

pub fn run(config: &Config, args: &StorageArgs) -> anyhow::Result<()> {
    let chosen: Vec<&RegistryConfig> = match &args.registry {
        Some(name) => {
            let r = config.registry(name).with_context(|| {
                format!(
                    "no registry named {name:?} in {} (configured: {})",
                    config.origin,
                    config
                        .registries
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            anyhow::ensure!(
                Storage::of(r).is_some(),
                "registry {name:?} has no storage: {NO_STORAGE}"
            );
            vec![r]
        }
        None => config
            .registries
            .iter()
            .filter(|r| Storage::of(r).is_some())
            .collect(),
    };
    anyhow::ensure!(!chosen.is_empty(), "no registry has storage: {NO_STORAGE}");
    let store = Store::open(&config.database)?;
    // Without a database (the daemon never ran) there are no samples: no trend yet.
    let db = match store.reader() {
        Ok(db) => Some(db),
        Err(StoreError::Missing { .. } | StoreError::PgMissing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let now = time::OffsetDateTime::now_utc();
    let mut out = Vec::new();
    for r in chosen {
        let storage = Storage::of(r).expect("filtered above");
        let opts = walk::WalkOptions {
            upload_max_age: r.upload_max_age,
            now: SystemTime::now(),
            top_repositories: args.top,
            collect_reclaimable: args.list_reclaimable,
            known_manifests: db
                .is_some()
                .then(|| monitor::known_manifests(&store, &r.name)),
        };
        let report = monitor::walk_storage(&storage, &opts).0?.report;
        let usage = match &storage {
            Storage::Filesystem(root) => Some(fsusage::fs_usage(root)?),
            Storage::S3 { capacity, .. } => capacity.map(|c| {
                let used = report.stored_bytes.unwrap_or(0);
                FsUsage {
                    capacity_bytes: c,
                    used_bytes: used,
                    available_bytes: c.saturating_sub(used),
                }
            }),
        };
        let samples = match &db {
            Some(db) => db
                .samples(&r.name, now - r.forecast_window)
                .with_context(|| format!("reading storage samples from {}", store.location()))?,
            None => Vec::new(),
        };
        out.push(RegistryStorage {
            registry: r.name.clone(),
            storage: storage.describe(),
            storage_root: r.storage_root.as_ref().map(|p| p.display().to_string()),
            usage: usage.map(Usage::from),
            stored_bytes: report.stored_bytes,
            forecast: forecast::forecast(&samples, now, r.forecast_window),
            forecast_window_seconds: r.forecast_window.as_secs(),
            upload_max_age_seconds: r.upload_max_age.as_secs(),
            walk: report,
        });
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    match args.format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut w, &serde_json::json!({ "registries": out }))?;
            writeln!(w)?;
        }
        OutputFormat::Table => {
            for (i, r) in out.iter().enumerate() {
                if i > 0 {
                    writeln!(w)?;
                }
                table(&mut w, r)?;
            }
        }
    }
    Ok(())
}

/// Usage (filesystem, or bucket against its capacity) and the trend.
fn usage_lines(w: &mut impl Write, r: &RegistryStorage) -> std::io::Result<()> {
    let what = if r.storage_root.is_some() {
        "filesystem "
    } else {
        "bucket     "
    };
    match (&r.usage, r.stored_bytes) {
        (Some(u), _) => writeln!(
            w,
            "{what}  {} of {} used ({:.1}%), {} available",
            bytes(u.used_bytes as f64),
            bytes(u.capacity_bytes as f64),
            u.used_ratio * 100.0,
            bytes(u.available_bytes as f64)
        )?,
        (None, Some(stored)) => writeln!(
            w,
            "{what}  {} stored (no capacity_bytes: no usage ratio or forecast)",
            bytes(stored as f64)
        )?,
        (None, None) => {}
    }
    let window = duration::humane(std::time::Duration::from_secs(r.forecast_window_seconds));
    match &r.forecast {
        _ if r.usage.is_none() => writeln!(
            w,
            "trend        none: set capacity_bytes (the bucket's quota) for a usage ratio, trend and forecast"
        )?,
        Some(f) => {
            writeln!(
                w,
                "trend        {}{}/day over the last {window} ({} samples)",
                if f.growth_bytes_per_day >= 0.0 {
                    "+"
                } else {
                    "-"
                },
                bytes(f.growth_bytes_per_day.abs()),
                f.samples
            )?;
            match f.days_until_full {
                Some(d) => writeln!(w, "forecast     full in {d:.1} days at this rate")?,
                None => writeln!(w, "forecast     not growing: no fill date")?,
            }
        }
        None => {
            writeln!(
                w,
                "trend        not enough history yet (regwatch run samples usage; needs {} within {window})",
                duration::humane(forecast::min_span(std::time::Duration::from_secs(
                    r.forecast_window_seconds
                )))
            )?;
        }
    }
    Ok(())
}

fn table(w: &mut impl Write, r: &RegistryStorage) -> std::io::Result<()> {
    let k = &r.walk;
    writeln!(w, "registry     {} ({})", r.registry, r.storage)?;
    usage_lines(w, r)?;
    let requests = k.requests;
    let cost = if r.storage_root.is_some() {
        String::new()
    } else {
        format!(" ({} list, {} get requests)", requests.list, requests.get)
    };
    writeln!(
        w,
        "blobs        {} ({}) in {} repositories, {} tags, walked in {:.2}s{cost}",
        k.blobs,
        bytes(k.blob_bytes as f64),
        k.repositories,
        k.tags,
        k.duration.as_secs_f64()
    )?;
    writeln!(
        w,
        "reclaimable  {} in {} blobs (what `docker-registry garbage-collect` would delete)",
        bytes(k.reclaimable_bytes as f64),
        k.reclaimable_blobs
    )?;
    if k.unreadable_manifests > 0 {
        writeln!(
            w,
            "             warning: {} manifest revisions could not be read; reclaimable may be too high",
            k.unreadable_manifests
        )?;
    }
    writeln!(
        w,
        "uploads      {} unfinished, {} older than {} holding {}",
        k.uploads,
        k.stale_uploads,
        duration::humane(std::time::Duration::from_secs(r.upload_max_age_seconds)),
        bytes(k.upload_bytes as f64)
    )?;
    if !k.top_repositories.is_empty() {
        writeln!(
            w,
            "top repositories (bytes linked; shared layers count in each)"
        )?;
        writeln!(
            w,
            "  {:>10}  {:>9}  {:>6}  name",
            "bytes", "manifests", "layers"
        )?;
        for t in &k.top_repositories {
            writeln!(
                w,
                "  {:>10}  {:>9}  {:>6}  {}",
                bytes(t.bytes as f64),
                t.manifests,
                t.layers,
                t.name
            )?;
        }
    }
    for d in &k.reclaimable {
        writeln!(w, "reclaimable blob {d}")?;
    }
    Ok(())
}

/// Binary units (see [`human_bytes`]); rates are rounded to whole bytes first.
fn bytes(n: f64) -> String {
    human_bytes(n.round().max(0.0) as u64)
}
