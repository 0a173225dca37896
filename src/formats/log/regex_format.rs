//! A user-supplied regex with named groups, for logs none of the built-in formats read.
//!
//! Group names (aliases in parentheses): `time`, `addr` (`remote_addr`, `client`), `user`
//! (`remote_user`), `method`, `path` (`uri`, `request_uri`), `request` (a whole
//! `GET /x HTTP/1.1` line, used for whatever `method`/`path` do not give), `status`,
//! `bytes` (`body_bytes_sent`, `size`), `duration` (Go duration like `8.3ms`, or decimal
//! seconds), `duration_ms` (decimal milliseconds), `user_agent` (`agent`,
//! `http_user_agent`), `request_id`, `failed_user` (makes the line a failed login),
//! `message` (`msg`). Unknown names are rejected when the format is built, so a typo does
//! not silently drop a field.
//!
//! The regex runs on raw bytes (`regex::bytes`), so non-UTF-8 input is fine. A line the
//! regex does not match is [`ParseError::NoMatch`]: with a user pattern, regwatch cannot
//! tell a foreign line from a broken pattern, and the caller should be able to count both.

use std::time::Duration;

use regex::bytes::Regex;
use time::format_description::OwnedFormatItem;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::{
    LineKind, ParseError, ParsedLine, lossy, non_blank, parse_clf_time, parse_decimal_millis,
    parse_decimal_seconds, parse_epoch_seconds, parse_go_duration, parse_rfc3339, parse_status,
    parse_time_auto, parse_u64, present, split_request_line, unescape,
};

const FORMAT: &str = "regex";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Time,
    Addr,
    User,
    Method,
    Path,
    Request,
    Status,
    Bytes,
    Duration,
    DurationMs,
    UserAgent,
    RequestId,
    FailedUser,
    Message,
}

const FIELDS: usize = 14;

const GROUP_NAMES: [(&str, Field); 24] = [
    ("time", Field::Time),
    ("addr", Field::Addr),
    ("remote_addr", Field::Addr),
    ("client", Field::Addr),
    ("user", Field::User),
    ("remote_user", Field::User),
    ("method", Field::Method),
    ("path", Field::Path),
    ("uri", Field::Path),
    ("request_uri", Field::Path),
    ("request", Field::Request),
    ("status", Field::Status),
    ("bytes", Field::Bytes),
    ("body_bytes_sent", Field::Bytes),
    ("size", Field::Bytes),
    ("duration", Field::Duration),
    ("duration_ms", Field::DurationMs),
    ("user_agent", Field::UserAgent),
    ("agent", Field::UserAgent),
    ("http_user_agent", Field::UserAgent),
    ("request_id", Field::RequestId),
    ("failed_user", Field::FailedUser),
    ("message", Field::Message),
    ("msg", Field::Message),
];

/// How the `time` group is read.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeFormat {
    /// RFC 3339 (with or without zone), common log format (`28/Nov/2026:19:59:33 +0000`),
    /// nginx error-log style (`2026/11/28 19:59:36`) or Unix seconds.
    Auto,
    Rfc3339,
    /// Common log format.
    Clf,
    /// Unix seconds, optionally fractional (nginx `$msec`).
    UnixSeconds,
    /// A `time` crate format description (version 2), e.g.
    /// `[year]-[month]-[day] [hour]:[minute]:[second]`. Without an offset component the
    /// configured UTC offset applies.
    Custom(OwnedFormatItem),
}

impl TimeFormat {
    /// `auto` (or empty), `rfc3339`, `clf` / `common`, `unix`, or a format description.
    pub fn from_spec(spec: &str) -> Result<TimeFormat, FormatConfigError> {
        Ok(match spec.trim() {
            "" | "auto" => TimeFormat::Auto,
            "rfc3339" | "iso8601" => TimeFormat::Rfc3339,
            "clf" | "common" => TimeFormat::Clf,
            "unix" | "epoch" => TimeFormat::UnixSeconds,
            custom => {
                TimeFormat::Custom(time::format_description::parse_owned::<2>(custom).map_err(
                    |source| FormatConfigError::TimeFormat {
                        spec: custom.to_owned(),
                        source,
                    },
                )?)
            }
        })
    }

    fn parse(&self, raw: &[u8], offset: UtcOffset) -> Option<OffsetDateTime> {
        match self {
            TimeFormat::Auto => parse_time_auto(raw, offset),
            TimeFormat::Rfc3339 => parse_rfc3339(raw, offset),
            TimeFormat::Clf => parse_clf_time(raw),
            TimeFormat::UnixSeconds => parse_epoch_seconds(raw),
            TimeFormat::Custom(items) => {
                let s = std::str::from_utf8(raw).ok()?;
                OffsetDateTime::parse(s, items).ok().or_else(|| {
                    PrimitiveDateTime::parse(s, items)
                        .ok()
                        .map(|t| t.assume_offset(offset))
                })
            }
        }
    }
}

/// Why a regex format could not be built (a configuration error, reported at start-up).
#[derive(Debug, thiserror::Error)]
pub enum FormatConfigError {
    #[error("invalid regex: {0}")]
    Regex(#[from] regex::Error),
    #[error("unknown capture group {name:?}; known names: {known}")]
    UnknownGroup { name: String, known: String },
    #[error("the regex names no group regwatch uses; name at least one of: {known}")]
    NoKnownGroup { known: String },
    #[error("invalid time format {spec:?}: {source}")]
    TimeFormat {
        spec: String,
        #[source]
        source: time::error::InvalidFormatDescription,
    },
}

fn known_names() -> String {
    GROUP_NAMES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A compiled user-defined line format.
#[derive(Debug, Clone)]
pub struct RegexFormat {
    regex: Regex,
    groups: [Option<usize>; FIELDS],
    time_format: TimeFormat,
    utc_offset: UtcOffset,
}

/// Equal when pattern, time format and offset are: the group indexes follow from the
/// pattern, and `Regex` itself has no equality.
impl PartialEq for RegexFormat {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
            && self.time_format == other.time_format
            && self.utc_offset == other.utc_offset
    }
}

impl RegexFormat {
    /// Compiles `pattern`; `time_format` as in [`TimeFormat::from_spec`]. Times without a
    /// zone are read as UTC unless [`RegexFormat::with_utc_offset`] says otherwise.
    pub fn new(pattern: &str, time_format: &str) -> Result<RegexFormat, FormatConfigError> {
        let regex = Regex::new(pattern)?;
        let mut groups = [None; FIELDS];
        for (index, name) in regex.capture_names().enumerate() {
            let Some(name) = name else { continue };
            let field = GROUP_NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| *f)
                .ok_or_else(|| FormatConfigError::UnknownGroup {
                    name: name.to_owned(),
                    known: known_names(),
                })?;
            groups[field as usize] = Some(index);
        }
        if groups.iter().all(Option::is_none) {
            return Err(FormatConfigError::NoKnownGroup {
                known: known_names(),
            });
        }
        Ok(RegexFormat {
            regex,
            groups,
            time_format: TimeFormat::from_spec(time_format)?,
            utc_offset: UtcOffset::UTC,
        })
    }

    /// Offset for times the log writes without a zone.
    pub fn with_utc_offset(mut self, offset: UtcOffset) -> Self {
        self.utc_offset = offset;
        self
    }

    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// Parses one line.
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<ParsedLine<'a>, ParseError> {
        let line = non_blank(line)?;
        let caps = self.regex.captures(line).ok_or(ParseError::NoMatch)?;
        let get = |f: Field| -> Option<&'a [u8]> {
            self.groups[f as usize]
                .and_then(|i| caps.get(i))
                .map(|m| m.as_bytes())
        };

        let time = match get(Field::Time) {
            Some(raw) => Some(
                self.time_format
                    .parse(raw, self.utc_offset)
                    .ok_or_else(|| ParseError::invalid(FORMAT, "time", raw))?,
            ),
            None => None,
        };
        let status = match get(Field::Status).and_then(present) {
            Some(raw) => {
                Some(parse_status(raw).ok_or_else(|| ParseError::invalid(FORMAT, "status", raw))?)
            }
            None => None,
        };
        let bytes = match get(Field::Bytes).and_then(present) {
            Some(raw) => {
                Some(parse_u64(raw).ok_or_else(|| ParseError::invalid(FORMAT, "bytes", raw))?)
            }
            None => None,
        };
        let duration = match (
            get(Field::Duration).and_then(present),
            get(Field::DurationMs).and_then(present),
        ) {
            (Some(raw), _) => {
                Some(duration(raw).ok_or_else(|| ParseError::invalid(FORMAT, "duration", raw))?)
            }
            (None, Some(raw)) => Some(
                parse_decimal_millis(raw)
                    .ok_or_else(|| ParseError::invalid(FORMAT, "duration_ms", raw))?,
            ),
            (None, None) => None,
        };
        let mut method = get(Field::Method).and_then(present);
        let mut path = get(Field::Path).and_then(present);
        if let Some(request) = get(Field::Request) {
            let (m, p) = split_request_line(request);
            method = method.or(m);
            path = path.or(p);
        }
        let failed_user = get(Field::FailedUser).and_then(present).map(unescape);
        let user = get(Field::User).and_then(present).map(unescape);
        let kind = match (&failed_user, status) {
            (Some(u), _) => LineKind::FailedLogin { user: u.clone() },
            (None, Some(_)) => LineKind::Request,
            (None, None) => LineKind::Other,
        };

        Ok(ParsedLine {
            kind,
            time,
            remote_addr: get(Field::Addr).and_then(present).map(lossy),
            user: failed_user.or(user),
            method: method.map(lossy),
            path: path.map(unescape),
            status,
            bytes,
            duration,
            user_agent: get(Field::UserAgent).and_then(present).map(unescape),
            request_id: get(Field::RequestId).and_then(present).map(lossy),
            err_code: None,
            message: get(Field::Message).map(lossy),
        })
    }
}

/// Parses one line with a compiled regex format.
pub fn parse_regex<'a>(line: &'a [u8], format: &RegexFormat) -> Result<ParsedLine<'a>, ParseError> {
    format.parse(line)
}

/// A Go duration when it carries a unit, otherwise decimal seconds.
fn duration(raw: &[u8]) -> Option<Duration> {
    match raw.last() {
        Some(b) if b.is_ascii_digit() => parse_decimal_seconds(raw),
        _ => parse_go_duration(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::log::test_support::{fuzz, lines};
    use crate::formats::log::{parse_nginx_combined, parse_nginx_error};
    use time::macros::datetime;

    const COMBINED: &[u8] =
        include_bytes!("../../../tests/fixtures/logs/nginx-access-combined.log");
    const ERRORS: &[u8] = include_bytes!("../../../tests/fixtures/logs/nginx-error.log");

    /// nginx `combined`, as a user would write it for this format.
    const COMBINED_RE: &str = r#"^(?P<addr>\S+) \S+ (?P<user>.+?) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+|-) "(?:[^"\\]|\\.)*" "(?P<agent>(?:[^"\\]|\\.)*)"(?: (?P<duration>[\d.]+))?"#;

    #[test]
    fn combined_via_regex_matches_the_builtin_parser() {
        let f = RegexFormat::new(COMBINED_RE, "auto").unwrap();
        for line in lines(COMBINED) {
            let r = f.parse(line).unwrap();
            let b = parse_nginx_combined(line).unwrap();
            assert_eq!(r, b, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn failed_logins_from_the_error_log() {
        let f = RegexFormat::new(
            r#"^(?P<time>\S+ \S+) \[\w+\] [^:]+: (?:\*\d+ )?(?P<message>user "(?P<failed_user>[^"]*)": password mismatch), client: (?P<client>[^,]+)"#,
            "[year]/[month]/[day] [hour]:[minute]:[second]",
        )
        .unwrap()
        .with_utc_offset(UtcOffset::from_hms(1, 0, 0).unwrap());
        let mut failed = 0;
        for line in lines(ERRORS) {
            match f.parse(line) {
                Ok(p) => {
                    let builtin = parse_nginx_error(line).unwrap();
                    assert_eq!(p.kind, builtin.kind);
                    assert_eq!(p.remote_addr, builtin.remote_addr);
                    assert_eq!(
                        p.time.unwrap() + time::Duration::hours(1),
                        builtin.time.unwrap()
                    );
                    failed += 1;
                }
                Err(ParseError::NoMatch) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(failed, 14);
    }

    #[test]
    fn other_fields_and_time_formats() {
        let f = RegexFormat::new(
            r"^(?P<time>\S+) (?P<method>\S+) (?P<uri>\S+) (?P<status>\d+) (?P<duration_ms>[\d.]+)ms id=(?P<request_id>\S+)$",
            "rfc3339",
        )
        .unwrap();
        let p = f
            .parse(b"2026-11-28T19:59:36.5Z DELETE /v2/a/b/manifests/sha256:ab 202 12.5ms id=r1\n")
            .unwrap();
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:36.5 UTC)));
        assert_eq!(p.duration, Some(Duration::from_micros(12_500)));
        assert_eq!(p.request_id.as_deref(), Some("r1"));
        assert_eq!(p.kind, LineKind::Request);
        assert!(matches!(
            f.parse(b"something else"),
            Err(ParseError::NoMatch)
        ));

        let unix = RegexFormat::new(r"^(?P<time>\S+) (?P<duration>\S+)$", "unix").unwrap();
        let p = unix.parse(b"1795895973.348 1.5s").unwrap();
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:33.348 UTC)));
        assert_eq!(p.duration, Some(Duration::from_millis(1500)));
        assert_eq!(p.kind, LineKind::Other);
    }

    #[test]
    fn no_match_and_bad_values() {
        let f = RegexFormat::new(r"^(?P<status>\S+) (?P<time>\S+)$", "auto").unwrap();
        assert!(matches!(f.parse(b"nothing"), Err(ParseError::NoMatch)));
        assert!(matches!(f.parse(b""), Err(ParseError::Empty)));
        let e = f
            .parse(b"abc 2026-11-28T19:59:36Z")
            .unwrap_err()
            .to_string();
        assert!(e.contains("regex: invalid status \"abc\""), "{e}");
        let e = f.parse(b"200 soon").unwrap_err().to_string();
        assert!(e.contains("invalid time"), "{e}");
    }

    #[test]
    fn config_errors_say_what_is_wrong() {
        let e = RegexFormat::new(r"(?P<staus>\d+)", "auto")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown capture group \"staus\"") && e.contains("status"),
            "{e}"
        );
        let e = RegexFormat::new(r"(\d+)", "auto").unwrap_err().to_string();
        assert!(e.contains("names no group"), "{e}");
        let e = RegexFormat::new(r"(?P<status>\d+", "auto")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid regex"), "{e}");
        let e = RegexFormat::new(r"(?P<status>\d+)", "[yaer]")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid time format \"[yaer]\""), "{e}");
    }

    #[test]
    fn fuzz_never_panics() {
        let f = RegexFormat::new(COMBINED_RE, "auto").unwrap();
        fuzz(COMBINED, 0x4e9ec5, 9, |l| f.parse(l));
    }
}
