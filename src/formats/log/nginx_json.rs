//! nginx access log written with `log_format … escape=json`, one object per line.
//!
//! Field names are whatever the site's `log_format` chose, so they are configurable
//! ([`NginxJsonFields`]); the defaults match the `realenv_json` format the samples were
//! captured with. With `escape=json` unset variables are `""`, not `"-"`; both mean "none".

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use time::UtcOffset;

use super::json::{Scalar, read_object, with_utf8_fallback};
use super::{
    LineKind, ParseError, ParsedLine, lossy, non_blank, parse_decimal_seconds, parse_epoch_seconds,
    parse_time_auto, parse_u64, present_cow, split_request_line,
};

const FORMAT: &str = "nginx json";

/// The JSON key of each field; `""` means the format does not log it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NginxJsonFields {
    /// `$time_iso8601` or `$time_local`.
    pub time: String,
    /// `$msec`; preferred over `time` because it has millisecond resolution.
    pub msec: String,
    pub remote_addr: String,
    pub remote_user: String,
    pub request_method: String,
    /// `$request_uri` (path and query).
    pub request_uri: String,
    /// `$request` (`GET /v2/ HTTP/1.1`), used where method or URI are not logged.
    pub request: String,
    pub status: String,
    pub body_bytes_sent: String,
    /// `$request_time`, seconds.
    pub request_time: String,
    pub user_agent: String,
    pub request_id: String,
}

impl Default for NginxJsonFields {
    fn default() -> Self {
        NginxJsonFields {
            time: "time".into(),
            msec: "msec".into(),
            remote_addr: "remote_addr".into(),
            remote_user: "remote_user".into(),
            request_method: "request_method".into(),
            request_uri: "request_uri".into(),
            request: String::new(),
            status: "status".into(),
            body_bytes_sent: "body_bytes_sent".into(),
            request_time: "request_time".into(),
            user_agent: "http_user_agent".into(),
            request_id: "request_id".into(),
        }
    }
}

const TIME: usize = 0;
const MSEC: usize = 1;
const ADDR: usize = 2;
const USER: usize = 3;
const METHOD: usize = 4;
const URI: usize = 5;
const REQUEST: usize = 6;
const STATUS: usize = 7;
const BYTES: usize = 8;
const REQUEST_TIME: usize = 9;
const AGENT: usize = 10;
const REQUEST_ID: usize = 11;
const SLOTS: usize = 12;

impl NginxJsonFields {
    fn slot_of(&self, key: &str) -> Option<usize> {
        let names = [
            &self.time,
            &self.msec,
            &self.remote_addr,
            &self.remote_user,
            &self.request_method,
            &self.request_uri,
            &self.request,
            &self.status,
            &self.body_bytes_sent,
            &self.request_time,
            &self.user_agent,
            &self.request_id,
        ];
        names
            .iter()
            .position(|n| !n.is_empty() && n.as_str() == key)
    }
}

/// Parses one line with the default (`realenv_json`) field names.
pub fn parse_nginx_json(line: &[u8]) -> Result<ParsedLine<'_>, ParseError> {
    thread_local! {
        static DEFAULT: NginxJsonFields = NginxJsonFields::default();
    }
    DEFAULT.with(|fields| parse_nginx_json_with(line, fields))
}

/// Parses one line with the given field names.
pub fn parse_nginx_json_with<'a>(
    line: &'a [u8],
    fields: &NginxJsonFields,
) -> Result<ParsedLine<'a>, ParseError> {
    let line = non_blank(line)?;
    with_utf8_fallback(line, |l| parse_utf8(l, fields))
}

fn parse_utf8<'a>(line: &'a [u8], fields: &NginxJsonFields) -> Result<ParsedLine<'a>, ParseError> {
    let mut slots = read_object::<SLOTS>(line, FORMAT, |k| fields.slot_of(k))?;
    let mut take = |i: usize| slots[i].take();

    let time = match (take(MSEC), take(TIME)) {
        (Some(msec), _) if !is_blank(&msec) => Some(epoch(msec, "msec")?),
        (_, Some(Scalar::Str(t))) if !t.is_empty() => Some(
            parse_time_auto(t.as_bytes(), UtcOffset::UTC)
                .ok_or_else(|| ParseError::invalid(FORMAT, "time", t.as_bytes()))?,
        ),
        _ => None,
    };
    let mut method = text(take(METHOD));
    let mut path = text(take(URI));
    if let Some(request) = text(take(REQUEST)).filter(|_| method.is_none() || path.is_none()) {
        let (m, p) = match request {
            Cow::Borrowed(r) => {
                let (m, p) = split_request_line(r.as_bytes());
                (m.map(lossy), p.map(lossy))
            }
            // The decoded copy dies here, so its pieces must be copied too.
            Cow::Owned(r) => {
                let own = |b: &[u8]| Cow::Owned(String::from_utf8_lossy(b).into_owned());
                let (m, p) = split_request_line(r.as_bytes());
                (m.map(own), p.map(own))
            }
        };
        method = method.or(m);
        path = path.or(p);
    }
    if method.is_none() {
        // A TLS ClientHello logs an empty method and URI; keep the pair consistent.
        path = None;
    }
    let status = match take(STATUS) {
        Some(v) if !is_blank(&v) => {
            let n = number(v, "status")?;
            Some(
                u16::try_from(n)
                    .map_err(|_| ParseError::invalid(FORMAT, "status", n.to_string().as_bytes()))?,
            )
        }
        _ => None,
    };
    let bytes = match take(BYTES) {
        Some(v) if !is_blank(&v) => Some(number(v, "body_bytes_sent")?),
        _ => None,
    };
    let duration = match take(REQUEST_TIME) {
        Some(v) if !is_blank(&v) => Some(seconds(v)?),
        _ => None,
    };

    Ok(ParsedLine {
        kind: if status.is_some() {
            LineKind::Request
        } else {
            LineKind::Other
        },
        time,
        remote_addr: text(take(ADDR)),
        user: text(take(USER)),
        method,
        path,
        status,
        bytes,
        duration,
        user_agent: text(take(AGENT)),
        request_id: text(take(REQUEST_ID)),
        ..ParsedLine::default()
    })
}

fn is_blank(v: &Scalar<'_>) -> bool {
    matches!(v, Scalar::Other) || matches!(v, Scalar::Str(s) if s.is_empty() || s == "-")
}

fn text(v: Option<Scalar<'_>>) -> Option<Cow<'_, str>> {
    v.and_then(Scalar::into_str).and_then(present_cow)
}

fn bad(field: &'static str, v: &Scalar<'_>) -> ParseError {
    let shown = match v {
        Scalar::Str(s) => s.to_string(),
        Scalar::U64(n) => n.to_string(),
        Scalar::I64(n) => n.to_string(),
        Scalar::F64(f) => f.to_string(),
        Scalar::Other => "(not a string or number)".to_owned(),
    };
    ParseError::invalid(FORMAT, field, shown.as_bytes())
}

fn number(v: Scalar<'_>, field: &'static str) -> Result<u64, ParseError> {
    match &v {
        Scalar::U64(n) => Some(*n),
        Scalar::Str(s) => parse_u64(s.as_bytes()),
        _ => None,
    }
    .ok_or_else(|| bad(field, &v))
}

fn seconds(v: Scalar<'_>) -> Result<Duration, ParseError> {
    match &v {
        Scalar::U64(n) => Some(Duration::from_secs(*n)),
        Scalar::F64(f) => Duration::try_from_secs_f64(*f).ok(),
        Scalar::Str(s) => parse_decimal_seconds(s.as_bytes()),
        _ => None,
    }
    .ok_or_else(|| bad("request_time", &v))
}

fn epoch(v: Scalar<'_>, field: &'static str) -> Result<time::OffsetDateTime, ParseError> {
    match &v {
        Scalar::U64(n) => {
            time::OffsetDateTime::from_unix_timestamp(i64::try_from(*n).unwrap_or(i64::MAX)).ok()
        }
        // f64 has ~16 significant digits: microseconds of a current epoch are exact, below
        // that it is noise, so round there.
        Scalar::F64(f) if f.is_finite() && *f >= 0.0 => {
            let micros = (f * 1e6).round();
            if micros < 1e17 {
                time::OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000).ok()
            } else {
                None
            }
        }
        Scalar::Str(s) => parse_epoch_seconds(s.as_bytes()),
        _ => None,
    }
    .ok_or_else(|| bad(field, &v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::log::parse_nginx_combined;
    use crate::formats::log::test_support::{fuzz, lines};
    use time::macros::datetime;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/logs/nginx-access-json.log");
    const COMBINED: &[u8] =
        include_bytes!("../../../tests/fixtures/logs/nginx-access-combined.log");

    #[test]
    fn real_head_blob_404() {
        let line = lines(SAMPLE).nth(2).unwrap();
        let p = parse_nginx_json(line).unwrap();
        assert_eq!(p.kind, LineKind::Request);
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:33.359 UTC)));
        assert_eq!(p.remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.user.as_deref(), Some("alice"));
        assert_eq!(p.method.as_deref(), Some("HEAD"));
        assert_eq!(
            p.path.as_deref(),
            Some(
                "/v2/team/base/blobs/sha256:dd78d3e88a60942b6d38a58949ad297c4aef438c28f8cf76aaa484fccb4db1b1"
            )
        );
        assert_eq!((p.status, p.bytes), (Some(404), Some(0)));
        assert_eq!(p.duration, Some(Duration::from_millis(8)));
        assert_eq!(p.user_agent.as_deref(), Some("skopeo/1.9.3"));
        assert_eq!(
            p.request_id.as_deref(),
            Some("c3777b4e89180e3e234216c7d5d737d7")
        );
        assert!(matches!(p.path, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn real_tls_probe() {
        let p = parse_nginx_json(lines(SAMPLE).next().unwrap()).unwrap();
        assert_eq!(
            (
                p.status,
                p.method.as_deref(),
                p.path.as_deref(),
                p.user.as_deref()
            ),
            (Some(400), None, None, None)
        );
        assert!(p.classify().is_none());
    }

    /// Both nginx access logs were written for the same requests, in the same order.
    #[test]
    fn whole_sample_agrees_with_the_combined_log() {
        let json: Vec<_> = lines(SAMPLE)
            .map(|l| parse_nginx_json(l).unwrap())
            .collect();
        let combined: Vec<_> = lines(COMBINED)
            .map(|l| parse_nginx_combined(l).unwrap())
            .collect();
        assert_eq!(json.len(), 245);
        assert_eq!(json.len(), combined.len());
        for (j, c) in json.iter().zip(&combined) {
            assert_eq!(j.method, c.method);
            assert_eq!(j.path, c.path);
            assert_eq!(j.user, c.user);
            assert_eq!((j.status, j.bytes), (c.status, c.bytes));
            assert_eq!(j.user_agent, c.user_agent);
            assert_eq!(j.remote_addr, c.remote_addr);
            let (jt, ct) = (j.time.unwrap(), c.time.unwrap());
            assert_eq!(jt.replace_millisecond(0).unwrap(), ct, "{jt} vs {ct}");
            assert!(j.request_id.is_some());
        }
    }

    #[test]
    fn custom_field_names_and_string_values() {
        let fields = NginxJsonFields {
            time: "ts".into(),
            msec: String::new(),
            request: "req".into(),
            request_method: String::new(),
            request_uri: String::new(),
            status: "code".into(),
            user_agent: "ua".into(),
            ..NginxJsonFields::default()
        };
        let line = br#"{"ts":"28/Nov/2026:19:59:33 +0000","req":"GET /v2/_catalog?n=2 HTTP/1.1","code":"200","body_bytes_sent":"51","request_time":"0.120","ua":"curl/7.88.1","remote_user":"-","msec":1.5,"status":"ignored"}"#;
        let p = parse_nginx_json_with(line, &fields).unwrap();
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:33 UTC)));
        assert_eq!(p.method.as_deref(), Some("GET"));
        assert_eq!(p.path.as_deref(), Some("/v2/_catalog?n=2"));
        assert_eq!((p.status, p.bytes), (Some(200), Some(51)));
        assert_eq!(p.duration, Some(Duration::from_millis(120)));
        assert_eq!(p.user, None);
        assert_eq!(p.user_agent.as_deref(), Some("curl/7.88.1"));
    }

    #[test]
    fn config_deserializes_with_defaults() {
        let f: NginxJsonFields =
            serde_json::from_str(r#"{"user_agent":"agent","request":""}"#).unwrap();
        assert_eq!(f.user_agent, "agent");
        assert_eq!(f.status, "status");
        assert!(serde_json::from_str::<NginxJsonFields>(r#"{"stauts":"x"}"#).is_err());
    }

    #[test]
    fn escapes_and_raw_non_utf8() {
        let line = b"{\"request_method\":\"GET\",\"request_uri\":\"/v2/a?q=\\\"\\u0001\",\"status\":404,\"http_user_agent\":\"caf\xe9\"}";
        let p = parse_nginx_json(line).unwrap();
        assert_eq!(p.path.as_deref(), Some("/v2/a?q=\"\u{1}"));
        assert_eq!(p.user_agent.as_deref(), Some("caf\u{FFFD}"));
        assert_eq!(p.time, None);
    }

    #[test]
    fn malformed_lines() {
        assert!(matches!(parse_nginx_json(b"\n"), Err(ParseError::Empty)));
        for (line, want) in [
            (&b"not json"[..], "invalid JSON"),
            (b"[1,2]", "invalid JSON"),
            (br#"{"status":200"#, "invalid JSON"),
            (br#"{"status":200} trailing"#, "invalid JSON"),
            (br#"{"status":"abc"}"#, "invalid status"),
            (br#"{"status":70000}"#, "invalid status"),
            (br#"{"time":"yesterday"}"#, "invalid time"),
            (br#"{"msec":-3.5}"#, "invalid msec"),
            (br#"{"request_time":"fast"}"#, "invalid request_time"),
        ] {
            let e = parse_nginx_json(line).unwrap_err().to_string();
            assert!(
                e.starts_with("nginx json:") && e.contains(want),
                "{e:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn fuzz_never_panics() {
        fuzz(SAMPLE, 0x150fab, 11, parse_nginx_json);
    }
}
