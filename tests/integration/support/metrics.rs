//! Reading the Prometheus text format (regwatch's /metrics, the registry's debug endpoint).
//! [`parse_metrics`] fails the test on a malformed line, so every scrape a test reads is also
//! a check of the exposition; [`metric`] finds one series by its exact rendered name and
//! labels, and says `None` when it is absent (absent and zero are different answers).

/// Parses Prometheus text format into (series, value) pairs, failing on malformed lines.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed metric line {l:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// The value of the one series named exactly `series` (with its labels, as rendered).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    parse_metrics(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
}
