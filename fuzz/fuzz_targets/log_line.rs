//! One log line through the whole per-line path (parse, classify, windows, audit events),
//! in every format. The first byte picks the format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regwatch::formats::log::{LogFormat, RegexFormat};
use regwatch::metrics::Metrics;
use regwatch::sources::tail::lines::LineHandler;
use regwatch::model::traffic::RegistryStats;
use std::sync::{Arc, LazyLock, Mutex};

/// nginx `combined` written as a `regex` format, as the README shows.
const COMBINED_RE: &str = r#"^(?P<addr>\S+) \S+ (?P<user>.+?) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+|-) "(?:[^"\\]|\\.)*" "(?P<agent>(?:[^"\\]|\\.)*)"(?: (?P<duration>[\d.]+))?"#;

static HANDLERS: LazyLock<Vec<LineHandler>> = LazyLock::new(|| {
    let mut formats: Vec<LogFormat> = LogFormat::NAMES
        .iter()
        .filter_map(|n| LogFormat::from_name(n))
        .collect();
    formats.push(LogFormat::Regex(Box::new(
        RegexFormat::new(COMBINED_RE, "auto").unwrap(),
    )));
    formats
        .into_iter()
        .map(|format| LineHandler {
            log: "fuzz".into(),
            registry: "main".into(),
            format,
            counts: true,
            audit_requests: true,
            stats: Arc::new(Mutex::new(RegistryStats::default())),
            counters: Metrics::new().log_counters("fuzz", "main"),
            alert_wake: None,
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, line)) = data.split_first() else {
        return;
    };
    let handler = &HANDLERS[pick as usize % HANDLERS.len()];
    let mut events = Vec::new();
    handler.handle(line, time::OffsetDateTime::UNIX_EPOCH, &mut events);
    handler.handle(line, time::OffsetDateTime::now_utc(), &mut events);
});
