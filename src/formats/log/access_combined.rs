//! The registry's stdout access log: Apache combined written by gorilla/handlers,
//! `127.0.0.1 - - [28/Nov/2026:19:59:36 +0000] "HEAD /v2/team/app/manifests/1.0 HTTP/1.1" 200 658 "" "curl/7.88.1"`.
//!
//! The syntax is nginx's combined one, so the parser is shared. What differs is meaning:
//! the user is always `-` (gorilla reads it from the URL, never from basic auth), so 401s
//! here classify as challenges; the referer is `""`; quoted fields use Go escapes, which
//! the shared unescaper decodes. Unlike the registry's stderr, this log has every request,
//! including 401s and router-level 404s.

use super::nginx_combined::parse_combined;
use super::{ParseError, ParsedLine};

pub(super) const FORMAT: &str = "registry access log";

/// Parses one line of the registry's stdout access log.
pub fn parse_access_combined(line: &[u8]) -> Result<ParsedLine<'_>, ParseError> {
    parse_combined(line, FORMAT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::classify::{Operation, Outcome};
    use crate::formats::log::LineKind;
    use crate::formats::log::test_support::{fuzz, lines};
    use std::collections::BTreeMap;
    use time::macros::datetime;

    const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/logs/registry-access.log");

    #[test]
    fn real_first_line() {
        let line = lines(SAMPLE).next().unwrap();
        let p = parse_access_combined(line).unwrap();
        assert_eq!(p.kind, LineKind::Request);
        assert_eq!(p.time, Some(datetime!(2026-11-28 19:59:33 UTC)));
        assert_eq!(p.method.as_deref(), Some("HEAD"));
        assert_eq!(
            p.path.as_deref(),
            Some(
                "/v2/team/base/blobs/sha256:dd78d3e88a60942b6d38a58949ad297c4aef438c28f8cf76aaa484fccb4db1b1"
            )
        );
        assert_eq!((p.status, p.bytes), (Some(404), Some(157)));
        assert_eq!(p.user, None);
        assert_eq!(p.user_agent.as_deref(), Some("skopeo/1.9.3"));
        let c = p.classify().unwrap();
        // A pusher asking whether the layer exists (404: not yet): not a failed pull.
        assert_eq!(
            (c.operation, c.outcome),
            (Operation::Check, Outcome::Failed)
        );
        assert_eq!(c.repository, Some("team/base"));
        assert_eq!(
            c.digest(),
            Some("sha256:dd78d3e88a60942b6d38a58949ad297c4aef438c28f8cf76aaa484fccb4db1b1")
        );
    }

    #[test]
    fn whole_sample_status_counts_match_the_registry_metrics() {
        let mut by_status = BTreeMap::new();
        for line in lines(SAMPLE) {
            let p = parse_access_combined(line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
            assert_eq!(p.user, None, "gorilla never logs a user");
            *by_status.entry(p.status.unwrap()).or_insert(0) += 1;
            if p.status == Some(401) {
                assert_eq!(p.classify().unwrap().outcome, Outcome::Challenge);
            }
        }
        let want = [
            (200, 79),
            (201, 37),
            (202, 50),
            (204, 2),
            (206, 1),
            (400, 4),
            (401, 17),
            (404, 54),
            (500, 1),
        ];
        assert_eq!(by_status.into_iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn go_quoted_agent() {
        let line = br#"10.1.2.3 - - [28/Nov/2026:19:59:36 +0000] "GET /v2/_catalog?n=2 HTTP/1.1" 200 51 "" "evil \"agent\" \u00e9""#;
        let p = parse_access_combined(line).unwrap();
        assert_eq!(p.user_agent.as_deref(), Some("evil \"agent\" é"));
        assert_eq!(p.classify().unwrap().operation, Operation::Catalog);
    }

    #[test]
    fn errors_name_the_format() {
        let e = parse_access_combined(b"garbage").unwrap_err().to_string();
        assert!(e.starts_with("registry access log:"), "{e}");
    }

    #[test]
    fn fuzz_never_panics() {
        fuzz(SAMPLE, 0xacce55, 7, parse_access_combined);
    }
}
