//! What signing and scanning tools attach to an image, read from what the registry stores.
//! Pure: tag names and manifest bodies in, facts out.
//!
//! Three ways an artifact names the manifest it belongs to (its *subject*):
//! - cosign's tag schema: a tag `sha256-<hex>.sig` (signatures), `.att` (attestations) or
//!   `.sbom` beside the image, in the same repository;
//! - the OCI 1.1 referrers tag schema (distribution 2.8, which has no referrers API): a tag
//!   `sha256-<hex>` pointing at an index whose entries are the referrers, each with its
//!   `artifactType`;
//! - the referrers API (`GET /v2/<name>/referrers/<digest>`, Harbor, zot, distribution 3):
//!   the same index, served by the registry.
//!
//! Such tags are artifacts of their image, not images: they need no signature themselves,
//! are no naming-policy violations and never retention candidates ([`is_artifact_tag`]).
//! Everything here is lenient: a body that is not what it claims yields fewer facts (and the
//! signature in it counts as unverified), never an error that could stop the inventory.

use serde_json::Value;

/// The layer media type of a cosign simple-signing signature.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation carrying the base64 DER signature over the layer (the payload).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// cosign's `artifactType` for a simple-signing signature pushed as an OCI 1.1 referrer.
pub const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Longest signature annotation kept: a DER P-256 signature is at most 72 bytes (96 in
/// base64); a longer one cannot verify, and keeping megabytes of it per layer would let one
/// manifest bloat every poll.
const MAX_SIGNATURE_TEXT: usize = 1024;
/// Longest media type, artifact type or annotation value otherwise kept.
const MAX_TEXT: usize = 256;
/// Most layers or referrers kept from one manifest.
const MAX_ENTRIES: usize = 1024;

/// What an artifact is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signature,
    Attestation,
    Sbom,
    /// Something else (a scan report, a Helm chart's provenance …): not counted.
    Other,
}

/// How a tag names its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagForm {
    /// cosign's `.sig` / `.att` / `.sbom`.
    Cosign(Kind),
    /// The referrers tag schema: the tag's index lists the referrers.
    Referrers,
}

/// A tag that is an artifact of the manifest `subject` (in the same repository).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactTag {
    pub subject: String,
    pub form: TagForm,
}

/// `sha256-<64 hex>[.sig|.att|.sbom]` (or sha512 with 128 hex digits) as an artifact tag.
pub fn artifact_tag(tag: &str) -> Option<ArtifactTag> {
    let (algorithm, rest) = tag.split_once('-')?;
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    let (hex, suffix) = rest.split_at_checked(hex_len)?;
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let form = match suffix {
        "" => TagForm::Referrers,
        ".sig" => TagForm::Cosign(Kind::Signature),
        ".att" => TagForm::Cosign(Kind::Attestation),
        ".sbom" => TagForm::Cosign(Kind::Sbom),
        _ => return None,
    };
    Some(ArtifactTag {
        subject: format!("{algorithm}:{hex}"),
        form,
    })
}

/// Whether `tag` is a signature, attestation, SBOM or referrers tag rather than an image.
pub fn is_artifact_tag(tag: &str) -> bool {
    artifact_tag(tag).is_some()
}

/// `sha256:<hex>` with the hex length its algorithm implies: safe to put into a URL path.
pub fn valid_digest(d: &str) -> bool {
    match d.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 => is_lower_hex(hex),
        Some(("sha512", hex)) if hex.len() == 128 => is_lower_hex(hex),
        _ => false,
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What an artifact type (or a layer's media type) says the artifact is.
pub fn kind_of(media_type: &str) -> Kind {
    let t = media_type.to_ascii_lowercase();
    if t == SIMPLE_SIGNING
        || t == COSIGN_SIG_ARTIFACT
        || t.starts_with("application/vnd.cncf.notary.signature")
        || t.starts_with("application/vnd.dev.sigstore.bundle")
    {
        Kind::Signature
    } else if t.contains("spdx")
        || t.contains("cyclonedx")
        || t.contains("sbom")
        || t.contains("syft")
    {
        Kind::Sbom
    } else if t.contains("in-toto")
        || t.contains("dsse")
        || t == "application/vnd.dev.cosign.artifact.att.v1+json"
    {
        Kind::Attestation
    } else {
        Kind::Other
    }
}

/// Whether an in-toto predicate type names an SBOM (an attestation carrying one).
pub fn is_sbom_predicate(predicate: &str) -> bool {
    let p = predicate.to_ascii_lowercase();
    p.contains("spdx") || p.contains("cyclonedx")
}

/// A layer of an artifact manifest (only layers that are not ordinary image layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// The `dev.cosignproject.cosign/signature` annotation; `Err` when it is there but
    /// unusable (not a string, or too long to be a signature).
    pub signature: Option<Result<String, String>>,
    /// An attestation's `predicateType` annotation.
    pub predicate_type: Option<String>,
}

/// An entry of a referrers index: a manifest whose subject is the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: String,
    /// `artifactType`, else the entry's media type.
    pub artifact_type: String,
}

impl Referrer {
    pub fn kind(&self) -> Kind {
        kind_of(&self.artifact_type)
    }
}

/// The parts of a manifest body that say what it is attached to and what it carries.
/// Empty for an ordinary image or index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    pub layers: Vec<Layer>,
    /// An index's entries that have an `artifactType` (a referrers index).
    pub referrers: Vec<Referrer>,
}

impl Parts {
    pub fn is_empty(&self) -> bool {
        self.artifact_type.is_none()
            && self.subject.is_none()
            && self.layers.is_empty()
            && self.referrers.is_empty()
    }
}

fn text(v: &Value, limit: usize) -> Option<String> {
    v.as_str().filter(|s| s.len() <= limit).map(str::to_string)
}

/// Image layers and configs are never artifacts; everything else is kept.
fn is_image_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

fn layer(v: &Value) -> Option<Layer> {
    let media_type = text(&v["mediaType"], MAX_TEXT)?;
    if is_image_layer(&media_type) {
        return None;
    }
    let annotations = &v["annotations"];
    let signature = match &annotations[SIGNATURE_ANNOTATION] {
        Value::Null => None,
        Value::String(s) if s.len() <= MAX_SIGNATURE_TEXT => Some(Ok(s.clone())),
        Value::String(s) => Some(Err(format!(
            "signature annotation of {} bytes (a P-256 signature has at most 96)",
            s.len()
        ))),
        _ => Some(Err("signature annotation is not a string".into())),
    };
    Some(Layer {
        media_type,
        digest: text(&v["digest"], MAX_TEXT).unwrap_or_default(),
        size: v["size"].as_u64().unwrap_or(0),
        signature,
        predicate_type: text(&annotations["predicateType"], MAX_TEXT),
    })
}

/// The referrers of an index body (the referrers API's answer or a referrers tag's index).
pub fn referrers(body: &Value) -> Vec<Referrer> {
    let Some(entries) = body["manifests"].as_array() else {
        return Vec::new();
    };
    entries
        .iter()
        .take(MAX_ENTRIES)
        .filter_map(|m| {
            let digest = text(&m["digest"], MAX_TEXT).filter(|d| valid_digest(d))?;
            let artifact_type = text(&m["artifactType"], MAX_TEXT)?;
            Some(Referrer {
                digest,
                artifact_type,
            })
        })
        .collect()
}

/// Reads [`Parts`] from a manifest body; anything unreadable is simply absent.
pub fn parse(body: &[u8]) -> Parts {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Parts::default();
    };
    let config_type = text(&v["config"]["mediaType"], MAX_TEXT)
        .filter(|t| !t.contains("image.config") && !t.contains("container.image"));
    Parts {
        artifact_type: text(&v["artifactType"], MAX_TEXT).or(config_type),
        subject: text(&v["subject"]["digest"], MAX_TEXT).filter(|d| valid_digest(d)),
        layers: v["layers"]
            .as_array()
            .map(|l| l.iter().take(MAX_ENTRIES).filter_map(layer).collect())
            .unwrap_or_default(),
        referrers: referrers(&v),
    }
}

/// Parses a referrers API answer (an OCI index); `None` when it is not one.
pub fn parse_referrers(body: &[u8]) -> Option<Vec<Referrer>> {
    let v = serde_json::from_slice::<Value>(body).ok()?;
    v["manifests"].is_array().then(|| referrers(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "4b2b1cbb1c1c4bd1e2b1ebd1a8d5f7f0b7c0a3e1f9d2c6b4a8e7f6d5c4b3a291";

    #[test]
    fn artifact_tags_name_their_subject() {
        let sig = artifact_tag(&format!("sha256-{HEX}.sig")).unwrap();
        assert_eq!(sig.subject, format!("sha256:{HEX}"));
        assert_eq!(sig.form, TagForm::Cosign(Kind::Signature));
        assert_eq!(
            artifact_tag(&format!("sha256-{HEX}.att")).unwrap().form,
            TagForm::Cosign(Kind::Attestation)
        );
        assert_eq!(
            artifact_tag(&format!("sha256-{HEX}.sbom")).unwrap().form,
            TagForm::Cosign(Kind::Sbom)
        );
        assert_eq!(
            artifact_tag(&format!("sha256-{HEX}")).unwrap().form,
            TagForm::Referrers
        );
        for not in [
            "1.0".to_string(),
            "latest".into(),
            format!("sha256-{HEX}.sig.bak"),
            format!("sha256-{}.sig", &HEX[1..]),
            format!("sha256-{}.sig", HEX.to_uppercase()),
            format!("md5-{HEX}.sig"),
            "sha256-".into(),
            "sha256-é".into(),
        ] {
            assert!(artifact_tag(&not).is_none(), "{not}");
        }
        assert!(valid_digest(&format!("sha256:{HEX}")));
        assert!(!valid_digest("sha256:../../v2/_catalog"));
        assert!(!valid_digest(&format!("sha256:{HEX}?x")));
    }

    #[test]
    fn kinds_of_artifacts() {
        assert_eq!(kind_of(SIMPLE_SIGNING), Kind::Signature);
        assert_eq!(
            kind_of("application/vnd.cncf.notary.signature"),
            Kind::Signature
        );
        assert_eq!(
            kind_of("application/vnd.dev.sigstore.bundle.v0.3+json"),
            Kind::Signature
        );
        assert_eq!(kind_of("application/spdx+json"), Kind::Sbom);
        assert_eq!(kind_of("application/vnd.cyclonedx+json"), Kind::Sbom);
        assert_eq!(kind_of("text/spdx"), Kind::Sbom);
        assert_eq!(
            kind_of("application/vnd.dsse.envelope.v1+json"),
            Kind::Attestation
        );
        assert_eq!(kind_of("application/vnd.in-toto+json"), Kind::Attestation);
        assert_eq!(
            kind_of("application/vnd.oci.image.layer.v1.tar"),
            Kind::Other
        );
    }

    #[test]
    fn parses_a_cosign_signature_manifest_and_a_referrers_index() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{HEX}"), "size": 233},
            "layers": [
                {"mediaType": SIMPLE_SIGNING, "digest": format!("sha256:{HEX}"), "size": 239,
                 "annotations": {SIGNATURE_ANNOTATION: "MEUCIQ=="}},
                {"mediaType": SIMPLE_SIGNING, "digest": format!("sha256:{HEX}"), "size": 239,
                 "annotations": {SIGNATURE_ANNOTATION: "x".repeat(5000)}},
                {"mediaType": SIMPLE_SIGNING, "digest": format!("sha256:{HEX}"), "size": 239,
                 "annotations": {SIGNATURE_ANNOTATION: 7}},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:00", "size": 1}
            ]
        });
        let p = parse(body.to_string().as_bytes());
        assert_eq!(p.artifact_type, None, "an image config is no artifact type");
        assert_eq!(p.layers.len(), 3, "the image layer is not kept");
        assert_eq!(p.layers[0].signature, Some(Ok("MEUCIQ==".into())));
        assert!(matches!(p.layers[1].signature, Some(Err(ref e)) if e.contains("5000 bytes")));
        assert!(matches!(p.layers[2].signature, Some(Err(_))));

        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{HEX}"),
                 "size": 500, "artifactType": "application/spdx+json"},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:short",
                 "size": 500, "artifactType": "application/spdx+json"},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{HEX}"),
                 "size": 500, "platform": {"os": "linux", "architecture": "amd64"}}
            ]
        });
        let r = parse_referrers(index.to_string().as_bytes()).unwrap();
        assert_eq!(
            r.len(),
            1,
            "invalid digests and plain platform entries are skipped"
        );
        assert_eq!(r[0].kind(), Kind::Sbom);
        assert_eq!(parse(index.to_string().as_bytes()).referrers, r);
        assert_eq!(parse_referrers(b"404 page not found"), None);
    }

    #[test]
    fn reads_the_fixtures() {
        let m = include_bytes!("../../../tests/fixtures/signatures/cosign-sig-manifest.json");
        let p = parse(m);
        assert_eq!(p.layers.len(), 1);
        assert_eq!(p.layers[0].media_type, SIMPLE_SIGNING);
        assert_eq!(p.layers[0].size, 239);
        let sig = include_str!("../../../tests/fixtures/signatures/openssl.sig");
        assert_eq!(p.layers[0].signature, Some(Ok(sig.to_string())));
        let idx = include_bytes!("../../../tests/fixtures/signatures/referrers-index.json");
        let kinds: Vec<Kind> = parse_referrers(idx)
            .unwrap()
            .iter()
            .map(Referrer::kind)
            .collect();
        assert_eq!(kinds, [Kind::Signature, Kind::Sbom, Kind::Signature]);
    }

    #[test]
    fn garbage_yields_nothing_and_never_panics() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"layers\": 5}",
            b"{\"layers\": [null, 1, \"x\", {\"mediaType\": 3}]}",
            b"{\"subject\": {\"digest\": \"../../etc\"}}",
            b"{\"manifests\": {\"a\": 1}}",
        ] {
            let p = parse(body);
            assert!(p.is_empty(), "{:?}: {p:?}", String::from_utf8_lossy(body));
        }
        let deep = "[".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_empty());
        assert_eq!(parse_referrers(deep.as_bytes()), None);
    }
}
