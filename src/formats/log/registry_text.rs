//! The registry's stderr with `log.formatter: text`: logrus logfmt,
//! `time="…" level=info msg="…" key=value …`.
//!
//! logrus quotes a value (Go `%q`) only when it has a character outside
//! `[A-Za-z0-9-._/@^+]`, so `http.request.remoteaddr=127.0.0.1` is bare but
//! `http.request.remoteaddr="127.0.0.1:54158"` is quoted, and an empty value is `key=`.
//! Keys and meaning are those of the JSON formatter, so the line is built by the shared
//! [`super::registry_json`] code; only `err.detail` differs (a Go `map[…]` string), and
//! regwatch does not use it.

use memchr::memchr;

use super::json::Scalar;
use super::registry_json::{SLOTS, build, slot_of};
use super::{ParseError, ParsedLine, go_unquote, lossy, non_blank};

const FORMAT: &str = "registry text";

/// Parses one logfmt line of the registry's text log.
pub fn parse_registry_text(line: &[u8]) -> Result<ParsedLine<'_>, ParseError> {
    let line = non_blank(line)?;
    let mut slots: [Option<Scalar<'_>>; SLOTS] = std::array::from_fn(|_| None);
    let mut pos = 0;
    let mut pairs = 0;
    loop {
        pos += line[pos..].iter().take_while(|b| **b == b' ').count();
        if pos >= line.len() {
            break;
        }
        let rest = &line[pos..];
        let key_len = rest
            .iter()
            .position(|b| *b == b'=' || *b == b' ')
            .filter(|&i| rest[i] == b'=' && i > 0)
            .ok_or_else(|| ParseError::malformed(FORMAT, "expected key=value", pos))?;
        let key = &rest[..key_len];
        let value_start = pos + key_len + 1;
        let (value, next) = if line.get(value_start) == Some(&b'"') {
            let (v, used) = go_unquote(&line[value_start..]).ok_or_else(|| {
                ParseError::malformed(FORMAT, "unterminated quoted value", value_start)
            })?;
            (v, value_start + used)
        } else {
            let len = memchr(b' ', &line[value_start..]).unwrap_or(line.len() - value_start);
            (
                lossy(&line[value_start..value_start + len]),
                value_start + len,
            )
        };
        if let Some(slot) = slot_of(key) {
            slots[slot] = Some(Scalar::Str(value));
        }
        pairs += 1;
        pos = next;
    }
    if pairs == 0 {
        return Err(ParseError::malformed(FORMAT, "no key=value pairs", 0));
    }
    build(slots, FORMAT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::log::LineKind;
    use crate::formats::log::parse_registry_json;
    use crate::formats::log::test_support::{fuzz, lines};
    use memchr::memmem;
    use std::borrow::Cow;
    use std::time::Duration;
    use time::macros::datetime;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/logs/registry-text.log");
    const JSON: &[u8] = include_bytes!("../../../tests/fixtures/logs/registry-json.log");

    fn first(needle: &str) -> &'static [u8] {
        lines(SAMPLE)
            .find(|l| memmem::find(l, needle.as_bytes()).is_some())
            .unwrap_or_else(|| panic!("no sample line with {needle:?}"))
    }

    #[test]
    fn real_error_line() {
        let p = parse_registry_text(first("map[name:team/nothere]")).unwrap();
        assert_eq!(p.kind, LineKind::Request);
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:14.580145313 UTC)));
        assert_eq!(p.user.as_deref(), Some("bob"));
        assert_eq!(p.err_code.as_deref(), Some("name unknown"));
        assert_eq!(p.method.as_deref(), Some("GET"));
        assert_eq!(p.path.as_deref(), Some("/v2/team/nothere/tags/list"));
        assert_eq!((p.status, p.bytes), (Some(404), Some(120)));
        assert_eq!(p.duration, Some(Duration::from_nanos(4_039_622)));
        assert_eq!(p.remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.user_agent.as_deref(), Some("curl/7.88.1"));
        assert!(matches!(p.path, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn real_failed_login_with_quoted_address() {
        let p = parse_registry_text(first("error authenticating user")).unwrap();
        assert_eq!(p.kind, LineKind::FailedLogin { user: "bob".into() });
        assert_eq!(p.remote_addr.as_deref(), Some("127.0.0.1:54158"));
        assert_eq!(p.path.as_deref(), Some("/v2/"));
        assert_eq!(
            p.message.as_deref(),
            Some("error authenticating user \"bob\": authentication failure")
        );
    }

    /// The text run is a separate capture of the same scenario, so kinds and statuses match
    /// the JSON run line for line even though ids and digests differ.
    #[test]
    fn whole_sample_matches_the_json_run() {
        let text: Vec<_> = lines(SAMPLE)
            .map(|l| parse_registry_text(l).unwrap())
            .collect();
        let json: Vec<_> = lines(JSON)
            .map(|l| parse_registry_json(l).unwrap())
            .collect();
        assert_eq!(text.len(), 503);
        let summary = |p: &ParsedLine<'static>| {
            (
                p.kind.clone(),
                p.status,
                p.method.clone(),
                p.err_code.clone(),
            )
        };
        let mut t: Vec<_> = text.iter().map(summary).collect();
        let mut j: Vec<_> = json.iter().map(summary).collect();
        t.sort_by_key(|s| format!("{s:?}"));
        j.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(t, j);
        assert!(text.iter().all(|p| p.time.is_some()));
    }

    #[test]
    fn logfmt_quoting_rules() {
        let line = br#"time="2026-11-28T19:59:04Z" level=info msg="a \"q\" \\ b" empty= http.response.duration="350\u00b5s" http.response.status=200 http.request.uri=/v2/"#;
        let p = parse_registry_text(line).unwrap();
        assert_eq!(p.message.as_deref(), Some(r#"a "q" \ b"#));
        assert_eq!(p.duration, Some(Duration::from_micros(350)));
        assert_eq!(p.path.as_deref(), Some("/v2/"));
        assert_eq!(p.kind, LineKind::Request);
    }

    #[test]
    fn malformed_lines() {
        assert!(matches!(parse_registry_text(b""), Err(ParseError::Empty)));
        for (line, want) in [
            (&b"goroutine 1 [running]:"[..], "expected key=value"),
            (
                b"time=\"2026-11-28T19:59:04Z msg=x",
                "unterminated quoted value",
            ),
            (b"=x", "expected key=value"),
            (b"time=yesterday", "invalid time"),
            (b"http.response.status=OK", "invalid http.response.status"),
        ] {
            let e = parse_registry_text(line).unwrap_err().to_string();
            assert!(
                e.starts_with("registry text:") && e.contains(want),
                "{e:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn fuzz_never_panics() {
        fuzz(SAMPLE, 0x7e97, 17, parse_registry_text);
    }
}
