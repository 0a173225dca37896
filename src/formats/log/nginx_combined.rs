//! nginx `combined` access log, and the shared parser for every Apache-combined-style log
//! (the registry's stdout access log uses it too, see [`super::access_combined`]):
//!
//! `addr ident user [time] "request" status bytes "referer" "agent"[ request_time]`
//!
//! Hand-written on `memchr` because this is the hottest path: no regex, no allocation
//! unless a field contains escapes.

use memchr::memchr;

use super::{
    LineKind, LineText, ParseError, ParsedLine, RequestFacts, clf_unix_seconds, closing_quote,
    non_blank, parse_clf_time, parse_decimal_seconds, parse_status, parse_u64, present,
    split_request_line,
};

pub(super) const FORMAT: &str = "nginx combined";

/// Parses one nginx `combined` line, optionally followed by `$request_time`.
pub fn parse_nginx_combined(line: &[u8]) -> Result<ParsedLine<'_>, ParseError> {
    parse_combined(line, FORMAT)
}

/// Parses any Apache combined (or common) log line; `format` names the source in errors.
pub(super) fn parse_combined<'a>(
    line: &'a [u8],
    format: &'static str,
) -> Result<ParsedLine<'a>, ParseError> {
    let line = non_blank(line)?;
    let f = scan(line, format, parse_clf_time)?;
    let text = LineText::new(line);
    let (method, path) = split_request_line(f.request);
    Ok(ParsedLine {
        kind: LineKind::Request,
        time: Some(f.time),
        remote_addr: Some(text.lossy(f.addr)),
        user: present(f.user).map(|u| text.unescape(u)),
        method: method.map(|m| text.lossy(m)),
        path: path.map(|p| text.unescape(p)),
        status: Some(f.status),
        bytes: f.bytes,
        duration: trailing_request_time(f.rest),
        user_agent: f.agent.and_then(present).map(|a| text.unescape(a)),
        ..ParsedLine::default()
    })
}

/// [`RequestFacts`] of a combined line without making its [`ParsedLine`]: the same cuts
/// and the same errors, but no whole-line UTF-8 check, no time value, no trailing request
/// time. `Ok(None)` when a field the facts borrow needs decoding (an escape, bytes that
/// are not UTF-8): the caller then parses the line in full.
pub(super) fn request_facts_combined<'a>(
    line: &'a [u8],
    format: &'static str,
) -> Result<Option<RequestFacts<'a>>, ParseError> {
    let line = non_blank(line)?;
    // A line without escapes that is ASCII (nearly every line) is its fields' text: one
    // check of the whole line instead of one per field.
    if memchr(b'\\', line).is_some() {
        return Ok(None);
    }
    let Some(text) = LineText::ascii(line) else {
        return Ok(None);
    };
    let f = scan(line, format, clf_unix_seconds)?;
    let text = |part| text.text_of(part);
    let (method, path) = split_request_line(f.request);
    Ok(Some(RequestFacts {
        unix_time: Some(f.time),
        method: method.and_then(text),
        path: path.and_then(text),
        status: Some(f.status),
        user_present: present(f.user).is_some(),
        user_agent: f.agent.and_then(present).and_then(text),
    }))
}

/// A combined line cut into its fields, the time parsed by the caller's function.
struct Fields<'a, T> {
    addr: &'a [u8],
    user: &'a [u8],
    time: T,
    request: &'a [u8],
    status: u16,
    bytes: Option<u64>,
    agent: Option<&'a [u8]>,
    /// After the agent (or the byte count): where sites append `$request_time`.
    rest: &'a [u8],
}

/// Cuts a (non-blank) combined line into its fields, in order, so that the first field
/// that does not fit is the error.
fn scan<'a, T>(
    line: &'a [u8],
    format: &'static str,
    parse_time: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<Fields<'a, T>, ParseError> {
    let err = |what, at| ParseError::malformed(format, what, at);

    // The fields up to the request are short: loops find their ends sooner than memchr
    // (which pays off on the long ones) is set up.
    let addr_end = line
        .iter()
        .position(|b| *b == b' ')
        .ok_or_else(|| err("no space after the address", 0))?;
    let ident_start = addr_end + 1;
    let ident_end = ident_start
        + line[ident_start..]
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| err("no ident field", ident_start))?;
    // The user may contain spaces (it is whatever the client sent), so it ends at ` [`.
    let user_start = ident_end + 1;
    let user_end = user_start
        + space_bracket(&line[user_start..])
            .ok_or_else(|| err("no '[' before the time", user_start))?;

    let time_start = user_end + 2;
    // memchr, not a loop: the time is 26 bytes, past where memchr's setup pays off.
    let time_end = time_start
        + memchr(b']', &line[time_start..]).ok_or_else(|| err("unterminated time", time_start))?;
    let time_raw = &line[time_start..time_end];
    let time = parse_time(time_raw).ok_or_else(|| ParseError::invalid(format, "time", time_raw))?;

    let mut pos = time_end + 1;
    if !line[pos..].starts_with(b" \"") {
        return Err(err("no quoted request after the time", pos));
    }
    let req_start = pos + 2;
    let req_end =
        closing_quote(line, req_start).ok_or_else(|| err("unterminated request", req_start))?;
    pos = req_end + 1;

    let (status_raw, next) = token(line, pos).ok_or_else(|| err("no status", pos))?;
    let status = parse_status(status_raw)
        .ok_or_else(|| ParseError::invalid(format, "status", status_raw))?;
    pos = next;
    let (bytes_raw, next) = token(line, pos).ok_or_else(|| err("no byte count", pos))?;
    let bytes = match present(bytes_raw) {
        Some(raw) => Some(parse_u64(raw).ok_or_else(|| ParseError::invalid(format, "bytes", raw))?),
        None => None,
    };
    pos = next;

    // Referer and agent are absent in the common log format, so both are optional.
    let mut agent = None;
    if let Some((_referer, next)) = quoted(line, pos, format)? {
        pos = next;
        if let Some((ua, next)) = quoted(line, pos, format)? {
            agent = Some(ua);
            pos = next;
        }
    }
    Ok(Fields {
        addr: &line[..addr_end],
        user: &line[user_start..user_end],
        time,
        request: &line[req_start..req_end],
        status,
        bytes,
        agent,
        rest: &line[pos..],
    })
}

/// Where ` [` first occurs (`memmem::find` would build its searcher anew for every line,
/// which cost more than the search).
fn space_bracket(hay: &[u8]) -> Option<usize> {
    hay.windows(2).position(|w| w == b" [")
}

/// The space-separated token starting after the spaces at `pos`, and where it ends.
fn token(line: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let start = pos + line.get(pos..)?.iter().take_while(|b| **b == b' ').count();
    // Status and byte count are short: a loop, not memchr.
    let len = line[start..]
        .iter()
        .position(|b| *b == b' ')
        .unwrap_or(line.len() - start);
    (len > 0).then(|| (&line[start..start + len], start + len))
}

/// The content of a ` "…"` field at `pos`, or `None` when the line has no further quoted
/// field. An opening quote without a closing one is an error.
fn quoted<'a>(
    line: &'a [u8],
    pos: usize,
    format: &'static str,
) -> Result<Option<(&'a [u8], usize)>, ParseError> {
    let start = pos + line[pos..].iter().take_while(|b| **b == b' ').count();
    if line.get(start) != Some(&b'"') {
        return Ok(None);
    }
    let end = closing_quote(line, start + 1)
        .ok_or_else(|| ParseError::malformed(format, "unterminated quoted field", start))?;
    Ok(Some((&line[start + 1..end], end + 1)))
}

/// nginx has no standard field after the agent; sites append `$request_time` (a decimal
/// with millisecond resolution), sometimes as `rt=…`. The first such token wins; anything
/// else (e.g. an appended `"$http_x_forwarded_for"`) is ignored.
fn trailing_request_time(rest: &[u8]) -> Option<std::time::Duration> {
    rest.split(|b| *b == b' ').find_map(|tok| {
        let tok = tok
            .strip_prefix(b"request_time=")
            .or_else(|| tok.strip_prefix(b"rt="))
            .unwrap_or(tok);
        let tok = tok
            .strip_prefix(b"\"")
            .and_then(|t| t.strip_suffix(b"\""))
            .unwrap_or(tok);
        if memchr(b'.', tok).is_some() {
            parse_decimal_seconds(tok)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::classify::{Operation, Outcome};
    use crate::formats::log::test_support::{fuzz, lines};
    use memchr::memmem;
    use std::time::Duration;
    use time::macros::datetime;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/logs/nginx-access-combined.log");

    fn first(needle: &str) -> &'static [u8] {
        lines(SAMPLE)
            .find(|l| memmem::find(l, needle.as_bytes()).is_some())
            .unwrap_or_else(|| panic!("no sample line with {needle:?}"))
    }

    #[test]
    fn real_push_denied_for_bob() {
        let line = first("PUT /v2/bobs/tool/manifests/0.2 ");
        let p = parse_nginx_combined(line).unwrap();
        assert_eq!(p.kind, LineKind::Request);
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:35 UTC)));
        assert_eq!(p.remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.user.as_deref(), Some("bob"));
        assert_eq!(p.method.as_deref(), Some("PUT"));
        assert_eq!(p.path.as_deref(), Some("/v2/bobs/tool/manifests/0.2"));
        assert_eq!(p.status, Some(403));
        assert_eq!(p.bytes, Some(153));
        assert_eq!(p.user_agent.as_deref(), Some("skopeo/1.9.3"));
        assert_eq!(p.duration, None);
        let c = p.classify().unwrap();
        assert_eq!((c.operation, c.outcome), (Operation::Push, Outcome::Failed));
        assert_eq!(c.repository, Some("bobs/tool"));
    }

    #[test]
    fn real_lines_borrow() {
        let p = parse_nginx_combined(first("GET /v2/team/app/manifests/1.1 ")).unwrap();
        assert!(matches!(p.path, Some(std::borrow::Cow::Borrowed(_))));
        assert!(matches!(p.user_agent, Some(std::borrow::Cow::Borrowed(_))));
    }

    #[test]
    fn real_tls_client_hello_is_a_bogus_request() {
        let line = first(r#""\x16\x03\x01"#);
        let p = parse_nginx_combined(line).unwrap();
        assert_eq!(p.kind, LineKind::Request);
        assert_eq!(p.status, Some(400));
        assert_eq!(p.bytes, Some(157));
        assert!(p.classify().is_none());
        assert_eq!(
            (p.method, p.path, p.user, p.user_agent),
            (None, None, None, None)
        );
    }

    #[test]
    fn whole_sample() {
        let mut n = 0;
        let (mut challenges, mut auth_failures, mut bogus) = (0, 0, 0);
        for line in lines(SAMPLE) {
            let p = parse_nginx_combined(line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
            n += 1;
            match p.classify() {
                Some(c) if c.outcome == Outcome::Challenge => challenges += 1,
                Some(c) if c.outcome == Outcome::AuthFailure => auth_failures += 1,
                Some(_) => {}
                None => bogus += 1,
            }
        }
        // README: 39 nginx 401s, 22 without credentials; 19 TLS probes.
        assert_eq!((n, challenges, auth_failures, bogus), (245, 22, 17, 19));
    }

    #[test]
    fn optional_request_time() {
        let base = first("PUT /v2/bobs/tool/manifests/0.2 ");
        for (suffix, want) in [
            (&b" 0.004"[..], Some(Duration::from_millis(4))),
            (b" rt=1.250", Some(Duration::from_millis(1250))),
            (b" \"0.010\" \"0.008\"", Some(Duration::from_millis(10))),
            (b" \"10.0.0.1\"", None),
            (b" -", None),
        ] {
            let line = [base, suffix].concat();
            let p = parse_nginx_combined(&line).unwrap();
            assert_eq!(p.duration, want, "{}", String::from_utf8_lossy(&line));
            assert_eq!(p.user_agent.as_deref(), Some("skopeo/1.9.3"));
        }
    }

    #[test]
    fn escapes_user_with_space_and_common_format() {
        let line = br#"10.0.0.7 - john doe [28/Nov/2026:19:59:35 +0100] "GET /v2/a/b/c/tags/list?x=\x22y\x22 HTTP/1.1" 200 - "-" "agent \x5C1""#;
        let p = parse_nginx_combined(line).unwrap();
        assert_eq!(p.user.as_deref(), Some("john doe"));
        assert_eq!(p.time, Some(datetime!(2026-11-28 18:59:35 UTC)));
        assert_eq!(p.path.as_deref(), Some("/v2/a/b/c/tags/list?x=\"y\""));
        assert_eq!(p.bytes, None);
        assert_eq!(p.user_agent.as_deref(), Some("agent \\1"));

        let common = b"::1 - - [28/Nov/2026:19:59:35 +0000] \"HEAD /v2/ HTTP/1.0\" 200 0\n";
        let p = parse_nginx_combined(common).unwrap();
        assert_eq!(p.method.as_deref(), Some("HEAD"));
        assert_eq!(p.remote_ip(), Some("::1".parse().unwrap()));
        assert_eq!(p.user_agent, None);
    }

    #[test]
    fn malformed_lines_are_errors_with_context() {
        assert!(matches!(
            parse_nginx_combined(b"  \r\n"),
            Err(ParseError::Empty)
        ));
        let cases: [(&[u8], &str); 6] = [
            (b"127.0.0.1", "no space after the address"),
            (b"127.0.0.1 - - 28/Nov/2026", "no '['"),
            (
                b"127.0.0.1 - - [28/Nov/2026:19:59:35 +0000",
                "unterminated time",
            ),
            (
                b"1 - - [28/Nov/2026:19:59:35 +0000] \"GET / HTTP/1.1",
                "unterminated request",
            ),
            (
                b"1 - - [28/Nov/2026:19:59:35 +0000] \"GET /\" abc 0",
                "invalid status",
            ),
            (
                b"1 - - [2026-11-28 19:59:35] \"GET /\" 200 0",
                "invalid time",
            ),
        ];
        for (line, want) in cases {
            let e = parse_nginx_combined(line).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert!(e.starts_with("nginx combined:"), "{e}");
        }
    }

    #[test]
    fn fuzz_never_panics() {
        fuzz(SAMPLE, 0x5eedc0b1, 5, parse_nginx_combined);
    }

    /// The facts of a line are the full parse's facts, its error the full parse's error,
    /// and only a line with an escape or non-ASCII bytes is left to the full parse.
    fn facts_agree(line: &[u8]) {
        let show = || String::from_utf8_lossy(line).into_owned();
        let full = parse_nginx_combined(line);
        match (request_facts_combined(line, FORMAT), &full) {
            (Ok(Some(facts)), Ok(p)) => assert_eq!(facts, RequestFacts::of(p), "{}", show()),
            (Ok(None), Ok(_)) => assert!(
                line.contains(&b'\\') || !line.is_ascii(),
                "left to the full parse: {}",
                show()
            ),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{}", show()),
            (Ok(None), Err(_)) => {}
            (facts, full) => panic!("{facts:?} but the full parse says {full:?}: {}", show()),
        }
    }

    #[test]
    fn request_facts_are_the_full_parse_s_on_real_mutated_and_random_lines() {
        for line in lines(SAMPLE) {
            facts_agree(line);
            // The real sample's every line takes the quick way but its TLS probes.
            let quick = matches!(request_facts_combined(line, FORMAT), Ok(Some(_)));
            assert_eq!(
                quick,
                !line.contains(&b'\\'),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        fuzz(SAMPLE, 0xfac75, 3, |line| {
            facts_agree(line);
            parse_nginx_combined(line)
        });
    }
}
