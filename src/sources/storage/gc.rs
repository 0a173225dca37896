//! The marking rules of `docker-registry garbage-collect` (distribution 2.8, without
//! `--delete-untagged`): what a manifest keeps alive.
//!
//! GC marks, per repository, every manifest revision that has a `link` file and whose blob
//! exists, and then whatever `Manifest.References()` returns for it: config and layers for an
//! image manifest (Docker v2 or OCI), the child manifests for an index or manifest list (the
//! children are revisions of the same repository, so they get marked, and their own
//! references, when GC reaches them), the `fsLayers` for a schema 1 manifest. Nothing else
//! (tags, `_layers` links, uploads) keeps a blob.

use serde::Deserialize;

/// A sha256 digest as 32 raw bytes: half the memory of the hex text in the mark set.
pub type Digest = [u8; 32];

/// Parses `sha256:<64 lower-case hex>`; other algorithms are not handled (see module docs of
/// `walk`).
pub fn parse_digest(text: &str) -> Option<Digest> {
    parse_hex(text.trim().strip_prefix("sha256:")?)
}

/// Parses 64 lower-case hex digits (a blob or link directory name).
pub fn parse_hex(hex: &str) -> Option<Digest> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

pub fn format_digest(d: &Digest) -> String {
    format!("sha256:{}", hex::encode(d))
}

#[derive(Deserialize)]
struct Descriptor<'a> {
    #[serde(borrow)]
    digest: Option<&'a str>,
}

#[derive(Deserialize)]
struct FsLayer<'a> {
    #[serde(rename = "blobSum", borrow)]
    blob_sum: Option<&'a str>,
}

/// The union of the fields every manifest type GC understands takes its references from;
/// a manifest only fills the ones of its type, so the union is that type's reference list.
#[derive(Deserialize)]
struct AnyManifest<'a> {
    #[serde(borrow)]
    config: Option<Descriptor<'a>>,
    #[serde(default, borrow)]
    layers: Vec<Descriptor<'a>>,
    #[serde(default, borrow)]
    manifests: Vec<Descriptor<'a>>,
    #[serde(rename = "fsLayers", default, borrow)]
    fs_layers: Vec<FsLayer<'a>>,
}

#[derive(Debug, thiserror::Error)]
#[error("not a manifest GC can read: {0}")]
pub struct ManifestError(String);

/// Calls `mark` for every digest the manifest `bytes` references (GC's `References()`).
pub fn references(bytes: &[u8], mut mark: impl FnMut(Digest)) -> Result<(), ManifestError> {
    let m: AnyManifest<'_> =
        serde_json::from_slice(bytes).map_err(|e| ManifestError(e.to_string()))?;
    let mut bad = None;
    let mut each = |d: Option<&str>| match (d, d.and_then(parse_digest)) {
        (_, Some(d)) => mark(d),
        // A digest of another algorithm cannot name a sha256 blob: nothing to mark.
        (Some(s), None) if s.starts_with("sha256:") || !s.contains(':') => {
            bad = Some(s.to_string())
        }
        _ => {}
    };
    each(m.config.and_then(|c| c.digest));
    for l in m.layers.into_iter().chain(m.manifests) {
        each(l.digest);
    }
    for l in m.fs_layers {
        each(l.blob_sum);
    }
    match bad {
        Some(d) => Err(ManifestError(format!("malformed digest {d:?}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:dd78d3e88a60942b6d38a58949ad297c4aef438c28f8cf76aaa484fccb4db1b1";
    const B: &str = "sha256:2cd7fb5eeedcef92d3bc8b1af63e1bf9cbf500bbbc0eabe766ded8ec53c67874";
    const C: &str = "sha256:5d3480d8f720da8f14c0a11b1f2286b442ca92bdc7670d378fa0d8b49d3e3ead";

    fn refs(json: &str) -> Vec<String> {
        let mut v = Vec::new();
        references(json.as_bytes(), |d| v.push(format_digest(&d))).unwrap();
        v
    }

    #[test]
    fn image_manifest_marks_config_then_layers() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{C}","size":1}},
            "layers":[{{"digest":"{A}","size":1}},{{"digest":"{B}","size":2}}]}}"#
        );
        assert_eq!(refs(&m), [C, A, B]);
    }

    #[test]
    fn index_marks_its_children_and_schema1_its_fs_layers() {
        let m = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{A}","platform":{{"architecture":"amd64"}}}},{{"digest":"{B}"}}]}}"#
        );
        assert_eq!(refs(&m), [A, B]);
        let m = format!(
            r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{C}"}},{{"blobSum":"{C}"}}],"signatures":[]}}"#
        );
        assert_eq!(refs(&m), [C, C]);
    }

    #[test]
    fn rejects_what_is_not_a_manifest() {
        assert!(references(b"\x1f\x8b binary layer", |_| {}).is_err());
        assert!(references(br#"{"layers":[{"digest":"sha256:xyz"}]}"#, |_| {}).is_err());
        assert_eq!(
            parse_digest(A).map(|d| format_digest(&d)).as_deref(),
            Some(A)
        );
        assert!(parse_digest("sha256:ABC").is_none());
    }
}
