//! `WWW-Authenticate` challenges of the distribution API (RFC 7235 syntax): which scheme the
//! registry wants and, for Bearer, where to get a token.

/// One challenge from a 401 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`: send the configured user and password.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: fetch a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses one `WWW-Authenticate` value. Registries send a single challenge; of several, the
/// first Bearer or Basic one wins. `None` for schemes regwatch cannot answer.
pub fn parse(header: &str) -> Option<Challenge> {
    let mut rest = header.trim();
    while !rest.is_empty() {
        let (scheme, after) = split_token(rest);
        let (params, next) = parse_params(after);
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            return Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            });
        }
        rest = next.trim_start_matches([',', ' ']);
    }
    None
}

fn split_token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s
        .find(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Reads `name=value` pairs (value a token or a quoted string) until the next scheme.
/// Returns the pairs and what follows them.
fn parse_params(mut s: &str) -> (Vec<(String, String)>, &str) {
    let mut out = Vec::new();
    loop {
        let trimmed = s.trim_start_matches([' ', '\t', ',']);
        let (name, after) = split_token(trimmed);
        let after_ws = after.trim_start();
        if name.is_empty() || !after_ws.starts_with('=') {
            // A bare token starts the next challenge.
            return (out, trimmed);
        }
        let v = after_ws[1..].trim_start();
        let (value, rest) = if let Some(q) = v.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            value.push(e);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end.min(q.len())..])
        } else {
            let end = v.find([',', ' ']).unwrap_or(v.len());
            (v[..end].to_string(), &v[end..])
        };
        out.push((name.to_string(), value));
        s = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_basic_challenge() {
        // Verbatim from distribution 2.8 (tests/fixtures/api/README.md).
        assert_eq!(parse("Basic realm=\"basic-realm\""), Some(Challenge::Basic));
        assert_eq!(
            parse("basic realm=\"Registry realm\""),
            Some(Challenge::Basic)
        );
    }

    #[test]
    fn bearer_with_scope_containing_commas_and_colons() {
        let c = parse(
            "Bearer realm=\"http://127.0.0.1:5001/token\",service=\"regwatch-test\",scope=\"repository:team/app:pull,push\",error=\"insufficient_scope\"",
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5001/token".into(),
                service: Some("regwatch-test".into()),
                scope: Some("repository:team/app:pull,push".into()),
            })
        );
    }

    #[test]
    fn bearer_without_service_unquoted_and_escaped() {
        assert_eq!(
            parse("Bearer realm=https://auth.example/token, scope=\"a\\\"b\""),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: None,
                scope: Some("a\"b".into()),
            })
        );
        assert_eq!(parse("Bearer service=\"x\""), None, "no realm");
    }

    #[test]
    fn unknown_schemes_are_skipped() {
        assert_eq!(
            parse("Negotiate abc, Basic realm=\"r\""),
            Some(Challenge::Basic)
        );
        assert_eq!(parse("Digest realm=\"r\", nonce=\"n\""), None);
        assert_eq!(parse(""), None);
    }
}
