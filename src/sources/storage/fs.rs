//! The filesystem [`Layout`]: distribution's storage tree under a local `rootdirectory`,
//! listed with one `stat` per blob and directory listings of the repositories.
//!
//! The walk is bound by system-call latency, not by one core, so blob prefixes and
//! repository directories are shared out to a few threads. Existence is decided by
//! `link`/`data` files, never by directories: a deleted manifest or blob leaves its
//! directory behind, empty.

use super::gc::{self, Digest};
use super::walk::{BlobList, Layout, Repository, Upload, WalkError};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

/// Distribution's layout under a filesystem root.
pub struct FsLayout {
    v2: PathBuf,
}

impl FsLayout {
    /// `root` is the registry's `rootdirectory`.
    pub fn new(root: &Path) -> Self {
        FsLayout {
            v2: root.join("docker/registry/v2"),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalkError + '_ {
    move |source| WalkError::Io {
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

/// Threads for the walk: it waits on system calls far more than it computes.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 4)
}

impl Layout for FsLayout {
    /// `blobs/<algorithm>/<2 hex>/<hex>/data`: one `stat` per blob, no listing of the blob
    /// directories themselves.
    fn blobs(&self) -> Result<BlobList, WalkError> {
        let blobs = self.v2.join("blobs");
        let mut prefixes = Vec::new();
        if let Some(algs) = list(&blobs)? {
            for alg in algs {
                let alg = alg.map_err(io_err(&blobs))?;
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
        let chunk = prefixes.len().div_ceil(workers()).max(1);
        let parts: Vec<Result<BlobList, WalkError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = prefixes
                .chunks(chunk)
                .map(|c| scope.spawn(move || index_prefixes(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("blob index thread panicked"))
                .collect()
        });
        let mut out = BlobList::default();
        for part in parts {
            let part = part?;
            out.other += part.other;
            out.other_bytes += part.other_bytes;
            if out.sha256.is_empty() {
                out.sha256 = part.sha256;
            } else {
                out.sha256.extend(part.sha256);
            }
        }
        Ok(out)
    }

    fn repositories(&self, visit: &(dyn Fn(Repository) + Sync)) -> Result<(), WalkError> {
        let queue = WorkQueue::new(self.v2.join("repositories"));
        let results: Vec<Result<(), WalkError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers())
                .map(|_| {
                    let queue = &queue;
                    scope.spawn(move || {
                        while let Some((dir, name)) = queue.pop() {
                            let r = visit_dir(&dir, &name, queue, visit);
                            queue.done();
                            if let Err(e) = r {
                                queue.abort();
                                return Err(e);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("repository walk thread panicked"))
                .collect()
        });
        results.into_iter().collect()
    }

    fn read_blob(&self, d: &Digest, _size: u64) -> Result<Vec<u8>, String> {
        let hex = hex::encode(d);
        let path = self
            .v2
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data");
        fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn describe(&self) -> String {
        self.v2.display().to_string()
    }
}

fn index_prefixes(prefixes: &[(PathBuf, bool)]) -> Result<BlobList, WalkError> {
    let mut part = BlobList::default();
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
            match entry.file_name().to_str().and_then(gc::parse_hex) {
                Some(d) if *sha256 => part.sha256.push((d, size)),
                _ => {
                    part.other += 1;
                    part.other_bytes += size;
                }
            }
        }
    }
    Ok(part)
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

/// A directory under `repositories/`: a repository when it holds `_layers`, and a
/// namespace for nested repositories either way.
fn visit_dir(
    dir: &Path,
    name: &str,
    queue: &WorkQueue,
    visit: &(dyn Fn(Repository) + Sync),
) -> Result<(), WalkError> {
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
    let mut repo = Repository {
        name: name.to_string(),
        has_layers: layers,
        ..Repository::default()
    };
    if uploads {
        repo.uploads = read_uploads(&dir.join("_uploads"))?;
    }
    if layers {
        repo.layers = layer_links(&dir.join("_layers/sha256"))?;
        if manifests {
            repo.revisions = revision_links(&dir.join("_manifests/revisions/sha256"))?;
            repo.tags = tags(&dir.join("_manifests/tags"))?;
        }
    }
    if layers || !repo.uploads.is_empty() {
        visit(repo);
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

/// `_layers/sha256/<hex>/link`: the blob is linked into the repository.
fn layer_links(dir: &Path) -> Result<Vec<Digest>, WalkError> {
    let mut out = Vec::new();
    let Some(entries) = list(dir)? else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let Some(d) = e.file_name().to_str().and_then(gc::parse_hex) else {
            continue;
        };
        let mut link = e.path();
        link.push("link");
        match fs::symlink_metadata(&link) {
            Ok(m) if m.is_file() => out.push(d),
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(io_err(&link)(e)),
        }
    }
    Ok(out)
}

/// Reads a `link` file: the digest it names, `None` when it is missing or not a digest.
fn read_link(link: &Path) -> Result<Option<Digest>, WalkError> {
    match fs::read(link) {
        Ok(t) => Ok(std::str::from_utf8(&t).ok().and_then(gc::parse_digest)),
        Err(e) if gone(&e) || e.kind() == io::ErrorKind::IsADirectory => Ok(None),
        Err(e) => Err(io_err(link)(e)),
    }
}

/// `_manifests/revisions/sha256/<hex>/link`: the directory's digest and the link's target.
fn revision_links(dir: &Path) -> Result<Vec<(Digest, Digest)>, WalkError> {
    let mut out = Vec::new();
    let Some(entries) = list(dir)? else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let Some(name) = e.file_name().to_str().and_then(gc::parse_hex) else {
            continue;
        };
        if let Some(target) = read_link(&e.path().join("link"))? {
            out.push((name, target));
        }
    }
    Ok(out)
}

/// `_manifests/tags/<tag>/current/link`: what each tag points to.
fn tags(dir: &Path) -> Result<Vec<(String, Option<Digest>)>, WalkError> {
    let mut out = Vec::new();
    let Some(entries) = list(dir)? else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let Some(tag) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        out.push((tag, read_link(&e.path().join("current/link"))?));
    }
    Ok(out)
}

/// `_uploads/<uuid>/`: `startedat` holds the start time (RFC 3339); a cancelled upload
/// has none left, so the directory's modification time stands in.
fn read_uploads(dir: &Path) -> Result<Vec<Upload>, WalkError> {
    let mut out = Vec::new();
    let Some(entries) = list(dir)? else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let path = e.path();
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
        out.push(Upload {
            started,
            bytes: tree_bytes(&path)?,
        });
    }
    Ok(out)
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
    use super::super::walk::{WalkOptions, walk};
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
