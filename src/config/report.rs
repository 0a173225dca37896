//! `[[report]]`: a file written on a schedule (and mailed through email channels): an export
//! of the audit trail (`kind = "audit"`, the default) or the cleanup plans of `[[retention]]`
//! policies (`kind = "retention"`). The raw table as written, the checked report with its
//! [`ReportKind`], schedule and [`Format`] parsed and its output resolved, and the export
//! formats themselves (also what `regwatch audit export --format` offers).

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
    kind: Option<String>,
    schedule: String,
    format: String,
    #[serde(default, deserialize_with = "duration::given")]
    period: Option<Duration>,
    #[serde(default)]
    policies: Option<Vec<String>>,
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

/// What a report holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportKind {
    /// The audit events of `period` up to the run, through the filters.
    Audit,
    /// The cleanup plans of these `[[retention]]` policies (every policy when the report
    /// names none), as of the last inventory poll of each policy's registry.
    Retention { policies: Vec<String> },
}

impl ReportKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReportKind::Audit => "audit",
            ReportKind::Retention { .. } => "retention",
        }
    }
}

/// A scheduled report.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// Names the report in metrics, logs and `regwatch report run NAME`.
    pub name: String,
    pub kind: ReportKind,
    /// When it is written: a 5-field crontab expression in UTC, e.g. "0 6 * * MON".
    pub schedule: Schedule,
    pub format: Format,
    /// The events an audit report covers: those of this long up to the run (more than 0;
    /// default 7 days).
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

/// What a report may refer to: the configured registry names, each channel's name and kind
/// as written, and the `[[retention]]` policy names.
pub(super) struct Known<'a> {
    pub registries: &'a [&'a str],
    pub channels: &'a [(&'a str, &'a str)],
    pub policies: &'a [&'a str],
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
    let kind = kind(&r, at, known, errs);
    let format = Format::parse(&r.format);
    match (format, &r.kind) {
        (None, _) => errs.at_key(
            at,
            "format",
            format!(
                "unknown format {:?}: expected csv, json, ndjson or html",
                r.format
            ),
        ),
        (Some(Format::Ndjson), _) if r.kind.as_deref() == Some("retention") => errs.at_key(
            at,
            "format",
            "a retention report is csv, json or html (ndjson is for audit events)",
        ),
        _ => {}
    }
    let period = r.period.unwrap_or_else(default_period);
    if period.is_zero() {
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
        kind: kind?,
        schedule: schedule?,
        format: format?,
        period,
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

/// The report's kind, with the keys only the other kind takes reported where they stand.
fn kind(
    r: &RawReport,
    at: &KeyPath,
    known: &Known<'_>,
    errs: &mut Errors<'_>,
) -> Option<ReportKind> {
    match r.kind.as_deref().unwrap_or("audit") {
        "audit" => {
            if r.policies.is_some() {
                errs.at_key(
                    at,
                    "policies",
                    "only a report with kind = \"retention\" takes policies",
                );
            }
            Some(ReportKind::Audit)
        }
        "retention" => {
            let audit_only = [
                ("period", r.period.is_some()),
                ("actor", r.actor.is_some()),
                ("repository", r.repository.is_some()),
                ("action", r.action.is_some()),
                ("address", r.address.is_some()),
                ("registry", r.registry.is_some()),
                ("source", r.source.is_some()),
            ];
            for (key, _) in audit_only.iter().filter(|(_, set)| *set) {
                errs.at_key(
                    at,
                    key,
                    "applies to audit reports only: a retention report lists its policies' plans (each policy names its registry and repositories)",
                );
            }
            retention_policies(r.policies.as_deref(), at, known.policies, errs)
                .map(|policies| ReportKind::Retention { policies })
        }
        other => {
            errs.at_key(
                at,
                "kind",
                format!("unknown report kind {other:?}: expected audit or retention"),
            );
            None
        }
    }
}

/// The policies a retention report lists: those named (each must exist), or every one.
fn retention_policies(
    named: Option<&[String]>,
    at: &KeyPath,
    known: &[&str],
    errs: &mut Errors<'_>,
) -> Option<Vec<String>> {
    if known.is_empty() {
        errs.at_key(
            at,
            "kind",
            "a retention report needs at least one [[retention]] policy, and none is configured",
        );
        return None;
    }
    let Some(named) = named else {
        return Some(known.iter().map(|p| p.to_string()).collect());
    };
    if named.is_empty() {
        errs.at_key(
            at,
            "policies",
            "must not be empty (leave the key out for every policy)",
        );
        return None;
    }
    let mut ok = true;
    for (j, p) in named.iter().enumerate() {
        if !known.contains(&p.as_str()) {
            ok = false;
            errs.at(
                &at.clone().key("policies").index(j),
                format!(
                    "no [[retention]] policy is named {p:?} (configured: {})",
                    known.join(", ")
                ),
            );
        }
    }
    ok.then(|| named.to_vec())
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

#[cfg(test)]
mod tests {
    use super::ReportKind;
    use crate::config::{Origin, parse};
    use std::path::Path;

    const BASE: &str = "[[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:5000\"\n\n\
                        [[retention]]\nname = \"stale-dev\"\nkeep_last = 3\n\n\
                        [[retention]]\nname = \"old-ci\"\nkeep_pushed_within = \"30d\"\n\n";

    fn parsed(report: &str) -> Result<Vec<ReportKind>, Vec<String>> {
        parse(
            &format!("{BASE}[[report]]\nname = \"r\"\nschedule = \"0 6 * * MON\"\noutput = \"/tmp/r-{{date}}\"\n{report}"),
            Origin::File("t.toml".into()),
            Path::new("/"),
        )
        .map(|c| c.reports.into_iter().map(|r| r.kind).collect())
        .map_err(|e| e.lines())
    }

    #[test]
    fn a_report_is_an_audit_report_unless_it_says_retention() {
        assert_eq!(parsed("format = \"csv\"\n"), Ok(vec![ReportKind::Audit]));
        let every = ReportKind::Retention {
            policies: vec!["stale-dev".into(), "old-ci".into()],
        };
        assert_eq!(
            parsed("kind = \"retention\"\nformat = \"html\"\n"),
            Ok(vec![every])
        );
        let one = ReportKind::Retention {
            policies: vec!["old-ci".into()],
        };
        assert_eq!(
            parsed("kind = \"retention\"\nformat = \"json\"\npolicies = [\"old-ci\"]\n"),
            Ok(vec![one])
        );
    }

    #[test]
    fn retention_report_mistakes_are_located() {
        assert_eq!(
            parsed("kind = \"retention\"\nformat = \"ndjson\"\npolicies = [\"old-ci\", \"nope\"]\nactor = \"bob\"\nperiod = \"1d\"\n"),
            Err(vec![
                "18:1 report[0].format: a retention report is csv, json or html (ndjson is for audit events)".to_string(),
                "19:1 report[0].policies[1]: no [[retention]] policy is named \"nope\" (configured: stale-dev, old-ci)".to_string(),
                "20:1 report[0].actor: applies to audit reports only: a retention report lists its policies' plans (each policy names its registry and repositories)".to_string(),
                "21:1 report[0].period: applies to audit reports only: a retention report lists its policies' plans (each policy names its registry and repositories)".to_string(),
            ])
        );
        assert_eq!(
            parsed("kind = \"weekly\"\nformat = \"csv\"\n"),
            Err(vec![
                "17:1 report[0].kind: unknown report kind \"weekly\": expected audit or retention"
                    .to_string()
            ])
        );
        assert_eq!(
            parsed("format = \"csv\"\npolicies = [\"old-ci\"]\n"),
            Err(vec![
                "18:1 report[0].policies: only a report with kind = \"retention\" takes policies"
                    .to_string()
            ])
        );
    }
}
