//! Scheduled reports (`[[report]]`): exports of the audit trail, or retention plans, written
//! to files when their crontab schedule fires, or at once by `regwatch report run NAME`.

use super::export;
use super::retention::{self as shown, PlanOut};
use crate::config::channel::{ChannelConfig, ChannelKind};
use crate::config::report::{Format, ReportConfig, ReportKind};
use crate::config::{Config, schedule};
use crate::metrics::ReportMetrics;
use crate::model::clock::SharedClock;
use crate::model::retention::LatestPlans;
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
    #[error(
        "no plan of retention policy {policy:?} yet: no inventory poll of its registry has ended since regwatch started"
    )]
    NoPlan { policy: String },
}

/// What one run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    /// Audit events, or candidate tags.
    pub rows: u64,
    pub summary: Summary,
}

/// What a mail and a log line say of a written report besides its rows.
#[derive(Debug, Clone)]
pub enum Summary {
    /// The chain head when the report was written, to be noted down elsewhere.
    Audit { head: String },
    /// One line per policy (see [`shown::summary`]) and the bytes all of them would free.
    Retention {
        lines: Vec<String>,
        reclaimable_bytes: u64,
    },
}

/// Which reports a scheduler runs: the daemon runs audit reports under the `reports` lease
/// and retention reports under the `inventory` lease (its pollers hold the plans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinds {
    Audit,
    Retention,
}

impl Kinds {
    fn runs(self, r: &ReportConfig) -> bool {
        matches!(
            (self, &r.kind),
            (Kinds::Audit, ReportKind::Audit) | (Kinds::Retention, ReportKind::Retention { .. })
        )
    }
}

/// What a scheduler reads its reports from.
#[derive(Clone)]
pub struct Inputs {
    pub store: Store,
    pub plans: LatestPlans,
    pub kinds: Kinds,
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

/// Writes the audit report `r` as of `now` (see [`write_file`]).
pub fn write(store: &Store, r: &ReportConfig, now: OffsetDateTime) -> Result<Written, ReportError> {
    let db = store.reader()?;
    let path = output_path(&r.output, &r.name, now);
    // One read snapshot for the export and the head, so the head printed and mailed with the
    // report is the chain the report was read from, however busy the writer is.
    let (rows, head) = write_file(&path, |out, tmp| {
        db.snapshot(|db| {
            let rows = export::export(db, &filter(r, now), r.format, out)?;
            flush(out, tmp)?;
            Ok::<_, ReportError>((rows, db.head_hash()?))
        })
    })?;
    Ok(Written {
        path,
        rows,
        summary: Summary::Audit { head },
    })
}

/// The latest plans of a retention report's policies, as the daemon's pollers left them.
pub fn latest_plans(r: &ReportConfig, latest: &LatestPlans) -> Result<Vec<PlanOut>, ReportError> {
    let ReportKind::Retention { policies } = &r.kind else {
        return Ok(Vec::new());
    };
    policies
        .iter()
        .map(|policy| {
            latest
                .get(policy)
                .map(|p| PlanOut::of(p, None))
                .ok_or_else(|| ReportError::NoPlan {
                    policy: policy.clone(),
                })
        })
        .collect()
}

/// Writes the retention report `r` of `plans` as of `now` (see [`write_file`]).
pub fn write_retention(
    r: &ReportConfig,
    plans: &[PlanOut],
    now: OffsetDateTime,
) -> Result<Written, ReportError> {
    let path = output_path(&r.output, &r.name, now);
    write_file(&path, |out, tmp| {
        match r.format {
            Format::Json => shown::json(out, plans),
            Format::Html => shown::html(out, plans, now),
            // The config allows csv, json and html for retention reports.
            Format::Csv | Format::Ndjson => shown::csv(out, plans),
        }
        .map_err(|source| ReportError::Io {
            path: tmp.to_path_buf(),
            source,
        })?;
        flush(out, tmp)
    })?;
    Ok(Written {
        path,
        rows: plans.iter().map(|p| p.candidates.len() as u64).sum(),
        summary: Summary::Retention {
            lines: plans.iter().map(shown::summary).collect(),
            reclaimable_bytes: plans.iter().map(|p| p.reclaimable_bytes).sum(),
        },
    })
}

type Out = std::io::BufWriter<tempfile::NamedTempFile>;

fn flush(out: &mut Out, tmp: &Path) -> Result<(), ReportError> {
    let io = |source| ReportError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    out.flush().map_err(io)?;
    out.get_ref().as_file().sync_all().map_err(io)
}

/// Writes `path` through `body`. The body writes a temporary file beside the output, which
/// is renamed into place, so nobody reads half a report. That file gets a random name, is
/// created exclusively (never through a symlink someone planted in the report directory) and
/// has mode 0600: reports name people.
fn write_file<T>(
    path: &Path,
    body: impl FnOnce(&mut Out, &Path) -> Result<T, ReportError>,
) -> Result<T, ReportError> {
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
    let value = body(&mut out, &tmp_path)?;
    // On any error above, dropping the temporary file removes it.
    let tmp = out
        .into_inner()
        .map_err(|e| io(&tmp_path)(e.into_error()))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(value)
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
    let size = std::fs::metadata(&w.path).map(|m| m.len()).unwrap_or(0);
    let attach = size <= r.max_attachment_bytes;
    let (subject, mut text) = mail_text(r, w, now);
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

/// The subject and body of the mail carrying `w`.
fn mail_text(r: &ReportConfig, w: &Written, now: OffsetDateTime) -> (String, String) {
    let file = w.path.display();
    match &w.summary {
        Summary::Audit { head } => {
            let since = crate::model::text::format_time(now - r.period);
            let until = crate::model::text::format_time(now);
            (
                format!("[regwatch] report {}: {} events", r.name, w.rows),
                format!(
                    "regwatch report {}\nevents:     {}\nperiod:     {since} to {until}\nchain head: {head}\nfile:       {file}\n",
                    r.name, w.rows
                ),
            )
        }
        Summary::Retention {
            lines,
            reclaimable_bytes,
        } => (
            format!(
                "[regwatch] retention report {}: {} candidate tags, {} reclaimable",
                r.name,
                w.rows,
                crate::model::text::human_bytes(*reclaimable_bytes)
            ),
            format!(
                "regwatch retention report {}\n{}\nNothing was deleted.\nfile: {file}\n",
                r.name,
                lines.join("\n")
            ),
        ),
    }
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

/// Writes each report of `inputs.kinds` when its schedule fires, until `stop`. A time missed
/// while regwatch was not running is not made up: the next run covers its whole period anyway.
pub async fn run(
    mut config: watch::Receiver<Arc<Config>>,
    inputs: Inputs,
    metrics: ReportMetrics,
    clock: SharedClock,
    stop: CancellationToken,
) {
    let mut last = clock.now();
    loop {
        let cfg = config.borrow_and_update().clone();
        let mine: Vec<ReportConfig> = cfg
            .reports
            .iter()
            .filter(|r| inputs.kinds.runs(r))
            .cloned()
            .collect();
        // Every report's counters exist from the start, at 0, so rates and alerts on
        // failures work before the first run.
        for r in &mine {
            metrics.runs_total.with_label_values(&[&r.name]);
            metrics.failures_total.with_label_values(&[&r.name]);
            if !r.channels.is_empty() {
                metrics.mail_failures_total.with_label_values(&[&r.name]);
            }
        }
        let next = mine
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
        for i in due(&mine, last, now) {
            run_one(&mine[i], &inputs, &metrics, &cfg.channels, now).await;
        }
        last = now;
    }
}

/// One scheduled run of `r`: written, counted, logged and mailed.
async fn run_one(
    r: &ReportConfig,
    inputs: &Inputs,
    metrics: &ReportMetrics,
    channels: &[ChannelConfig],
    now: OffsetDateTime,
) {
    let name = r.name.as_str();
    let (report, store, plans) = (r.clone(), inputs.store.clone(), inputs.plans.clone());
    let result = tokio::task::spawn_blocking(move || match report.kind {
        ReportKind::Audit => write(&store, &report, now),
        ReportKind::Retention { .. } => {
            write_retention(&report, &latest_plans(&report, &plans)?, now)
        }
    })
    .await;
    metrics.runs_total.with_label_values(&[name]).inc();
    let w = match result {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            metrics.failures_total.with_label_values(&[name]).inc();
            tracing::error!(report = %name, error = %e, "report not written");
            return;
        }
        Err(e) => {
            metrics.failures_total.with_label_values(&[name]).inc();
            tracing::error!(report = %name, error = %e, "report task failed");
            return;
        }
    };
    metrics
        .last_success_timestamp_seconds
        .with_label_values(&[name])
        .set(now.unix_timestamp() as f64);
    metrics
        .last_rows
        .with_label_values(&[name])
        .set(w.rows.min(i64::MAX as u64) as i64);
    match &w.summary {
        Summary::Audit { head } => {
            tracing::info!(report = %name, path = %w.path.display(), rows = w.rows, head = %head, "report written")
        }
        Summary::Retention {
            reclaimable_bytes, ..
        } => {
            tracing::info!(report = %name, path = %w.path.display(), candidates = w.rows, reclaimable_bytes, "retention report written")
        }
    }
    for (channel, result) in mail(r, &w, now, channels).await {
        match result {
            Ok(()) => tracing::info!(report = %name, channel = %channel, "report mailed"),
            Err(e) => {
                metrics.mail_failures_total.with_label_values(&[name]).inc();
                tracing::error!(report = %name, channel = %channel, error = %e, "report not mailed; the file stays");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn report(schedule: &str) -> ReportConfig {
        ReportConfig {
            name: "weekly".into(),
            kind: ReportKind::Audit,
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
    fn a_retention_mail_says_what_would_be_freed_and_that_nothing_was_deleted() {
        let mut r = report("0 6 * * MON");
        r.kind = ReportKind::Retention {
            policies: vec!["stale-dev".into()],
        };
        let w = Written {
            path: "/r/weekly.html".into(),
            rows: 3,
            summary: Summary::Retention {
                lines: vec!["policy stale-dev (registry main): 3 candidate tag(s)".into()],
                reclaimable_bytes: 3 * 1024 * 1024,
            },
        };
        let (subject, text) = mail_text(&r, &w, datetime!(2026-11-30 06:00:00 UTC));
        assert_eq!(
            subject,
            "[regwatch] retention report weekly: 3 candidate tags, 3.0 MiB reclaimable"
        );
        assert!(text.contains("policy stale-dev (registry main): 3 candidate tag(s)\nNothing was deleted.\nfile: /r/weekly.html"), "{text}");
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
