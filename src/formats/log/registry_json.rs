//! The registry's stderr with `log.formatter: json` (also `logstash`, which only renames
//! `time`/`msg` to `@timestamp`/`message`). The field handling is shared with the `text`
//! formatter ([`super::registry_text`]), which logs the same keys as logfmt.
//!
//! Kinds: `response completed` / `response completed with error` lines carry the status and
//! become [`LineKind::Request`]; `error authenticating user "bob": …` is a failed login
//! (wrong password and unknown user look the same); the challenge warning ending in
//! `invalid authorization credential` is a request without credentials. Everything else,
//! including `authorized request` (same request id, no status yet), is `Other` with the
//! request fields filled in where present.

use std::borrow::Cow;
use std::time::Duration;

use time::UtcOffset;

use super::json::{Scalar, read_object, with_utf8_fallback};
use super::{
    LineKind, ParseError, ParsedLine, go_unquote, non_blank, parse_go_duration, parse_rfc3339,
    parse_u64, present_cow,
};

const FORMAT: &str = "registry json";

pub(super) const SLOTS: usize = 12;
const TIME: usize = 0;
const MSG: usize = 1;
const ADDR: usize = 2;
const METHOD: usize = 3;
const URI: usize = 4;
const AGENT: usize = 5;
const REQUEST_ID: usize = 6;
const STATUS: usize = 7;
const DURATION: usize = 8;
const WRITTEN: usize = 9;
const USER: usize = 10;
const ERR_CODE: usize = 11;

/// The slot of each registry log key regwatch uses.
pub(super) fn slot_of(key: &[u8]) -> Option<usize> {
    Some(match key {
        b"time" | b"@timestamp" => TIME,
        b"msg" | b"message" => MSG,
        b"http.request.remoteaddr" => ADDR,
        b"http.request.method" => METHOD,
        b"http.request.uri" => URI,
        b"http.request.useragent" => AGENT,
        b"http.request.id" => REQUEST_ID,
        b"http.response.status" => STATUS,
        b"http.response.duration" => DURATION,
        b"http.response.written" => WRITTEN,
        b"auth.user.name" => USER,
        b"err.code" => ERR_CODE,
        _ => return None,
    })
}

/// Parses one line of the registry's JSON (or logstash) log.
pub fn parse_registry_json(line: &[u8]) -> Result<ParsedLine<'_>, ParseError> {
    let line = non_blank(line)?;
    with_utf8_fallback(line, |l| {
        let slots = read_object::<SLOTS>(l, FORMAT, |k| slot_of(k.as_bytes()))?;
        build(slots, FORMAT)
    })
}

const FAILED_LOGIN: &str = "error authenticating user ";
const CHALLENGE: &str = "error authorizing context: ";
const NO_CREDENTIALS: &str = "invalid authorization credential";

/// Turns the collected values into a line; shared by the JSON and text formatters.
pub(super) fn build<'a>(
    mut slots: [Option<Scalar<'a>>; SLOTS],
    format: &'static str,
) -> Result<ParsedLine<'a>, ParseError> {
    let mut take = |i: usize| slots[i].take();
    let time = match take(TIME) {
        Some(Scalar::Str(t)) => Some(
            parse_rfc3339(t.as_bytes(), UtcOffset::UTC)
                .ok_or_else(|| ParseError::invalid(format, "time", t.as_bytes()))?,
        ),
        Some(other) => return Err(invalid(format, "time", &other)),
        None => None,
    };
    let status = match take(STATUS) {
        Some(v) => {
            let n = integer(format, "http.response.status", v)?;
            Some(u16::try_from(n).map_err(|_| {
                ParseError::invalid(format, "http.response.status", n.to_string().as_bytes())
            })?)
        }
        None => None,
    };
    let bytes = take(WRITTEN)
        .map(|v| integer(format, "http.response.written", v))
        .transpose()?;
    let duration =
        match take(DURATION) {
            Some(Scalar::Str(d)) => Some(parse_go_duration(d.as_bytes()).ok_or_else(|| {
                ParseError::invalid(format, "http.response.duration", d.as_bytes())
            })?),
            // A `time.Duration` logged as a value (not `.String()`) is integer nanoseconds.
            Some(Scalar::U64(ns)) => Some(Duration::from_nanos(ns)),
            Some(other) => return Err(invalid(format, "http.response.duration", &other)),
            None => None,
        };
    let message = take(MSG).and_then(Scalar::into_str);
    let mut user = text(take(USER));

    let kind = match message.as_deref() {
        Some(m) if m.starts_with(FAILED_LOGIN) => {
            match go_unquote(&m.as_bytes()[FAILED_LOGIN.len()..]) {
                Some((name, _)) => {
                    let name: Cow<'a, str> = Cow::Owned(name.into_owned());
                    user = Some(name.clone());
                    LineKind::FailedLogin { user: name }
                }
                None => LineKind::Other,
            }
        }
        Some(m) if m.starts_with(CHALLENGE) && m.ends_with(NO_CREDENTIALS) => {
            LineKind::NoCredentials
        }
        _ if status.is_some() => LineKind::Request,
        _ => LineKind::Other,
    };

    Ok(ParsedLine {
        kind,
        time,
        remote_addr: text(take(ADDR)),
        user,
        method: text(take(METHOD)),
        path: text(take(URI)),
        status,
        bytes,
        duration,
        user_agent: text(take(AGENT)),
        request_id: text(take(REQUEST_ID)),
        err_code: text(take(ERR_CODE)),
        message,
    })
}

fn text(v: Option<Scalar<'_>>) -> Option<Cow<'_, str>> {
    v.and_then(Scalar::into_str).and_then(present_cow)
}

fn invalid(format: &'static str, field: &'static str, v: &Scalar<'_>) -> ParseError {
    let shown = match v {
        Scalar::Str(s) => s.to_string(),
        Scalar::U64(n) => n.to_string(),
        Scalar::I64(n) => n.to_string(),
        Scalar::F64(f) => f.to_string(),
        Scalar::Other => "(not a string or number)".to_owned(),
    };
    ParseError::invalid(format, field, shown.as_bytes())
}

/// Numbers are JSON integers in the JSON formatter and bare words in logfmt.
fn integer(format: &'static str, field: &'static str, v: Scalar<'_>) -> Result<u64, ParseError> {
    match &v {
        Scalar::U64(n) => Some(*n),
        Scalar::Str(s) => parse_u64(s.as_bytes()),
        _ => None,
    }
    .ok_or_else(|| invalid(format, field, &v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::classify::{Operation, Outcome};
    use crate::formats::log::test_support::{fuzz, lines};
    use memchr::memmem;
    use std::collections::BTreeMap;
    use time::macros::datetime;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/logs/registry-json.log");
    const LOGSTASH: &[u8] = include_bytes!("../../../tests/fixtures/logs/registry-logstash.log");

    fn first(sample: &'static [u8], needle: &str) -> &'static [u8] {
        lines(sample)
            .find(|l| memmem::find(l, needle.as_bytes()).is_some())
            .unwrap_or_else(|| panic!("no sample line with {needle:?}"))
    }

    #[test]
    fn real_response_completed() {
        let p = parse_registry_json(first(SAMPLE, "\"http.response.duration\":\"8.342913ms\""))
            .unwrap();
        assert_eq!(p.kind, LineKind::Request);
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:33.384381929 UTC)));
        assert_eq!(p.method.as_deref(), Some("POST"));
        assert_eq!(p.path.as_deref(), Some("/v2/team/base/blobs/uploads/"));
        assert_eq!((p.status, p.bytes), (Some(202), Some(0)));
        assert_eq!(p.duration, Some(Duration::from_nanos(8_342_913)));
        assert_eq!(
            p.request_id.as_deref(),
            Some("d44b3dad-54e4-44cb-a00e-0b2fed442d4c")
        );
        assert_eq!(p.user, None, "successful requests carry no user");
        assert_eq!(p.message.as_deref(), Some("response completed"));
        assert!(matches!(p.path, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn real_error_with_object_detail() {
        let p = parse_registry_json(first(SAMPLE, "\"err.detail\":{")).unwrap();
        assert_eq!(p.kind, LineKind::Request);
        assert_eq!(p.user.as_deref(), Some("bob"));
        assert_eq!(p.err_code.as_deref(), Some("name unknown"));
        assert_eq!(p.status, Some(404));
        let c = p.classify().unwrap();
        assert_eq!(
            (c.operation, c.outcome, c.repository),
            (Operation::Tags, Outcome::Failed, Some("team/nothere"))
        );
    }

    #[test]
    fn real_failed_login_and_challenge() {
        let p = parse_registry_json(first(SAMPLE, "error authenticating user")).unwrap();
        assert_eq!(p.kind, LineKind::FailedLogin { user: "bob".into() });
        assert_eq!(p.user.as_deref(), Some("bob"));
        assert_eq!(p.remote_addr.as_deref(), Some("127.0.0.1:45278"));
        assert_eq!(p.remote_ip(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            p.request_id.as_deref(),
            Some("25d2d15a-50ef-4cdc-96e7-e2b35dc12eb0")
        );
        assert_eq!(p.path.as_deref(), Some("/v2/"));

        let p = parse_registry_json(first(SAMPLE, "invalid authorization credential")).unwrap();
        assert_eq!(p.kind, LineKind::NoCredentials);
        let p = parse_registry_json(first(
            SAMPLE,
            "challenge for realm \\\"basic-realm\\\": authentication failure",
        ))
        .unwrap();
        assert_eq!(
            p.kind,
            LineKind::Other,
            "the warning after a failed login is not a second one"
        );
    }

    #[test]
    fn real_query_escapes_are_decoded() {
        let p = parse_registry_json(first(SAMPLE, "\\u0026digest=")).unwrap();
        let path = p.path.unwrap();
        assert!(path.contains("&digest=sha256%3A"), "{path}");
    }

    #[test]
    fn whole_sample() {
        let mut kinds = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        for line in lines(SAMPLE) {
            let p = parse_registry_json(line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
            assert!(p.time.is_some());
            let kind = match &p.kind {
                LineKind::FailedLogin { user } => format!("failed login {user}"),
                k => format!("{k:?}"),
            };
            *kinds.entry(kind).or_insert(0) += 1;
            if let Some(s) = p.status {
                *statuses.entry(s).or_insert(0) += 1;
                assert!(p.duration.is_some() && p.bytes.is_some() && p.request_id.is_some());
            }
        }
        let kinds: Vec<_> = kinds.into_iter().collect();
        let want = [
            ("NoCredentials".to_owned(), 7),
            ("Other".to_owned(), 503 - 226 - 10 - 7),
            ("Request".to_owned(), 226),
            ("failed login bob".to_owned(), 7),
            ("failed login eve".to_owned(), 3),
        ];
        assert_eq!(kinds, want);
        let statuses: Vec<_> = statuses.into_iter().collect();
        assert_eq!(
            statuses,
            [
                (200, 79),
                (201, 37),
                (202, 50),
                (204, 2),
                (206, 1),
                (400, 4),
                (404, 52),
                (500, 1)
            ]
        );
    }

    #[test]
    fn logstash_formatter() {
        let mut requests = 0;
        for line in lines(LOGSTASH) {
            let p = parse_registry_json(line).unwrap();
            assert!(p.time.is_some() && p.message.is_some());
            requests += usize::from(p.kind == LineKind::Request);
        }
        assert_eq!(requests, 4);
    }

    #[test]
    fn duration_forms_and_quoted_user() {
        let line = br#"{"http.response.duration":"350\u00b5s","http.response.status":"200","msg":"x","time":"2026-11-28T19:59:36Z"}"#;
        let p = parse_registry_json(line).unwrap();
        assert_eq!(p.duration, Some(Duration::from_micros(350)));
        let line = br#"{"http.response.duration":1200000000,"http.response.status":200}"#;
        assert_eq!(
            parse_registry_json(line).unwrap().duration,
            Some(Duration::from_millis(1200))
        );
        let line =
            br#"{"msg":"error authenticating user \"a \\\"q\\\" b\": authentication failure"}"#;
        let p = parse_registry_json(line).unwrap();
        assert_eq!(
            p.kind,
            LineKind::FailedLogin {
                user: r#"a "q" b"#.into()
            }
        );
    }

    #[test]
    fn malformed_lines() {
        for (line, want) in [
            (&br#"panic: runtime error"#[..], "invalid JSON"),
            (br#"{"time":"2026-11-28"}"#, "invalid time"),
            (br#"{"time":17}"#, "invalid time"),
            (
                br#"{"http.response.status":-1}"#,
                "invalid http.response.status",
            ),
            (
                br#"{"http.response.duration":"8.3 ms"}"#,
                "invalid http.response.duration",
            ),
            (
                br#"{"http.response.written":1.5}"#,
                "invalid http.response.written",
            ),
        ] {
            let e = parse_registry_json(line).unwrap_err().to_string();
            assert!(
                e.starts_with("registry json:") && e.contains(want),
                "{e:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn fuzz_never_panics() {
        fuzz(SAMPLE, 0x4e6150, 17, parse_registry_json);
    }
}
