//! Whether each image tag is signed, as the registry poller last saw it: the verdict per tag
//! ([`SignatureStatus`]) and the facts the `unsigned_image` rule judges ([`TagSignature`]).
//! The poller writes them here (and into `regwatch_tags`, from the same values); the alert
//! evaluator reads them here, never back out of the metrics or the stored report.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

/// A tag's signature verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureStatus {
    /// A trusted key verifies a signature that names this tag's digest (for an index: the
    /// index itself, or every platform manifest it lists).
    Verified,
    /// Signatures are attached, but none of them verifies (another key, another digest,
    /// malformed, or a format regwatch cannot verify).
    Unverified,
    /// Nothing is attached.
    None,
}

impl SignatureStatus {
    pub const ALL: [SignatureStatus; 3] = [
        SignatureStatus::Verified,
        SignatureStatus::Unverified,
        SignatureStatus::None,
    ];

    /// The label value and the word in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureStatus::Verified => "verified",
            SignatureStatus::Unverified => "unverified",
            SignatureStatus::None => "none",
        }
    }
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One image tag (never a signature or attestation tag) and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSignature {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub signature: SignatureStatus,
    /// Signatures attached (verifying or not).
    pub signatures: usize,
    /// When a poll first saw the tag at this digest: the push, to within a poll interval.
    pub first_seen: OffsetDateTime,
}

/// Every registry's image tags at its last complete poll, shared by the poller (writer) and
/// the evaluator. A registry not polled yet has no entry.
#[derive(Debug, Clone, Default)]
pub struct SignatureFacts(Arc<RwLock<BTreeMap<String, Arc<Vec<TagSignature>>>>>);

impl SignatureFacts {
    /// The tags of `registry` at its last poll (`None` before the first).
    pub fn get(&self, registry: &str) -> Option<Arc<Vec<TagSignature>>> {
        self.0
            .read()
            .expect("signature facts lock")
            .get(registry)
            .cloned()
    }

    /// Replaces what is known of `registry` (a complete poll replaces everything).
    pub fn set(&self, registry: &str, tags: Vec<TagSignature>) {
        self.0
            .write()
            .expect("signature facts lock")
            .insert(registry.to_string(), Arc::new(tags));
    }

    /// Forgets the registries `keep` rejects (removed from the config).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0
            .write()
            .expect("signature facts lock")
            .retain(|name, _| keep(name));
    }
}
