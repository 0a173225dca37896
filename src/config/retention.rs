//! `[[retention]]`: which tags a cleanup plan may propose deleting. The raw table as
//! written and its checks; the typed policy is [`crate::model::retention::Policy`], so the
//! plan (pure, in `model`) and the daemon's metrics read the same thing.

use super::diagnose::{Errors, KeyPath};
use super::duration;
use super::names::unique_name;
use crate::model::retention::Policy;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// `[[retention]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    name: String,
    /// Optional when only one registry is configured.
    registry: Option<String>,
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default, deserialize_with = "duration::given")]
    keep_pulled_within: Option<Duration>,
    #[serde(default, deserialize_with = "duration::given")]
    keep_pushed_within: Option<Duration>,
    #[serde(default)]
    keep_last: usize,
    #[serde(default)]
    protect_tags: Vec<String>,
}

impl RawRetention {
    /// The name as written (reports refer to policies by it).
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// Checks every `[[retention]]`: unique names, a configured registry, non-empty globs, and
/// at least one keep rule (a policy keeping nothing would plan to delete every tag).
pub(super) fn retention(
    raw: Vec<RawRetention>,
    registries: &[&str],
    errs: &mut Errors<'_>,
) -> Option<Vec<Policy>> {
    let mut names = HashSet::new();
    let checked: Vec<Option<Policy>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = KeyPath::default().key("retention").index(i);
            let mut ok = true;
            if let Err(msg) = unique_name("retention policy", &r.name, &mut names) {
                errs.at_key(&at, "name", msg);
                ok = false;
            }
            let registry = match (r.registry, registries) {
                (Some(name), _) if registries.contains(&name.as_str()) => Some(name),
                (Some(name), _) => {
                    errs.at_key(
                        &at,
                        "registry",
                        format!(
                            "no [[registry]] named {name:?} (configured: {})",
                            registries.join(", ")
                        ),
                    );
                    None
                }
                (None, [only]) => Some(only.to_string()),
                (None, _) => {
                    errs.at(
                        &at,
                        "missing key `registry`: required when several registries are configured",
                    );
                    None
                }
            };
            for (key, globs) in [
                ("repositories", &r.repositories),
                ("protect_tags", &r.protect_tags),
            ] {
                if globs.iter().any(|g| g.trim().is_empty()) {
                    errs.at_key(&at, key, "an empty pattern matches nothing; remove it");
                    ok = false;
                }
            }
            let keeps_something = r.keep_pulled_within.is_some()
                || r.keep_pushed_within.is_some()
                || r.keep_last > 0
                || !r.protect_tags.is_empty();
            if !keeps_something {
                errs.at(
                    &at,
                    "a policy without keep_pulled_within, keep_pushed_within, keep_last or \
                     protect_tags would plan to delete every tag; set at least one",
                );
                ok = false;
            }
            ok.then_some(())?;
            Some(Policy {
                name: r.name,
                registry: registry?,
                repositories: r.repositories,
                keep_pulled_within: r.keep_pulled_within,
                keep_pushed_within: r.keep_pushed_within,
                keep_last: r.keep_last,
                protect_tags: r.protect_tags,
            })
        })
        .collect();
    checked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use crate::config::{Origin, parse};
    use std::path::Path;
    use std::time::Duration;

    const REGISTRY: &str = "[[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:5000\"\n\n";

    fn errors(text: &str) -> Vec<String> {
        match parse(
            &format!("{REGISTRY}{text}"),
            Origin::File("t.toml".into()),
            Path::new("/"),
        ) {
            Ok(_) => vec![],
            Err(e) => e.lines(),
        }
    }

    #[test]
    fn the_issue_example_parses_with_the_registry_defaulted() {
        let text = format!(
            "{REGISTRY}[[retention]]\nname = \"stale-dev\"\nrepositories = [\"dev/*\", \"team/*\"]\n\
             keep_pulled_within = \"30d\"\nkeep_pushed_within = \"7d\"\nkeep_last = 3\n\
             protect_tags = [\"latest\", \"release-*\"]\n"
        );
        let c = parse(&text, Origin::Embedded, Path::new("/")).unwrap();
        let p = &c.retention[0];
        assert_eq!(p.registry, "main");
        assert_eq!(p.keep_pulled_within, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(p.keep_last, 3);
        assert!(p.covers("team/x") && !p.covers("prod/x"));
    }

    #[test]
    fn mistakes_are_located() {
        let e = errors(
            "[[retention]]\nname = \"a\"\nregistry = \"nope\"\nkeep_last = 1\n\n\
             [[retention]]\nname = \"a\"\nkeep_pulled_within = \"soon\"\n\n\
             [[retention]]\nname = \"b\"\n",
        );
        assert!(
            e.iter().any(|l| l.starts_with("7:1 retention[0].registry: no [[registry]] named \"nope\"")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("11:1 retention[1].name: duplicate retention policy name")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("12:22 retention[1].keep_pulled_within: invalid duration")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("15:1 retention[2]: a policy without")),
            "{e:#?}"
        );
    }
}
