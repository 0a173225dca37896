//! nginx error log (`error_log … info`):
//! `2026/11/28 19:59:36 [error] 15638#15638: *169 user "bob": password mismatch, client: 127.0.0.1, server: localhost, request: "GET /v2/ HTTP/1.1", host: "127.0.0.1:15080"`.
//!
//! The time is local time without a zone, so the offset is configurable (UTC by default).
//! nginx copies the request line into this log unescaped: a TLS ClientHello sent to the
//! plain-HTTP port puts raw binary, including `"`, inside `request: "…"`, so fields are
//! delimited by the known `", <key>: ` sequences rather than by quotes.

use memchr::{memchr, memmem};
use time::UtcOffset;

use super::{
    LineKind, ParseError, ParsedLine, lossy, non_blank, parse_slash_time, present,
    split_request_line,
};

const FORMAT: &str = "nginx error";

/// Settings of the nginx error-log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NginxErrorOptions {
    /// Offset of the server's local time, which the log writes without a zone.
    pub utc_offset: UtcOffset,
}

impl Default for NginxErrorOptions {
    fn default() -> Self {
        NginxErrorOptions {
            utc_offset: UtcOffset::UTC,
        }
    }
}

/// Parses one line, reading times as UTC.
pub fn parse_nginx_error(line: &[u8]) -> Result<ParsedLine<'_>, ParseError> {
    parse_nginx_error_with(line, &NginxErrorOptions::default())
}

/// Parses one line with the given options.
pub fn parse_nginx_error_with<'a>(
    line: &'a [u8],
    opts: &NginxErrorOptions,
) -> Result<ParsedLine<'a>, ParseError> {
    let line = non_blank(line)?;
    let time_raw = line
        .get(..19)
        .ok_or_else(|| ParseError::malformed(FORMAT, "line too short for a time", 0))?;
    let time = parse_slash_time(time_raw, opts.utc_offset)
        .ok_or_else(|| ParseError::invalid(FORMAT, "time", time_raw))?;
    if !line[19..].starts_with(b" [") {
        return Err(ParseError::malformed(
            FORMAT,
            "no [level] after the time",
            19,
        ));
    }
    let level_end = 21
        + memchr(b']', &line[21..])
            .ok_or_else(|| ParseError::malformed(FORMAT, "unterminated [level]", 21))?;
    // `pid#tid: ` then an optional `*connection ` before the message.
    let after_level = level_end + 1;
    let colon = after_level
        + memmem::find(&line[after_level..], b": ")
            .ok_or_else(|| ParseError::malformed(FORMAT, "no 'pid#tid: ' prefix", after_level))?;
    let mut msg_start = colon + 2;
    if line.get(msg_start) == Some(&b'*') {
        let digits = line[msg_start + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 && line.get(msg_start + 1 + digits) == Some(&b' ') {
            msg_start += digits + 2;
        }
    }
    let body = &line[msg_start..];

    let (message, context) = match memmem::find(body, b", client: ") {
        Some(i) => (&body[..i], Some(&body[i + 2..])),
        None => (body, None),
    };
    let mut parsed = ParsedLine {
        kind: kind_of(message),
        time: Some(time),
        message: Some(lossy(message)),
        ..ParsedLine::default()
    };
    if let LineKind::FailedLogin { user } = &parsed.kind {
        parsed.user = Some(user.clone());
    }
    if let Some(context) = context {
        let client = &context[b"client: ".len()..];
        let end = memchr(b',', client).unwrap_or(client.len());
        parsed.remote_addr = present(&client[..end]).map(lossy);
        if let Some(request) = request_field(context) {
            let (method, path) = split_request_line(request);
            parsed.method = method.map(lossy);
            parsed.path = path.map(lossy);
        }
    }
    Ok(parsed)
}

fn kind_of(message: &[u8]) -> LineKind<'_> {
    const MISMATCH: &[u8] = b"\": password mismatch";
    const NOT_FOUND: &[u8] = b"\" was not found in \"";
    if let Some(rest) = message.strip_prefix(b"user \"") {
        // The name is copied raw and may contain quotes, so cut at the fixed suffix.
        let end = memmem::find(rest, MISMATCH).or_else(|| memmem::find(rest, NOT_FOUND));
        if let Some(end) = end {
            return LineKind::FailedLogin {
                user: lossy(&rest[..end]),
            };
        }
    }
    if message == b"no user/password was provided for basic authentication" {
        return LineKind::NoCredentials;
    }
    LineKind::Other
}

/// The raw bytes of `request: "…"`. It ends where the next known field starts or, as the
/// last field, at the line's final quote.
fn request_field(context: &[u8]) -> Option<&[u8]> {
    const START: &[u8] = b", request: \"";
    const NEXT: [&[u8]; 4] = [
        b"\", subrequest: \"",
        b"\", upstream: \"",
        b"\", host: \"",
        b"\", referrer: \"",
    ];
    let start = memmem::find(context, START)? + START.len();
    let value = &context[start..];
    let end = NEXT
        .iter()
        .filter_map(|next| memmem::find(value, next))
        .min()
        .or_else(|| memchr::memrchr(b'"', value))?;
    Some(&value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::log::test_support::{fuzz, lines};
    use time::macros::datetime;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/logs/nginx-error.log");

    fn first(needle: &str) -> &'static [u8] {
        lines(SAMPLE)
            .find(|l| memmem::find(l, needle.as_bytes()).is_some())
            .unwrap_or_else(|| panic!("no sample line with {needle:?}"))
    }

    #[test]
    fn real_password_mismatch() {
        let p =
            parse_nginx_error(first("GET /v2/team/app/manifests/1.0 HTTP/1.1\", host")).unwrap();
        assert_eq!(p.kind, LineKind::FailedLogin { user: "bob".into() });
        assert_eq!(p.user.as_deref(), Some("bob"));
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:36 UTC)));
        assert_eq!(p.remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.method.as_deref(), Some("GET"));
        assert_eq!(p.path.as_deref(), Some("/v2/team/app/manifests/1.0"));
        assert_eq!(
            p.message.as_deref(),
            Some("user \"bob\": password mismatch")
        );
        assert_eq!(p.status, None);
    }

    #[test]
    fn real_unknown_user_and_no_credentials() {
        let p = parse_nginx_error(first("was not found in")).unwrap();
        assert_eq!(p.kind, LineKind::FailedLogin { user: "eve".into() });
        assert_eq!(p.path.as_deref(), Some("/v2/"));
        let p = parse_nginx_error(first("no user/password")).unwrap();
        assert_eq!((p.kind, p.user), (LineKind::NoCredentials, None));
        assert_eq!(p.remote_addr.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn real_binary_client_hello() {
        let line = first("client sent invalid method");
        assert!(
            std::str::from_utf8(line).is_err(),
            "the sample must keep its raw bytes"
        );
        let p = parse_nginx_error(line).unwrap();
        assert_eq!(p.kind, LineKind::Other);
        assert_eq!(p.remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!((p.method, p.path), (None, None));
    }

    #[test]
    fn local_time_offset() {
        let opts = NginxErrorOptions {
            utc_offset: UtcOffset::from_hms(2, 0, 0).unwrap(),
        };
        let p = parse_nginx_error_with(first("was not found in"), &opts).unwrap();
        assert_eq!(p.time, Some(datetime!(2026-11-28 17:59:36 UTC)));
    }

    #[test]
    fn whole_sample() {
        let (mut failed, mut no_creds, mut other) = (0, 0, 0);
        for line in lines(SAMPLE) {
            let p = parse_nginx_error(line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
            match p.kind {
                LineKind::FailedLogin { .. } => failed += 1,
                LineKind::NoCredentials => no_creds += 1,
                _ => other += 1,
            }
        }
        assert_eq!((failed, no_creds, other), (14 + 3, 22, 147 - 17 - 22));
    }

    #[test]
    fn request_with_quotes_and_later_fields() {
        let line = br#"2026/11/28 19:59:36 [error] 1#1: *9 user "a"b": password mismatch, client: 10.0.0.1, server: x, request: "GET /v2/"odd" HTTP/1.1", upstream: "http://u", host: "h", referrer: "r""#;
        let p = parse_nginx_error(line).unwrap();
        assert_eq!(p.user.as_deref(), Some("a\"b"));
        assert_eq!(p.path.as_deref(), Some("/v2/\"odd\""));
        assert_eq!(p.remote_ip(), Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn malformed_lines() {
        for (line, want) in [
            (&b"nginx: [emerg] x"[..], "too short"),
            (
                b"nginx: [emerg] bind() to 0.0.0.0:80 failed",
                "invalid time",
            ),
            (b"2026-11-28 19:59:36 [error] 1#1: x", "invalid time"),
            (b"2026/11/28 19:59:36 error 1#1: x", "no [level]"),
            (b"2026/11/28 19:59:36 [error", "unterminated [level]"),
            (b"2026/11/28 19:59:36 [error] nothing", "pid#tid"),
        ] {
            let e = parse_nginx_error(line).unwrap_err().to_string();
            assert!(
                e.starts_with("nginx error:") && e.contains(want),
                "{e:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn fuzz_never_panics() {
        fuzz(SAMPLE, 0xe4404, 3, parse_nginx_error);
    }
}
