//! The one glob syntax regwatch understands, wherever a user writes a pattern: silence and
//! maintenance matchers, `audit_match` filters, `[[log]]` file names, and the audit
//! `--repository` filter.
//!
//! `*` matches any run of characters (also none), `?` exactly one character; every other
//! character matches itself (there are no classes and no escapes). Matching is
//! case-sensitive, like repository and user names.
//!
//! The matcher never backtracks more than to the last `*` it passed: its time is bounded by
//! pattern length × text length, whatever the pattern (`*a*a*a*a*b` against a long name an
//! attacker chose included), so no pattern can stall the thread that evaluates it.

/// Whether `text` matches `pattern` (see the module docs).
pub fn matches(pattern: &str, text: &str) -> bool {
    matches_counting(pattern, text).0
}

/// [`matches`], and how many steps it took (for the bound's test).
fn matches_counting(pattern: &str, text: &str) -> (bool, usize) {
    let mut steps = 0;
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // The position after the last `*` seen, and the text position it is trying to cover.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        steps += 1;
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if let Some((after, covered)) = star {
            // Let the last `*` take one more character and retry from there.
            pi = after;
            ti = covered + 1;
            star = Some((after, covered + 1));
        } else {
            return (false, steps);
        }
    }
    (p[pi..].iter().all(|c| *c == '*'), steps)
}

/// Whether `pattern` has any wildcard (a plain name otherwise).
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// The same pattern for SQLite's `GLOB` operator, whose syntax adds `[...]` classes: a
/// literal `[` is written `[[]` there, so both match exactly the same names.
pub fn to_sqlite_glob(pattern: &str) -> String {
    pattern.replace('[', "[[]")
}

/// The same pattern for SQL's `LIKE` (PostgreSQL, whose default escape is `\\`): `*` and
/// `?` become `%` and `_`, and a literal `%`, `_` or `\\` is escaped.
pub fn to_like(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_its_own_wildcards() {
        assert_eq!(to_like("prod/*"), "prod/%");
        assert_eq!(to_like("a_b?%"), "a\\_b_\\%");
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(matches("prod/*", "prod/app"));
        assert!(!matches("prod/*", "staging/app"));
        assert!(matches("10.0.*.5", "10.0.3.5"));
        assert!(matches("*", ""));
        assert!(matches("*.access.log", "registry.access.log"));
        assert!(matches("*.access.log", ".access.log"));
        assert!(!matches("*.access.log", "registry.access.log.1"));
        assert!(matches("access-????-??-??.log", "access-2026-11-28.log"));
        assert!(!matches("access-????-??-??.log", "access-2026-11-8.log"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("team/app", "team/app"));
        assert!(!matches("team/app", "team/ap"));
        assert!(matches("ü*", "über"), "characters, not bytes");
        assert!(matches("[x]", "[x]"), "brackets are literal");
    }

    #[test]
    fn a_pathological_pattern_costs_at_most_pattern_times_text_steps() {
        // A backtracking matcher takes exponential time on this (the silence "glob bomb").
        let pattern = "*a*a*a*a*a*a*a*a*a*a*a*b";
        let name = "a".repeat(60);
        let (matched, steps) = matches_counting(pattern, &name);
        assert!(!matched);
        assert!(
            steps <= (pattern.len() + 1) * (name.len() + 1),
            "{steps} steps"
        );
    }

    #[test]
    fn sqlite_glob_keeps_brackets_literal() {
        assert_eq!(to_sqlite_glob("prod/*"), "prod/*");
        assert_eq!(to_sqlite_glob("a[1]"), "a[[]1]");
        assert!(is_pattern("a?") && !is_pattern("team/app"));
    }
}
