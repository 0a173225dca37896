//! Scheduled reports: exports of the audit trail written to files when their crontab
//! schedule fires (`[[report]]`), or at once by `regwatch report run NAME`.

use super::export;
use crate::config::channel::{ChannelConfig, ChannelKind};
use crate::config::report::{Format, ReportConfig};
use crate::config::{Config, schedule};
use crate::metrics::ReportMetrics;
use crate::model::clock::SharedClock;
use crate::store::{self, Filter, Store};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("opening the audit store: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub rows: u64,
    /// The chain head when the report was written, to be noted down elsewhere.
    pub head: String,
}

/// The output file of a run at `now`: `{name}`, `{date}` and `{time}` replaced.
pub fn output_path(template: &Path, name: &str, now: OffsetDateTime) -> PathBuf {
    let now = now.to_offset(time::UtcOffset::UTC);
    let date = now
        .format(time::macros::format_description!("[year]-[month]-[day]"))
        .expect("formatting a UTC date cannot fail");
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("formatting a UTC time cannot fail");
    let file = template
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
        .replace("{name}", name)
        .replace("{date}", &date)
        .replace("{time}", &stamp);
    template.with_file_name(file)
}

/// The events a run at `now` covers: its filters over `[now - period, now)`.
pub fn filter(r: &ReportConfig, now: OffsetDateTime) -> Filter {
    Filter {
        since: Some(now - r.period),
        until: Some(now),
        actor: r.actor.clone(),
        repository: r.repository.clone(),
        action: r.action.map(|a| a.as_str().to_string()),
        address: r.address.clone(),
        registry: r.registry.clone(),
        source: r.source.clone(),
        after_id: None,
        limit: None,
    }
}

/// Writes `r` as of `now`. The export goes to a temporary file beside the output and is
/// renamed into place, so nobody reads half a report. That file gets a random name, is
/// created exclusively (never through a symlink someone planted in the report directory) and
/// has mode 0600: reports name people.
pub fn write(store: &Store, r: &ReportConfig, now: OffsetDateTime) -> Result<Written, ReportError> {
    let db = store.reader()?;
    let path = output_path(&r.output, &r.name, now);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReportError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            path.file_name().unwrap_or_default().to_string_lossy()
        ))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    let tmp_path = tmp.path().to_path_buf();
    let mut out = std::io::BufWriter::new(tmp);
    // One read snapshot for the export and the head, so the head printed and mailed with the
    // report is the chain the report was read from, however busy the writer is.
    let (rows, head) = db.snapshot(|db| {
        let rows = export::export(db, &filter(r, now), r.format, &mut out)?;
        out.flush().map_err(io(&tmp_path))?;
        out.get_ref().as_file().sync_all().map_err(io(&tmp_path))?;
        Ok::<_, ReportError>((rows, db.head_hash()?))
    })?;
    // On any error above, dropping the temporary file removes it.
    let tmp = out
        .into_inner()
        .map_err(|e| io(&tmp_path)(e.into_error()))?;
    tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
    Ok(Written { path, rows, head })
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Json => "application/json",
        Format::Ndjson => "application/x-ndjson",
        Format::Html => "text/html; charset=utf-8",
    }
}

/// Mails a written report through each of its channels (looked up in `channels`): the file
/// attached, or, above `max_attachment_bytes`, where it is. Returns each channel's outcome;
/// a failed mail leaves the file where it is and is not retried (the next run mails again).
pub async fn mail(
    r: &ReportConfig,
    w: &Written,
    now: OffsetDateTime,
    channels: &[ChannelConfig],
) -> Vec<(String, Result<(), crate::channels::DeliveryError>)> {
    let since = crate::model::text::format_time(now - r.period);
    let until = crate::model::text::format_time(now);
    let size = std::fs::metadata(&w.path).map(|m| m.len()).unwrap_or(0);
    let attach = size <= r.max_attachment_bytes;
    let subject = format!("[regwatch] report {}: {} events", r.name, w.rows);
    let mut text = format!(
        "regwatch report {}\nevents:     {}\nperiod:     {since} to {until}\nchain head: {}\nfile:       {}\n",
        r.name,
        w.rows,
        w.head,
        w.path.display()
    );
    if !attach {
        text.push_str(&format!(
            "\nThe report is {size} bytes, more than max_attachment_bytes ({}): it is not attached; fetch it from the path above.\n",
            r.max_attachment_bytes
        ));
    }
    let ct = content_type(r.format);
    let mut out = Vec::new();
    for name in &r.channels {
        // Validated: every channel of a report is an email channel.
        let Some(ChannelConfig {
            kind: ChannelKind::Email(email),
            timeout,
            ..
        }) = channels.iter().find(|c| &c.name == name)
        else {
            continue;
        };
        let file = attach.then_some((w.path.as_path(), ct));
        let result =
            crate::channels::email_file(email, *timeout, &subject, text.clone(), file).await;
        out.push((name.clone(), result));
    }
    out
}

/// The reports with a scheduled time in `(last, now]`.
pub fn due(reports: &[ReportConfig], last: OffsetDateTime, now: OffsetDateTime) -> Vec<usize> {
    reports
        .iter()
        .enumerate()
        .filter(|(_, r)| schedule::next_after(&r.schedule, last).is_some_and(|t| t <= now))
        .map(|(i, _)| i)
        .collect()
}

/// Writes each report when its schedule fires, until `stop`. A time missed while regwatch
/// was not running is not made up: the next run covers its whole period anyway.
pub async fn run(
    mut config: watch::Receiver<Arc<Config>>,
    store: Store,
    metrics: ReportMetrics,
    clock: SharedClock,
    stop: CancellationToken,
) {
    let mut last = clock.now();
    loop {
        let cfg = config.borrow_and_update().clone();
        // Every report's counters exist from the start, at 0, so rates and alerts on
        // failures work before the first run.
        for r in &cfg.reports {
            metrics.runs_total.with_label_values(&[&r.name]);
            metrics.failures_total.with_label_values(&[&r.name]);
            if !r.channels.is_empty() {
                metrics.mail_failures_total.with_label_values(&[&r.name]);
            }
        }
        let next = cfg
            .reports
            .iter()
            .filter_map(|r| schedule::next_after(&r.schedule, last))
            .min();
        // Wake at least every minute, so a wall-clock step is noticed.
        let wait = next
            .map(|n| (n - clock.now()).clamp(time::Duration::ZERO, time::Duration::MINUTE))
            .map(|d| Duration::from_secs_f64(d.as_seconds_f64()))
            .unwrap_or(Duration::from_secs(60));
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let now = clock.now();
        for i in due(&cfg.reports, last, now) {
            let r = cfg.reports[i].clone();
            let name = r.name.clone();
            let store = store.clone();
            let result = tokio::task::spawn_blocking(move || write(&store, &r, now)).await;
            metrics.runs_total.with_label_values(&[&name]).inc();
            match result {
                Ok(Ok(w)) => {
                    metrics
                        .last_success_timestamp_seconds
                        .with_label_values(&[&name])
                        .set(now.unix_timestamp() as f64);
                    metrics
                        .last_rows
                        .with_label_values(&[&name])
                        .set(w.rows.min(i64::MAX as u64) as i64);
                    tracing::info!(report = %name, path = %w.path.display(), rows = w.rows, head = %w.head, "report written");
                    for (channel, result) in mail(&cfg.reports[i], &w, now, &cfg.channels).await {
                        match result {
                            Ok(()) => {
                                tracing::info!(report = %name, channel = %channel, "report mailed")
                            }
                            Err(e) => {
                                metrics
                                    .mail_failures_total
                                    .with_label_values(&[&name])
                                    .inc();
                                tracing::error!(report = %name, channel = %channel, error = %e, "report not mailed; the file stays");
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    metrics.failures_total.with_label_values(&[&name]).inc();
                    tracing::error!(report = %name, error = %e, "report not written");
                }
                Err(e) => {
                    metrics.failures_total.with_label_values(&[&name]).inc();
                    tracing::error!(report = %name, error = %e, "report task failed");
                }
            }
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn report(schedule: &str) -> ReportConfig {
        ReportConfig {
            name: "weekly".into(),
            schedule: schedule::parse(schedule).unwrap(),
            format: Format::Csv,
            period: Duration::from_secs(7 * 86_400),
            output: "/var/lib/regwatch/reports/{name}-{date}.csv".into(),
            actor: None,
            repository: None,
            action: None,
            address: None,
            registry: None,
            source: None,
            channels: Vec::new(),
            max_attachment_bytes: 10_000_000,
        }
    }

    #[test]
    fn output_names_take_the_run_time() {
        let at = datetime!(2026-11-30 06:00:07 UTC);
        assert_eq!(
            output_path(Path::new("/r/{name}-{date}.csv"), "weekly", at),
            Path::new("/r/weekly-2026-11-30.csv")
        );
        assert_eq!(
            output_path(Path::new("/r/audit-{time}.html"), "x", at),
            Path::new("/r/audit-20261130T060007Z.html")
        );
        assert_eq!(
            output_path(Path::new("/r/fixed.csv"), "x", at),
            Path::new("/r/fixed.csv")
        );
    }

    #[test]
    fn a_report_is_due_once_per_scheduled_time() {
        let reports = [report("0 6 * * MON"), report("*/15 * * * *")];
        let t = datetime!(2026-11-30 05:59:50 UTC);
        assert_eq!(
            due(&reports, t, t + time::Duration::seconds(5)),
            Vec::<usize>::new()
        );
        // 06:00 on a Monday: both.
        assert_eq!(
            due(&reports, t, datetime!(2026-11-30 06:00:00 UTC)),
            vec![0, 1]
        );
        // Not again for the same time.
        let after = datetime!(2026-11-30 06:00:00 UTC);
        assert_eq!(
            due(&reports, after, after + time::Duration::minutes(14)),
            Vec::<usize>::new()
        );
        assert_eq!(
            due(&reports, after, after + time::Duration::minutes(15)),
            vec![1]
        );
    }

    #[test]
    fn the_period_ends_at_the_run() {
        let r = report("0 6 * * MON");
        let at = datetime!(2026-11-30 06:00:00 UTC);
        let f = filter(&r, at);
        assert_eq!(f.since, Some(datetime!(2026-11-23 06:00:00 UTC)));
        assert_eq!(f.until, Some(at));
        assert_eq!(f.limit, None);
    }
}
