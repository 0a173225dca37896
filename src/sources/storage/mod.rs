//! The storage monitor: filesystem usage of a registry's `storage_root`, a walk of
//! distribution's storage layout (blobs, reclaimable bytes, upload debris) and the growth
//! forecast from usage samples kept in the database.

pub mod forecast;
pub mod fsusage;
pub mod gc;
pub mod walk;

use crate::config::{Config, RegistryConfig};
use crate::metrics::StorageMetrics;
use crate::model::clock::SharedClock;
use crate::model::observed::Observations;
use crate::store::{Sink, Store};
use forecast::Sample;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Samples are kept for twice the forecast window (so a longer window after a reload has
/// history), and at least this long.
const MIN_SAMPLE_RETENTION: Duration = Duration::from_secs(14 * 86400);

/// The settings of one registry the monitor re-reads on every round (so a reload changes
/// intervals, ages and the window without a restart).
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    root: PathBuf,
    usage_interval: Duration,
    walk_interval: Duration,
    upload_max_age: Duration,
    window: Duration,
}

impl Settings {
    fn of(r: &RegistryConfig) -> Option<Settings> {
        Some(Settings {
            root: r.storage_root.clone()?,
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

type WalkResult = Result<walk::WalkReport, walk::WalkError>;

impl Monitor {
    fn settings(&self) -> Option<Settings> {
        self.config
            .borrow()
            .registry(&self.registry)
            .and_then(Settings::of)
    }

    /// Runs until `stop` is cancelled, or until a reload removes the registry or its
    /// `storage_root` (its series are then removed).
    pub async fn run(self) {
        let Some(first) = self.settings() else {
            return;
        };
        let name = self.registry.clone();
        let mut samples = self.history(first.window).await;
        let mut next_usage = Instant::now();
        let mut next_walk = Instant::now();
        let mut walking: Option<oneshot::Receiver<WalkResult>> = None;
        loop {
            let Some(s) = self.settings() else {
                tracing::info!(registry = %name, "storage_root removed; storage monitoring stops");
                self.clear();
                return;
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(next_usage) => {
                    self.usage_round(&s, &mut samples).await;
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
                        Ok(Ok(report)) => self.walk_done(&s, &report),
                        Ok(Err(e)) => tracing::error!(registry = %name, error = %e, "storage walk failed"),
                        Err(_) => tracing::error!(registry = %name, "storage walk thread died"),
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

    async fn usage_round(&self, s: &Settings, samples: &mut Vec<Sample>) {
        let root = s.root.clone();
        // statvfs on a hung network filesystem blocks; keep it off the async workers.
        let usage = match tokio::task::spawn_blocking(move || fsusage::fs_usage(&root)).await {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => {
                tracing::error!(registry = %self.registry, error = %e, "cannot read filesystem usage");
                return;
            }
            Err(_) => return,
        };
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
        let root = s.root.clone();
        let opts = walk::WalkOptions {
            upload_max_age: s.upload_max_age,
            now: self.clock.now().into(),
            top_repositories: 0,
            collect_reclaimable: false,
        };
        match std::thread::Builder::new()
            .name("storage-walk".into())
            .spawn(move || {
                let _ = tx.send(walk::walk(&root, &opts));
            }) {
            Ok(_) => Some(rx),
            Err(e) => {
                tracing::error!(registry = %self.registry, error = %e, "cannot start the storage walk thread");
                None
            }
        }
    }

    fn walk_done(&self, s: &Settings, r: &walk::WalkReport) {
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
            root = %s.root.display(),
            blobs = r.blobs,
            reclaimable_bytes = r.reclaimable_bytes,
            seconds = r.duration.as_secs_f64(),
            "storage walk finished"
        );
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
    }
}

/// The storage roots a config monitors, by registry name.
pub fn monitored(config: &Config) -> Vec<(String, &Path)> {
    config
        .registries
        .iter()
        .filter_map(|r| r.storage_root.as_deref().map(|p| (r.name.clone(), p)))
        .collect()
}
