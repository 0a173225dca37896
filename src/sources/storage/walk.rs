//! One pass over distribution's storage layout (`docker/registry/v2`), wherever it is kept:
//! blob count and bytes, bytes per repository, reclaimable blobs (GC's marking rules, see
//! [`super::gc`]), tags, and stale upload debris.
//!
//! The seam: a [`Layout`] lists what the layout holds (every blob with its size, and per
//! repository its layer links, revision links, tags and uploads) and reads a manifest blob
//! when asked; [`walk`] applies GC's rules to what it lists. The filesystem
//! ([`super::fs::FsLayout`]) and S3 ([`super::s3_layout::S3Layout`]) differ only in how they
//! list, so the rules exist once and both backends give the same figures.
//!
//! Memory: one entry per blob (32-byte digest + 8-byte size, sorted for binary search) plus
//! two bits per blob for "marked" and "manifest already expanded"; this is the only state
//! that grows with the tree, about 40 bytes per blob (40 MB for a million blobs). Repositories
//! are handed over one at a time and only the largest `top_repositories` are kept.
//! Only `sha256` blobs are indexed; a blob of another algorithm is counted but never
//! reported reclaimable (distribution only writes sha256).
//!
//! Manifests are content-addressed, so what one references never changes: with
//! [`WalkOptions::known_manifests`] (the cache the daemon keeps in the store) a manifest seen
//! by an earlier walk is not read again, and [`Walked::manifests`] hands back what this walk
//! knows for the next one.

use super::gc::{self, Digest};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Registries refuse manifests over 4 MiB; anything far larger is not one GC could read.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// What each known manifest references (sha256 digests only), by manifest digest.
pub type ManifestRefs = HashMap<Digest, Box<[Digest]>>;

#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// An upload older than this (by its start time) is debris.
    pub upload_max_age: Duration,
    /// "Now" for upload ages (injected so tests control it).
    pub now: SystemTime,
    /// How many of the largest repositories to keep in the report.
    pub top_repositories: usize,
    /// Keep the digests of reclaimable blobs (for the CLI and the GC comparison tests).
    pub collect_reclaimable: bool,
    /// References of manifests read by earlier walks: these are not read again.
    pub known_manifests: Option<Arc<ManifestRefs>>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            upload_max_age: Duration::from_secs(86400),
            now: SystemTime::now(),
            top_repositories: 10,
            collect_reclaimable: false,
            known_manifests: None,
        }
    }
}

/// Requests a walk made of its storage (S3; zero on a filesystem).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// ListObjectsV2, ListMultipartUploads, ListParts.
    pub list: u64,
    /// Manifest blobs and tag links read.
    pub get: u64,
    pub head: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WalkReport {
    /// Blobs under `blobs/` (a `data` file each; manifests included).
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Blobs `garbage-collect` (without `--delete-untagged`) would delete, and their bytes.
    pub reclaimable_blobs: u64,
    pub reclaimable_bytes: u64,
    /// Digests of the reclaimable blobs, only with [`WalkOptions::collect_reclaimable`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reclaimable: Vec<String>,
    /// Uploads older than the configured age: count and bytes of everything they hold
    /// (on S3 also the parts of their unfinished multipart upload).
    pub stale_uploads: u64,
    pub upload_bytes: u64,
    /// All uploads still in `_uploads`, whatever their age.
    pub uploads: u64,
    /// Repositories as GC and the catalog count them (a directory holding `_layers`).
    pub repositories: u64,
    /// Tags whose `current` link names a manifest.
    pub tags: u64,
    /// Manifest revisions GC keeps that no tag points to (what `--delete-untagged` would
    /// also delete).
    pub untagged_manifests: u64,
    /// The largest repositories, largest first.
    pub top_repositories: Vec<RepoUsage>,
    /// Manifest revisions whose blob could not be parsed; their references were not marked,
    /// so `reclaimable_*` may be too high (GC itself would stop with an error).
    pub unreadable_manifests: u64,
    /// Manifests whose references came from the cache of earlier walks (not read).
    pub cached_manifests: u64,
    /// Everything stored under the layout (S3: every object and upload part), where the
    /// backend can tell; a filesystem's usage comes from statvfs instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    pub requests: Requests,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What one repository links: the distinct blobs of its `_layers` and manifest revisions.
/// Shared layers count in every repository that links them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RepoUsage {
    pub bytes: u64,
    pub name: String,
    pub manifests: u64,
    pub layers: u64,
    pub tags: u64,
}

/// A walk and what it learned about manifests, for the cache.
#[derive(Debug, Default)]
pub struct Walked {
    pub report: WalkReport,
    /// Every manifest this walk expanded (from the cache or read): what the cache keeps.
    pub present: Vec<Digest>,
    /// The manifests it read (not in the cache), with their references.
    pub new: Vec<(Digest, Box<[Digest]>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("walking the registry storage at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An S3 request failed (message already names the bucket and what to check).
    #[error("walking the registry storage at {0}")]
    S3(String),
}

/// The blobs under `blobs/`.
#[derive(Debug, Default)]
pub struct BlobList {
    /// sha256 blobs with their sizes, in any order.
    pub sha256: Vec<(Digest, u64)>,
    /// Blobs of other algorithms: counted, never indexed.
    pub other: u64,
    pub other_bytes: u64,
}

/// One repository as the layout lists it; only what exists (a link file or object, not an
/// empty directory a delete left behind).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Repository {
    /// `team/app`.
    pub name: String,
    /// Whether it holds `_layers` (GC's and the catalog's test for a repository); a
    /// directory with only `_uploads` has its uploads counted and is not a repository.
    pub has_layers: bool,
    /// `_layers/sha256/<hex>/link`.
    pub layers: Vec<Digest>,
    /// `_manifests/revisions/sha256/<hex>/link`: the directory's digest and the digest its
    /// link names (the same, as distribution writes them).
    pub revisions: Vec<(Digest, Digest)>,
    /// `_manifests/tags/<tag>/current/link`: what each tag points to (`None` when the link
    /// is missing or unreadable).
    pub tags: Vec<(String, Option<Digest>)>,
    /// `_uploads/<id>/`.
    pub uploads: Vec<Upload>,
}

/// An unfinished upload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Upload {
    /// When it started (`startedat`, else the best time the backend has).
    pub started: Option<SystemTime>,
    /// Everything it holds.
    pub bytes: u64,
}

/// What a storage backend must list of distribution's layout: the seam between the GC
/// rules ([`walk`]) and where the bytes are.
pub trait Layout: Sync {
    /// Every blob with its size.
    fn blobs(&self) -> Result<BlobList, WalkError>;
    /// Hands every repository (and every directory with uploads) to `visit`, possibly from
    /// several threads at once.
    fn repositories(&self, visit: &(dyn Fn(Repository) + Sync)) -> Result<(), WalkError>;
    /// The content of the blob `digest` (a manifest), which is `size` bytes.
    fn read_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, String>;
    /// Where the layout is, for messages.
    fn describe(&self) -> String;
    /// Requests made so far.
    fn requests(&self) -> Requests {
        Requests::default()
    }
    /// Bytes of everything stored under the layout, if the listing saw it all.
    fn stored_bytes(&self) -> Option<u64> {
        None
    }
}

/// Every blob with its size, sorted by digest; bitsets for the mark phase.
struct BlobIndex {
    blobs: Vec<(Digest, u64)>,
    /// Atomic so that repositories handed over on several threads mark concurrently.
    marked: Vec<AtomicU64>,
    expanded: Vec<AtomicU64>,
}

impl BlobIndex {
    fn new(mut blobs: Vec<(Digest, u64)>) -> Self {
        blobs.sort_unstable_by_key(|b| b.0);
        blobs.dedup_by_key(|b| b.0);
        blobs.shrink_to_fit();
        let words = blobs.len().div_ceil(64);
        BlobIndex {
            blobs,
            marked: (0..words).map(|_| AtomicU64::new(0)).collect(),
            expanded: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn find(&self, d: &Digest) -> Option<usize> {
        self.blobs.binary_search_by(|(k, _)| k.cmp(d)).ok()
    }
    fn size(&self, d: &Digest) -> Option<(usize, u64)> {
        self.find(d).map(|i| (i, self.blobs[i].1))
    }
    fn mark(&self, d: &Digest) {
        if let Some(i) = self.find(d) {
            self.marked[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
    }
    fn is_marked(&self, i: usize) -> bool {
        self.marked[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
    }
    /// Returns true the first time it is called for `i` (on any thread).
    fn expand_once(&self, i: usize) -> bool {
        let bit = 1 << (i % 64);
        self.expanded[i / 64].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}

/// Walks the filesystem storage rooted at `root` (distribution's `rootdirectory`). An empty
/// or fresh root (no `docker/registry/v2` yet) gives an empty report.
pub fn walk(root: &std::path::Path, opts: &WalkOptions) -> Result<WalkReport, WalkError> {
    walk_layout(&super::fs::FsLayout::new(root), opts).map(|w| w.report)
}

/// Walks any [`Layout`].
pub fn walk_layout(layout: &dyn Layout, opts: &WalkOptions) -> Result<Walked, WalkError> {
    let started = Instant::now();
    let list = layout.blobs()?;
    let mut report = WalkReport {
        blobs: list.sha256.len() as u64 + list.other,
        blob_bytes: list.sha256.iter().map(|b| b.1).sum::<u64>() + list.other_bytes,
        ..WalkReport::default()
    };
    tracing::debug!(storage = %layout.describe(), blobs = report.blobs,
        seconds = started.elapsed().as_secs_f64(), "storage walk: blobs listed");
    let index = BlobIndex::new(list.sha256);
    let marker = Marker {
        layout,
        opts,
        index: &index,
        totals: Mutex::new(Totals::default()),
        manifests: Mutex::new(Vec::new()),
    };
    layout.repositories(&|repo| marker.repository(repo))?;
    tracing::debug!(storage = %layout.describe(),
        seconds = started.elapsed().as_secs_f64(), "storage walk: repositories listed");
    let totals = marker.totals.into_inner().expect("totals lock");
    let manifests = marker.manifests.into_inner().expect("manifests lock");
    report.stale_uploads = totals.stale_uploads;
    report.upload_bytes = totals.upload_bytes;
    report.uploads = totals.uploads;
    report.repositories = totals.repositories;
    report.tags = totals.tags;
    report.untagged_manifests = totals.untagged_manifests;
    report.unreadable_manifests = totals.unreadable_manifests;
    report.cached_manifests = totals.cached_manifests;
    let mut top: Vec<RepoUsage> = totals.top.into_iter().map(|Reverse(r)| r).collect();
    top.sort_by(|a, b| b.cmp(a));
    report.top_repositories = top;

    for (i, (d, size)) in index.blobs.iter().enumerate() {
        if !index.is_marked(i) {
            report.reclaimable_blobs += 1;
            report.reclaimable_bytes += size;
            if opts.collect_reclaimable {
                report.reclaimable.push(gc::format_digest(d));
            }
        }
    }
    report.stored_bytes = layout.stored_bytes();
    report.requests = layout.requests();
    report.duration = started.elapsed();
    let present = manifests.iter().map(|m| m.0).collect();
    let new = manifests
        .into_iter()
        .filter(|m| m.2)
        .map(|(d, r, _)| (d, r))
        .collect();
    Ok(Walked {
        report,
        present,
        new,
    })
}

#[derive(Default)]
struct Totals {
    stale_uploads: u64,
    upload_bytes: u64,
    uploads: u64,
    repositories: u64,
    tags: u64,
    untagged_manifests: u64,
    unreadable_manifests: u64,
    cached_manifests: u64,
    /// Min-heap of the largest repositories seen so far.
    top: BinaryHeap<Reverse<RepoUsage>>,
}

/// A manifest expanded: its digest, its references, whether it was read (not cached).
type Expanded = (Digest, Box<[Digest]>, bool);

/// GC's mark phase over the repositories a layout hands over.
struct Marker<'a> {
    layout: &'a dyn Layout,
    opts: &'a WalkOptions,
    index: &'a BlobIndex,
    totals: Mutex<Totals>,
    manifests: Mutex<Vec<Expanded>>,
}

/// What one repository adds to the totals, computed without holding the lock.
#[derive(Default)]
struct RepoCounts {
    stale_uploads: u64,
    upload_bytes: u64,
    uploads: u64,
    untagged: u64,
    unreadable: u64,
    cached: u64,
}

impl Marker<'_> {
    fn repository(&self, repo: Repository) {
        let mut c = RepoCounts::default();
        self.uploads(&repo.uploads, &mut c);
        let usage = repo.has_layers.then(|| self.mark(&repo, &mut c));
        let mut t = self.totals.lock().expect("totals lock");
        t.stale_uploads += c.stale_uploads;
        t.upload_bytes += c.upload_bytes;
        t.uploads += c.uploads;
        t.unreadable_manifests += c.unreadable;
        t.cached_manifests += c.cached;
        if let Some(usage) = usage {
            t.repositories += 1;
            t.tags += usage.tags;
            t.untagged_manifests += c.untagged;
            keep_top(&mut t.top, self.opts.top_repositories, usage);
        }
    }

    fn uploads(&self, uploads: &[Upload], c: &mut RepoCounts) {
        for u in uploads {
            c.uploads += 1;
            let age = u
                .started
                .and_then(|t| self.opts.now.duration_since(t).ok())
                .unwrap_or_default();
            if age > self.opts.upload_max_age {
                c.stale_uploads += 1;
                c.upload_bytes += u.bytes;
            }
        }
    }

    /// GC's rules for one repository: every revision with a link keeps its manifest blob
    /// (when that digest's own revision link and blob exist) and what the manifest
    /// references; `_layers` links count toward the repository's bytes but keep nothing.
    fn mark(&self, repo: &Repository, c: &mut RepoCounts) -> RepoUsage {
        let mut usage = RepoUsage {
            bytes: 0,
            name: repo.name.clone(),
            manifests: 0,
            layers: 0,
            tags: 0,
        };
        for d in &repo.layers {
            if let Some((_, size)) = self.index.size(d) {
                usage.layers += 1;
                usage.bytes += size;
            }
        }
        let linked: HashSet<&Digest> = repo.revisions.iter().map(|(name, _)| name).collect();
        let tagged: HashSet<&Digest> = repo.tags.iter().filter_map(|(_, t)| t.as_ref()).collect();
        usage.tags = repo.tags.iter().filter(|(_, t)| t.is_some()).count() as u64;
        for (name, d) in &repo.revisions {
            if d != name && !linked.contains(d) {
                continue;
            }
            let Some((i, size)) = self.index.size(d) else {
                continue;
            };
            usage.manifests += 1;
            usage.bytes += size;
            if !tagged.contains(d) {
                c.untagged += 1;
            }
            self.index.mark(d);
            if self.index.expand_once(i) {
                self.expand(d, size, c);
            }
        }
        usage
    }

    /// Marks what the manifest blob `d` references; once per digest for the whole walk,
    /// since the content (and so the references) is the same in every repository.
    fn expand(&self, d: &Digest, size: u64, c: &mut RepoCounts) {
        let known = self.opts.known_manifests.as_ref().and_then(|k| k.get(d));
        let (refs, read) = match known {
            Some(refs) => {
                c.cached += 1;
                (refs.clone(), false)
            }
            None => match self.read_references(d, size) {
                Ok(refs) => (refs, true),
                Err(e) => {
                    c.unreadable += 1;
                    tracing::warn!(manifest = %gc::format_digest(d), storage = %self.layout.describe(), error = %e,
                        "cannot read a manifest revision; its blobs may be counted as reclaimable");
                    return;
                }
            },
        };
        for r in refs.iter() {
            self.index.mark(r);
        }
        self.manifests
            .lock()
            .expect("manifests lock")
            .push((*d, refs, read));
    }

    fn read_references(&self, d: &Digest, size: u64) -> Result<Box<[Digest]>, String> {
        if size > MAX_MANIFEST_BYTES {
            return Err(format!("{size} bytes is too large for a manifest"));
        }
        let bytes = self.layout.read_blob(d, size)?;
        let mut refs = Vec::new();
        gc::references(&bytes, |r| refs.push(r)).map_err(|e| e.to_string())?;
        Ok(refs.into_boxed_slice())
    }
}

fn keep_top(top: &mut BinaryHeap<Reverse<RepoUsage>>, keep: usize, usage: RepoUsage) {
    if keep == 0 {
        return;
    }
    if top.len() < keep {
        top.push(Reverse(usage));
    } else if let Some(Reverse(min)) = top.peek()
        && usage > *min
    {
        top.pop();
        top.push(Reverse(usage));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout held in memory: the rules, without any storage.
    struct Mem {
        blobs: Vec<(Digest, u64, Vec<u8>)>,
        repos: Vec<Repository>,
        reads: AtomicU64,
    }

    impl Layout for Mem {
        fn blobs(&self) -> Result<BlobList, WalkError> {
            Ok(BlobList {
                sha256: self.blobs.iter().map(|b| (b.0, b.1)).collect(),
                ..BlobList::default()
            })
        }
        fn repositories(&self, visit: &(dyn Fn(Repository) + Sync)) -> Result<(), WalkError> {
            self.repos.iter().cloned().for_each(visit);
            Ok(())
        }
        fn read_blob(&self, d: &Digest, _: u64) -> Result<Vec<u8>, String> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let b = self.blobs.iter().find(|b| b.0 == *d).ok_or("missing")?;
            Ok(b.2.clone())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn blob(content: &[u8]) -> (Digest, u64, Vec<u8>) {
        use sha2::Digest as _;
        (
            sha2::Sha256::digest(content).into(),
            content.len() as u64,
            content.to_vec(),
        )
    }

    #[test]
    fn a_revision_naming_another_digest_counts_only_with_that_digests_own_link() {
        let layer = blob(b"layer");
        let m = |l: &Digest| {
            blob(
                format!(
                    "{{\"schemaVersion\":2,\"layers\":[{{\"digest\":\"{}\"}}]}}",
                    gc::format_digest(l)
                )
                .as_bytes(),
            )
        };
        let kept = m(&layer.0);
        let other = blob(b"other layer");
        let stray = m(&other.0);
        let repo = Repository {
            name: "a".into(),
            has_layers: true,
            layers: vec![layer.0, other.0],
            // kept: a normal revision; stray's directory names `kept` but links `stray`,
            // whose own revision link is missing: GC skips it.
            revisions: vec![(kept.0, kept.0), (kept.0, stray.0)],
            tags: vec![("1.0".into(), Some(kept.0)), ("gone".into(), None)],
            uploads: vec![Upload {
                started: None,
                bytes: 7,
            }],
        };
        let mem = Mem {
            blobs: vec![layer.clone(), kept.clone(), other.clone(), stray.clone()],
            repos: vec![repo],
            reads: AtomicU64::new(0),
        };
        let opts = WalkOptions {
            collect_reclaimable: true,
            ..WalkOptions::default()
        };
        let w = walk_layout(&mem, &opts).unwrap();
        let mut want = vec![gc::format_digest(&other.0), gc::format_digest(&stray.0)];
        want.sort();
        let mut got = w.report.reclaimable.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!((w.report.tags, w.report.untagged_manifests), (1, 0));
        assert_eq!((w.report.uploads, w.report.stale_uploads), (1, 0));
        assert_eq!((w.present.len(), w.new.len()), (1, 1));

        // A second walk with the first one's manifests reads nothing and marks the same.
        let known: ManifestRefs = w.new.into_iter().collect();
        let again = walk_layout(
            &mem,
            &WalkOptions {
                known_manifests: Some(Arc::new(known)),
                ..opts
            },
        )
        .unwrap();
        assert_eq!(mem.reads.load(Ordering::Relaxed), 1);
        assert_eq!(again.report.reclaimable, w.report.reclaimable);
        assert_eq!((again.report.cached_manifests, again.new.len()), (1, 0));
        assert_eq!(again.present.len(), 1);
    }
}
