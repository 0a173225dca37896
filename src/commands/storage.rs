//! `regwatch storage`: filesystem usage, growth trend and forecast, blobs, reclaimable bytes,
//! upload debris and the largest repositories, for each registry with a `storage_root`.
//!
//! It walks the storage itself (read-only, like `garbage-collect --dry-run`) and reads the
//! usage samples the daemon stored; it does not need the daemon to be running.

use crate::config::{Config, RegistryConfig, duration};
use crate::model::text::human_bytes;
use crate::sources::storage::forecast::{self, Forecast};
use crate::sources::storage::fsusage::{self, FsUsage};
use crate::sources::storage::walk;
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
    storage_root: String,
    usage: Usage,
    /// `null` without enough samples in the window.
    forecast: Option<Forecast>,
    forecast_window_seconds: u64,
    upload_max_age_seconds: u64,
    walk: walk::WalkReport,
}

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
                r.storage_root.is_some(),
                "registry {name:?} has no storage_root: set it to the registry's storage.filesystem.rootdirectory"
            );
            vec![r]
        }
        None => config
            .registries
            .iter()
            .filter(|r| r.storage_root.is_some())
            .collect(),
    };
    anyhow::ensure!(
        !chosen.is_empty(),
        "no registry has a storage_root: set it to the registry's storage.filesystem.rootdirectory"
    );
    let store = Store::sqlite(&config.database.path);
    // Without a database (the daemon never ran) there are no samples: no trend yet.
    let db = match store.reader() {
        Ok(db) => Some(db),
        Err(StoreError::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let now = time::OffsetDateTime::now_utc();
    let mut out = Vec::new();
    for r in chosen {
        let root = r.storage_root.as_deref().expect("filtered above");
        let usage = fsusage::fs_usage(root)?;
        let report = walk::walk(
            root,
            &walk::WalkOptions {
                upload_max_age: r.upload_max_age,
                now: SystemTime::now(),
                top_repositories: args.top,
                collect_reclaimable: args.list_reclaimable,
            },
        )?;
        let samples = match &db {
            Some(db) => db
                .samples(&r.name, now - r.forecast_window)
                .with_context(|| format!("reading storage samples from {}", store.location()))?,
            None => Vec::new(),
        };
        out.push(RegistryStorage {
            registry: r.name.clone(),
            storage_root: root.display().to_string(),
            usage: usage.into(),
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

fn table(w: &mut impl Write, r: &RegistryStorage) -> std::io::Result<()> {
    let u = &r.usage;
    let k = &r.walk;
    writeln!(w, "registry     {} ({})", r.registry, r.storage_root)?;
    writeln!(
        w,
        "filesystem   {} of {} used ({:.1}%), {} available",
        bytes(u.used_bytes as f64),
        bytes(u.capacity_bytes as f64),
        u.used_ratio * 100.0,
        bytes(u.available_bytes as f64)
    )?;
    let window = duration::humane(std::time::Duration::from_secs(r.forecast_window_seconds));
    match &r.forecast {
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
    writeln!(
        w,
        "blobs        {} ({}) in {} repositories, walked in {:.2}s",
        k.blobs,
        bytes(k.blob_bytes as f64),
        k.repositories,
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
