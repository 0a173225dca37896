//! Metric definitions and the Prometheus text rendering behind `GET /metrics`.

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric regwatch exports, registered once at start-up, in groups by who writes
/// them.
pub struct Metrics {
    registry: Registry,
    pub config_last_reload_successful: IntGauge,
    pub config_last_reload_success_timestamp_seconds: Gauge,
    pub audit_events_total: IntCounterVec,
    /// 1 while this agent reaches its database (PostgreSQL; always 1 on SQLite).
    pub database_up: IntGauge,
    /// 1 while this agent holds the lease (labelled `lease`) for a singleton task.
    pub lease_held: IntGaugeVec,
    pub traffic: TrafficMetrics,
    pub logs: LogMetrics,
    pub alerts: AlertMetrics,
    pub registries: RegistryMetrics,
    pub storage: StorageMetrics,
    pub reports: ReportMetrics,
    pub forwards: ForwardMetrics,
    pub database: DatabaseMetrics,
}

/// Whether the audit store can do its job, set from the writer's health at each scrape and
/// by the background integrity check.
#[derive(Clone)]
pub struct DatabaseMetrics {
    pub writable: IntGauge,
    pub replaced: IntGauge,
    pub retained_events: IntGauge,
    pub integrity_ok: IntGauge,
}

impl DatabaseMetrics {
    fn new() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let integrity_ok = gauge(
            "regwatch_database_integrity_ok",
            "SQLite's structural check of the whole database (PRAGMA quick_check): 1 ok, 0 damaged, -1 not run yet.",
        );
        integrity_ok.set(-1);
        let writable = gauge(
            "regwatch_database_writable",
            "Whether the last commit to the audit store succeeded (0: nothing is being stored or acknowledged).",
        );
        writable.set(1);
        DatabaseMetrics {
            writable,
            replaced: gauge(
                "regwatch_database_replaced",
                "1 when the database file was deleted or replaced under the running daemon (restart needed).",
            ),
            retained_events: gauge(
                "regwatch_database_retained_events",
                "regwatch's own events waiting for the store to accept a commit again.",
            ),
            integrity_ok,
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.writable.clone()),
            Box::new(self.replaced.clone()),
            Box::new(self.retained_events.clone()),
            Box::new(self.integrity_ok.clone()),
        ]
    }
}

/// What the logs say about the traffic, labelled `registry`.
#[derive(Clone)]
pub struct TrafficMetrics {
    pub pulls_total: IntCounterVec,
    pub pull_failures_total: IntCounterVec,
    pub blob_checks_total: IntCounterVec,
    pub self_requests_total: IntCounterVec,
    pub pushes_total: IntCounterVec,
    pub deletes_total: IntCounterVec,
    pub auth_failures_total: IntCounterVec,
    /// Also labelled `window` (`1m`, `5m`).
    pub pull_failure_ratio: GaugeVec,
    pub auth_failure_burst_max: IntGaugeVec,
}

impl TrafficMetrics {
    fn new() -> Self {
        TrafficMetrics {
            pulls_total: counter(
                "regwatch_pulls_total",
                "Pull requests (manifest GET/HEAD, blob GET) seen in the logs; not blob HEADs, not regwatch's own.",
                "registry",
            ),
            pull_failures_total: counter(
                "regwatch_pull_failures_total",
                "Pull requests that failed (404, 403, 5xx, ...; not the 401 challenge).",
                "registry",
            ),
            blob_checks_total: counter(
                "regwatch_blob_checks_total",
                "Blob HEAD requests seen in the logs: a pusher asking whether a layer exists (neither pulls nor failures).",
                "registry",
            ),
            self_requests_total: IntCounterVec::new(
                Opts::new(
                    "regwatch_self_requests_total",
                    "Requests made by regwatch itself (user agent regwatch/<version>), by where they were seen (source=log|notification); never counted as traffic.",
                ),
                &["registry", "source"],
            )
            .expect("valid metric"),
            pushes_total: counter(
                "regwatch_pushes_total",
                "Manifests pushed (one per image push), seen in the logs.",
                "registry",
            ),
            deletes_total: counter(
                "regwatch_deletes_total",
                "Successful DELETE requests, seen in the logs.",
                "registry",
            ),
            auth_failures_total: counter(
                "regwatch_auth_failures_total",
                "Failed logins: 401 with a user name, or a failed-login log line.",
                "registry",
            ),
            pull_failure_ratio: GaugeVec::new(
                Opts::new(
                    "regwatch_pull_failure_ratio",
                    "Failed pulls / pulls over the window (absent without pulls).",
                ),
                &["registry", "window"],
            )
            .expect("valid metric"),
            auth_failure_burst_max: IntGaugeVec::new(
                Opts::new(
                    "regwatch_auth_failure_burst_max",
                    "Most failed logins by one user or one address in the last minute.",
                ),
                &["registry"],
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.pulls_total.clone()),
            Box::new(self.pull_failures_total.clone()),
            Box::new(self.blob_checks_total.clone()),
            Box::new(self.self_requests_total.clone()),
            Box::new(self.pushes_total.clone()),
            Box::new(self.deletes_total.clone()),
            Box::new(self.auth_failures_total.clone()),
            Box::new(self.pull_failure_ratio.clone()),
            Box::new(self.auth_failure_burst_max.clone()),
        ]
    }
}

/// The tailers' own figures, labelled `log`.
#[derive(Clone)]
pub struct LogMetrics {
    pub lines_total: IntCounterVec,
    pub parse_errors_total: IntCounterVec,
    pub lines_truncated_total: IntCounterVec,
    pub lag_bytes: IntGaugeVec,
}

impl LogMetrics {
    fn new() -> Self {
        LogMetrics {
            lines_total: counter(
                "regwatch_log_lines_total",
                "Lines read from the log.",
                "log",
            ),
            parse_errors_total: counter(
                "regwatch_log_parse_errors_total",
                "Lines the log's format could not parse.",
                "log",
            ),
            lines_truncated_total: counter(
                "regwatch_log_lines_truncated_total",
                "Lines longer than max_line_bytes, cut there.",
                "log",
            ),
            lag_bytes: IntGaugeVec::new(
                Opts::new(
                    "regwatch_log_lag_bytes",
                    "Bytes written to the log but not yet read.",
                ),
                &["log"],
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.lines_total.clone()),
            Box::new(self.parse_errors_total.clone()),
            Box::new(self.lines_truncated_total.clone()),
            Box::new(self.lag_bytes.clone()),
        ]
    }
}

/// Alerting: firing alerts by `rule`, deliveries by `channel`, the outbox.
#[derive(Clone)]
pub struct AlertMetrics {
    pub firing: IntGaugeVec,
    pub notifications_total: IntCounterVec,
    pub notifications_failed_total: IntCounterVec,
    pub outbox_pending: IntGauge,
}

impl AlertMetrics {
    fn new() -> Self {
        AlertMetrics {
            firing: IntGaugeVec::new(
                Opts::new(
                    "regwatch_alerts_firing",
                    "Alerts of the rule firing now (one per group, e.g. per address).",
                ),
                &["rule"],
            )
            .expect("valid metric"),
            notifications_total: counter(
                "regwatch_notifications_total",
                "Notifications the channel accepted.",
                "channel",
            ),
            notifications_failed_total: counter(
                "regwatch_notifications_failed_total",
                "Delivery attempts that failed (each is retried from the outbox).",
                "channel",
            ),
            outbox_pending: IntGauge::new(
                "regwatch_outbox_pending",
                "Notifications waiting in the outbox for their channel to accept them.",
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.firing.clone()),
            Box::new(self.notifications_total.clone()),
            Box::new(self.notifications_failed_total.clone()),
            Box::new(self.outbox_pending.clone()),
        ]
    }
}

/// The counters one log feeds, resolved once (a label lookup per line would cost more than
/// parsing it).
#[derive(Clone)]
pub struct LogCounters {
    pub lines: IntCounter,
    pub parse_errors: IntCounter,
    pub pulls: IntCounter,
    pub pull_failures: IntCounter,
    pub blob_checks: IntCounter,
    pub self_requests: IntCounter,
    pub pushes: IntCounter,
    pub deletes: IntCounter,
    pub auth_failures: IntCounter,
}

/// Scheduled reports (`[[report]]`), labelled `report`.
#[derive(Clone)]
pub struct ReportMetrics {
    pub runs_total: IntCounterVec,
    pub failures_total: IntCounterVec,
    pub mail_failures_total: IntCounterVec,
    pub last_success_timestamp_seconds: GaugeVec,
    pub last_rows: IntGaugeVec,
}

impl ReportMetrics {
    fn new() -> Self {
        ReportMetrics {
            runs_total: counter(
                "regwatch_report_runs_total",
                "Scheduled report runs, successful or not.",
                "report",
            ),
            failures_total: counter(
                "regwatch_report_failures_total",
                "Scheduled report runs that wrote no report (the error is logged).",
                "report",
            ),
            mail_failures_total: counter(
                "regwatch_report_mail_failures_total",
                "Reports written but not mailed through one of their channels (the file stays).",
                "report",
            ),
            last_success_timestamp_seconds: GaugeVec::new(
                Opts::new(
                    "regwatch_report_last_success_timestamp_seconds",
                    "When the report was last written.",
                ),
                &["report"],
            )
            .expect("valid metric"),
            last_rows: IntGaugeVec::new(
                Opts::new(
                    "regwatch_report_last_rows",
                    "Audit events in the last report written.",
                ),
                &["report"],
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.runs_total.clone()),
            Box::new(self.failures_total.clone()),
            Box::new(self.mail_failures_total.clone()),
            Box::new(self.last_success_timestamp_seconds.clone()),
            Box::new(self.last_rows.clone()),
        ]
    }
}

/// The audit trail's forwarders (`[[forward]]`), labelled `forward`.
#[derive(Clone)]
pub struct ForwardMetrics {
    pub sent_total: IntCounterVec,
    pub errors_total: IntCounterVec,
    pub lag_rows: IntGaugeVec,
}

/// One forwarder's series, resolved once.
#[derive(Clone)]
pub struct ForwardCounters {
    pub sent: IntCounter,
    pub errors: IntCounter,
    pub lag: IntGauge,
}

impl ForwardMetrics {
    const LABEL: &'static str = "forward";

    fn new() -> Self {
        ForwardMetrics {
            sent_total: counter(
                "regwatch_forward_sent_total",
                "Audit rows the forwarder's receiver accepted (resends after a crash included).",
                Self::LABEL,
            ),
            errors_total: counter(
                "regwatch_forward_errors_total",
                "Failed connects or sends to the forwarder's receiver (each is retried).",
                Self::LABEL,
            ),
            lag_rows: IntGaugeVec::new(
                Opts::new(
                    "regwatch_forward_lag_rows",
                    "Audit rows committed but not yet forwarded (or skipped by the filters).",
                ),
                &[Self::LABEL],
            )
            .expect("valid metric"),
        }
    }

    /// The series of forwarder `name`, created at zero so rates and alerts see them at once.
    pub fn counters(&self, name: &str) -> ForwardCounters {
        ForwardCounters {
            sent: self.sent_total.with_label_values(&[name]),
            errors: self.errors_total.with_label_values(&[name]),
            lag: self.lag_rows.with_label_values(&[name]),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.sent_total.clone()),
            Box::new(self.errors_total.clone()),
            Box::new(self.lag_rows.clone()),
        ]
    }
}

/// The poller's per-registry series (all labelled `registry`).
#[derive(Clone)]
pub struct RegistryMetrics {
    pub up: IntGaugeVec,
    pub probe_duration_seconds: GaugeVec,
    pub last_poll_timestamp_seconds: GaugeVec,
    pub poll_errors_total: IntCounterVec,
    pub repositories: IntGaugeVec,
    pub tags: IntGaugeVec,
    pub unique_bytes: IntGaugeVec,
    pub naming_violations: IntGaugeVec,
    /// Image tags by signature verdict, labelled `registry` and `signature`.
    pub signature_tags: IntGaugeVec,
    /// Per `[[retention]]` policy (labelled `policy`; policies are few): the tags its plan
    /// would delete and the bytes garbage-collect would then free.
    pub retention_candidates: IntGaugeVec,
    pub retention_reclaimable_bytes: IntGaugeVec,
}

impl RegistryMetrics {
    fn new() -> Self {
        let g = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["registry"]).expect("valid metric")
        };
        let f = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["registry"]).expect("valid metric")
        };
        RegistryMetrics {
            up: g(
                "regwatch_registry_up",
                "Whether the last GET /v2/ probe of the registry succeeded (1) or not (0).",
            ),
            probe_duration_seconds: f(
                "regwatch_registry_probe_duration_seconds",
                "How long the last GET /v2/ probe took (including authentication).",
            ),
            last_poll_timestamp_seconds: f(
                "regwatch_registry_last_poll_timestamp_seconds",
                "Unix time of the last complete inventory poll.",
            ),
            poll_errors_total: IntCounterVec::new(
                Opts::new(
                    "regwatch_poll_errors_total",
                    "Failed probes and inventory polls of the registry.",
                ),
                &["registry"],
            )
            .expect("valid metric"),
            repositories: g(
                "regwatch_registry_repositories",
                "Repositories in the registry's catalog at the last inventory.",
            ),
            tags: g(
                "regwatch_registry_tags",
                "Tags over all repositories at the last inventory.",
            ),
            unique_bytes: g(
                "regwatch_registry_unique_bytes",
                "Bytes of every blob reachable from any tag (manifests, configs, layers), each counted once.",
            ),
            naming_violations: g(
                "regwatch_naming_violations",
                "Repositories and tags not matching the registry's naming policy at the last inventory.",
            ),
            signature_tags: IntGaugeVec::new(
                Opts::new(
                    "regwatch_tags",
                    "Image tags (signature and attestation tags not counted) at the last inventory, by signature: verified (a trusted key verifies a signature for the digest), unverified (signatures, none verifies), none.",
                ),
                &["registry", "signature"],
            )
            .expect("valid metric"),
            retention_candidates: IntGaugeVec::new(
                Opts::new(
                    "regwatch_retention_candidates",
                    "Tags the retention policy's plan would delete, at the last inventory poll.",
                ),
                &["policy"],
            )
            .expect("valid metric"),
            retention_reclaimable_bytes: IntGaugeVec::new(
                Opts::new(
                    "regwatch_retention_reclaimable_bytes",
                    "Bytes garbage-collect would free after deleting the policy's candidate manifests (blobs no kept manifest references), at the last inventory poll.",
                ),
                &["policy"],
            )
            .expect("valid metric"),
        }
    }

    /// Starts every series of `registry` at a defined value, so dashboards see it before
    /// the first poll.
    pub fn init(&self, registry: &str) {
        self.up.with_label_values(&[registry]).set(0);
        self.poll_errors_total.with_label_values(&[registry]);
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.up.clone()),
            Box::new(self.probe_duration_seconds.clone()),
            Box::new(self.last_poll_timestamp_seconds.clone()),
            Box::new(self.poll_errors_total.clone()),
            Box::new(self.repositories.clone()),
            Box::new(self.tags.clone()),
            Box::new(self.unique_bytes.clone()),
            Box::new(self.naming_violations.clone()),
            Box::new(self.signature_tags.clone()),
            Box::new(self.retention_candidates.clone()),
            Box::new(self.retention_reclaimable_bytes.clone()),
        ]
    }
}

fn counter(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
}

/// The storage monitor's gauges, each labelled by `registry`, and what its walks cost.
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
    /// Also labelled `kind` (`list`, `get`, `head`): S3 requests the walks made.
    pub walk_requests_total: IntCounterVec,
    pub walk_errors_total: IntCounterVec,
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
            walk_requests_total: IntCounterVec::new(
                Opts::new(
                    "regwatch_storage_walk_requests_total",
                    "Requests the storage walks made of S3 storage, by kind (list, get, head).",
                ),
                &["registry", "kind"],
            )
            .expect("valid metric"),
            walk_errors_total: counter(
                "regwatch_storage_walk_errors_total",
                "Storage walks that failed (unreachable storage, refused credentials, missing bucket, ...).",
                "registry",
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
        .chain([
            Box::new(self.walk_requests_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.walk_errors_total.clone()),
        ])
        .collect()
    }
}

pub use crate::model::build::{REVISION, VERSION};

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let (config_last_reload_successful, config_last_reload_success_timestamp_seconds) =
            reload_gauges();
        let audit_events_total = IntCounterVec::new(
            Opts::new(
                "regwatch_audit_events_total",
                "Events committed to the audit trail, by action.",
            ),
            &["action"],
        )
        .expect("valid metric");
        let database_up = IntGauge::new(
            "regwatch_database_up",
            "1 while this agent reaches its database.",
        )
        .expect("valid metric");
        let lease_held = IntGaugeVec::new(
            Opts::new(
                "regwatch_lease_held",
                "1 while this agent holds the lease of a singleton task (several agents on one PostgreSQL).",
            ),
            &["lease"],
        )
        .expect("valid metric");
        let metrics = Metrics {
            registry,
            config_last_reload_successful,
            config_last_reload_success_timestamp_seconds,
            audit_events_total,
            database_up,
            lease_held,
            traffic: TrafficMetrics::new(),
            logs: LogMetrics::new(),
            alerts: AlertMetrics::new(),
            registries: RegistryMetrics::new(),
            storage: StorageMetrics::new(),
            reports: ReportMetrics::new(),
            database: DatabaseMetrics::new(),
            forwards: ForwardMetrics::new(),
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let own: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build_info()),
            Box::new(self.config_last_reload_successful.clone()),
            Box::new(self.config_last_reload_success_timestamp_seconds.clone()),
            Box::new(self.audit_events_total.clone()),
            Box::new(self.database_up.clone()),
            Box::new(self.lease_held.clone()),
        ];
        for c in own
            .into_iter()
            .chain(self.traffic.collectors())
            .chain(self.logs.collectors())
            .chain(self.alerts.collectors())
            .chain(self.registries.collectors())
            .chain(self.storage.collectors())
            .chain(self.reports.collectors())
            .chain(self.database.collectors())
            .chain(self.forwards.collectors())
        {
            self.registry.register(c).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
    }

    /// Creates the per-registry series at zero, so dashboards and rates see them before the
    /// first event.
    pub fn init_registry(&self, registry: &str) {
        let t = &self.traffic;
        for c in [
            &t.pulls_total,
            &t.pull_failures_total,
            &t.blob_checks_total,
            &t.pushes_total,
            &t.deletes_total,
            &t.auth_failures_total,
        ] {
            c.with_label_values(&[registry]);
        }
        for source in ["log", "notification"] {
            t.self_requests_total.with_label_values(&[registry, source]);
        }
        t.auth_failure_burst_max
            .with_label_values(&[registry])
            .set(0);
    }

    /// The counters one log feeds.
    pub fn log_counters(&self, log: &str, registry: &str) -> LogCounters {
        LogCounters {
            lines: self.logs.lines_total.with_label_values(&[log]),
            parse_errors: self.logs.parse_errors_total.with_label_values(&[log]),
            pulls: self.traffic.pulls_total.with_label_values(&[registry]),
            pull_failures: self
                .traffic
                .pull_failures_total
                .with_label_values(&[registry]),
            blob_checks: self
                .traffic
                .blob_checks_total
                .with_label_values(&[registry]),
            self_requests: self
                .traffic
                .self_requests_total
                .with_label_values(&[registry, "log"]),
            pushes: self.traffic.pushes_total.with_label_values(&[registry]),
            deletes: self.traffic.deletes_total.with_label_values(&[registry]),
            auth_failures: self
                .traffic
                .auth_failures_total
                .with_label_values(&[registry]),
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

    /// Sets the window gauges from the traffic state at `now` (called per scrape: the
    /// windows slide even when no line arrives).
    pub fn refresh_traffic(&self, traffic: &crate::model::traffic::Traffic, now: i64) {
        for (registry, stats) in traffic {
            let stats = stats.lock().expect("stats lock");
            for (window, secs) in [("1m", 60), ("5m", 300)] {
                match stats.pull_failure_ratio(now, secs) {
                    Some(r) => self
                        .traffic
                        .pull_failure_ratio
                        .with_label_values(&[registry, window])
                        .set(r),
                    None => {
                        let _ = self
                            .traffic
                            .pull_failure_ratio
                            .remove_label_values(&[registry, window]);
                    }
                }
            }
            self.traffic
                .auth_failure_burst_max
                .with_label_values(&[registry])
                .set(stats.auth_burst_max(now).min(i64::MAX as u64) as i64);
        }
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

/// `regwatch_build_info{version,revision} 1`.
fn build_info() -> IntGaugeVec {
    let g = IntGaugeVec::new(
        Opts::new(
            "regwatch_build_info",
            "A metric with a constant '1' value labeled by the version and git revision regwatch was built from.",
        ),
        &["version", "revision"],
    )
    .expect("valid metric");
    g.with_label_values(&[VERSION, REVISION]).set(1);
    g
}

/// Whether the last reload worked (1 from the start: the first load did) and when the last
/// good one was.
fn reload_gauges() -> (IntGauge, Gauge) {
    let ok = IntGauge::new(
        "regwatch_config_last_reload_successful",
        "Whether the last configuration reload attempt was successful (1) or not (0).",
    )
    .expect("valid metric");
    ok.set(1);
    let at = Gauge::new(
        "regwatch_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load.",
    )
    .expect("valid metric");
    at.set(unix_now());
    (ok, at)
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
