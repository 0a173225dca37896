//! Signatures, attestations and SBOMs in the formats cosign and OCI 1.1 tools store them, made
//! without those tools (none is packaged here) and pushed over the distribution API to the real
//! registry. Keys and signatures come from `openssl` (ECDSA P-256 over SHA-256, DER, as cosign
//! signs): an implementation independent of the `p256` crate regwatch verifies with.
//!
//! - [`SigningKey`]: a P-256 key pair in PEM files (`cosign.pub` is the public half).
//! - [`push_signatures`]: the `sha256-<hex>.sig` tag: one simple-signing layer per signature,
//!   the payload naming a digest, the base64 signature in the layer's annotation.
//! - [`push_signature_layers`]: the same with layers a test writes itself (hostile input).
//! - [`push_artifact`] ([`sbom_artifact`], [`signature_artifact`], [`notation_artifact`]):
//!   OCI 1.1 artifacts with a `subject`, and [`put_referrers_index`], the referrers tag
//!   schema's index (`sha256-<hex>`) listing them, as distribution 2.8 needs it.
//! - [`push_attestation`]: the `sha256-<hex>.att` tag with one DSSE envelope.

use super::proc::{assert_ok, require};
use super::registry::{ALICE, Registry};
use base64::Engine;
use sha2::Digest;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// An ECDSA P-256 key pair made by openssl.
pub struct SigningKey {
    pub private: PathBuf,
    pub public: PathBuf,
}

impl SigningKey {
    /// `<dir>/<name>.key` and `<dir>/<name>.pub`.
    pub fn generate(dir: &Path, name: &str) -> SigningKey {
        require("openssl", "openssl");
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        let out = Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&private)
            .output()
            .unwrap();
        assert_ok(&out, "openssl ecparam -genkey");
        let out = Command::new("openssl")
            .args(["ec", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .output()
            .unwrap();
        assert_ok(&out, "openssl ec -pubout");
        SigningKey { private, public }
    }

    /// The base64 DER ECDSA signature over SHA-256 of `data` (what cosign's annotation holds).
    pub fn sign(&self, data: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("payload");
        fs::write(&input, data).unwrap();
        let out = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.private)
            .arg(&input)
            .output()
            .unwrap();
        assert_ok(&out, "openssl dgst -sha256 -sign");
        base64::engine::general_purpose::STANDARD.encode(out.stdout)
    }
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// Uploads `data` as a blob of `repo` (monolithic: POST, then PUT with the digest).
pub fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = digest_of(data);
    let r = client()
        .post(format!("{}/v2/{repo}/blobs/uploads/", reg.url()))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "start upload to {repo}");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", reg.url())
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = client()
        .put(format!("{location}{sep}digest={digest}"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "upload {digest} to {repo}");
    digest
}

/// PUTs a manifest as `repo:reference`; returns its digest.
pub fn put_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let r = client()
        .put(format!("{}/v2/{repo}/manifests/{reference}", reg.url()))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    assert_eq!(status, 201, "PUT {repo}:{reference}: {text}");
    digest_of(body)
}

/// A manifest request with the full Accept list (distribution 2.8 404s an OCI manifest
/// without it).
fn manifest_request(
    reg: &Registry,
    method: reqwest::Method,
    repo: &str,
    tag: &str,
) -> reqwest::blocking::Response {
    let r = client()
        .request(method, format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("Accept", ACCEPT)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{repo}:{tag}");
    r
}

/// The digest `repo:tag` points at, as the registry says.
pub fn manifest_digest(reg: &Registry, repo: &str, tag: &str) -> String {
    let r = manifest_request(reg, reqwest::Method::HEAD, repo, tag);
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The platform manifests an index lists.
pub fn index_children(reg: &Registry, repo: &str, tag: &str) -> Vec<String> {
    let v: serde_json::Value = manifest_request(reg, reqwest::Method::GET, repo, tag)
        .json()
        .unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}

/// `sha256:abc…` → `sha256-abc…` (cosign's tag for the artifacts of that digest).
pub fn artifact_tag(subject: &str, suffix: &str) -> String {
    format!("{}{suffix}", subject.replace(':', "-"))
}

/// cosign's simple-signing payload naming `digest`.
pub fn payload(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{repo}", reg.host())},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap()
}

/// Pushes the `.sig` manifest for `subject` with `layers` (payload bytes, the layer's
/// annotations), as cosign lays it out: an image config naming the payloads, one
/// simple-signing layer per signature. Returns the manifest's digest.
pub fn push_signature_layers(
    reg: &Registry,
    repo: &str,
    subject: &str,
    layers: &[(Vec<u8>, serde_json::Value)],
) -> String {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (payload, annotations) in layers {
        let d = push_blob(reg, repo, payload);
        diff_ids.push(d.clone());
        descriptors.push(serde_json::json!({
            "mediaType": SIMPLE_SIGNING, "size": payload.len(), "digest": d,
            "annotations": annotations
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}
    }))
    .unwrap();
    let config_digest = push_blob(reg, repo, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": descriptors
    }))
    .unwrap();
    put_manifest(
        reg,
        repo,
        &artifact_tag(subject, ".sig"),
        OCI_MANIFEST,
        &manifest,
    )
}

/// Signs `subject` with each (key, digest the payload names): normally the subject itself,
/// another digest for a signature copied from another image. Replaces the `.sig` tag (cosign
/// adds a signature by re-pushing it with one layer more).
pub fn push_signatures(
    reg: &Registry,
    repo: &str,
    subject: &str,
    sigs: &[(&SigningKey, &str)],
) -> String {
    let layers: Vec<(Vec<u8>, serde_json::Value)> = sigs
        .iter()
        .map(|(key, names)| {
            let p = payload(reg, repo, names);
            let sig = key.sign(&p);
            (p, serde_json::json!({ SIGNATURE_ANNOTATION: sig }))
        })
        .collect();
    push_signature_layers(reg, repo, subject, &layers)
}

/// An OCI 1.1 artifact pushed by digest: what the referrers tag schema's index lists.
pub struct Artifact {
    pub digest: String,
    pub size: usize,
    pub artifact_type: String,
}

/// Pushes an OCI 1.1 artifact manifest for `subject` (`artifactType`, `subject`, the empty
/// config) with `layers` (media type, content, annotations), by digest.
pub fn push_artifact(
    reg: &Registry,
    repo: &str,
    subject: &str,
    artifact_type: &str,
    layers: &[(&str, Vec<u8>, serde_json::Value)],
) -> Artifact {
    let empty = push_blob(reg, repo, b"{}");
    let descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|(media_type, data, annotations)| {
            serde_json::json!({
                "mediaType": media_type, "size": data.len(),
                "digest": push_blob(reg, repo, data), "annotations": annotations
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": empty},
        "layers": descriptors,
        "subject": {"mediaType": OCI_MANIFEST, "size": 0, "digest": subject},
        "annotations": {"org.opencontainers.image.created": "2026-11-28T10:00:00Z"}
    }))
    .unwrap();
    let digest = digest_of(&manifest);
    put_manifest(reg, repo, &digest, OCI_MANIFEST, &manifest);
    Artifact {
        digest,
        size: manifest.len(),
        artifact_type: artifact_type.to_string(),
    }
}

/// An SPDX SBOM for `subject`.
pub fn sbom_artifact(reg: &Registry, repo: &str, subject: &str) -> Artifact {
    let sbom = serde_json::to_vec(&serde_json::json!({
        "spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": repo,
        "packages": [{"name": "app", "SPDXID": "SPDXRef-app", "versionInfo": "1.0"}]
    }))
    .unwrap();
    let layers = [("application/spdx+json", sbom, serde_json::json!({}))];
    push_artifact(reg, repo, subject, "application/spdx+json", &layers)
}

/// A cosign simple-signing signature of `subject` as an OCI 1.1 referrer (what cosign
/// pushes with `--registry-referrers-mode=oci-1-1`).
pub fn signature_artifact(reg: &Registry, repo: &str, subject: &str, key: &SigningKey) -> Artifact {
    let p = payload(reg, repo, subject);
    let sig = key.sign(&p);
    let layers = [(
        SIMPLE_SIGNING,
        p,
        serde_json::json!({ SIGNATURE_ANNOTATION: sig }),
    )];
    push_artifact(
        reg,
        repo,
        subject,
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        &layers,
    )
}

/// A notation (Notary v2) signature envelope for `subject`: regwatch counts it, and cannot
/// verify it.
pub fn notation_artifact(reg: &Registry, repo: &str, subject: &str) -> Artifact {
    let layers = [(
        "application/jose+json",
        br#"{"payload":"e30","protected":"e30","signature":"AAAA"}"#.to_vec(),
        serde_json::json!({}),
    )];
    push_artifact(
        reg,
        repo,
        subject,
        "application/vnd.cncf.notary.signature",
        &layers,
    )
}

/// The referrers tag schema: the index `sha256-<hex>` listing `referrers` of `subject`, as
/// a tool that finds no referrers API (distribution 2.8) keeps it.
pub fn put_referrers_index(
    reg: &Registry,
    repo: &str,
    subject: &str,
    referrers: &[Artifact],
) -> String {
    let entries: Vec<serde_json::Value> = referrers
        .iter()
        .map(|a| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST, "size": a.size, "digest": a.digest,
                "artifactType": a.artifact_type
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries
    }))
    .unwrap();
    put_manifest(reg, repo, &artifact_tag(subject, ""), OCI_INDEX, &index)
}

/// The `.att` tag for `subject`: one DSSE envelope (an in-toto SLSA provenance statement)
/// as cosign attests.
pub fn push_attestation(reg: &Registry, repo: &str, subject: &str) -> String {
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": repo, "digest": {"sha256": subject.trim_start_matches("sha256:")}}],
        "predicate": {"builder": {"id": "https://ci.example.test"}}
    });
    let envelope = serde_json::to_vec(&serde_json::json!({
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64::engine::general_purpose::STANDARD.encode(statement.to_string()),
        "signatures": []
    }))
    .unwrap();
    let layer = push_blob(reg, repo, &envelope);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": [layer]}, "config": {}
    }))
    .unwrap();
    let config_digest = push_blob(reg, repo, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{
            "mediaType": "application/vnd.dsse.envelope.v1+json", "size": envelope.len(), "digest": layer,
            "annotations": {"predicateType": "https://slsa.dev/provenance/v0.2"}
        }]
    }))
    .unwrap();
    put_manifest(
        reg,
        repo,
        &artifact_tag(subject, ".att"),
        OCI_MANIFEST,
        &manifest,
    )
}
