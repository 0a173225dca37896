//! Metric definitions and the Prometheus text rendering behind `GET /metrics`.

use prometheus::{
    Encoder, Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric regwatch exports, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    pub config_last_reload_successful: IntGauge,
    pub config_last_reload_success_timestamp_seconds: Gauge,
    pub audit_events_total: IntCounterVec,
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
        for c in [
            Box::new(build_info) as Box<dyn prometheus::core::Collector>,
            Box::new(config_last_reload_successful.clone()),
            Box::new(config_last_reload_success_timestamp_seconds.clone()),
            Box::new(audit_events_total.clone()),
        ] {
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
