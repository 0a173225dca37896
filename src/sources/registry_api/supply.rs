//! Detection during the inventory poll: for every image manifest (and index) of a
//! repository, the signatures, attestations and SBOMs attached to it, from the tag schemas
//! (already read as tags) and, where the registry serves it, the referrers API; and each
//! simple-signing signature checked against the registry's `signature_keys`.
//!
//! Costs: nothing for a tag schema beyond the tags the inventory reads anyway; one request
//! per manifest for the referrers API where it is served (one 404 per poll where it is not,
//! then none); one blob per signature payload, checked once and remembered (payloads are
//! content-addressed, the keys fixed for a poller's lifetime).

use super::artifacts::{self, Kind, Referrer, TagForm};
use super::client::{ApiError, Client};
use super::cosign::{self, Checked, Verdict};
use super::inventory::{Manifest, RepoContent};
use super::tags::Attached;
use crate::config::keys::SignatureKey;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

type Cache = Arc<Mutex<HashMap<String, Manifest>>>;

/// Signatures checked, by (payload digest, signature text): kept across polls.
pub type Checks = Arc<Mutex<HashMap<(String, String), Checked>>>;

const UNKNOWN: u8 = 0;
const SERVED: u8 = 1;
const NOT_SERVED: u8 = 2;

/// One poll's detection state, shared by its repository tasks.
pub struct Detection {
    keys: Vec<SignatureKey>,
    checks: Checks,
    /// Whether the registry serves the referrers API (learned from the first answer).
    referrers: AtomicU8,
    /// Held by the one request that finds out.
    probing: tokio::sync::Mutex<()>,
    /// Referrer manifests read by digest (not reachable from a tag): the manifest cache
    /// keeps them for the next poll.
    fetched: Mutex<BTreeSet<String>>,
    /// (payload digest, signature) checked this poll: the rest is forgotten after it.
    used: Mutex<BTreeSet<(String, String)>>,
}

impl Detection {
    pub fn new(keys: Vec<SignatureKey>, checks: Checks) -> Arc<Detection> {
        Arc::new(Detection {
            keys,
            checks,
            referrers: AtomicU8::new(UNKNOWN),
            probing: tokio::sync::Mutex::new(()),
            fetched: Mutex::new(BTreeSet::new()),
            used: Mutex::new(BTreeSet::new()),
        })
    }

    /// Manifests fetched only for detection (to keep cached).
    pub fn fetched(&self) -> BTreeSet<String> {
        self.fetched.lock().expect("not poisoned").clone()
    }

    /// Forgets the checks this poll did not need.
    pub fn prune_checks(&self) {
        let used = self.used.lock().expect("not poisoned");
        self.checks
            .lock()
            .expect("not poisoned")
            .retain(|k, _| used.contains(k));
    }
}

/// What the tag schemas say is attached to one subject, before anything is fetched.
#[derive(Default)]
struct Work {
    /// Signature manifests (the `.sig` tag's); `Err` when the manifest was unreadable.
    signature_manifests: Vec<Result<String, String>>,
    attestation_manifests: Vec<String>,
    sbom: bool,
    referrers: Vec<Referrer>,
}

/// Every manifest an image tag of `content` reaches (its digest, an index's platforms).
fn subjects(content: &RepoContent, manifests: &HashMap<String, Manifest>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (tag, digest) in &content.tags {
        if artifacts::is_artifact_tag(tag) {
            continue;
        }
        out.insert(digest.clone());
        if let Some(m) = manifests.get(digest) {
            out.extend(
                m.children
                    .iter()
                    .filter(|c| manifests.contains_key(c.as_str()))
                    .cloned(),
            );
        }
    }
    out
}

/// The work per subject from the artifact tags. `unreadable`: artifact tags' manifests that
/// could not be parsed, digest → why.
fn plan(
    content: &RepoContent,
    manifests: &HashMap<String, Manifest>,
    unreadable: &BTreeMap<String, String>,
) -> BTreeMap<String, Work> {
    let mut work: BTreeMap<String, Work> = subjects(content, manifests)
        .into_iter()
        .map(|s| (s, Work::default()))
        .collect();
    for (tag, digest) in &content.tags {
        let Some(a) = artifacts::artifact_tag(tag) else {
            continue;
        };
        // An artifact of a manifest no image tag reaches (its image was deleted).
        let Some(w) = work.get_mut(&a.subject) else {
            continue;
        };
        match a.form {
            TagForm::Cosign(Kind::Signature) => {
                w.signature_manifests.push(match unreadable.get(digest) {
                    Some(why) => Err(why.clone()),
                    None => Ok(digest.clone()),
                })
            }
            TagForm::Cosign(Kind::Attestation) => w.attestation_manifests.push(digest.clone()),
            TagForm::Cosign(_) => w.sbom = true,
            TagForm::Referrers => {
                if let Some(parts) = manifests.get(digest).and_then(|m| m.artifact.as_ref()) {
                    w.referrers.extend(parts.referrers.iter().cloned());
                }
            }
        }
    }
    work
}

/// Everything attached to each image manifest of `repo`.
pub async fn detect(
    client: &Arc<Client>,
    repo: &str,
    content: &RepoContent,
    cache: &Cache,
    unreadable: &BTreeMap<String, String>,
    detection: &Arc<Detection>,
) -> Result<BTreeMap<String, Attached>, ApiError> {
    let work = plan(content, &cache.lock().expect("not poisoned"), unreadable);
    let mut set = JoinSet::new();
    for (subject, w) in work {
        let (client, cache, detection) = (client.clone(), cache.clone(), detection.clone());
        let repo = repo.to_string();
        set.spawn(async move {
            let a = attached(&client, &repo, &subject, w, &cache, &detection).await?;
            Ok::<_, ApiError>((subject, a))
        });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let (subject, a) = joined.expect("detection tasks do not panic")?;
        out.insert(subject, a);
    }
    Ok(out)
}

async fn attached(
    client: &Client,
    repo: &str,
    subject: &str,
    mut w: Work,
    cache: &Cache,
    detection: &Detection,
) -> Result<Attached, ApiError> {
    let mut a = Attached {
        sbom: w.sbom,
        ..Attached::default()
    };
    for m in &w.signature_manifests {
        match m {
            Ok(digest) => {
                let m = cache.lock().expect("not poisoned").get(digest).cloned();
                a.signatures
                    .extend(signatures(client, repo, subject, m.as_ref(), detection).await?);
            }
            Err(why) => a.signatures.push(Verdict::Unverified(why.clone())),
        }
    }
    for digest in &w.attestation_manifests {
        let cache = cache.lock().expect("not poisoned");
        let parts = cache.get(digest).and_then(|m| m.artifact.as_deref());
        let layers = || parts.into_iter().flat_map(|p| &p.layers);
        // Each layer of a `.att` manifest is one attestation (a DSSE envelope).
        let n = layers()
            .filter(|l| artifacts::kind_of(&l.media_type) == Kind::Attestation)
            .count();
        a.attestations += n.max(1);
        a.sbom |= layers().any(|l| {
            l.predicate_type
                .as_deref()
                .is_some_and(artifacts::is_sbom_predicate)
        });
    }
    w.referrers
        .extend(referrers_api(client, repo, subject, detection).await?);
    // The same referrer can be both in a referrers tag's index and in the API's answer.
    let mut seen = BTreeSet::new();
    w.referrers.retain(|r| seen.insert(r.digest.clone()));
    for r in &w.referrers {
        referrer(client, repo, subject, r, cache, detection, &mut a).await?;
    }
    Ok(a)
}

/// The referrers API's answer for `subject`; nothing where the registry does not serve the
/// API. While that is not known yet, one request finds out and the others wait for it, so a
/// registry without the API costs one 404 per poll, not one per manifest in flight.
async fn referrers_api(
    client: &Client,
    repo: &str,
    subject: &str,
    detection: &Detection,
) -> Result<Vec<Referrer>, ApiError> {
    let _probing = match detection.referrers.load(Ordering::Acquire) {
        NOT_SERVED => return Ok(Vec::new()),
        SERVED => None,
        _ => {
            let guard = detection.probing.lock().await;
            match detection.referrers.load(Ordering::Acquire) {
                NOT_SERVED => return Ok(Vec::new()),
                SERVED => None,
                _ => Some(guard),
            }
        }
    };
    match client.referrers(repo, subject).await? {
        Some(found) => {
            detection.referrers.store(SERVED, Ordering::Release);
            Ok(found)
        }
        None => {
            detection.referrers.store(NOT_SERVED, Ordering::Release);
            Ok(Vec::new())
        }
    }
}

/// Adds what one referrer is to `a`.
async fn referrer(
    client: &Client,
    repo: &str,
    subject: &str,
    r: &Referrer,
    cache: &Cache,
    detection: &Detection,
    a: &mut Attached,
) -> Result<(), ApiError> {
    match r.kind() {
        Kind::Signature if is_simple_signing(&r.artifact_type) => {
            let m = match manifest(client, repo, &r.digest, cache, detection).await? {
                Ok(m) => m,
                Err(why) => {
                    a.signatures.push(Verdict::Unverified(why));
                    return Ok(());
                }
            };
            a.signatures
                .extend(signatures(client, repo, subject, Some(&m), detection).await?);
        }
        Kind::Signature => a.signatures.push(Verdict::Unverified(format!(
            "a {} signature, which regwatch cannot verify",
            r.artifact_type
        ))),
        Kind::Attestation => a.attestations += 1,
        Kind::Sbom => a.sbom = true,
        Kind::Other => {}
    }
    Ok(())
}

fn is_simple_signing(artifact_type: &str) -> bool {
    artifact_type == artifacts::COSIGN_SIG_ARTIFACT || artifact_type == artifacts::SIMPLE_SIGNING
}

/// A referrer's manifest, from the cache or the registry; `Ok(Err(why))` when it cannot be
/// read (gone, malformed).
async fn manifest(
    client: &Client,
    repo: &str,
    digest: &str,
    cache: &Cache,
    detection: &Detection,
) -> Result<Result<Manifest, String>, ApiError> {
    if let Some(m) = cache.lock().expect("not poisoned").get(digest) {
        detection
            .fetched
            .lock()
            .expect("not poisoned")
            .insert(digest.to_string());
        return Ok(Ok(m.clone()));
    }
    match client.manifest(repo, digest).await {
        Ok(f) => {
            cache
                .lock()
                .expect("not poisoned")
                .insert(digest.to_string(), f.manifest.clone());
            detection
                .fetched
                .lock()
                .expect("not poisoned")
                .insert(digest.to_string());
            Ok(Ok(f.manifest))
        }
        Err(e) if e.is_not_found() => Ok(Err(format!("the signature manifest {digest} is gone"))),
        Err(ApiError::Manifest(e)) => Ok(Err(format!("the signature manifest is unreadable: {e}"))),
        Err(e) => Err(e),
    }
}

/// The verdicts of the simple-signing layers of a signature manifest for `subject`.
async fn signatures(
    client: &Client,
    repo: &str,
    subject: &str,
    m: Option<&Manifest>,
    detection: &Detection,
) -> Result<Vec<Verdict>, ApiError> {
    let layers: Vec<&artifacts::Layer> = m
        .and_then(|m| m.artifact.as_deref())
        .into_iter()
        .flat_map(|p| &p.layers)
        .filter(|l| l.media_type == artifacts::SIMPLE_SIGNING)
        .collect();
    if layers.is_empty() {
        return Ok(vec![Verdict::Unverified(
            "a signature manifest without a simple-signing layer".into(),
        )]);
    }
    let mut out = Vec::new();
    for l in layers {
        let checked = match &l.signature {
            None => Err("a simple-signing layer without a signature annotation".to_string()),
            Some(Err(why)) => Err(why.clone()),
            Some(Ok(sig)) => check(client, repo, l, sig, detection).await?,
        };
        out.push(match checked {
            Ok(c) => cosign::verdict(&c, subject, &detection.keys),
            Err(why) => Verdict::Unverified(why),
        });
    }
    Ok(out)
}

/// Checks one signature (from the remembered checks, or by fetching its payload);
/// `Ok(Err(why))` when the payload cannot be had.
async fn check(
    client: &Client,
    repo: &str,
    layer: &artifacts::Layer,
    signature: &str,
    detection: &Detection,
) -> Result<Result<Checked, String>, ApiError> {
    let key = (layer.digest.clone(), signature.to_string());
    if let Some(c) = detection.checks.lock().expect("not poisoned").get(&key) {
        detection.used.lock().expect("not poisoned").insert(key);
        return Ok(Ok(c.clone()));
    }
    if !artifacts::valid_digest(&layer.digest) {
        return Ok(Err(
            "the payload's digest is not a sha256/sha512 digest".into()
        ));
    }
    if layer.size > cosign::MAX_PAYLOAD {
        return Ok(Err(format!(
            "a payload of {} bytes (a simple-signing payload is a few hundred)",
            layer.size
        )));
    }
    let payload = match client
        .blob(repo, &layer.digest, cosign::MAX_PAYLOAD as usize)
        .await
    {
        Ok(p) => p,
        Err(e) if e.is_not_found() => {
            return Ok(Err("the signature's payload blob is missing".into()));
        }
        // A body too large or not matching its digest: hostile or broken, not transient.
        Err(ApiError::Garbage { detail, .. }) => {
            return Ok(Err(format!(
                "the signature's payload is unusable: {detail}"
            )));
        }
        Err(e) => return Err(e),
    };
    let c = cosign::check(&payload, signature, &detection.keys);
    detection
        .checks
        .lock()
        .expect("not poisoned")
        .insert(key.clone(), c.clone());
    detection.used.lock().expect("not poisoned").insert(key);
    Ok(Ok(c))
}
