//! `[[report]]`: an export of the audit trail written on a schedule (and mailed through
//! email channels). The raw table as written, the checked report with its schedule and
//! [`Format`] parsed and its output resolved, and the export formats themselves (also what
//! `regwatch audit export --format` offers).

use super::diagnose::{Errors, KeyPath};
use super::duration;
use super::names::unique_name;
use super::schedule::{self, Schedule};
use crate::model::event::Action;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An export format of the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Ndjson,
    Html,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Csv, Format::Json, Format::Ndjson, Format::Html];

    /// The name in the config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Html => "html",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[report]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReport {
    name: String,
    schedule: String,
    format: String,
    #[serde(default = "default_period", deserialize_with = "duration::required")]
    period: Duration,
    output: PathBuf,
    actor: Option<String>,
    repository: Option<String>,
    action: Option<String>,
    address: Option<String>,
    registry: Option<String>,
    source: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default = "default_max_attachment")]
    max_attachment_bytes: u64,
}

/// A scheduled report.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// Names the report in metrics, logs and `regwatch report run NAME`.
    pub name: String,
    /// When it is written: a 5-field crontab expression in UTC, e.g. "0 6 * * MON".
    pub schedule: Schedule,
    pub format: Format,
    /// The events it covers: those of this long up to the run (more than 0).
    pub period: Duration,
    /// The file to write; `{name}`, `{date}` (2026-11-30) and `{time}` (20261130T060000Z)
    /// are replaced (in the file name only). Resolved against the config file's directory,
    /// whose folder exists. Written mode 0600.
    pub output: PathBuf,
    /// Filters, as for `regwatch audit export`.
    pub actor: Option<String>,
    pub repository: Option<String>,
    pub action: Option<Action>,
    pub address: Option<String>,
    /// A configured registry.
    pub registry: Option<String>,
    pub source: Option<String>,
    /// Email channels (`[[channel]]` of kind email) the report is mailed through.
    pub channels: Vec<String>,
    /// Larger reports are not attached: the mail says where the file is.
    pub max_attachment_bytes: u64,
}

fn default_max_attachment() -> u64 {
    10_000_000
}

fn default_period() -> Duration {
    Duration::from_secs(7 * 86_400)
}

/// What a report may refer to: the configured registry names, and each channel's name
/// and kind as written.
pub(super) struct Known<'a> {
    pub registries: &'a [&'a str],
    pub channels: &'a [(&'a str, &'a str)],
}

/// Checks every `[[report]]` and resolves its output against `base`.
pub(super) fn reports(
    raw: Vec<RawReport>,
    known: &Known<'_>,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<Vec<ReportConfig>> {
    let mut names = HashSet::new();
    let checked: Vec<Option<ReportConfig>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = KeyPath::default().key("report").index(i);
            report(r, &at, known, base, &mut names, errs)
        })
        .collect();
    checked.into_iter().collect()
}

fn report(
    r: RawReport,
    at: &KeyPath,
    known: &Known<'_>,
    base: &Path,
    names: &mut HashSet<String>,
    errs: &mut Errors<'_>,
) -> Option<ReportConfig> {
    if let Err(msg) = unique_name("report", &r.name, names) {
        errs.at_key(at, "name", msg);
    }
    let schedule = schedule::parse(&r.schedule)
        .map_err(|e| errs.at_key(at, "schedule", e))
        .ok();
    let format = Format::parse(&r.format);
    if format.is_none() {
        errs.at_key(
            at,
            "format",
            format!(
                "unknown format {:?}: expected csv, json, ndjson or html",
                r.format
            ),
        );
    }
    if r.period.is_zero() {
        errs.at_key(at, "period", "must be greater than 0");
    }
    let output = output(&r.output, at, base, errs);
    let action = action(r.action.as_deref(), at, errs);
    check_channels(&r.channels, known.channels, at, errs);
    if let Some(reg) = &r.registry
        && !known.registries.contains(&reg.as_str())
    {
        errs.at_key(at, "registry", format!("no [[registry]] is named {reg:?}"));
    }
    Some(ReportConfig {
        name: r.name,
        schedule: schedule?,
        format: format?,
        period: r.period,
        output: output?,
        actor: r.actor,
        repository: r.repository,
        action: action?,
        address: r.address,
        registry: r.registry,
        source: r.source,
        channels: r.channels,
        max_attachment_bytes: r.max_attachment_bytes,
    })
}

/// The output resolved against `base`. Placeholders are only allowed in the file name, so
/// the directory can be checked now rather than at the first run, hours later.
fn output(output: &Path, at: &KeyPath, base: &Path, errs: &mut Errors<'_>) -> Option<PathBuf> {
    if output.as_os_str().is_empty() {
        errs.at_key(at, "output", "must not be empty");
        return None;
    }
    let output = base.join(output);
    match output.parent() {
        Some(dir) if dir.to_string_lossy().contains('{') => errs.at_key(
            at,
            "output",
            "{name}, {date} and {time} may only appear in the file name",
        ),
        Some(dir) if !dir.is_dir() => errs.at_key(
            at,
            "output",
            format!("directory {} does not exist", dir.display()),
        ),
        _ => {}
    }
    Some(output)
}

fn action(action: Option<&str>, at: &KeyPath, errs: &mut Errors<'_>) -> Option<Option<Action>> {
    let Some(a) = action else {
        return Some(None);
    };
    let parsed = Action::parse(a);
    if parsed.is_none() {
        let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        errs.at_key(
            at,
            "action",
            format!("unknown action {a:?}: expected one of {}", known.join(", ")),
        );
    }
    parsed.map(Some)
}

/// Each channel must exist and be an email channel.
fn check_channels(
    channels: &[String],
    known: &[(&str, &str)],
    at: &KeyPath,
    errs: &mut Errors<'_>,
) {
    for (j, name) in channels.iter().enumerate() {
        let path = at.clone().key("channels").index(j);
        match known.iter().find(|(n, _)| n == name) {
            Some((_, "email")) => {}
            Some((_, kind)) => errs.at(
                &path,
                format!(
                    "channel {name:?} is a {kind} channel: reports are mailed, so only email channels can carry them"
                ),
            ),
            None => errs.at(&path, format!("no [[channel]] is named {name:?}")),
        }
    }
}
