//! Pure storage accounting: from what each repository references to total, exclusive and
//! shared bytes, with every blob counted once.
//!
//! distribution stores each blob once, content-addressed, however many repositories link
//! it; so the space a repository *really* costs is the bytes no other repository references
//! (what deleting it frees), and the registry's size is the sum over distinct blobs.
//! Manifests and indexes are blobs in that store too, so they count like layers and configs.

use super::artifacts;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest type regwatch understands. distribution 2.8 answers 404 to an OCI
/// manifest not named in Accept, and converts a Docker v2 manifest to schema1 without
/// Accept, so the full list goes with every manifest request.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// What one manifest (by digest) references, as parsed from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    /// Size of the manifest body itself.
    pub size: u64,
    /// Config and layer blobs (digest, size); empty for an index.
    pub blobs: Vec<(String, u64)>,
    /// Child manifests of an index / manifest list.
    pub children: Vec<String>,
    /// What it says about being attached to another manifest (signatures, attestations,
    /// SBOMs, a referrers index); `None` for an ordinary image or index.
    pub artifact: Option<Box<artifacts::Parts>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest} is not JSON: {source}")]
    NotJson {
        digest: String,
        source: serde_json::Error,
    },
    #[error("manifest {digest}: {detail}")]
    Shape { digest: String, detail: String },
}

impl ManifestError {
    /// The digest of the manifest that could not be read.
    pub fn digest(&self) -> &str {
        match self {
            ManifestError::NotJson { digest, .. } | ManifestError::Shape { digest, .. } => digest,
        }
    }
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
    /// schema1 (only stored by very old clients): layer digests without sizes.
    #[serde(rename = "fsLayers")]
    fs_layers: Option<Vec<FsLayer>>,
}

#[derive(Deserialize)]
struct FsLayer {
    #[serde(rename = "blobSum")]
    blob_sum: String,
}

/// Parses a manifest body; `content_type` is the answer's Content-Type (preferred over the
/// body's optional `mediaType`).
pub fn parse_manifest(
    digest: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Manifest, ManifestError> {
    let b: Body = serde_json::from_slice(body).map_err(|source| ManifestError::NotJson {
        digest: digest.into(),
        source,
    })?;
    let media_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| c.starts_with("application/vnd."))
        .or(b.media_type)
        .unwrap_or_else(|| {
            if b.manifests.is_some() {
                OCI_INDEX.into()
            } else {
                OCI_MANIFEST.into()
            }
        });
    let mut m = Manifest {
        digest: digest.into(),
        media_type,
        size: body.len() as u64,
        blobs: Vec::new(),
        children: Vec::new(),
        artifact: None,
    };
    if let Some(children) = b.manifests {
        m.children = children.into_iter().map(|d| d.digest).collect();
    } else if let Some(config) = b.config {
        m.blobs.push((config.digest, config.size));
        m.blobs
            .extend(b.layers.into_iter().map(|l| (l.digest, l.size)));
    } else if let Some(fs) = b.fs_layers {
        // schema1 carries no sizes: the blobs are known, their bytes are not.
        m.blobs.extend(fs.into_iter().map(|l| (l.blob_sum, 0)));
    } else {
        return Err(ManifestError::Shape {
            digest: digest.into(),
            detail: "neither an image manifest (config, layers) nor an index (manifests)".into(),
        });
    }
    // A second, lenient read: nothing in these parts may make an image unreadable.
    let parts = artifacts::parse(body);
    if !parts.is_empty() {
        m.artifact = Some(Box::new(parts));
    }
    Ok(m)
}

/// What one repository references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoContent {
    /// tag → manifest digest.
    pub tags: BTreeMap<String, String>,
    /// Every manifest reachable from a tag (indexes and their children).
    pub manifests: BTreeMap<String, u64>,
    /// Every config and layer blob reachable, digest → size.
    pub blobs: BTreeMap<String, u64>,
}

impl RepoContent {
    /// Adds a manifest (and, for an index, the already-resolved children) to the repository.
    pub fn add(&mut self, m: &Manifest, resolve: &dyn Fn(&str) -> Option<Manifest>) {
        if self.manifests.insert(m.digest.clone(), m.size).is_some() {
            return;
        }
        for (d, s) in &m.blobs {
            self.blobs.insert(d.clone(), *s);
        }
        for c in &m.children {
            if let Some(child) = resolve(c) {
                self.add(&child, resolve);
            }
        }
    }

    /// Every blob (manifests included) this repository references, digest → size.
    fn all_blobs(&self) -> impl Iterator<Item = (&String, &u64)> {
        self.manifests.iter().chain(self.blobs.iter())
    }
}

/// The numbers per repository (served by the API and `regwatch inventory`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStats {
    pub repository: String,
    pub tags: usize,
    pub manifests: usize,
    /// Everything it references.
    pub total_bytes: u64,
    /// Referenced by no other repository: what deleting it would free.
    pub exclusive_bytes: u64,
    /// Referenced by at least one other repository too.
    pub shared_bytes: u64,
}

/// The registry-wide totals and the per-repository numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    pub repositories: usize,
    pub tags: usize,
    /// Every blob reachable from any tag, each counted once.
    pub unique_bytes: u64,
    pub per_repository: Vec<RepoStats>,
}

pub fn account(repos: &BTreeMap<String, RepoContent>) -> Accounting {
    let mut refs: HashMap<&str, (u64, u32)> = HashMap::new();
    for content in repos.values() {
        for (d, s) in content.all_blobs() {
            let e = refs.entry(d.as_str()).or_insert((*s, 0));
            e.1 += 1;
        }
    }
    let per_repository = repos
        .iter()
        .map(|(name, c)| {
            let (mut total, mut exclusive) = (0u64, 0u64);
            for (d, s) in c.all_blobs() {
                total += s;
                if refs.get(d.as_str()).is_some_and(|(_, n)| *n == 1) {
                    exclusive += s;
                }
            }
            RepoStats {
                repository: name.clone(),
                tags: c.tags.len(),
                manifests: c.manifests.len(),
                total_bytes: total,
                exclusive_bytes: exclusive,
                shared_bytes: total - exclusive,
            }
        })
        .collect();
    Accounting {
        repositories: repos.len(),
        tags: repos.values().map(|c| c.tags.len()).sum(),
        unique_bytes: refs.values().map(|(s, _)| s).sum(),
        per_repository,
    }
}

/// How repositories are ordered in inventory listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Total bytes, largest first.
    Size,
    /// Exclusive bytes (what deleting the repository frees), largest first.
    Exclusive,
    /// Repository name.
    Name,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "size" => Some(Sort::Size),
            "exclusive" => Some(Sort::Exclusive),
            "name" => Some(Sort::Name),
            _ => None,
        }
    }

    pub fn apply(self, repos: &mut [RepoStats]) {
        match self {
            Sort::Size => repos.sort_by(|a, b| {
                b.total_bytes
                    .cmp(&a.total_bytes)
                    .then_with(|| a.repository.cmp(&b.repository))
            }),
            Sort::Exclusive => repos.sort_by(|a, b| {
                b.exclusive_bytes
                    .cmp(&a.exclusive_bytes)
                    .then_with(|| a.repository.cmp(&b.repository))
            }),
            Sort::Name => repos.sort_by(|a, b| a.repository.cmp(&b.repository)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(digest: &str, size: u64, blobs: &[(&str, u64)]) -> Manifest {
        Manifest {
            digest: digest.into(),
            media_type: OCI_MANIFEST.into(),
            size,
            blobs: blobs.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
            children: vec![],
            artifact: None,
        }
    }

    #[test]
    fn shared_blobs_counted_once_and_split_exclusive_shared() {
        let base = [("cfgA", 10), ("base1", 1000), ("base2", 2000)];
        let app = image(
            "mApp",
            5,
            &[("cfgB", 20), ("base1", 1000), ("base2", 2000), ("app", 300)],
        );
        let tool = image("mTool", 7, &[("cfgC", 30), ("tool", 400)]);
        let none = |_: &str| None;
        let mut repos = BTreeMap::new();
        let mut a = RepoContent::default();
        a.tags.insert("1.0".into(), "mApp".into());
        a.tags.insert("latest".into(), "mApp".into());
        a.add(&app, &none);
        a.add(&app, &none);
        repos.insert("team/app".to_string(), a);
        let mut b = RepoContent::default();
        b.tags.insert("1.0".into(), "mBase".into());
        b.add(&image("mBase", 3, &base), &none);
        repos.insert("team/base".to_string(), b);
        let mut t = RepoContent::default();
        t.tags.insert("0.1".into(), "mTool".into());
        t.add(&tool, &none);
        repos.insert("tools/tool".to_string(), t);

        let acc = account(&repos);
        assert_eq!((acc.repositories, acc.tags), (3, 4));
        assert_eq!(
            acc.unique_bytes,
            5 + 20 + 1000 + 2000 + 300 + 3 + 10 + 7 + 30 + 400
        );
        let app = &acc.per_repository[0];
        assert_eq!(app.repository, "team/app");
        assert_eq!((app.tags, app.manifests), (2, 1));
        assert_eq!(app.total_bytes, 5 + 20 + 1000 + 2000 + 300);
        assert_eq!(app.exclusive_bytes, 5 + 20 + 300);
        assert_eq!(app.shared_bytes, 3000);
        let tool = &acc.per_repository[2];
        assert_eq!(tool.exclusive_bytes, tool.total_bytes);
        assert_eq!(tool.shared_bytes, 0);
    }

    #[test]
    fn index_children_are_followed() {
        let amd = image("mAmd", 5, &[("cfg1", 10), ("l1", 100)]);
        let arm = image("mArm", 6, &[("cfg2", 11), ("l1", 100)]);
        let idx = Manifest {
            digest: "mIdx".into(),
            media_type: OCI_INDEX.into(),
            size: 50,
            blobs: vec![],
            children: vec!["mAmd".into(), "mArm".into()],
            artifact: None,
        };
        let resolve = |d: &str| {
            [amd.clone(), arm.clone()]
                .into_iter()
                .find(|m| m.digest == d)
        };
        let mut r = RepoContent::default();
        r.tags.insert("1.1".into(), "mIdx".into());
        r.add(&idx, &resolve);
        let acc = account(&BTreeMap::from([("team/multi".to_string(), r)]));
        assert_eq!(acc.per_repository[0].manifests, 3);
        assert_eq!(acc.unique_bytes, 50 + 5 + 6 + 10 + 11 + 100);
    }

    #[test]
    fn parses_real_manifests() {
        // Bodies verbatim from distribution 2.8 (tests/fixtures/api/).
        let oci = include_bytes!("../../../tests/fixtures/api/manifest-oci.json");
        let m = parse_manifest("sha256:x", Some(OCI_MANIFEST), oci).unwrap();
        assert_eq!(m.size, 658);
        assert_eq!(m.blobs.len(), 4);
        assert_eq!(m.blobs[0].1, 988);
        assert_eq!(
            m.blobs.iter().map(|b| b.1).sum::<u64>(),
            988 + 137 + 262716 + 98867
        );
        let idx = include_bytes!("../../../tests/fixtures/api/index-oci.json");
        let i = parse_manifest("sha256:i", Some(OCI_INDEX), idx).unwrap();
        assert_eq!(i.children.len(), 2);
        assert!(i.blobs.is_empty());
        assert_eq!(i.size, 645);
        assert!(matches!(
            parse_manifest("sha256:g", None, b"<html>"),
            Err(ManifestError::NotJson { .. })
        ));
        assert!(matches!(
            parse_manifest("sha256:g", None, b"{\"schemaVersion\":2}"),
            Err(ManifestError::Shape { .. })
        ));
    }
}
