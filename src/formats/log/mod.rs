//! Pure, allocation-light parsers for the log formats regwatch tails.
//!
//! Every parser takes the raw bytes of one line (without or with its trailing newline):
//! log files are not guaranteed to be UTF-8 (nginx copies a TLS ClientHello into its error
//! log verbatim). Parsers never panic; they return [`ParseError`] for input that does not
//! fit the format and `Ok` with [`LineKind::Other`] for well-formed lines that are not about
//! a request (start-up messages, connection noise).
//!
//! [`ParsedLine`] borrows from the line where it can (`Cow::Borrowed`), so the common case
//! allocates nothing; call [`ParsedLine::into_owned`] to keep it past the line buffer.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::classify::{self, Classified};

pub mod access_combined;
pub mod nginx_combined;
pub mod nginx_error;
pub mod nginx_json;
pub mod regex_format;
pub mod registry_json;
pub mod registry_text;

pub use access_combined::parse_access_combined;
pub use nginx_combined::parse_nginx_combined;
pub use nginx_error::{NginxErrorOptions, parse_nginx_error, parse_nginx_error_with};
pub use nginx_json::{NginxJsonFields, parse_nginx_json, parse_nginx_json_with};
pub use regex_format::{FormatConfigError, RegexFormat, TimeFormat, parse_regex};
pub use registry_json::parse_registry_json;
pub use registry_text::parse_registry_text;

/// What a line is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LineKind<'a> {
    /// The line reports a finished request: it carries a response status.
    Request,
    /// A dedicated failed-login line (nginx `password mismatch` / `was not found`, the
    /// registry's `error authenticating user`). A 401 in an access log stays a `Request`;
    /// [`classify::classify`] turns it into an auth failure when it names a user.
    FailedLogin { user: Cow<'a, str> },
    /// A request without credentials was challenged: every client's first `/v2/` ping does
    /// this, so it is not a failed login.
    NoCredentials,
    /// Anything else (start-up lines, connection noise, the registry's `authorized request`
    /// line that precedes its `response completed` line).
    #[default]
    Other,
}

impl LineKind<'_> {
    pub fn into_owned(self) -> LineKind<'static> {
        match self {
            LineKind::Request => LineKind::Request,
            LineKind::FailedLogin { user } => LineKind::FailedLogin {
                user: Cow::Owned(user.into_owned()),
            },
            LineKind::NoCredentials => LineKind::NoCredentials,
            LineKind::Other => LineKind::Other,
        }
    }
}

/// One parsed log line. Fields a format does not carry stay `None`; `"-"` and `""`
/// placeholders are mapped to `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedLine<'a> {
    pub kind: LineKind<'a>,
    /// `None` only for a regex format without a `time` group.
    pub time: Option<OffsetDateTime>,
    /// As logged: `ip`, `ip:port` or `[v6]:port`. See [`ParsedLine::remote_ip`].
    pub remote_addr: Option<Cow<'a, str>>,
    pub user: Option<Cow<'a, str>>,
    pub method: Option<Cow<'a, str>>,
    /// Path and raw query, escapes (`\xHH`, JSON) decoded.
    pub path: Option<Cow<'a, str>>,
    pub status: Option<u16>,
    /// Response body bytes.
    pub bytes: Option<u64>,
    pub duration: Option<Duration>,
    pub user_agent: Option<Cow<'a, str>>,
    pub request_id: Option<Cow<'a, str>>,
    /// The registry's `err.code` (lower-case description such as `manifest unknown`).
    pub err_code: Option<Cow<'a, str>>,
    /// Free-text message of error-log and registry lines.
    pub message: Option<Cow<'a, str>>,
}

/// What counting a request needs of its line, borrowed from the line itself where a format
/// can say it without parsing the rest ([`request_facts`]), or from a [`ParsedLine`]
/// ([`RequestFacts::of`]): the two agree on every line, so the counts are the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// The line's time in unix seconds.
    pub unix_time: Option<i64>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub status: Option<u16>,
    pub user_present: bool,
    pub user_agent: Option<&'a str>,
}

impl<'a> RequestFacts<'a> {
    pub fn of(p: &'a ParsedLine<'_>) -> Self {
        RequestFacts {
            unix_time: p.time.map(OffsetDateTime::unix_timestamp),
            method: p.method.as_deref(),
            path: p.path.as_deref(),
            status: p.status,
            user_present: p.user.is_some(),
            user_agent: p.user_agent.as_deref(),
        }
    }

    /// As [`ParsedLine::classify`].
    pub fn classify(&self) -> Option<Classified<'a>> {
        Some(classify::classify(
            self.method?,
            self.path?,
            self.status?,
            self.user_present,
        ))
    }
}

/// The [`RequestFacts`] of a request line of a format that can tell them without a full
/// parse (nginx and registry combined access logs: nearly every line of a busy registry).
/// `Ok(None)` means: parse it with [`parse`] (another format, or a line whose fields need
/// decoding); an error is the error [`parse`] would return.
pub fn request_facts<'a>(
    format: &LogFormat,
    line: &'a [u8],
) -> Result<Option<RequestFacts<'a>>, ParseError> {
    match format {
        LogFormat::NginxCombined => {
            nginx_combined::request_facts_combined(line, nginx_combined::FORMAT)
        }
        LogFormat::AccessCombined => {
            nginx_combined::request_facts_combined(line, access_combined::FORMAT)
        }
        _ => Ok(None),
    }
}

impl ParsedLine<'_> {
    /// The client IP without a port, if the address is an IP at all.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        ip_of(self.remote_addr.as_deref()?)
    }

    /// Classifies the request, if the line has a method, path and status.
    pub fn classify(&self) -> Option<Classified<'_>> {
        RequestFacts::of(self).classify()
    }

    /// Detaches the line from the input buffer.
    pub fn into_owned(self) -> ParsedLine<'static> {
        fn own(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            c.map(|c| Cow::Owned(c.into_owned()))
        }
        ParsedLine {
            kind: self.kind.into_owned(),
            time: self.time,
            remote_addr: own(self.remote_addr),
            user: own(self.user),
            method: own(self.method),
            path: own(self.path),
            status: self.status,
            bytes: self.bytes,
            duration: self.duration,
            user_agent: own(self.user_agent),
            request_id: own(self.request_id),
            err_code: own(self.err_code),
            message: own(self.message),
        }
    }
}

/// Parses `ip`, `ip:port`, `[v6]:port` and bare IPv6.
pub fn ip_of(addr: &str) -> Option<IpAddr> {
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let end = rest.find(']')?;
        return rest[..end].parse().ok();
    }
    let (host, port) = addr.rsplit_once(':')?;
    if port.bytes().all(|b| b.is_ascii_digit()) {
        host.parse().ok()
    } else {
        None
    }
}

/// Why a line could not be parsed. Values are truncated so that a garbage line cannot
/// blow up an error message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error("{format}: {what} at byte {at}")]
    Malformed {
        format: &'static str,
        what: &'static str,
        at: usize,
    },
    #[error("{format}: invalid {field} {value:?}")]
    InvalidField {
        format: &'static str,
        field: &'static str,
        value: String,
    },
    #[error("{format}: invalid JSON: {source}")]
    Json {
        format: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("regex: the line does not match the configured pattern")]
    NoMatch,
}

impl ParseError {
    pub(crate) fn malformed(format: &'static str, what: &'static str, at: usize) -> Self {
        ParseError::Malformed { format, what, at }
    }

    pub(crate) fn invalid(format: &'static str, field: &'static str, value: &[u8]) -> Self {
        const MAX: usize = 80;
        let mut shown = String::from_utf8_lossy(&value[..value.len().min(MAX)]).into_owned();
        if value.len() > MAX {
            shown.push('…');
        }
        let value = shown;
        ParseError::InvalidField {
            format,
            field,
            value,
        }
    }
}

/// A configured log format. Equal when the settings are (a config reload restarts the
/// tailers only when a log's format changes).
#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    NginxCombined,
    NginxJson(Box<NginxJsonFields>),
    NginxError(NginxErrorOptions),
    /// Also reads the `logstash` formatter (`@timestamp`, `message`).
    RegistryJson,
    RegistryText,
    /// The registry's own stdout access log.
    AccessCombined,
    Regex(Box<RegexFormat>),
}

impl LogFormat {
    /// The config name of each format that needs no settings; `regex` needs a pattern and is
    /// built with [`RegexFormat::new`].
    pub const NAMES: [&'static str; 7] = [
        "nginx_combined",
        "nginx_json",
        "nginx_error",
        "registry_json",
        "registry_text",
        "access_combined",
        "regex",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            LogFormat::NginxCombined => "nginx_combined",
            LogFormat::NginxJson(_) => "nginx_json",
            LogFormat::NginxError(_) => "nginx_error",
            LogFormat::RegistryJson => "registry_json",
            LogFormat::RegistryText => "registry_text",
            LogFormat::AccessCombined => "access_combined",
            LogFormat::Regex(_) => "regex",
        }
    }

    /// The format with default settings; `None` for unknown names and for `regex`.
    pub fn from_name(name: &str) -> Option<LogFormat> {
        Some(match name {
            "nginx_combined" => LogFormat::NginxCombined,
            "nginx_json" => LogFormat::NginxJson(Box::default()),
            "nginx_error" => LogFormat::NginxError(NginxErrorOptions::default()),
            "registry_json" | "registry_logstash" => LogFormat::RegistryJson,
            "registry_text" => LogFormat::RegistryText,
            "access_combined" | "registry_access" => LogFormat::AccessCombined,
            _ => return None,
        })
    }
}

/// Parses one line in the given format.
pub fn parse<'a>(format: &LogFormat, line: &'a [u8]) -> Result<ParsedLine<'a>, ParseError> {
    match format {
        LogFormat::NginxCombined => parse_nginx_combined(line),
        LogFormat::NginxJson(fields) => parse_nginx_json_with(line, fields),
        LogFormat::NginxError(opts) => parse_nginx_error_with(line, opts),
        LogFormat::RegistryJson => parse_registry_json(line),
        LogFormat::RegistryText => parse_registry_text(line),
        LogFormat::AccessCombined => parse_access_combined(line),
        LogFormat::Regex(re) => re.parse(line),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the parsers.

/// Strips the line terminator (`\n`, `\r\n`) the tailer may leave on.
pub(crate) fn trim_eol(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

/// The trimmed line, or `Empty` for a blank one (so callers can skip it quietly).
pub(crate) fn non_blank(line: &[u8]) -> Result<&[u8], ParseError> {
    let line = trim_eol(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        Err(ParseError::Empty)
    } else {
        Ok(line)
    }
}

/// The bytes as text, invalid UTF-8 replaced. Tries the validating conversion first: it
/// checks ASCII a word at a time, where `from_utf8_lossy` walks the bytes in chunks (on the
/// hot path, several fields per line, that was a sixth of the parse).
pub(crate) fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A line and its text when it is valid UTF-8 (nearly always): its fields are then borrowed
/// from the text, validated once for the whole line rather than field by field.
#[derive(Clone, Copy)]
pub(crate) struct LineText<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> LineText<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        LineText {
            bytes,
            text: std::str::from_utf8(bytes).ok(),
        }
    }

    /// An ASCII line (nearly every line of an access log), `None` for any other: the
    /// line's text without `from_utf8`'s validation, which is several times dearer than
    /// `is_ascii` (a tenth of a combined line's quick judging).
    pub(crate) fn ascii(bytes: &'a [u8]) -> Option<Self> {
        if !bytes.is_ascii() {
            return None;
        }
        // SAFETY: ASCII is UTF-8.
        let text = unsafe { std::str::from_utf8_unchecked(bytes) };
        Some(LineText {
            bytes,
            text: Some(text),
        })
    }

    /// `part` (a slice of the line) as text, when the line is text and `part` is cut at
    /// character boundaries.
    fn text_of(&self, part: &'a [u8]) -> Option<&'a str> {
        let start = (part.as_ptr() as usize).checked_sub(self.bytes.as_ptr() as usize)?;
        debug_assert!(
            start + part.len() <= self.bytes.len(),
            "not a slice of the line"
        );
        self.text?.get(start..start.checked_add(part.len())?)
    }

    /// [`lossy`] for a field of the line.
    pub(crate) fn lossy(&self, part: &'a [u8]) -> Cow<'a, str> {
        self.text_of(part)
            .map_or_else(|| lossy(part), Cow::Borrowed)
    }

    /// [`unescape`] for a field of the line.
    pub(crate) fn unescape(&self, part: &'a [u8]) -> Cow<'a, str> {
        match self.text_of(part) {
            Some(text) if memchr::memchr(b'\\', part).is_none() => Cow::Borrowed(text),
            _ => unescape(part),
        }
    }
}

/// `None` for the placeholders servers write for "unset".
pub(crate) fn present(bytes: &[u8]) -> Option<&[u8]> {
    match bytes {
        b"" | b"-" => None,
        _ => Some(bytes),
    }
}

pub(crate) fn present_cow(value: Cow<'_, str>) -> Option<Cow<'_, str>> {
    match &*value {
        "" | "-" => None,
        _ => Some(value),
    }
}

pub(crate) fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

pub(crate) fn parse_status(bytes: &[u8]) -> Option<u16> {
    if bytes.len() > 3 {
        return None;
    }
    parse_u64(bytes).and_then(|n| u16::try_from(n).ok())
}

/// Decimal seconds as nginx writes `$request_time` (`0.008`), parsed without floats so the
/// value is exact.
pub(crate) fn parse_decimal_seconds(bytes: &[u8]) -> Option<Duration> {
    decimal_scaled(bytes, 1_000_000_000)
        .and_then(|ns| u64::try_from(ns).ok().map(Duration::from_nanos))
}

/// Decimal milliseconds (`12.5`), exact.
pub(crate) fn parse_decimal_millis(bytes: &[u8]) -> Option<Duration> {
    decimal_scaled(bytes, 1_000_000).and_then(|ns| u64::try_from(ns).ok().map(Duration::from_nanos))
}

/// `int[.frac]` times `unit_nanos`, in nanoseconds; fraction digits beyond what the unit
/// resolves are dropped.
fn decimal_scaled(bytes: &[u8], unit_nanos: u128) -> Option<u128> {
    let (int, frac) = match memchr::memchr(b'.', bytes) {
        Some(dot) => (&bytes[..dot], &bytes[dot + 1..]),
        None => (bytes, &[][..]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    for &b in int {
        if !b.is_ascii_digit() {
            return None;
        }
        total = total.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
    }
    total = total.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for &b in frac {
        if !b.is_ascii_digit() {
            return None;
        }
        scale /= 10;
        total = total.checked_add(u128::from(b - b'0') * scale)?;
    }
    Some(total)
}

/// A Go `time.Duration` string: `8.342913ms`, `1.2s`, `350µs`, `1h2m3.5s`, `0`.
pub(crate) fn parse_go_duration(bytes: &[u8]) -> Option<Duration> {
    if bytes == b"0" {
        return Some(Duration::ZERO);
    }
    let mut rest = bytes;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .iter()
            .position(|b| b.is_ascii_digit() || *b == b'.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            b"ns" => 1,
            // `us`, `µs` (U+00B5, what Go prints) and `μs` (U+03BC).
            b"us" | [0xC2, 0xB5, b's'] | [0xCE, 0xBC, b's'] => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return None,
        };
        total = total.checked_add(decimal_scaled(num, unit_nanos)?)?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    // The remainder is below 10^9, so it fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Some(Duration::new(secs, nanos))
}

fn digits<const N: usize>(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at + N)?;
    let mut n = 0u32;
    for &b in slice {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    Some(n)
}

fn build_time(
    year: u32,
    month: u32,
    day: u32,
    (h, m, s, nanos): (u32, u32, u32, u32),
    offset: UtcOffset,
) -> Option<OffsetDateTime> {
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let time = Time::from_hms_nano(
        u8::try_from(h).ok()?,
        u8::try_from(m).ok()?,
        u8::try_from(s).ok()?,
        nanos,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

/// `±HH:MM`, `±HHMM` or `±HH`.
fn parse_offset(bytes: &[u8]) -> Option<UtcOffset> {
    let sign: i8 = match bytes.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h = digits::<2>(bytes, 1)?;
    let m = match bytes.len() {
        3 => 0,
        5 => digits::<2>(bytes, 3)?,
        6 if bytes[3] == b':' => digits::<2>(bytes, 4)?,
        _ => return None,
    };
    UtcOffset::from_hms(
        sign * i8::try_from(h).ok()?,
        sign * i8::try_from(m).ok()?,
        0,
    )
    .ok()
}

/// RFC 3339 and its relatives: `2026-11-28T19:59:36.609187805Z`, `…+00:00`, a space instead
/// of `T`, and no zone at all (then `default_offset` applies, as for nginx's local times).
pub(crate) fn parse_rfc3339(bytes: &[u8], default_offset: UtcOffset) -> Option<OffsetDateTime> {
    let year = digits::<4>(bytes, 0)?;
    let month = digits::<2>(bytes, 5)?;
    let day = digits::<2>(bytes, 8)?;
    let h = digits::<2>(bytes, 11)?;
    let m = digits::<2>(bytes, 14)?;
    let s = digits::<2>(bytes, 17)?;
    if bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let mut pos = 19;
    let mut nanos = 0u32;
    if bytes.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        let mut scale = 100_000_000u32;
        while let Some(b) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
            nanos += u32::from(b - b'0') * scale;
            scale /= 10;
            pos += 1;
        }
        if pos == start {
            return None;
        }
    }
    let offset = match &bytes[pos..] {
        [] => default_offset,
        [b'Z' | b'z'] => UtcOffset::UTC,
        zone => parse_offset(zone)?,
    };
    build_time(year, month, day, (h, m, s, nanos), offset)
}

thread_local! {
    /// The last common-log time parsed on this thread and what it was: consecutive lines of
    /// an access log mostly share their second.
    static LAST_CLF_TIME: std::cell::Cell<Option<([u8; 26], OffsetDateTime)>> =
        const { std::cell::Cell::new(None) };
}

thread_local! {
    /// The last date and offset of [`clf_unix_seconds`] (`28/Nov/2026:` and ` +0000`) and
    /// the unix time of that day's midnight there: a log's lines share their day.
    static LAST_CLF_DAY: std::cell::Cell<Option<([u8; 18], i64)>> =
        const { std::cell::Cell::new(None) };
}

/// [`parse_clf_time`] as unix seconds, `None` exactly where it is `None`: the day is
/// checked (and converted) once per day, the time of day by its ranges.
pub(crate) fn clf_unix_seconds(bytes: &[u8]) -> Option<i64> {
    let raw: &[u8; 26] = bytes.try_into().ok()?;
    if raw[14] != b':' || raw[17] != b':' {
        return None;
    }
    let (h, m, s) = (
        digits::<2>(raw, 12)?,
        digits::<2>(raw, 15)?,
        digits::<2>(raw, 18)?,
    );
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let mut day = [0u8; 18];
    day[..12].copy_from_slice(&raw[..12]);
    day[12..].copy_from_slice(&raw[20..]);
    let midnight = match LAST_CLF_DAY.get() {
        Some((last, midnight)) if last == day => midnight,
        _ => {
            let mut first = *raw;
            first[12..20].copy_from_slice(b"00:00:00");
            let midnight = parse_clf_time_uncached(&first)?.unix_timestamp();
            LAST_CLF_DAY.set(Some((day, midnight)));
            midnight
        }
    };
    Some(midnight + i64::from(h * 3600 + m * 60 + s))
}

/// Common log format time: `28/Nov/2026:19:59:33 +0000`.
pub(crate) fn parse_clf_time(bytes: &[u8]) -> Option<OffsetDateTime> {
    let raw: [u8; 26] = bytes.try_into().ok()?;
    if let Some((last, time)) = LAST_CLF_TIME.get() {
        if last == raw {
            return Some(time);
        }
    }
    let time = parse_clf_time_uncached(bytes)?;
    LAST_CLF_TIME.set(Some((raw, time)));
    Some(time)
}

fn parse_clf_time_uncached(bytes: &[u8]) -> Option<OffsetDateTime> {
    if bytes.len() != 26 || bytes[2] != b'/' || bytes[6] != b'/' || bytes[11] != b':' {
        return None;
    }
    if bytes[14] != b':' || bytes[17] != b':' || bytes[20] != b' ' {
        return None;
    }
    let day = digits::<2>(bytes, 0)?;
    let month = match &bytes[3..6] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let year = digits::<4>(bytes, 7)?;
    let h = digits::<2>(bytes, 12)?;
    let m = digits::<2>(bytes, 15)?;
    let s = digits::<2>(bytes, 18)?;
    let offset = parse_offset(&bytes[21..])?;
    build_time(year, month, day, (h, m, s, 0), offset)
}

/// nginx error-log time, `2026/11/28 19:59:36`: local time without a zone.
pub(crate) fn parse_slash_time(bytes: &[u8], offset: UtcOffset) -> Option<OffsetDateTime> {
    if bytes.len() != 19 || bytes[4] != b'/' || bytes[7] != b'/' || bytes[10] != b' ' {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = digits::<4>(bytes, 0)?;
    let month = digits::<2>(bytes, 5)?;
    let day = digits::<2>(bytes, 8)?;
    let h = digits::<2>(bytes, 11)?;
    let m = digits::<2>(bytes, 14)?;
    let s = digits::<2>(bytes, 17)?;
    build_time(year, month, day, (h, m, s, 0), offset)
}

/// Unix time in (decimal) seconds, as nginx's `$msec`.
pub(crate) fn parse_epoch_seconds(bytes: &[u8]) -> Option<OffsetDateTime> {
    let nanos = decimal_scaled(bytes, 1_000_000_000)?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(nanos).ok()?).ok()
}

/// Tries every time syntax the supported servers write.
pub(crate) fn parse_time_auto(bytes: &[u8], default_offset: UtcOffset) -> Option<OffsetDateTime> {
    parse_rfc3339(bytes, default_offset)
        .or_else(|| parse_clf_time(bytes))
        .or_else(|| parse_slash_time(bytes, default_offset))
        .or_else(|| parse_epoch_seconds(bytes))
}

/// Decodes the escapes access logs use inside quoted fields: nginx's `\xHH` and Go's
/// `strconv.Quote` set (`\"`, `\\`, `\n`, `\uXXXX`, ...). Borrows when there is nothing to
/// decode. Undecodable bytes become U+FFFD rather than an error, because a path with a
/// stray byte is still worth reporting.
pub(crate) fn unescape(bytes: &[u8]) -> Cow<'_, str> {
    if memchr::memchr(b'\\', bytes).is_none() {
        return lossy(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' || i + 1 >= bytes.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let (decoded, used) = decode_escape(&bytes[i + 1..]);
        match decoded {
            Some(Decoded::Byte(d)) => out.push(d),
            Some(Decoded::Char(c)) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            None => out.push(b'\\'),
        }
        i += 1 + used;
    }
    Cow::Owned(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

enum Decoded {
    Byte(u8),
    Char(char),
}

fn hex_val(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

fn hex_n(bytes: &[u8], n: usize) -> Option<u32> {
    let slice = bytes.get(..n)?;
    slice
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc.checked_mul(16)? + hex_val(b)?))
}

/// Decodes the escape after a backslash; returns what it stands for and how many bytes it
/// used (0 when it is not a known escape, so the backslash is kept literally).
fn decode_escape(after: &[u8]) -> (Option<Decoded>, usize) {
    let Some(&first) = after.first() else {
        return (None, 0);
    };
    let simple = match first {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        b'\'' => Some(b'\''),
        b'n' => Some(b'\n'),
        b't' => Some(b'\t'),
        b'r' => Some(b'\r'),
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'v' => Some(0x0b),
        _ => None,
    };
    if let Some(d) = simple {
        return (Some(Decoded::Byte(d)), 1);
    }
    match first {
        b'x' | b'X' => match hex_n(&after[1..], 2) {
            Some(v) => (u8::try_from(v).ok().map(Decoded::Byte), 3),
            None => (None, 0),
        },
        b'u' => match hex_n(&after[1..], 4).and_then(char::from_u32) {
            Some(c) => (Some(Decoded::Char(c)), 5),
            None => (None, 0),
        },
        b'U' => match hex_n(&after[1..], 8).and_then(char::from_u32) {
            Some(c) => (Some(Decoded::Char(c)), 9),
            None => (None, 0),
        },
        b'0'..=b'7' => {
            let oct = after.get(..3).and_then(|d| {
                d.iter().try_fold(0u32, |acc, &b| {
                    (b'0'..=b'7')
                        .contains(&b)
                        .then(|| acc * 8 + u32::from(b - b'0'))
                })
            });
            match oct.and_then(|v| u8::try_from(v).ok()) {
                Some(v) => (Some(Decoded::Byte(v)), 3),
                None => (None, 0),
            }
        }
        _ => (None, 0),
    }
}

/// Reads a Go `%q`-quoted string at the start of `bytes` (which must begin with `"`);
/// returns the value and the number of bytes consumed including both quotes.
pub(crate) fn go_unquote(bytes: &[u8]) -> Option<(Cow<'_, str>, usize)> {
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let end = closing_quote(bytes, 1)?;
    Some((unescape(&bytes[1..end]), end + 1))
}

/// Index of the `"` closing a quoted field whose content starts at `from`, skipping
/// backslash escapes.
pub(crate) fn closing_quote(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let hit = i + memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[hit] == b'"' {
            return Some(hit);
        }
        i = hit + 2;
    }
}

/// Splits `METHOD target PROTO`. A request line whose method is not an HTTP token (a TLS
/// ClientHello sent to a plain-HTTP port, `-` for no request) yields no method and path.
pub(crate) fn split_request_line(raw: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let (method, rest) = match memchr::memchr(b' ', raw) {
        Some(sp) => (&raw[..sp], &raw[sp + 1..]),
        None => (raw, &[][..]),
    };
    if !method.first().is_some_and(u8::is_ascii_alphabetic)
        || method.len() > 32
        || !method
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return (None, None);
    }
    let target = match memchr::memrchr(b' ', rest) {
        Some(sp) if rest[sp + 1..].starts_with(b"HTTP/") => &rest[..sp],
        _ => rest,
    };
    (Some(method), (!target.is_empty()).then_some(target))
}

/// Streaming access to the top-level fields of a JSON object line, so that only the wanted
/// values are materialised and strings without escapes stay borrowed.
pub(crate) mod json {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::{ParseError, ParsedLine};

    /// A JSON value reduced to what log fields need.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) enum Scalar<'a> {
        Str(Cow<'a, str>),
        U64(u64),
        I64(i64),
        F64(f64),
        /// `null`, booleans, objects and arrays (e.g. an object-valued `err.detail`).
        Other,
    }

    struct Key<'a>(Cow<'a, str>);

    impl<'de> de::Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(ScalarVisitor).map(|s| match s {
                Scalar::Str(s) => Key(s),
                _ => Key(Cow::Borrowed("")),
            })
        }
    }

    impl<'de> de::Deserialize<'de> for Scalar<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ScalarVisitor)
        }
    }

    struct ScalarVisitor;

    impl<'de> Visitor<'de> for ScalarVisitor {
        type Value = Scalar<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Owned(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Scalar::U64(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Scalar::I64(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Scalar::F64(v))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Scalar::Other)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Scalar::Other)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Scalar::Other)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Scalar::Other)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Scalar::Other)
        }
    }

    struct ObjectVisitor<'s, 'de, const N: usize, F> {
        slot_of: F,
        slots: &'s mut [Option<Scalar<'de>>; N],
    }

    impl<'de, const N: usize, F> Visitor<'de> for ObjectVisitor<'_, 'de, N, F>
    where
        F: Fn(&str) -> Option<usize>,
    {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                match (self.slot_of)(&key).and_then(|i| self.slots.get_mut(i)) {
                    Some(slot) => *slot = Some(map.next_value::<Scalar<'de>>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    /// Reads a one-object JSON line, storing the value of each key that `slot_of` maps to a
    /// slot index (later duplicates win).
    pub(crate) fn read_object<'de, const N: usize>(
        line: &'de [u8],
        format: &'static str,
        slot_of: impl Fn(&str) -> Option<usize>,
    ) -> Result<[Option<Scalar<'de>>; N], ParseError> {
        let mut slots: [Option<Scalar<'de>>; N] = std::array::from_fn(|_| None);
        let mut de = serde_json::Deserializer::from_slice(line);
        de.deserialize_map(ObjectVisitor {
            slot_of,
            slots: &mut slots,
        })
        .and_then(|()| de.end())
        .map_err(|source| ParseError::Json { format, source })?;
        Ok(slots)
    }

    /// serde_json rejects invalid UTF-8 inside strings, but nginx's `escape=json` passes
    /// bytes >= 0x80 through unchanged; such lines are retried after lossy decoding.
    pub(crate) fn with_utf8_fallback<'a>(
        line: &'a [u8],
        parse: impl for<'b> Fn(&'b [u8]) -> Result<ParsedLine<'b>, ParseError>,
    ) -> Result<ParsedLine<'a>, ParseError> {
        match parse(line) {
            Err(ParseError::Json { .. }) if std::str::from_utf8(line).is_err() => {
                let fixed = String::from_utf8_lossy(line);
                parse(fixed.as_bytes()).map(ParsedLine::into_owned)
            }
            other => other,
        }
    }

    impl<'a> Scalar<'a> {
        /// The string value, if it is one.
        pub(crate) fn into_str(self) -> Option<Cow<'a, str>> {
            match self {
                Scalar::Str(s) => Some(s),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Deterministic fuzzing without extra crates: a seeded xorshift drives random lines,
    //! mutations and truncations of the real samples; the property is "never panics".

    use super::{ParseError, ParsedLine};

    pub struct XorShift(u64);

    impl XorShift {
        pub fn new(seed: u64) -> Self {
            XorShift(seed | 1)
        }
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Bytes that steer parsers into their interesting branches.
    const STRUCTURAL: &[u8] = b"\"\\ []{}:=,-./0123456789xXuT+Z\t\n\r?&%@sm";

    pub fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
        text.split(|b| *b == b'\n').filter(|l| !l.is_empty())
    }

    /// Runs `parse` on random bytes, every prefix of every `stride`-th sample line, and
    /// random mutations of sample lines.
    pub fn fuzz<F>(samples: &[u8], seed: u64, stride: usize, parse: F)
    where
        F: Fn(&[u8]) -> Result<ParsedLine<'_>, ParseError>,
    {
        let mut rng = XorShift::new(seed);
        let sample_lines: Vec<&[u8]> = lines(samples).collect();
        for _ in 0..3000 {
            let len = rng.below(200);
            let line: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(3) == 0 {
                        rng.next() as u8
                    } else {
                        STRUCTURAL[rng.below(STRUCTURAL.len())]
                    }
                })
                .collect();
            let _ = parse(&line);
        }
        for line in sample_lines.iter().step_by(stride.max(1)) {
            for cut in 0..=line.len() {
                let _ = parse(&line[..cut]);
                let _ = parse(&line[cut..]);
            }
        }
        for _ in 0..3000 {
            let Some(&line) = sample_lines.get(rng.below(sample_lines.len())) else {
                break;
            };
            let mut line = line.to_vec();
            for _ in 0..=rng.below(4) {
                if line.is_empty() {
                    break;
                }
                let at = rng.below(line.len());
                match rng.below(3) {
                    0 => line[at] = rng.next() as u8,
                    1 => line[at] = STRUCTURAL[rng.below(STRUCTURAL.len())],
                    _ => {
                        line.remove(at);
                    }
                }
            }
            let _ = parse(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// `clf_unix_seconds` is `parse_clf_time` in unix seconds, `None` where it is `None`,
    /// on valid times across days, months, leap years and offsets, on the times a valid
    /// day's cache must still refuse, and on random mutations of valid times.
    #[test]
    fn clf_unix_seconds_is_parse_clf_time_in_seconds() {
        let same = |raw: &[u8]| {
            assert_eq!(
                clf_unix_seconds(raw),
                parse_clf_time(raw).map(OffsetDateTime::unix_timestamp),
                "{}",
                String::from_utf8_lossy(raw)
            )
        };
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mut rng = test_support::XorShift::new(0xc1f);
        for year in [1999, 2024, 2026, 2100] {
            for month in months {
                for day in [1, 28, 29, 30, 31, 32] {
                    for offset in ["+0000", "-0500", "+0530", "+1400", "-1200"] {
                        for time in [
                            "00:00:00", "23:59:59", "12:34:56", "24:00:00", "23:60:00", "23:59:60",
                            "1a:00:00",
                        ] {
                            let raw = format!("{day:02}/{month}/{year}:{time} {offset}");
                            same(raw.as_bytes());
                            let mut bytes = raw.into_bytes();
                            let at = rng.below(bytes.len());
                            bytes[at] = b"0123456789:/ +-Nx"[rng.below(17)];
                            same(&bytes);
                        }
                    }
                }
            }
        }
        for bad in [
            &b""[..],
            b"28/Nov/2026:19:59:33",
            b"28/Nov/2026:19:59:33 +00000",
            b"28/Nov/2026 19:59:33 +0000",
        ] {
            same(bad);
        }
    }

    #[test]
    fn go_durations() {
        let ms = |n: u64| Duration::from_micros(n);
        assert_eq!(
            parse_go_duration(b"8.342913ms"),
            Some(Duration::from_nanos(8_342_913))
        );
        assert_eq!(
            parse_go_duration(b"1.2s"),
            Some(Duration::from_millis(1200))
        );
        assert_eq!(parse_go_duration("350µs".as_bytes()), Some(ms(350)));
        assert_eq!(parse_go_duration("350μs".as_bytes()), Some(ms(350)));
        assert_eq!(parse_go_duration(b"350us"), Some(ms(350)));
        assert_eq!(parse_go_duration(b"12ns"), Some(Duration::from_nanos(12)));
        assert_eq!(
            parse_go_duration(b"1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration(b"0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration(b"0s"), Some(Duration::ZERO));
        for bad in [
            &b""[..],
            b"5",
            b"ms",
            b"-1s",
            b"1.2.3s",
            b"1x",
            b"99999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{:?}", lossy(bad));
        }
    }

    #[test]
    fn decimal_seconds() {
        assert_eq!(
            parse_decimal_seconds(b"0.008"),
            Some(Duration::from_millis(8))
        );
        assert_eq!(parse_decimal_seconds(b"12"), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_decimal_seconds(b"1.0000000019"),
            Some(Duration::new(1, 1))
        );
        assert_eq!(parse_decimal_seconds(b"."), None);
        assert_eq!(parse_decimal_seconds(b"1e3"), None);
    }

    #[test]
    fn times() {
        let utc = UtcOffset::UTC;
        assert_eq!(
            parse_rfc3339(b"2026-11-28T19:59:36.609187805Z", utc),
            Some(datetime!(2026-11-28 19:59:36.609187805 UTC))
        );
        assert_eq!(
            parse_rfc3339(b"2026-11-28T19:57:59.274791Z", utc),
            Some(datetime!(2026-11-28 19:57:59.274791 UTC))
        );
        assert_eq!(
            parse_rfc3339(b"2026-11-28T19:59:33+00:00", utc),
            Some(datetime!(2026-11-28 19:59:33 UTC))
        );
        assert_eq!(
            parse_rfc3339(b"2026-11-28T20:59:33+01:00", utc),
            Some(datetime!(2026-11-28 19:59:33 UTC))
        );
        assert_eq!(
            parse_clf_time(b"28/Nov/2026:19:59:33 +0000"),
            Some(datetime!(2026-11-28 19:59:33 UTC))
        );
        assert_eq!(
            parse_clf_time(b"28/Nov/2026:14:59:33 -0500"),
            Some(datetime!(2026-11-28 19:59:33 UTC))
        );
        let cet = UtcOffset::from_hms(1, 0, 0).unwrap();
        assert_eq!(
            parse_slash_time(b"2026/11/28 20:59:36", cet),
            Some(datetime!(2026-11-28 19:59:36 UTC))
        );
        assert_eq!(
            parse_epoch_seconds(b"1795895973.348"),
            Some(datetime!(2026-11-28 19:59:33.348 UTC))
        );
        assert_eq!(
            parse_time_auto(b"28/Nov/2026:19:59:33 +0000", utc),
            Some(datetime!(2026-11-28 19:59:33 UTC))
        );
        for bad in [
            &b"2026-13-28T19:59:36Z"[..],
            b"2026-02-30T19:59:36Z",
            b"2026-11-28T25:59:36Z",
            b"2026-11-28T19:59:36.Z",
            b"2026-11-28T19:59:36+0",
            b"28/Foo/2026:19:59:33 +0000",
            b"",
        ] {
            assert_eq!(parse_time_auto(bad, utc), None, "{:?}", lossy(bad));
        }
    }

    #[test]
    fn escapes() {
        assert!(matches!(unescape(b"/v2/plain"), Cow::Borrowed("/v2/plain")));
        assert_eq!(unescape(br"a\x22b\x5Cc"), "a\"b\\c");
        assert_eq!(unescape(br#"say \"hi\" \u00e9\n"#), "say \"hi\" é\n");
        assert_eq!(unescape(br"\xFF"), "\u{FFFD}");
        assert_eq!(unescape(br"trailing\"), "trailing\\");
        assert_eq!(unescape(br"bad\xZZ"), "bad\\xZZ");
        assert_eq!(
            go_unquote(br#""bob \"b\"": authentication failure"#).map(|(v, n)| (v.into_owned(), n)),
            Some((r#"bob "b""#.to_owned(), 11))
        );
        assert_eq!(go_unquote(br#""unterminated"#), None);
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            split_request_line(b"GET /v2/ HTTP/1.1"),
            (Some(&b"GET"[..]), Some(&b"/v2/"[..]))
        );
        assert_eq!(
            split_request_line(b"GET /v2/"),
            (Some(&b"GET"[..]), Some(&b"/v2/"[..]))
        );
        assert_eq!(split_request_line(b"-"), (None, None));
        assert_eq!(split_request_line(br"\x16\x03\x01\x00"), (None, None));
        assert_eq!(split_request_line(b""), (None, None));
    }

    #[test]
    fn ip_addresses() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(ip_of("127.0.0.1"), Some(v4));
        assert_eq!(ip_of("127.0.0.1:54158"), Some(v4));
        assert_eq!(ip_of("::1"), Some(v6));
        assert_eq!(ip_of("[::1]:443"), Some(v6));
        assert_eq!(ip_of("vm:15000"), None);
        assert_eq!(ip_of("unix:"), None);
    }

    #[test]
    fn format_names_round_trip() {
        for name in LogFormat::NAMES {
            match LogFormat::from_name(name) {
                Some(f) => assert_eq!(f.name(), name),
                None => assert_eq!(name, "regex"),
            }
        }
        assert!(LogFormat::from_name("apache").is_none());
    }

    #[test]
    fn dispatch_reads_every_fixture() {
        let dir = |name: &str| -> &'static [u8] {
            match name {
                "nginx_combined" => {
                    include_bytes!("../../../tests/fixtures/logs/nginx-access-combined.log")
                }
                "nginx_json" => {
                    include_bytes!("../../../tests/fixtures/logs/nginx-access-json.log")
                }
                "nginx_error" => include_bytes!("../../../tests/fixtures/logs/nginx-error.log"),
                "registry_json" => include_bytes!("../../../tests/fixtures/logs/registry-json.log"),
                "registry_text" => include_bytes!("../../../tests/fixtures/logs/registry-text.log"),
                "access_combined" => {
                    include_bytes!("../../../tests/fixtures/logs/registry-access.log")
                }
                _ => unreachable!(),
            }
        };
        for name in LogFormat::NAMES.iter().filter(|n| **n != "regex") {
            let format = LogFormat::from_name(name).unwrap();
            let mut n = 0;
            for line in test_support::lines(dir(name)) {
                let owned = parse(&format, line)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .into_owned();
                assert!(owned.time.is_some(), "{name}");
                n += 1;
            }
            assert!(n > 100, "{name}: {n} lines");
        }
        let regex = RegexFormat::new(r"^(?P<addr>\S+) ", "auto").unwrap();
        let p = parse(&LogFormat::Regex(Box::new(regex)), b"1.2.3.4 x").unwrap();
        assert_eq!(p.remote_ip(), Some("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn error_values_are_truncated() {
        let long = vec![b'a'; 1000];
        let ParseError::InvalidField { value, .. } = ParseError::invalid("x", "time", &long) else {
            panic!("wrong variant");
        };
        assert!(value.chars().count() <= 81, "{}", value.len());
        assert!(value.ends_with('…'));
    }
}
