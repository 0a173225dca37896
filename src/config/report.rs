//! `[[report]]`: an export of the audit trail written on a schedule.

use crate::config::diagnose::{Diagnostic, KeyPath, Locator};
use crate::config::{duration, schedule};
use crate::model::event::Action;
use crate::report::export::Format;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Names the report in metrics, logs and `regwatch report run NAME`.
    pub name: String,
    /// When it is written: a 5-field crontab expression in UTC, e.g. "0 6 * * MON".
    pub schedule: String,
    /// csv, json, ndjson or html.
    pub format: String,
    /// The events it covers: those of this long up to the run.
    #[serde(default = "default_period", deserialize_with = "duration::required")]
    pub period: Duration,
    /// The file to write; `{name}`, `{date}` (2026-11-30) and `{time}` (20261130T060000Z)
    /// are replaced. Relative to the config file's directory. Written mode 0600.
    pub output: PathBuf,
    /// Filters, as for `regwatch audit export`.
    pub actor: Option<String>,
    pub repository: Option<String>,
    pub action: Option<String>,
    pub address: Option<String>,
    pub registry: Option<String>,
    pub source: Option<String>,
    /// Email channels (`[[channel]]` of kind email) the report is mailed through.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Larger reports are not attached: the mail says where the file is.
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: u64,
    #[serde(skip)]
    pub parsed_schedule: Option<croner::Cron>,
    #[serde(skip)]
    pub parsed_format: Option<Format>,
}

fn default_max_attachment() -> u64 {
    10_000_000
}

fn default_period() -> Duration {
    Duration::from_secs(7 * 86_400)
}

pub fn parse_format(s: &str) -> Option<Format> {
    Some(match s {
        "csv" => Format::Csv,
        "json" => Format::Json,
        "ndjson" => Format::Ndjson,
        "html" => Format::Html,
        _ => return None,
    })
}

/// Validates every `[[report]]` and resolves its output against `base`.
pub fn validate(
    reports: &mut [ReportConfig],
    registries: &[&str],
    channels: &[crate::config::alerting::ChannelConfig],
    base: &Path,
    loc: &Locator<'_>,
) -> Vec<Diagnostic> {
    let mut errs = Vec::new();
    let mut err = |path: KeyPath, msg: String| errs.push(loc.at_path(&path, msg));
    let mut names = HashSet::new();
    for (i, r) in reports.iter_mut().enumerate() {
        let at = KeyPath::default().key("report").index(i);
        if let Err(msg) = crate::config::unique_name("report", &r.name, &mut names) {
            err(at.clone().key("name"), msg);
        }
        match schedule::parse(&r.schedule) {
            Ok(c) => r.parsed_schedule = Some(c),
            Err(e) => err(at.clone().key("schedule"), e),
        }
        match parse_format(&r.format) {
            Some(f) => r.parsed_format = Some(f),
            None => err(
                at.clone().key("format"),
                format!(
                    "unknown format {:?}: expected csv, json, ndjson or html",
                    r.format
                ),
            ),
        }
        if r.period.is_zero() {
            err(at.clone().key("period"), "must be greater than 0".into());
        }
        if r.output.as_os_str().is_empty() {
            err(at.clone().key("output"), "must not be empty".into());
        } else {
            r.output = base.join(&r.output);
            // Placeholders are only allowed in the file name, so the directory can be
            // checked now rather than at the first run, hours later.
            match r.output.parent() {
                Some(dir) if dir.to_string_lossy().contains('{') => err(
                    at.clone().key("output"),
                    "{name}, {date} and {time} may only appear in the file name".into(),
                ),
                Some(dir) if !dir.is_dir() => err(
                    at.clone().key("output"),
                    format!("directory {} does not exist", dir.display()),
                ),
                _ => {}
            }
        }
        if let Some(a) = &r.action {
            if Action::parse(a).is_none() {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                err(
                    at.clone().key("action"),
                    format!("unknown action {a:?}: expected one of {}", known.join(", ")),
                );
            }
        }
        for (j, name) in r.channels.iter().enumerate() {
            match channels.iter().find(|c| &c.name == name) {
                Some(c) if c.kind == "email" => {}
                Some(c) => err(
                    at.clone().key("channels").index(j),
                    format!(
                        "channel {name:?} is a {} channel: reports are mailed, so only email channels can carry them",
                        c.kind
                    ),
                ),
                None => err(
                    at.clone().key("channels").index(j),
                    format!("no [[channel]] is named {name:?}"),
                ),
            }
        }
        if let Some(reg) = &r.registry {
            if !registries.contains(&reg.as_str()) {
                err(
                    at.clone().key("registry"),
                    format!("no [[registry]] is named {reg:?}"),
                );
            }
        }
    }
    errs
}
