//! One pass over distribution's filesystem storage layout (`docker/registry/v2`): blob count
//! and bytes, bytes per repository, reclaimable blobs (GC's marking rules, see [`super::gc`])
//! and stale upload debris.
//!
//! Memory: one entry per blob (32-byte digest + 8-byte size, sorted for binary search) plus
//! two bits per blob for "marked" and "manifest already expanded"; this is the only state
//! that grows with the tree, about 40 bytes per blob (40 MB for a million blobs). Repositories
//! are aggregated as they are walked and only the largest `top_repositories` are kept.
//! Only `sha256` blobs are indexed; a blob of another algorithm is counted but never
//! reported reclaimable (distribution only writes sha256).
//!
//! Existence is decided by `link`/`data` files, never by directories: a deleted manifest or
//! blob leaves its directory behind, empty.

use super::gc::{self, Digest};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Registries refuse manifests over 4 MiB; anything far larger is not one GC could read.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// An upload older than this (by its `startedat`) is debris.
    pub upload_max_age: Duration,
    /// "Now" for upload ages (injected so tests control it).
    pub now: SystemTime,
    /// How many of the largest repositories to keep in the report.
    pub top_repositories: usize,
    /// Keep the digests of reclaimable blobs (for the CLI and the GC comparison tests).
    pub collect_reclaimable: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            upload_max_age: Duration::from_secs(86400),
            now: SystemTime::now(),
            top_repositories: 10,
            collect_reclaimable: false,
        }
    }
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
    /// Uploads older than the configured age: count and bytes of every file they hold.
    pub stale_uploads: u64,
    pub upload_bytes: u64,
    /// All uploads still in `_uploads`, whatever their age.
    pub uploads: u64,
    /// Repositories as GC and the catalog count them (a directory holding `_layers`).
    pub repositories: u64,
    /// The largest repositories, largest first.
    pub top_repositories: Vec<RepoUsage>,
    /// Manifest revisions whose blob could not be parsed; their references were not marked,
    /// so `reclaimable_*` may be too high (GC itself would stop with an error).
    pub unreadable_manifests: u64,
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
}

#[derive(Debug, thiserror::Error)]
#[error("walking the registry storage at {path}: {source}")]
pub struct WalkError {
    pub path: PathBuf,
    pub source: io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalkError + '_ {
    move |source| WalkError {
        path: path.to_path_buf(),
        source,
    }
}

/// The registry changes the tree while we walk it; something that vanished meanwhile was
/// simply not there.
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Lists a directory: `None` when it does not exist.
fn list(path: &Path) -> Result<Option<fs::ReadDir>, WalkError> {
    match fs::read_dir(path) {
        Ok(r) => Ok(Some(r)),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Every blob with its size, sorted by digest; bitsets for the mark phase.
struct BlobIndex {
    blobs: Vec<(Digest, u64)>,
    /// Atomic so that the repository walkers on several threads can mark concurrently.
    marked: Vec<AtomicU64>,
    expanded: Vec<AtomicU64>,
}

impl BlobIndex {
    fn find(&self, d: &Digest) -> Option<usize> {
        self.blobs.binary_search_by(|(k, _)| k.cmp(d)).ok()
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

/// Walks the storage rooted at `root` (distribution's `rootdirectory`). An empty or fresh
/// root (no `docker/registry/v2` yet) gives an empty report.
pub fn walk(root: &Path, opts: &WalkOptions) -> Result<WalkReport, WalkError> {
    let started = Instant::now();
    let v2 = root.join("docker/registry/v2");
    let mut report = WalkReport::default();
    let blobs_root = v2.join("blobs/sha256");
    let index = index_blobs(&v2.join("blobs"), &mut report)?;

    let queue = WorkQueue::new(v2.join("repositories"));
    let threads = workers();
    let results: Vec<Result<RepoWalker<'_>, WalkError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (queue, index, blobs_root) = (&queue, &index, &blobs_root);
                scope.spawn(move || {
                    let mut w = RepoWalker {
                        blobs_root,
                        opts,
                        index,
                        report: WalkReport::default(),
                        top: BinaryHeap::new(),
                    };
                    while let Some((dir, name)) = queue.pop() {
                        let r = w.visit(&dir, &name, queue);
                        queue.done();
                        if let Err(e) = r {
                            queue.abort();
                            return Err(e);
                        }
                    }
                    Ok(w)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("repository walk thread panicked"))
            .collect()
    });
    let mut top = Vec::new();
    for r in results {
        let w = r?;
        report.stale_uploads += w.report.stale_uploads;
        report.upload_bytes += w.report.upload_bytes;
        report.uploads += w.report.uploads;
        report.repositories += w.report.repositories;
        report.unreadable_manifests += w.report.unreadable_manifests;
        top.extend(w.top.into_iter().map(|Reverse(r)| r));
    }
    top.sort_by(|a, b| b.cmp(a));
    top.truncate(opts.top_repositories);
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
    report.duration = started.elapsed();
    Ok(report)
}

/// `blobs/<algorithm>/<2 hex>/<hex>/data`: one `stat` per blob, no listing of the blob
/// directories themselves. The prefix directories are shared out to a few threads: the
/// walk is bound by system-call latency, not by one core.
fn index_blobs(blobs: &Path, report: &mut WalkReport) -> Result<BlobIndex, WalkError> {
    let mut prefixes = Vec::new();
    if let Some(algs) = list(blobs)? {
        for alg in algs {
            let alg = alg.map_err(io_err(blobs))?;
            let sha256 = alg.file_name() == "sha256";
            let alg_path = alg.path();
            let Some(entries) = list(&alg_path)? else {
                continue;
            };
            for prefix in entries {
                prefixes.push((prefix.map_err(io_err(&alg_path))?.path(), sha256));
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let chunk = prefixes.len().div_ceil(threads).max(1);
    let parts: Vec<Result<BlobPart, WalkError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = prefixes
            .chunks(chunk)
            .map(|c| scope.spawn(move || index_prefixes(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("blob index thread panicked"))
            .collect()
    });
    let mut out = Vec::new();
    for part in parts {
        let part = part?;
        report.blobs += part.blobs;
        report.blob_bytes += part.bytes;
        if out.is_empty() {
            out = part.index;
        } else {
            out.extend(part.index);
        }
    }
    out.sort_unstable_by_key(|b| b.0);
    out.shrink_to_fit();
    let words = out.len().div_ceil(64);
    Ok(BlobIndex {
        blobs: out,
        marked: (0..words).map(|_| AtomicU64::new(0)).collect(),
        expanded: (0..words).map(|_| AtomicU64::new(0)).collect(),
    })
}

struct BlobPart {
    index: Vec<(Digest, u64)>,
    blobs: u64,
    bytes: u64,
}

fn index_prefixes(prefixes: &[(PathBuf, bool)]) -> Result<BlobPart, WalkError> {
    let mut part = BlobPart {
        index: Vec::new(),
        blobs: 0,
        bytes: 0,
    };
    for (prefix_path, sha256) in prefixes {
        let Some(entries) = list(prefix_path)? else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(io_err(prefix_path))?;
            let mut data = entry.path();
            data.push("data");
            let size = match fs::metadata(&data) {
                Ok(m) if m.is_file() => m.len(),
                Ok(_) => continue,
                Err(e) if gone(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(e) => return Err(io_err(&data)(e)),
            };
            part.blobs += 1;
            part.bytes += size;
            if *sha256 {
                if let Some(d) = entry.file_name().to_str().and_then(gc::parse_hex) {
                    part.index.push((d, size));
                }
            }
        }
    }
    Ok(part)
}

/// Threads for the walk: it waits on system calls far more than it computes.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 4)
}

/// Directories under `repositories/` still to visit, shared by the walker threads; a
/// thread that lists a namespace pushes its children, so one large namespace is shared too.
struct WorkQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    dirs: Vec<(PathBuf, String)>,
    busy: usize,
    aborted: bool,
}

impl WorkQueue {
    fn new(root: PathBuf) -> Self {
        WorkQueue {
            state: Mutex::new(QueueState {
                dirs: vec![(root, String::new())],
                busy: 0,
                aborted: false,
            }),
            ready: Condvar::new(),
        }
    }
    /// The next directory, or `None` when every directory is done (or the walk failed).
    fn pop(&self) -> Option<(PathBuf, String)> {
        let mut s = self.state.lock().expect("queue lock");
        loop {
            if s.aborted {
                return None;
            }
            if let Some(d) = s.dirs.pop() {
                s.busy += 1;
                return Some(d);
            }
            if s.busy == 0 {
                return None;
            }
            s = self.ready.wait(s).expect("queue lock");
        }
    }
    fn push(&self, dir: PathBuf, name: String) {
        self.state
            .lock()
            .expect("queue lock")
            .dirs
            .push((dir, name));
        self.ready.notify_one();
    }
    fn done(&self) {
        let mut s = self.state.lock().expect("queue lock");
        s.busy -= 1;
        if s.busy == 0 && s.dirs.is_empty() {
            self.ready.notify_all();
        }
    }
    fn abort(&self) {
        self.state.lock().expect("queue lock").aborted = true;
        self.ready.notify_all();
    }
}

struct RepoWalker<'a> {
    blobs_root: &'a Path,
    opts: &'a WalkOptions,
    index: &'a BlobIndex,
    /// This thread's counts, summed after the walk.
    report: WalkReport,
    /// Min-heap of the largest repositories seen so far.
    top: BinaryHeap<Reverse<RepoUsage>>,
}

impl RepoWalker<'_> {
    /// A directory under `repositories/`: a repository when it holds `_layers` (GC's and the
    /// catalog's rule), and a namespace for nested repositories either way.
    fn visit(&mut self, dir: &Path, name: &str, queue: &WorkQueue) -> Result<(), WalkError> {
        let Some(entries) = list(dir)? else {
            return Ok(());
        };
        let mut children = Vec::new();
        let (mut layers, mut manifests, mut uploads) = (false, false, false);
        for e in entries {
            let e = e.map_err(io_err(dir))?;
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let n = e.file_name();
            match n.to_str() {
                Some("_layers") => layers = true,
                Some("_manifests") => manifests = true,
                Some("_uploads") => uploads = true,
                Some(s) if s.starts_with('_') => {}
                Some(s) => children.push(s.to_string()),
                None => {}
            }
        }
        if uploads {
            self.uploads(&dir.join("_uploads"))?;
        }
        if layers {
            self.report.repositories += 1;
            let mut usage = RepoUsage {
                bytes: 0,
                name: name.to_string(),
                manifests: 0,
                layers: 0,
            };
            self.layers(&dir.join("_layers/sha256"), &mut usage)?;
            if manifests {
                self.revisions(&dir.join("_manifests/revisions/sha256"), &mut usage)?;
            }
            self.keep_top(usage);
        }
        for child in children {
            let full = if name.is_empty() {
                child.clone()
            } else {
                format!("{name}/{child}")
            };
            queue.push(dir.join(&child), full);
        }
        Ok(())
    }

    fn keep_top(&mut self, usage: RepoUsage) {
        if self.opts.top_repositories == 0 {
            return;
        }
        if self.top.len() < self.opts.top_repositories {
            self.top.push(Reverse(usage));
        } else if let Some(Reverse(min)) = self.top.peek() {
            if usage > *min {
                self.top.pop();
                self.top.push(Reverse(usage));
            }
        }
    }

    fn blob_size(&self, d: &Digest) -> Option<(usize, u64)> {
        self.index.find(d).map(|i| (i, self.index.blobs[i].1))
    }

    /// `_layers/sha256/<hex>/link`: the blob is linked into the repository.
    fn layers(&mut self, dir: &Path, usage: &mut RepoUsage) -> Result<(), WalkError> {
        let Some(entries) = list(dir)? else {
            return Ok(());
        };
        for e in entries {
            let e = e.map_err(io_err(dir))?;
            let Some(d) = e.file_name().to_str().and_then(gc::parse_hex) else {
                continue;
            };
            let mut link = e.path();
            link.push("link");
            match fs::symlink_metadata(&link) {
                Ok(m) if m.is_file() => {}
                Ok(_) => continue,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(io_err(&link)(e)),
            }
            if let Some((_, size)) = self.blob_size(&d) {
                usage.layers += 1;
                usage.bytes += size;
            }
        }
        Ok(())
    }

    /// `_manifests/revisions/sha256/<hex>/link`: GC marks the digest the link names (when
    /// that digest's own revision link and blob exist) and the manifest's references.
    fn revisions(&mut self, dir: &Path, usage: &mut RepoUsage) -> Result<(), WalkError> {
        let Some(entries) = list(dir)? else {
            return Ok(());
        };
        for e in entries {
            let e = e.map_err(io_err(dir))?;
            let Some(name) = e.file_name().to_str().and_then(gc::parse_hex) else {
                continue;
            };
            let mut link = e.path();
            link.push("link");
            let target = match fs::read(&link) {
                Ok(t) => t,
                Err(e) if gone(&e) || e.kind() == io::ErrorKind::IsADirectory => continue,
                Err(e) => return Err(io_err(&link)(e)),
            };
            let Some(d) = std::str::from_utf8(&target).ok().and_then(gc::parse_digest) else {
                continue;
            };
            if d != name && !dir.join(hex::encode(d)).join("link").is_file() {
                continue;
            }
            let Some((i, size)) = self.blob_size(&d) else {
                continue;
            };
            usage.manifests += 1;
            usage.bytes += size;
            self.index.mark(&d);
            if self.index.expand_once(i) {
                self.expand(&d, size);
            }
        }
        Ok(())
    }

    /// Marks what the manifest blob `d` references; once per digest for the whole walk,
    /// since the content (and so the references) is the same in every repository.
    fn expand(&mut self, d: &Digest, size: u64) {
        let hex = hex::encode(d);
        let path = self.blobs_root.join(&hex[..2]).join(&hex).join("data");
        let bytes = if size > MAX_MANIFEST_BYTES {
            Err(io::Error::other(format!(
                "{size} bytes is too large for a manifest"
            )))
        } else {
            fs::read(&path)
        };
        let result = bytes
            .map_err(|e| e.to_string())
            .and_then(|b| gc::references(&b, |r| self.index.mark(&r)).map_err(|e| e.to_string()));
        if let Err(e) = result {
            self.report.unreadable_manifests += 1;
            tracing::warn!(manifest = %gc::format_digest(d), path = %path.display(), error = %e,
                "cannot read a manifest revision; its blobs may be counted as reclaimable");
        }
    }

    /// `_uploads/<uuid>/`: `startedat` holds the start time (RFC 3339); a cancelled upload
    /// has none left, so the directory's modification time stands in.
    fn uploads(&mut self, dir: &Path) -> Result<(), WalkError> {
        let Some(entries) = list(dir)? else {
            return Ok(());
        };
        for e in entries {
            let e = e.map_err(io_err(dir))?;
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let path = e.path();
            self.report.uploads += 1;
            let started = fs::read_to_string(path.join("startedat"))
                .ok()
                .and_then(|s| {
                    time::OffsetDateTime::parse(
                        s.trim(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .ok()
                })
                .map(SystemTime::from)
                .or_else(|| e.metadata().and_then(|m| m.modified()).ok());
            let age = started
                .and_then(|t| self.opts.now.duration_since(t).ok())
                .unwrap_or_default();
            if age > self.opts.upload_max_age {
                self.report.stale_uploads += 1;
                self.report.upload_bytes += tree_bytes(&path)?;
            }
        }
        Ok(())
    }
}

/// Apparent size of every regular file below `dir` (an upload's data, startedat, hash states).
fn tree_bytes(dir: &Path) -> Result<u64, WalkError> {
    let mut total = 0;
    let Some(entries) = list(dir)? else {
        return Ok(0);
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            total += tree_bytes(&e.path())?;
        } else if t.is_file() {
            match e.metadata() {
                Ok(m) => total += m.len(),
                Err(e) if gone(&e) => {}
                Err(err) => return Err(io_err(&e.path())(err)),
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    struct T(PathBuf);
    impl T {
        fn blob(&self, content: &[u8]) -> String {
            let hex = hex::encode(Sha256::digest(content));
            let d = self
                .0
                .join("docker/registry/v2/blobs/sha256")
                .join(&hex[..2])
                .join(&hex);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("data"), content).unwrap();
            format!("sha256:{hex}")
        }
        fn link(&self, repo: &str, kind: &str, digest: &str, with_link: bool) {
            let d = self
                .0
                .join("docker/registry/v2/repositories")
                .join(repo)
                .join(kind)
                .join("sha256")
                .join(&digest[7..]);
            fs::create_dir_all(&d).unwrap();
            if with_link {
                fs::write(d.join("link"), digest).unwrap();
            }
        }
    }

    #[test]
    fn marks_like_gc_and_trusts_links_not_directories() {
        let dir = tempfile::tempdir().unwrap();
        let t = T(dir.path().to_path_buf());
        let layer = t.blob(b"shared layer");
        let own = t.blob(b"deleted image's own layer");
        let config = t.blob(b"{\"os\":\"linux\"}");
        let m = |c: &str, l: &[&str]| {
            let layers: Vec<String> = l
                .iter()
                .map(|d| format!("{{\"digest\":\"{d}\"}}"))
                .collect();
            format!(
                "{{\"schemaVersion\":2,\"config\":{{\"digest\":\"{c}\"}},\"layers\":[{}]}}",
                layers.join(",")
            )
        };
        let kept = t.blob(m(&config, &[&layer]).as_bytes());
        let deleted = t.blob(m(&config, &[&layer, &own]).as_bytes());
        let index = t.blob(
            format!("{{\"schemaVersion\":2,\"manifests\":[{{\"digest\":\"{kept}\"}}]}}").as_bytes(),
        );
        let orphan = t.blob(b"monolithic upload nobody references");
        for d in [&layer, &own, &config] {
            t.link("team/app", "_layers", d, true);
            t.link("team/app/nested", "_layers", d, true);
        }
        t.link("team/app", "_manifests/revisions", &kept, true);
        // A deleted revision leaves its directory without a link.
        t.link("team/app", "_manifests/revisions", &deleted, false);
        t.link("team/app/nested", "_manifests/revisions", &index, true);
        t.link("team/app/nested", "_manifests/revisions", &kept, true);
        let up = dir
            .path()
            .join("docker/registry/v2/repositories/team/app/_uploads/u1");
        fs::create_dir_all(up.join("hashstates/sha256")).unwrap();
        fs::write(up.join("startedat"), "2020-01-01T00:00:00Z").unwrap();
        fs::write(up.join("hashstates/sha256/0"), [0u8; 108]).unwrap();

        let r = walk(
            dir.path(),
            &WalkOptions {
                collect_reclaimable: true,
                ..WalkOptions::default()
            },
        )
        .unwrap();
        assert_eq!(r.blobs, 7);
        let mut expect = vec![own.clone(), deleted.clone(), orphan.clone()];
        expect.sort();
        let mut got = r.reclaimable.clone();
        got.sort();
        assert_eq!(got, expect);
        let size = |d: &str| {
            let hex = &d[7..];
            fs::metadata(
                dir.path()
                    .join("docker/registry/v2/blobs/sha256")
                    .join(&hex[..2])
                    .join(hex)
                    .join("data"),
            )
            .unwrap()
            .len()
        };
        assert_eq!(
            r.reclaimable_bytes,
            size(&own) + size(&deleted) + size(&orphan)
        );
        assert_eq!(r.repositories, 2);
        let app = r
            .top_repositories
            .iter()
            .find(|x| x.name == "team/app")
            .unwrap();
        assert_eq!((app.manifests, app.layers), (1, 3));
        assert!(
            r.top_repositories
                .iter()
                .any(|x| x.name == "team/app/nested")
        );
        assert_eq!(
            (r.uploads, r.stale_uploads, r.upload_bytes),
            (1, 1, 20 + 108)
        );
        assert_eq!(r.unreadable_manifests, 0);

        // A fresh root with nothing pushed yet is empty, not an error.
        let empty = tempfile::tempdir().unwrap();
        let r = walk(empty.path(), &WalkOptions::default()).unwrap();
        assert_eq!((r.blobs, r.reclaimable_blobs, r.repositories), (0, 0, 0));
    }
}
