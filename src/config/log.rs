//! `[[log]]`: a log file (or a glob of them) to tail, the registry whose traffic it is, and
//! its line format. The raw table as written, and the checked settings with the format
//! built ([`LogFormat`]) from `format` and its options (`pattern`, `time_format`,
//! `utc_offset`, `json_fields`).

use super::diagnose::{self, Errors, KeyPath};
use super::duration;
use super::names::unique_name;
use crate::formats::log::{LogFormat, NginxErrorOptions, NginxJsonFields, RegexFormat};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[[log]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    name: String,
    registry: String,
    path: PathBuf,
    format: String,
    #[serde(default = "default_start_at")]
    start_at: String,
    #[serde(default = "default_true")]
    counts: bool,
    #[serde(default = "default_max_line")]
    max_line_bytes: usize,
    #[serde(default = "default_log_poll", deserialize_with = "duration::required")]
    poll_interval: Duration,
    pattern: Option<String>,
    time_format: Option<String>,
    utc_offset: Option<String>,
    json_fields: Option<NginxJsonFields>,
}

/// A log file to tail. Equal when the settings are: a reload restarts the tailers only
/// when a `[[log]]` changes.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Names the log in metrics (`log` label) and checkpoints: keep it stable.
    pub name: String,
    /// The `[[registry]]` whose traffic this is (one that exists).
    pub registry: String,
    /// A file, or files: `*` and `?` in the file name follow every matching file (e.g.
    /// `/var/log/nginx/*.access.log`), each with its own checkpoint. Resolved against the
    /// config file's directory.
    pub path: PathBuf,
    /// The line format, with its options.
    pub format: LogFormat,
    /// `format` as written (`registry_logstash` and `registry_access` are other names of
    /// `registry_json` and `access_combined`), for `regwatch check` and the logs.
    pub format_name: String,
    /// Where to start in a file seen for the first time; after a rotation or a restart the
    /// checkpoint decides.
    pub start_at: StartAt,
    /// Count this log's traffic (false for a second log of the same requests, e.g. the
    /// registry's own access log behind an nginx that is tailed too).
    pub counts: bool,
    /// Longer lines are cut here (and counted); nothing is buffered past it.
    pub max_line_bytes: usize,
    /// How often to look for new lines when the filesystem sends no change events.
    pub poll_interval: Duration,
}

/// Where to start reading a file seen for the first time (`start_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only lines written from now on (the default).
    End,
    /// The whole file.
    Beginning,
}

fn default_start_at() -> String {
    "end".into()
}
fn default_true() -> bool {
    true
}
fn default_max_line() -> usize {
    64 * 1024
}
fn default_log_poll() -> Duration {
    Duration::from_millis(250)
}

/// The names `format` accepts, listed when it is unknown.
const FORMAT_NAMES: [&str; 8] = [
    "nginx_combined",
    "nginx_json",
    "nginx_error",
    "registry_json",
    "registry_logstash",
    "registry_text",
    "registry_access",
    "regex",
];

/// Checks every `[[log]]`; `registries`: the configured registry names.
pub(super) fn logs(
    raw: Vec<RawLog>,
    registries: &[&str],
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<Vec<LogConfig>> {
    let mut names = HashSet::new();
    let checked: Vec<Option<LogConfig>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let at = KeyPath::default().key("log").index(i);
            log(l, &at, registries, base, &mut names, errs)
        })
        .collect();
    checked.into_iter().collect()
}

fn log(
    l: RawLog,
    at: &KeyPath,
    registries: &[&str],
    base: &Path,
    names: &mut HashSet<String>,
    errs: &mut Errors<'_>,
) -> Option<LogConfig> {
    if let Err(msg) = unique_name("log", &l.name, names) {
        errs.at_key(at, "name", msg);
    }
    check_registry(&l.registry, registries, at, errs);
    let path = base.join(&l.path);
    if path
        .parent()
        .is_some_and(|d| d.to_string_lossy().contains(['*', '?']))
    {
        errs.at_key(
            at,
            "path",
            "wildcards (* ?) are allowed in the file name only, not in directories",
        );
    }
    check_file_kind(&path, at, errs);
    let start_at = start_at(&l.start_at, at, errs);
    if l.max_line_bytes < 256 {
        errs.at_key(at, "max_line_bytes", "must be at least 256");
    }
    let format = format(&l, at, errs);
    if l.pattern.is_some() && l.format != "regex" {
        errs.at_key(at, "pattern", "pattern is only used by format = \"regex\"");
    }
    Some(LogConfig {
        name: l.name,
        registry: l.registry,
        path,
        format: format?,
        format_name: l.format,
        start_at: start_at?,
        counts: l.counts,
        max_line_bytes: l.max_line_bytes,
        poll_interval: l.poll_interval,
    })
}

/// A log path that exists must be a regular file (or a symlink to one); one that does not
/// exist yet is fine (the tailer waits for it), and a glob's matches are checked as found.
fn check_file_kind(path: &Path, at: &KeyPath, errs: &mut Errors<'_>) {
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        errs.at_key(
            at,
            "path",
            format!(
                "{} is {}: a log path must be a regular file",
                path.display(),
                crate::model::text::file_kind(meta.file_type())
            ),
        );
    }
}

fn check_registry(registry: &str, registries: &[&str], at: &KeyPath, errs: &mut Errors<'_>) {
    if registries.contains(&registry) {
        return;
    }
    let hint = diagnose::suggest(registry, registries)
        .map(|s| format!("; did you mean {s:?}?"))
        .unwrap_or_default();
    errs.at_key(
        at,
        "registry",
        format!("no [[registry]] is named {registry:?}{hint}"),
    );
}

fn start_at(text: &str, at: &KeyPath, errs: &mut Errors<'_>) -> Option<StartAt> {
    match text {
        "end" => Some(StartAt::End),
        "beginning" => Some(StartAt::Beginning),
        other => {
            errs.at_key(
                at,
                "start_at",
                format!("expected \"end\" or \"beginning\", not {other:?}"),
            );
            None
        }
    }
}

/// Builds the format `format` names, with its options.
fn format(l: &RawLog, at: &KeyPath, errs: &mut Errors<'_>) -> Option<LogFormat> {
    match l.format.as_str() {
        "regex" => regex_format(l, at, errs),
        "nginx_error" => nginx_error_format(l, at, errs),
        "nginx_json" => Some(LogFormat::NginxJson(Box::new(
            l.json_fields.clone().unwrap_or_default(),
        ))),
        other => LogFormat::from_name(other).or_else(|| {
            let hint = diagnose::suggest(other, &FORMAT_NAMES)
                .map(|s| format!("did you mean {s:?}? "))
                .unwrap_or_default();
            errs.at_key(
                at,
                "format",
                format!(
                    "unknown log format {other:?}: {hint}expected one of {}",
                    FORMAT_NAMES.join(", ")
                ),
            );
            None
        }),
    }
}

fn regex_format(l: &RawLog, at: &KeyPath, errs: &mut Errors<'_>) -> Option<LogFormat> {
    let Some(pattern) = &l.pattern else {
        errs.at_key(
            at,
            "pattern",
            "the regex format needs a pattern with named groups",
        );
        return None;
    };
    match RegexFormat::new(pattern, l.time_format.as_deref().unwrap_or("auto")) {
        Ok(r) => Some(LogFormat::Regex(Box::new(r))),
        Err(e) => {
            errs.at_key(at, "pattern", e.to_string());
            None
        }
    }
}

fn nginx_error_format(l: &RawLog, at: &KeyPath, errs: &mut Errors<'_>) -> Option<LogFormat> {
    let utc_offset = match &l.utc_offset {
        None => time::UtcOffset::UTC,
        Some(o) => {
            let parsed = time::UtcOffset::parse(
                o,
                time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]"),
            );
            match parsed {
                Ok(o) => o,
                Err(_) => {
                    errs.at_key(
                        at,
                        "utc_offset",
                        format!("invalid offset {o:?}: expected e.g. \"+01:00\""),
                    );
                    return None;
                }
            }
        }
    };
    Some(LogFormat::NginxError(NginxErrorOptions { utc_offset }))
}

#[cfg(test)]
mod tests {
    use super::StartAt;
    use crate::config::{Origin, parse};
    use crate::formats::log::LogFormat;
    use std::path::Path;

    fn log(settings: &str) -> super::LogConfig {
        let text = format!(
            "[[registry]]\nname = \"main\"\nurl = \"http://x\"\n[[log]]\nname = \"a\"\nregistry = \"main\"\npath = \"/var/log/a.log\"\n{settings}"
        );
        parse(&text, Origin::Embedded, Path::new("/"))
            .unwrap()
            .logs
            .remove(0)
    }

    #[test]
    fn typed_settings_and_reload_equality() {
        let regex = "format = \"regex\"\npattern = \"^(?P<addr>\\\\S+) \"\n";
        let a = log(regex);
        assert!(matches!(a.format, LogFormat::Regex(_)));
        assert_eq!(
            (a.start_at, a.format_name.as_str()),
            (StartAt::End, "regex")
        );
        assert_eq!(a, log(regex), "the same settings: no restart on reload");
        assert_ne!(a, log(&format!("{regex}time_format = \"unix\"\n")));
        assert_ne!(
            a,
            log("format = \"regex\"\npattern = \"^(?P<user>\\\\S+) \"\n")
        );
        assert_ne!(a, log(&format!("{regex}start_at = \"beginning\"\n")));
        let alias = log("format = \"registry_logstash\"\n");
        assert_eq!(alias.format, LogFormat::RegistryJson);
        assert_eq!(alias.format_name, "registry_logstash");
    }
}
