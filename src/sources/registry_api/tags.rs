//! The per-tag view of an inventory: one [`TagRow`] per image tag (signature, attestation and
//! referrers tags are folded into the row of their image), for `regwatch inventory --tags`,
//! the `regwatch_tags` gauge and the `unsigned_image` rule. Pure.
//!
//! The row is the one place per-tag facts go: a later source (pushes and pulls from the
//! audit trail, say) adds its fields here and its columns in `commands::inventory`.

use super::artifacts;
use super::cosign::Verdict;
use super::inventory::{Manifest, RepoContent};
use crate::model::event::{Action, Event, Source};
use crate::model::signatures::SignatureStatus;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Reasons kept per row for why its signatures do not verify (the rest are alike).
const MAX_PROBLEMS: usize = 5;

/// One image tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRow {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub media_type: Option<String>,
    pub signature: SignatureStatus,
    /// Signatures attached to the digest, and for an index to its platform manifests.
    pub signatures: usize,
    /// The keys (`signature_keys` entries) that verified it.
    pub signed_by: Vec<String>,
    pub attestations: usize,
    /// An SBOM is attached (as an SBOM artifact or as an SBOM attestation).
    pub sbom: bool,
    /// Why the signatures attached do not verify (for `unverified`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// When the daemon's poll first saw the tag at this digest (RFC 3339); absent in a live
    /// `regwatch inventory`, which has no history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
}

/// What is attached to one manifest (by digest), from the tag schemas and the referrers API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attached {
    pub signatures: Vec<Verdict>,
    pub attestations: usize,
    pub sbom: bool,
}

/// The manifests a tag's verdict rests on: its own, and an index's platform manifests
/// (those pushed; an index may name platforms that never were).
fn platforms<'a>(digest: &str, manifests: &'a HashMap<String, Manifest>) -> Vec<&'a str> {
    manifests
        .get(digest)
        .map(|m| {
            m.children
                .iter()
                .filter(|c| manifests.contains_key(c.as_str()))
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default()
}

fn verified_by(a: Option<&Attached>) -> BTreeSet<String> {
    a.into_iter()
        .flat_map(|a| &a.signatures)
        .filter_map(|v| match v {
            Verdict::Verified(by) => Some(by.iter().cloned()),
            Verdict::Unverified(_) => None,
        })
        .flatten()
        .collect()
}

/// The row of `tag` → `digest`.
pub fn row(
    repository: &str,
    tag: &str,
    digest: &str,
    manifests: &HashMap<String, Manifest>,
    attached: &BTreeMap<String, Attached>,
) -> TagRow {
    let own = attached.get(digest);
    let kids: Vec<Option<&Attached>> = platforms(digest, manifests)
        .into_iter()
        .map(|c| attached.get(c))
        .collect();
    let all = || std::iter::once(own).chain(kids.iter().copied()).flatten();
    let signatures = all().map(|a| a.signatures.len()).sum();
    let own_keys = verified_by(own);
    let kid_keys: Vec<BTreeSet<String>> = kids.iter().map(|k| verified_by(*k)).collect();
    let (signature, signed_by) = if !own_keys.is_empty() {
        (SignatureStatus::Verified, own_keys)
    } else if !kid_keys.is_empty() && kid_keys.iter().all(|k| !k.is_empty()) {
        (
            SignatureStatus::Verified,
            kid_keys.into_iter().flatten().collect(),
        )
    } else if signatures > 0 {
        (SignatureStatus::Unverified, BTreeSet::new())
    } else {
        (SignatureStatus::None, BTreeSet::new())
    };
    let mut problems = Vec::new();
    if signature == SignatureStatus::Unverified {
        for v in all().flat_map(|a| &a.signatures) {
            if let Verdict::Unverified(why) = v
                && !problems.contains(why)
                && problems.len() < MAX_PROBLEMS
            {
                problems.push(why.clone());
            }
        }
    }
    TagRow {
        repository: repository.to_string(),
        tag: tag.to_string(),
        digest: digest.to_string(),
        media_type: manifests.get(digest).map(|m| m.media_type.clone()),
        signature,
        signatures,
        signed_by: signed_by.into_iter().collect(),
        attestations: all().map(|a| a.attestations).sum(),
        sbom: all().any(|a| a.sbom),
        problems,
        first_seen: None,
    }
}

/// One row per image tag of `repository` (artifact tags excluded), by tag name.
pub fn rows(
    repository: &str,
    content: &RepoContent,
    manifests: &HashMap<String, Manifest>,
    attached: &BTreeMap<String, Attached>,
) -> Vec<TagRow> {
    content
        .tags
        .iter()
        .filter(|(t, _)| !artifacts::is_artifact_tag(t))
        .map(|(t, d)| row(repository, t, d, manifests, attached))
        .collect()
}

/// Counts of rows per verdict, in [`SignatureStatus::ALL`] order.
pub fn by_status(rows: &[TagRow]) -> [(SignatureStatus, usize); 3] {
    SignatureStatus::ALL.map(|s| (s, rows.iter().filter(|r| r.signature == s).count()))
}

/// The rows of the previous poll by (repository, tag).
pub type Previous = HashMap<(String, String), TagRow>;

/// Indexes `rows` for the next poll.
pub fn previous(rows: &[TagRow]) -> Previous {
    rows.iter()
        .map(|r| ((r.repository.clone(), r.tag.clone()), r.clone()))
        .collect()
}

/// Sets each row's `first_seen`: kept from the previous poll while the tag stays at its
/// digest, `at` (RFC 3339) for a tag new or moved.
pub fn carry_first_seen(rows: &mut [TagRow], previous: &Previous, at: &str) {
    for r in rows {
        r.first_seen = previous
            .get(&(r.repository.clone(), r.tag.clone()))
            .filter(|p| p.digest == r.digest)
            .and_then(|p| p.first_seen.clone())
            .or_else(|| Some(at.to_string()));
    }
}

/// `signature_attached` events: an image (per repository and digest) that has more
/// signatures than at the previous poll, or that arrived (new or moved tag) already signed.
/// `before` is the previous poll's (repository, tag) → digest; a tag that did not change
/// but has no previous row (the first poll of a regwatch that did not keep rows) is the
/// first look at it, not news.
pub fn signature_events(
    registry: &str,
    rows: &[TagRow],
    previous: &Previous,
    before: &BTreeMap<(String, String), String>,
    at: time::OffsetDateTime,
) -> Vec<Event> {
    let mut images: BTreeMap<(&str, &str), Vec<&TagRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.signatures > 0) {
        let key = (r.repository.clone(), r.tag.clone());
        let news = match previous.get(&key) {
            Some(p) if p.digest == r.digest => r.signatures > p.signatures,
            _ => before.get(&key) != Some(&r.digest),
        };
        if news {
            images
                .entry((r.repository.as_str(), r.digest.as_str()))
                .or_default()
                .push(r);
        }
    }
    images
        .into_iter()
        .map(|((repository, digest), tags)| {
            let first = tags[0];
            let mut e = Event::new(at, Action::SignatureAttached, Source::Poll);
            e.registry = Some(registry.to_string());
            e.repository = Some(repository.to_string());
            e.tag = Some(first.tag.clone());
            e.digest = Some(digest.to_string());
            e.media_type = first.media_type.clone();
            e.with_detail(attached_detail(&tags))
        })
        .collect()
}

/// `2 signatures, verified by ci.pub; tags 1.0, latest`.
fn attached_detail(tags: &[&TagRow]) -> String {
    let r = tags[0];
    let n = r.signatures;
    let plural = if n == 1 { "" } else { "s" };
    let verdict = match r.signature {
        SignatureStatus::Verified => format!("verified by {}", r.signed_by.join(", ")),
        _ => format!(
            "none verifies: {}",
            r.problems.first().map(String::as_str).unwrap_or("unknown")
        ),
    };
    let mut out = format!("{n} signature{plural}, {verdict}");
    if tags.len() > 1 {
        let names: Vec<&str> = tags.iter().map(|t| t.tag.as_str()).collect();
        out.push_str(&format!("; tags {}", names.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::registry_api::inventory::{OCI_INDEX, OCI_MANIFEST};

    fn manifest(digest: &str, children: &[&str]) -> Manifest {
        Manifest {
            digest: digest.into(),
            media_type: if children.is_empty() {
                OCI_MANIFEST.into()
            } else {
                OCI_INDEX.into()
            },
            size: 1,
            blobs: vec![],
            children: children.iter().map(|c| c.to_string()).collect(),
            artifact: None,
        }
    }

    fn verified(by: &str) -> Verdict {
        Verdict::Verified(vec![by.into()])
    }

    fn unverified(why: &str) -> Verdict {
        Verdict::Unverified(why.into())
    }

    fn signed(verdicts: Vec<Verdict>) -> Attached {
        Attached {
            signatures: verdicts,
            ..Attached::default()
        }
    }

    #[test]
    fn verdicts_per_tag() {
        let manifests: HashMap<String, Manifest> = [
            manifest("img", &[]),
            manifest("idx", &["amd", "arm", "never-pushed"]),
            manifest("amd", &[]),
            manifest("arm", &[]),
        ]
        .into_iter()
        .map(|m| (m.digest.clone(), m))
        .collect();
        let mut attached = BTreeMap::new();
        let none = rows_of("img", &manifests, &attached);
        assert_eq!(
            (none.signature, none.signatures),
            (SignatureStatus::None, 0)
        );

        attached.insert(
            "img".into(),
            signed(vec![unverified("no trusted key verifies it")]),
        );
        let r = rows_of("img", &manifests, &attached);
        assert_eq!(r.signature, SignatureStatus::Unverified);
        assert_eq!(r.problems, ["no trusted key verifies it"]);

        attached.insert(
            "img".into(),
            signed(vec![unverified("another image"), verified("ci.pub")]),
        );
        let r = rows_of("img", &manifests, &attached);
        assert_eq!(r.signature, SignatureStatus::Verified);
        assert_eq!(
            (r.signatures, r.signed_by.clone()),
            (2, vec!["ci.pub".to_string()])
        );
        assert!(r.problems.is_empty());

        // An index: verified when every pushed platform is (the index itself unsigned).
        attached.insert("amd".into(), signed(vec![verified("ci.pub")]));
        let r = rows_of("idx", &manifests, &attached);
        assert_eq!(
            (r.signature, r.signatures),
            (SignatureStatus::Unverified, 1)
        );
        attached.insert("arm".into(), signed(vec![verified("release.pub")]));
        let r = rows_of("idx", &manifests, &attached);
        assert_eq!(r.signature, SignatureStatus::Verified);
        assert_eq!(r.signed_by, ["ci.pub", "release.pub"]);
        assert_eq!(r.media_type.as_deref(), Some(OCI_INDEX));

        attached.insert(
            "arm".into(),
            Attached {
                signatures: vec![],
                attestations: 2,
                sbom: true,
            },
        );
        let r = rows_of("idx", &manifests, &attached);
        assert_eq!(r.signature, SignatureStatus::Unverified, "arm is unsigned");
        assert_eq!((r.attestations, r.sbom), (2, true));
    }

    fn rows_of(
        digest: &str,
        manifests: &HashMap<String, Manifest>,
        attached: &BTreeMap<String, Attached>,
    ) -> TagRow {
        let mut content = RepoContent::default();
        content.tags.insert("1.0".into(), digest.into());
        let hex = "ab".repeat(32);
        content
            .tags
            .insert(format!("sha256-{hex}.sig"), "sigmanifest".into());
        let rows = rows("prod/app", &content, manifests, attached);
        assert_eq!(rows.len(), 1, "the signature tag is no row of its own");
        rows.into_iter().next().unwrap()
    }

    fn plain(repo: &str, tag: &str, digest: &str, signatures: usize) -> TagRow {
        TagRow {
            repository: repo.into(),
            tag: tag.into(),
            digest: digest.into(),
            media_type: None,
            signature: if signatures > 0 {
                SignatureStatus::Verified
            } else {
                SignatureStatus::None
            },
            signatures,
            signed_by: if signatures > 0 {
                vec!["ci.pub".into()]
            } else {
                vec![]
            },
            attestations: 0,
            sbom: false,
            problems: vec![],
            first_seen: None,
        }
    }

    #[test]
    fn first_seen_stays_while_the_tag_stays() {
        let mut old = vec![plain("a", "1.0", "d1", 0), plain("a", "2.0", "d2", 0)];
        carry_first_seen(&mut old, &Previous::new(), "2026-11-28T10:00:00Z");
        let mut now = vec![plain("a", "1.0", "d1", 1), plain("a", "2.0", "d3", 0)];
        carry_first_seen(&mut now, &previous(&old), "2026-11-28T11:00:00Z");
        assert_eq!(now[0].first_seen.as_deref(), Some("2026-11-28T10:00:00Z"));
        assert_eq!(
            now[1].first_seen.as_deref(),
            Some("2026-11-28T11:00:00Z"),
            "moved"
        );
    }

    #[test]
    fn a_signature_attached_is_an_event_once_per_image() {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let old = vec![
            plain("a", "1.0", "d1", 0),
            plain("a", "latest", "d1", 0),
            plain("a", "2.0", "d2", 1),
        ];
        let before: BTreeMap<(String, String), String> = old
            .iter()
            .map(|r| ((r.repository.clone(), r.tag.clone()), r.digest.clone()))
            .collect();
        let now = vec![
            plain("a", "1.0", "d1", 1),
            plain("a", "latest", "d1", 1),
            plain("a", "2.0", "d2", 1),
            plain("a", "3.0", "d4", 2),
            plain("a", "4.0", "d5", 0),
        ];
        let e = signature_events("main", &now, &previous(&old), &before, at);
        let got: Vec<(String, String, String)> = e
            .iter()
            .map(|e| {
                (
                    e.tag.clone().unwrap(),
                    e.digest.clone().unwrap(),
                    e.detail.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "1.0".into(),
                    "d1".into(),
                    "1 signature, verified by ci.pub; tags 1.0, latest".into()
                ),
                (
                    "3.0".into(),
                    "d4".into(),
                    "2 signatures, verified by ci.pub".into()
                ),
            ]
        );
        assert!(e.iter().all(|e| e.action == Action::SignatureAttached));
        // Rows kept by no earlier version: an unchanged tag is not news.
        assert!(signature_events("main", &now[..3], &Previous::new(), &before, at).is_empty());
    }
}
