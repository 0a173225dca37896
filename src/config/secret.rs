//! Secrets (passwords, tokens): given inline, as `*_file`, or as `*_env`, never printed.

use super::diagnose::{Errors, KeyPath};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` print `[redacted]`, so a secret that slips into a
/// log line or an error message still does not leak.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The only way to read the value: callers that need it say so by name.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so a token check does not leak the token's prefix by timing.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        if ours.len() != candidate.len() {
            return false;
        }
        ours.iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        String::deserialize(de).map(Secret)
    }
}

/// Where a secret came from, for `regwatch check` (which names the source, never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline,
    File(PathBuf),
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline => f.write_str("set inline"),
            SecretSource::File(p) => write!(f, "from file {}", p.display()),
            SecretSource::Env(v) => write!(f, "from ${v}"),
        }
    }
}

/// The three ways a config can give one secret (`password`, `password_file`, `password_env`).
pub struct SecretFields<'a> {
    pub inline: Option<&'a Secret>,
    pub file: Option<&'a Path>,
    pub env: Option<&'a str>,
}

/// Reads a secret from the one source given. Errors name the key suffix that is wrong
/// (`""`, `"_file"` or `"_env"`) so the caller can point at the right line.
pub fn resolve(
    fields: SecretFields<'_>,
    base_dir: &Path,
) -> Result<Option<(Secret, SecretSource)>, (&'static str, String)> {
    let given = [
        fields.inline.is_some(),
        fields.file.is_some(),
        fields.env.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        let suffix = if fields.file.is_some() {
            "_file"
        } else {
            "_env"
        };
        return Err((
            suffix,
            "give this secret one way only: inline, as *_file, or as *_env".into(),
        ));
    }
    if let Some(s) = fields.inline {
        return Ok(Some((s.clone(), SecretSource::Inline)));
    }
    if let Some(file) = fields.file {
        let path = base_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ("_file", format!("cannot read {}: {e}", path.display())))?;
        // Files written by `echo` end in a newline that is not part of the secret.
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(("_file", format!("{} is empty", path.display())));
        }
        return Ok(Some((Secret::new(value), SecretSource::File(path))));
    }
    if let Some(var) = fields.env {
        let value = std::env::var(var).map_err(|_| {
            (
                "_env",
                format!("environment variable {var} is not set (or not UTF-8)"),
            )
        })?;
        if value.is_empty() {
            return Err(("_env", format!("environment variable {var} is empty")));
        }
        return Ok(Some((
            Secret::new(value),
            SecretSource::Env(var.to_string()),
        )));
    }
    Ok(None)
}

/// A secret read from the config, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub value: Secret,
    pub source: SecretSource,
}

/// One secret after [`read`]: absent, read, or a mistake that was reported.
pub(crate) enum Read {
    Absent,
    Found(Resolved),
    /// The mistake is reported; `inline` says whether the inline key was given.
    Failed {
        inline: bool,
    },
}

impl Read {
    /// Whether a secret counts as given for the checks that depend on one ("a password is
    /// set but no username", "only webhook channels sign their requests"): an inline value
    /// counts even when another key of the same secret is wrong, as it always has.
    pub(crate) fn is_set(&self) -> bool {
        match self {
            Read::Absent => false,
            Read::Found(_) => true,
            Read::Failed { inline } => *inline,
        }
    }

    /// The typed value; `None` when a mistake was reported.
    pub(crate) fn checked(self) -> Option<Option<Resolved>> {
        match self {
            Read::Absent => Some(None),
            Read::Found(r) => Some(Some(r)),
            Read::Failed { .. } => None,
        }
    }
}

/// Reads the secret `key` (given as `key`, `key_file` or `key_env`) of the entry at `at`;
/// a mistake is reported at the key it concerns.
pub(crate) fn read(
    errs: &mut Errors<'_>,
    at: &KeyPath,
    key: &str,
    fields: SecretFields<'_>,
    base_dir: &Path,
) -> Read {
    let inline = fields.inline.is_some();
    match resolve(fields, base_dir) {
        Ok(None) => Read::Absent,
        Ok(Some((value, source))) => {
            if source == SecretSource::Inline {
                errs.inline_secret(at, key);
            }
            Read::Found(Resolved { value, source })
        }
        Err((suffix, msg)) => {
            errs.at_key(at, &format!("{key}{suffix}"), msg);
            Read::Failed { inline }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
    }

    #[test]
    fn constant_time_match() {
        let s = Secret::new("token");
        assert!(s.matches(b"token"));
        assert!(!s.matches(b"tokem"));
        assert!(!s.matches(b"toke"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn file_secret_drops_trailing_newline_and_names_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let got = resolve(
            SecretFields {
                inline: None,
                file: Some(Path::new("pw")),
                env: None,
            },
            dir.path(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.0.expose(), "s3cret");
        let err = resolve(
            SecretFields {
                inline: None,
                file: Some(Path::new("nope")),
                env: None,
            },
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(err.0, "_file");
        assert!(err.1.contains("nope"), "{}", err.1);
    }

    #[test]
    fn two_sources_are_refused() {
        let s = Secret::new("x");
        let err = resolve(
            SecretFields {
                inline: Some(&s),
                file: None,
                env: Some("HOME"),
            },
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(err.0, "_env");
    }
}
