//! Metric definitions and the Prometheus text rendering behind `GET /metrics`.

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric regwatch exports, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    pub config_last_reload_successful: IntGauge,
    pub config_last_reload_success_timestamp_seconds: Gauge,
    pub audit_events_total: IntCounterVec,
    pub storage: StorageMetrics,
}

/// The storage monitor's gauges, each labelled by `registry`.
#[derive(Clone)]
pub struct StorageMetrics {
    pub capacity_bytes: GaugeVec,
    pub available_bytes: GaugeVec,
    pub used_bytes: GaugeVec,
    pub used_ratio: GaugeVec,
    pub blobs: GaugeVec,
    pub blob_bytes: GaugeVec,
    pub reclaimable_blobs: GaugeVec,
    pub reclaimable_bytes: GaugeVec,
    pub upload_bytes: GaugeVec,
    pub repositories: GaugeVec,
    pub walk_duration_seconds: GaugeVec,
    pub walk_last_success_timestamp_seconds: GaugeVec,
    pub growth_bytes_per_day: GaugeVec,
    pub days_until_full: GaugeVec,
}

impl StorageMetrics {
    fn new() -> Self {
        let g = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["registry"]).expect("valid metric")
        };
        StorageMetrics {
            capacity_bytes: g(
                "regwatch_storage_capacity_bytes",
                "Size of the filesystem holding the registry's storage root.",
            ),
            available_bytes: g(
                "regwatch_storage_available_bytes",
                "Bytes an unprivileged writer (the registry) can still write on that filesystem (statvfs f_bavail).",
            ),
            used_bytes: g(
                "regwatch_storage_used_bytes",
                "Bytes in use on that filesystem (by anyone).",
            ),
            used_ratio: g(
                "regwatch_storage_used_ratio",
                "used / (used + available), as df computes Use%.",
            ),
            blobs: g(
                "regwatch_storage_blobs",
                "Blobs (layers, configs, manifests) in the registry's storage.",
            ),
            blob_bytes: g(
                "regwatch_storage_blob_bytes",
                "Bytes of blob data in the registry's storage.",
            ),
            reclaimable_blobs: g(
                "regwatch_storage_reclaimable_blobs",
                "Blobs docker-registry garbage-collect (without --delete-untagged) would delete.",
            ),
            reclaimable_bytes: g(
                "regwatch_storage_reclaimable_bytes",
                "Blob bytes docker-registry garbage-collect (without --delete-untagged) would free.",
            ),
            upload_bytes: g(
                "regwatch_storage_upload_bytes",
                "Bytes held by unfinished uploads older than upload_max_age.",
            ),
            repositories: g(
                "regwatch_storage_repositories",
                "Repositories in the registry's storage.",
            ),
            walk_duration_seconds: g(
                "regwatch_storage_walk_duration_seconds",
                "How long the last walk of the storage tree took.",
            ),
            walk_last_success_timestamp_seconds: g(
                "regwatch_storage_walk_last_success_timestamp_seconds",
                "Unix time the last walk of the storage tree finished.",
            ),
            growth_bytes_per_day: g(
                "regwatch_storage_growth_bytes_per_day",
                "Trend of the used bytes (Theil-Sen slope over forecast_window); absent without enough history.",
            ),
            days_until_full: g(
                "regwatch_storage_days_until_full",
                "Days until the available bytes are used up at the current trend; +Inf when not growing, absent without enough history.",
            ),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        [
            &self.capacity_bytes,
            &self.available_bytes,
            &self.used_bytes,
            &self.used_ratio,
            &self.blobs,
            &self.blob_bytes,
            &self.reclaimable_blobs,
            &self.reclaimable_bytes,
            &self.upload_bytes,
            &self.repositories,
            &self.walk_duration_seconds,
            &self.walk_last_success_timestamp_seconds,
            &self.growth_bytes_per_day,
            &self.days_until_full,
        ]
        .into_iter()
        .map(|g| Box::new(g.clone()) as Box<dyn prometheus::core::Collector>)
        .collect()
    }
}

/// The build's version and git revision (set by build.rs).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("REGWATCH_REVISION");

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "regwatch_build_info",
                "A metric with a constant '1' value labeled by the version and git revision regwatch was built from.",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[VERSION, REVISION]).set(1);
        let config_last_reload_successful = IntGauge::new(
            "regwatch_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful (1) or not (0).",
        )
        .expect("valid metric");
        config_last_reload_successful.set(1);
        let config_last_reload_success_timestamp_seconds = Gauge::new(
            "regwatch_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )
        .expect("valid metric");
        config_last_reload_success_timestamp_seconds.set(unix_now());
        let audit_events_total = IntCounterVec::new(
            Opts::new(
                "regwatch_audit_events_total",
                "Events committed to the audit trail, by action.",
            ),
            &["action"],
        )
        .expect("valid metric");
        let storage = StorageMetrics::new();
        for c in [
            Box::new(build_info) as Box<dyn prometheus::core::Collector>,
            Box::new(config_last_reload_successful.clone()),
            Box::new(config_last_reload_success_timestamp_seconds.clone()),
            Box::new(audit_events_total.clone()),
        ]
        .into_iter()
        .chain(storage.collectors())
        {
            registry.register(c).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        Metrics {
            registry,
            config_last_reload_successful,
            config_last_reload_success_timestamp_seconds,
            audit_events_total,
            storage,
        }
    }

    /// The Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text encoder writes UTF-8")
    }

    pub fn reload_succeeded(&self) {
        self.config_last_reload_successful.set(1);
        self.config_last_reload_success_timestamp_seconds
            .set(unix_now());
    }

    pub fn reload_failed(&self) {
        self.config_last_reload_successful.set(0);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_build_info_and_reload_state() {
        let m = super::Metrics::new();
        m.reload_failed();
        let text = m.render();
        assert!(text.contains("# TYPE regwatch_build_info gauge"), "{text}");
        assert!(
            text.contains(&format!(
                "regwatch_build_info{{revision=\"{}\",version=\"{}\"}} 1",
                super::REVISION,
                super::VERSION
            )),
            "{text}"
        );
        assert!(
            text.contains("regwatch_config_last_reload_successful 0"),
            "{text}"
        );
    }
}
