//! The storage monitor: usage of a registry's storage, a walk of distribution's storage
//! layout (blobs, reclaimable bytes, upload debris) and the growth forecast from usage
//! samples kept in the database.
//!
//! The storage is a local `storage_root` ([`fs`]: usage from statvfs every
//! `storage_usage_interval`) or an S3 bucket ([`s3_layout`]: S3 has no "disk full", so the
//! usage is what the walk listed, against `capacity_bytes` when it is configured). Both go
//! through the one [`walk::Layout`] seam, so the figures mean the same on either.

pub mod forecast;
pub mod fs;
pub mod fsusage;
pub mod gc;
pub mod s3;
pub mod s3_layout;
pub mod walk;

use crate::config::storage::S3Storage;
use crate::config::{Config, RegistryConfig};
use crate::metrics::StorageMetrics;
use crate::model::clock::SharedClock;
use crate::model::observed::Observations;
use crate::store::{ManifestUpdate, Sink, Store};
use forecast::Sample;
use fsusage::FsUsage;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Samples are kept for twice the forecast window (so a longer window after a reload has
/// history), and at least this long.
const MIN_SAMPLE_RETENTION: Duration = Duration::from_secs(14 * 86400);

/// Where a registry's storage is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Filesystem(PathBuf),
    S3 {
        bucket: Box<S3Storage>,
        /// `capacity_bytes`: what usage is measured against.
        capacity: Option<u64>,
    },
}

impl Storage {
    /// The storage of `r`, if it has one.
    pub fn of(r: &RegistryConfig) -> Option<Storage> {
        match (&r.storage_root, &r.s3) {
            (Some(root), _) => Some(Storage::Filesystem(root.clone())),
            (None, Some(s3)) => Some(Storage::S3 {
                bucket: Box::new(s3.clone()),
                capacity: r.capacity_bytes,
            }),
            (None, None) => None,
        }
    }

    /// For messages: the root directory, or the bucket (never its keys).
    pub fn describe(&self) -> String {
        match self {
            Storage::Filesystem(root) => root.display().to_string(),
            Storage::S3 { bucket, .. } => format!(
                "s3://{}/{} at {}",
                bucket.bucket,
                bucket.root_directory,
                bucket.endpoint.as_str().trim_end_matches('/')
            ),
        }
    }
}

/// A walk's outcome and the requests it made (also when it failed).
pub type WalkResult = (Result<walk::Walked, walk::WalkError>, walk::Requests);

/// Walks `storage` with its backend.
pub fn walk_storage(storage: &Storage, opts: &walk::WalkOptions) -> WalkResult {
    match storage {
        Storage::Filesystem(root) => {
            let layout = fs::FsLayout::new(root);
            (walk::walk_layout(&layout, opts), walk::Requests::default())
        }
        Storage::S3 { bucket, .. } => match s3_layout::S3Layout::new(bucket) {
            Ok(layout) => {
                let r = walk::walk_layout(&layout, opts);
                use walk::Layout as _;
                (r, layout.requests())
            }
            Err(e) => (Err(e), walk::Requests::default()),
        },
    }
}

/// The manifest cache of `registry` as the walk wants it; empty (with a warning) when the
/// database cannot be read, so the walk reads the manifests instead.
pub fn known_manifests(store: &Store, registry: &str) -> Arc<walk::ManifestRefs> {
    match store.reader().and_then(|r| r.manifest_refs(registry)) {
        Ok(rows) => Arc::new(rows.into_iter().collect()),
        Err(crate::store::StoreError::Missing { .. }) => Arc::default(),
        Err(e) => {
            tracing::warn!(registry, error = %e, "cannot read the manifest cache; the walk reads every manifest");
            Arc::default()
        }
    }
}

/// The settings of one registry the monitor re-reads on every round (so a reload changes
/// intervals, ages and the window without a restart).
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    storage: Storage,
    usage_interval: Duration,
    walk_interval: Duration,
    upload_max_age: Duration,
    window: Duration,
}

impl Settings {
    fn of(r: &RegistryConfig) -> Option<Settings> {
        Some(Settings {
            storage: Storage::of(r)?,
            usage_interval: r.storage_usage_interval,
            walk_interval: r.storage_interval,
            upload_max_age: r.upload_max_age,
            window: r.forecast_window,
        })
    }
}

/// Everything one registry's monitor needs from the daemon.
pub struct Monitor {
    pub registry: String,
    pub config: watch::Receiver<Arc<Config>>,
    pub metrics: StorageMetrics,
    pub sink: Sink,
    pub clock: SharedClock,
    pub store: Store,
    /// Where usage and forecast go for the alert rules.
    pub observed: Observations,
    pub stop: CancellationToken,
}

impl Monitor {
    fn settings(&self) -> Option<Settings> {
        self.config
            .borrow()
            .registry(&self.registry)
            .and_then(Settings::of)
    }

    /// Runs until `stop` is cancelled, or until a reload removes the registry or its
    /// storage (its series are then removed).
    pub async fn run(self) {
        let Some(first) = self.settings() else {
            return;
        };
        let name = self.registry.clone();
        if matches!(first.storage, Storage::S3 { .. }) {
            // The cost series exist from the start, at 0, so rate() works on the first walk.
            for kind in ["list", "get", "head"] {
                self.metrics
                    .walk_requests_total
                    .with_label_values(&[&name, kind]);
            }
        }
        self.metrics.walk_errors_total.with_label_values(&[&name]);
        let mut samples = self.history(first.window).await;
        let mut next_usage = Instant::now();
        let mut next_walk = Instant::now();
        let mut walking: Option<oneshot::Receiver<WalkResult>> = None;
        loop {
            let Some(s) = self.settings() else {
                tracing::info!(registry = %name, "storage removed from the config; storage monitoring stops");
                self.clear();
                return;
            };
            let filesystem = matches!(s.storage, Storage::Filesystem(_));
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(next_usage), if filesystem => {
                    if let Some(usage) = self.fs_usage(&s).await {
                        self.record_usage(&s, usage, &mut samples).await;
                    }
                    next_usage = Instant::now() + s.usage_interval;
                }
                _ = tokio::time::sleep_until(next_walk), if walking.is_none() => {
                    walking = self.start_walk(&s);
                    if walking.is_none() {
                        next_walk = Instant::now() + s.walk_interval;
                    }
                }
                result = async { walking.as_mut().expect("guarded by the if").await }, if walking.is_some() => {
                    walking = None;
                    next_walk = Instant::now() + s.walk_interval;
                    match result {
                        Ok((outcome, requests)) => {
                            self.count_requests(requests);
                            match outcome {
                                Ok(walked) => self.walk_done(&s, walked, &mut samples).await,
                                Err(e) => {
                                    self.metrics.walk_errors_total.with_label_values(&[&name]).inc();
                                    tracing::error!(registry = %name, error = %e, "storage walk failed");
                                }
                            }
                        }
                        Err(_) => {
                            self.metrics.walk_errors_total.with_label_values(&[&name]).inc();
                            tracing::error!(registry = %name, "storage walk thread died");
                        }
                    }
                }
            }
        }
    }

    /// The samples already in the database, so a restart keeps its trend.
    async fn history(&self, window: Duration) -> Vec<Sample> {
        let store = self.store.clone();
        let name = self.registry.clone();
        let since = self.clock.now() - window;
        let r = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Sample>> {
            Ok(store.reader()?.samples(&name, since)?)
        })
        .await;
        match r {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(registry = %self.registry, error = %format!("{e:#}"), "cannot read earlier storage samples; the trend starts afresh");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    async fn fs_usage(&self, s: &Settings) -> Option<FsUsage> {
        let Storage::Filesystem(root) = &s.storage else {
            return None;
        };
        let root = root.clone();
        // statvfs on a hung network filesystem blocks; keep it off the async workers.
        match tokio::task::spawn_blocking(move || fsusage::fs_usage(&root)).await {
            Ok(Ok(u)) => Some(u),
            Ok(Err(e)) => {
                tracing::error!(registry = %self.registry, error = %e, "cannot read filesystem usage");
                None
            }
            Err(_) => None,
        }
    }

    /// Exports a usage reading, stores it as a sample and updates the forecast.
    async fn record_usage(&self, s: &Settings, usage: FsUsage, samples: &mut Vec<Sample>) {
        let l = [self.registry.as_str()];
        let m = &self.metrics;
        m.capacity_bytes
            .with_label_values(&l)
            .set(usage.capacity_bytes as f64);
        m.available_bytes
            .with_label_values(&l)
            .set(usage.available_bytes as f64);
        m.used_bytes
            .with_label_values(&l)
            .set(usage.used_bytes as f64);
        m.used_ratio.with_label_values(&l).set(usage.used_ratio());
        self.observed.update(&self.registry, |o| {
            o.storage_used_ratio = Some(usage.used_ratio())
        });

        let now = self.clock.now();
        let sample = Sample {
            time: now,
            used_bytes: usage.used_bytes,
            capacity_bytes: usage.capacity_bytes,
            available_bytes: usage.available_bytes,
        };
        let keep = (s.window * 2).max(MIN_SAMPLE_RETENTION);
        if let Err(e) = self.sink.store_sample(&self.registry, sample, keep).await {
            tracing::warn!(registry = %self.registry, error = %e, "cannot store the storage sample");
        }
        samples.push(sample);
        samples.retain(|x| x.time > now - s.window);
        match forecast::forecast(samples, now, s.window) {
            Some(f) => {
                m.growth_bytes_per_day
                    .with_label_values(&l)
                    .set(f.growth_bytes_per_day);
                let days = f.days_until_full.unwrap_or(f64::INFINITY);
                m.days_until_full.with_label_values(&l).set(days);
                self.observed
                    .update(&self.registry, |o| o.storage_days_until_full = Some(days));
            }
            None => {
                let _ = m.growth_bytes_per_day.remove_label_values(&l);
                let _ = m.days_until_full.remove_label_values(&l);
                self.observed
                    .update(&self.registry, |o| o.storage_days_until_full = None);
            }
        }
    }

    /// The walk runs on its own thread: it can take minutes on a large tree and must hold
    /// neither an async worker nor the runtime's shutdown (an abandoned walk just ends).
    fn start_walk(&self, s: &Settings) -> Option<oneshot::Receiver<WalkResult>> {
        let (tx, rx) = oneshot::channel();
        let storage = s.storage.clone();
        let store = self.store.clone();
        let registry = self.registry.clone();
        let mut opts = walk::WalkOptions {
            upload_max_age: s.upload_max_age,
            now: self.clock.now().into(),
            top_repositories: 0,
            collect_reclaimable: false,
            known_manifests: None,
        };
        match std::thread::Builder::new()
            .name("storage-walk".into())
            .spawn(move || {
                opts.known_manifests = Some(known_manifests(&store, &registry));
                let _ = tx.send(walk_storage(&storage, &opts));
            }) {
            Ok(_) => Some(rx),
            Err(e) => {
                tracing::error!(registry = %self.registry, error = %e, "cannot start the storage walk thread");
                None
            }
        }
    }

    fn count_requests(&self, r: walk::Requests) {
        let c = &self.metrics.walk_requests_total;
        for (kind, n) in [("list", r.list), ("get", r.get), ("head", r.head)] {
            if n > 0 {
                c.with_label_values(&[&self.registry, kind]).inc_by(n);
            }
        }
    }

    async fn walk_done(&self, s: &Settings, walked: walk::Walked, samples: &mut Vec<Sample>) {
        let r = &walked.report;
        let l = [self.registry.as_str()];
        let m = &self.metrics;
        m.blobs.with_label_values(&l).set(r.blobs as f64);
        m.blob_bytes.with_label_values(&l).set(r.blob_bytes as f64);
        m.reclaimable_blobs
            .with_label_values(&l)
            .set(r.reclaimable_blobs as f64);
        m.reclaimable_bytes
            .with_label_values(&l)
            .set(r.reclaimable_bytes as f64);
        m.upload_bytes
            .with_label_values(&l)
            .set(r.upload_bytes as f64);
        m.repositories
            .with_label_values(&l)
            .set(r.repositories as f64);
        m.walk_duration_seconds
            .with_label_values(&l)
            .set(r.duration.as_secs_f64());
        m.walk_last_success_timestamp_seconds
            .with_label_values(&l)
            .set(self.clock.now().unix_timestamp_nanos() as f64 / 1e9);
        tracing::debug!(
            registry = %self.registry,
            storage = %s.storage.describe(),
            blobs = r.blobs,
            reclaimable_bytes = r.reclaimable_bytes,
            new_manifests = walked.new.len(),
            seconds = r.duration.as_secs_f64(),
            "storage walk finished"
        );
        if let Storage::S3 { capacity, .. } = &s.storage {
            self.s3_usage(s, *capacity, r.stored_bytes.unwrap_or(0), samples)
                .await;
        }
        let update = ManifestUpdate {
            registry: self.registry.clone(),
            present: walked.present,
            new: walked.new,
        };
        if let Err(e) = self.sink.store_manifests(update).await {
            tracing::warn!(registry = %self.registry, error = %e, "cannot store the manifest cache; the next walk reads the manifests again");
        }
    }

    /// On S3 the walk's listing is the usage: the bytes of every object and upload part.
    /// With `capacity_bytes` that is a reading like statvfs's (ratio, samples, forecast);
    /// without it only the used bytes are exported.
    async fn s3_usage(
        &self,
        s: &Settings,
        capacity: Option<u64>,
        used: u64,
        samples: &mut Vec<Sample>,
    ) {
        match capacity {
            Some(capacity) => {
                let usage = FsUsage {
                    capacity_bytes: capacity,
                    used_bytes: used,
                    available_bytes: capacity.saturating_sub(used),
                };
                self.record_usage(s, usage, samples).await;
            }
            None => {
                let l = [self.registry.as_str()];
                let m = &self.metrics;
                m.used_bytes.with_label_values(&l).set(used as f64);
                // A capacity removed by a reload takes its figures along.
                for g in [
                    &m.capacity_bytes,
                    &m.available_bytes,
                    &m.used_ratio,
                    &m.growth_bytes_per_day,
                    &m.days_until_full,
                ] {
                    let _ = g.remove_label_values(&l);
                }
                self.observed.update(&self.registry, |o| {
                    o.storage_used_ratio = None;
                    o.storage_days_until_full = None;
                });
            }
        }
    }

    fn clear(&self) {
        self.observed.update(&self.registry, |o| {
            o.storage_used_ratio = None;
            o.storage_days_until_full = None;
        });
        let l = [self.registry.as_str()];
        let m = &self.metrics;
        for g in [
            &m.capacity_bytes,
            &m.available_bytes,
            &m.used_bytes,
            &m.used_ratio,
            &m.blobs,
            &m.blob_bytes,
            &m.reclaimable_blobs,
            &m.reclaimable_bytes,
            &m.upload_bytes,
            &m.repositories,
            &m.walk_duration_seconds,
            &m.walk_last_success_timestamp_seconds,
            &m.growth_bytes_per_day,
            &m.days_until_full,
        ] {
            let _ = g.remove_label_values(&l);
        }
        let _ = m.walk_errors_total.remove_label_values(&l);
        for kind in ["list", "get", "head"] {
            let _ = m
                .walk_requests_total
                .remove_label_values(&[&self.registry, kind]);
        }
    }
}

/// The registries a config monitors the storage of, by name, with where it is.
pub fn monitored(config: &Config) -> Vec<(String, Storage)> {
    config
        .registries
        .iter()
        .filter_map(|r| Storage::of(r).map(|s| (r.name.clone(), s)))
        .collect()
}
