//! Turns TOML and serde failures into `file:line:column: key: message` diagnostics, and finds
//! every mistake in a file, not only the first.
//!
//! serde stops at the first error. To report the rest, the document is parsed once into a
//! spanned tree; after each error the offending entry is removed from the tree and the
//! deserialization is tried again, so later mistakes are still seen and every reported
//! position refers to the original text.

use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an index into an array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path such as `registry[0].url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn key(mut self, k: &str) -> Self {
        self.0.push(Seg::Key(k.to_string()));
        self
    }
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Seg::Index(i));
        self
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) if first => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if first {
            f.write_str("(top level)")?;
        }
        Ok(())
    }
}

/// One mistake in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
    /// The offending source line, for display.
    pub source_line: String,
}

/// Maps byte offsets and key paths to positions in one document.
pub struct Locator<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        let (root, _) = DeTable::parse_recoverable(text);
        Locator { text, root }
    }

    /// Builds a diagnostic for `path`, placed at the key (or, failing that, the nearest
    /// enclosing entry that exists in the file).
    pub fn at_path(&self, path: &KeyPath, message: impl Into<String>) -> Diagnostic {
        let offset = span_of_path(&self.root, path).map(|r| r.start).unwrap_or(0);
        self.at_offset(offset, path.to_string(), message.into())
    }

    fn at_offset(&self, offset: usize, key: String, message: String) -> Diagnostic {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before[line_start..].chars().count() + 1;
        let source_line = self.text[line_start..]
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        Diagnostic {
            line,
            column,
            key,
            message,
            source_line,
        }
    }
}

/// Collects the mistakes the semantic checks find (after serde's), each placed at its key.
pub struct Errors<'a> {
    locator: &'a Locator<'a>,
    found: Vec<Diagnostic>,
    /// Not mistakes: the keys whose secret is inline, for the readable-file warning.
    inline_secrets: Vec<String>,
}

impl<'a> Errors<'a> {
    pub fn new(locator: &'a Locator<'a>) -> Self {
        Errors {
            locator,
            found: Vec::new(),
            inline_secrets: Vec::new(),
        }
    }

    /// Records `message` at `path` (see [`Locator::at_path`]).
    pub fn at(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.found.push(self.locator.at_path(path, message));
    }

    /// Records `message` at `path.key`.
    pub fn at_key(&mut self, path: &KeyPath, key: &str, message: impl Into<String>) {
        self.at(&path.clone().key(key), message);
    }

    /// Like [`Errors::at_key`] for a value that holds a credential: the message must not
    /// repeat it, and the source line is left out of the diagnostic.
    pub fn at_secret_key(&mut self, path: &KeyPath, key: &str, message: impl Into<String>) {
        let mut d = self.locator.at_path(&path.clone().key(key), message);
        d.source_line.clear();
        self.found.push(d);
    }

    /// Notes that `path.key` holds its secret inline.
    pub fn inline_secret(&mut self, path: &KeyPath, key: &str) {
        self.inline_secrets.push(path.clone().key(key).to_string());
    }

    pub fn inline_secrets(&self) -> &[String] {
        &self.inline_secrets
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.found
    }
}

/// Deserializes `text` into `T`, collecting every error. Returns the value when the document
/// (after removing the faulty entries) still deserializes, so semantic checks can run on it.
pub fn deserialize_all<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<Diagnostic>) {
    let locator = Locator::new(text);
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let diags = syntax
            .iter()
            .map(|e| {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                let key = path_at(&root, offset).unwrap_or_default().to_string();
                locator.at_offset(offset, key, format!("invalid TOML: {}", e.message()))
            })
            .collect();
        return (None, diags);
    }
    let mut root = root;
    let mut diags = Vec::new();
    let mut removed: Vec<KeyPath> = Vec::new();
    // Each round removes one entry, so this ends; the bound guards against a tree that does
    // not shrink.
    for _ in 0..200 {
        let de = toml::de::Deserializer::from(root.clone());
        let err = match T::deserialize(de) {
            Ok(v) => return (Some(v), diags),
            Err(e) => e,
        };
        let offset = err.span().map(|s| s.start);
        let path = offset.and_then(|o| path_at(&root, o)).unwrap_or_default();
        let message = humanize(err.message());
        let reported_already = missing_field(err.message())
            .is_some_and(|f| removed.iter().any(|r| *r == path.clone().key(f)));
        if !reported_already {
            diags.push(locator.at_offset(offset.unwrap_or(0), path.to_string(), message));
        }
        if path.0.is_empty() || !remove_path(root.get_mut(), &path.0) {
            return (None, diags);
        }
        removed.push(path);
    }
    (None, diags)
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

/// Rewrites serde's wording into what a config author needs, with a suggestion for typos.
fn humanize(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let mut out = format!("unknown key `{field}`");
        if let Some(best) = suggest(field, &expected) {
            out.push_str(&format!("; did you mean `{best}`?"));
        }
        if expected.is_empty() {
            out.push_str(" (this table takes no keys)");
        } else {
            out.push_str(&format!(" (expected one of: {})", expected.join(", ")));
        }
        return out;
    }
    if let Some(field) = missing_field(message) {
        return format!("missing required key `{field}`");
    }
    message.to_string()
}

/// The closest candidate, if it is close enough to be a typo.
pub fn suggest<'c>(given: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(given, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// The deepest key path whose key or value covers `offset`.
fn path_at(root: &Spanned<DeTable<'_>>, offset: usize) -> Option<KeyPath> {
    fn in_table(t: &DeTable<'_>, offset: usize, path: KeyPath) -> Option<KeyPath> {
        for (k, v) in t.iter() {
            let here = path.clone().key(k.get_ref());
            if contains(&k.span(), offset) {
                return Some(here);
            }
            if let Some(p) = in_value(v, offset, here.clone()) {
                return Some(p);
            }
        }
        None
    }
    fn in_value(v: &Spanned<DeValue<'_>>, offset: usize, path: KeyPath) -> Option<KeyPath> {
        match v.get_ref() {
            DeValue::Table(t) => in_table(t, offset, path.clone())
                .or_else(|| contains(&v.span(), offset).then_some(path)),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    if let Some(p) = in_value(item, offset, path.clone().index(i)) {
                        return Some(p);
                    }
                }
                contains(&v.span(), offset).then_some(path)
            }
            _ => contains(&v.span(), offset).then_some(path),
        }
    }
    in_table(root.get_ref(), offset, KeyPath::default())
}

fn span_of_path(root: &Spanned<DeTable<'_>>, path: &KeyPath) -> Option<Range<usize>> {
    let mut best = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in &path.0 {
        match seg {
            Seg::Key(k) => {
                // A missing key (e.g. a required one) is reported at its table.
                let Some((key, v)) = table.and_then(|t| t.get_key_value(k.as_str())) else {
                    return best;
                };
                best = Some(key.span());
                value = Some(v);
            }
            Seg::Index(i) => {
                let Some(DeValue::Array(a)) = value.map(|v| v.get_ref()) else {
                    return best;
                };
                let Some(item) = a.get(*i) else { return best };
                // An array-of-tables element has no key of its own: point at its first key.
                if let DeValue::Table(t) = item.get_ref() {
                    if let Some(first) = t.iter().map(|(k, _)| k.span()).min_by_key(|s| s.start) {
                        best = Some(first);
                    }
                }
                value = Some(item);
            }
        }
        table = match value.map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => Some(t),
            _ => None,
        };
    }
    best
}

fn remove_path(table: &mut DeTable<'_>, path: &[Seg]) -> bool {
    let Some((Seg::Key(k), rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return table.remove(k.as_str()).is_some();
    }
    let Some(v) = table.get_mut(k.as_str()) else {
        return false;
    };
    remove_in_value(v.get_mut(), rest)
}

fn remove_in_value(v: &mut DeValue<'_>, path: &[Seg]) -> bool {
    match (v, path.split_first()) {
        (DeValue::Table(t), Some((Seg::Key(_), _))) => remove_path(t, path),
        (DeValue::Array(a), Some((Seg::Index(i), rest))) => {
            if rest.is_empty() {
                let i = *i;
                if i >= a.len() {
                    return false;
                }
                let kept: toml::de::DeArray<'_> = std::mem::replace(a, toml::de::DeArray::new())
                    .into_iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, item)| item)
                    .collect();
                *a = kept;
                return true;
            }
            match a.get_mut(*i) {
                Some(item) => remove_in_value(item.get_mut(), rest),
                None => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(suggest("lisen", &["listen", "api_token"]), Some("listen"));
        assert_eq!(
            suggest("pasword_file", &["password", "password_file"]),
            Some("password_file")
        );
        assert_eq!(suggest("zzz", &["listen", "api_token"]), None);
    }

    #[test]
    fn humanizes_unknown_field() {
        let m = humanize("unknown field `lisen`, expected one of `listen`, `api_token`");
        assert_eq!(
            m,
            "unknown key `lisen`; did you mean `listen`? (expected one of: listen, api_token)"
        );
    }
}
