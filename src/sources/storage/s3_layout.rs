//! The S3 [`Layout`]: distribution's storage layout as the s3-aws driver writes it, one
//! object per file under `[rootdirectory/]docker/registry/v2/`, listed with ListObjectsV2.
//!
//! What costs a request: listing (1,000 keys a page). The digest is in the key of every
//! layer link, revision link and tag index link, so none of them is read. Of a tag only
//! `current/link` has content that matters, and its ETag is the MD5 of that content (a
//! single-part upload without SSE-KMS): the digest among the tag's index links whose MD5
//! matches is the tag's target, no GET needed; otherwise the link is read. Manifest blobs are
//! read when [`super::walk`] asks (and not at all when the cache knows them). Unfinished
//! uploads keep their data in a multipart upload, invisible to ListObjectsV2:
//! ListMultipartUploads finds them and ListParts gives their size.
//!
//! Blobs are listed in 16 parallel ranges (by the first hex digit) and repositories one
//! top-level namespace per job, on a few threads: the walk waits on the network. A
//! namespace's links are held until its listing ends (about 40 bytes a link), so the order
//! in which the server lists keys does not matter.

use super::gc::{self, Digest};
use super::s3::{MultipartUpload, Object, S3Client, S3Error};
use super::walk::{BlobList, Layout, Repository, Requests, Upload, WalkError};
use crate::config::storage::S3Storage;
use md5::{Digest as _, Md5};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Requests in flight at once.
const THREADS: usize = 8;
/// A `current/link` holds a digest; anything longer is not one.
const LINK_LIMIT: u64 = 1024;

pub struct S3Layout {
    client: S3Client,
    /// `[root/]docker/registry/v2/`.
    prefix: String,
    stored: AtomicU64,
}

impl S3Layout {
    pub fn new(cfg: &S3Storage) -> Result<S3Layout, WalkError> {
        Ok(S3Layout {
            client: S3Client::new(cfg).map_err(s3_err)?,
            prefix: cfg.layout_prefix(),
            stored: AtomicU64::new(0),
        })
    }
}

fn s3_err(e: S3Error) -> WalkError {
    WalkError::S3(e.message)
}

/// Runs `f` on every job on up to [`THREADS`] threads; stops at the first error.
fn parallel<T: Send>(
    jobs: Vec<T>,
    f: &(dyn Fn(T) -> Result<(), WalkError> + Sync),
) -> Result<(), WalkError> {
    let queue = Mutex::new(jobs);
    let failed: Mutex<Option<WalkError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                loop {
                    if failed.lock().expect("error lock").is_some() {
                        return;
                    }
                    let Some(job) = queue.lock().expect("job lock").pop() else {
                        return;
                    };
                    if let Err(e) = f(job) {
                        failed.lock().expect("error lock").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner().expect("error lock") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a key under `repositories/` is, for the repository it belongs to.
#[derive(Debug, PartialEq, Eq)]
enum RepoKey<'a> {
    Layer(Digest),
    /// Something else under `_layers` (the directory exists).
    LayersDir,
    Revision(Digest),
    TagCurrent(&'a str),
    TagIndex(&'a str, Digest),
    /// A file of upload `id`; `startedat` is its start marker.
    UploadFile {
        id: &'a str,
        startedat: bool,
    },
    Other,
}

/// Splits a key relative to `repositories/` into the repository name and what the key is.
/// Repository name components never start with `_`, so the first `/_` ends the name.
fn parse_repo_key(rest: &str) -> Option<(&str, RepoKey<'_>)> {
    let i = rest.find("/_")?;
    let (repo, tail) = (&rest[..i], &rest[i + 1..]);
    if repo.is_empty() {
        return None;
    }
    let parts: Vec<&str> = tail.split('/').collect();
    let hex = |h: &str| gc::parse_hex(h);
    let kind = match parts.as_slice() {
        ["_layers", "sha256", h, "link"] => hex(h).map_or(RepoKey::LayersDir, RepoKey::Layer),
        ["_layers", ..] => RepoKey::LayersDir,
        ["_manifests", "revisions", "sha256", h, "link"] => {
            hex(h).map_or(RepoKey::Other, RepoKey::Revision)
        }
        ["_manifests", "tags", tag, "current", "link"] => RepoKey::TagCurrent(tag),
        ["_manifests", "tags", tag, "index", "sha256", h, "link"] => {
            hex(h).map_or(RepoKey::Other, |d| RepoKey::TagIndex(tag, d))
        }
        ["_uploads", id, file @ ..] if !id.is_empty() && !file.is_empty() => RepoKey::UploadFile {
            id,
            startedat: file == ["startedat"],
        },
        _ => RepoKey::Other,
    };
    Some((repo, kind))
}

/// A blob key relative to `blobs/<algorithm>/`: `<2 hex>/<hex>/data`.
fn parse_blob_key(rest: &str) -> Option<&str> {
    let mut parts = rest.split('/');
    let (Some(_), Some(name), Some("data"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(name)
}

/// The tag's target when the ETag of its `current/link` is the MD5 of one of its index
/// digests (the link's content is the digest's text).
fn resolve_by_etag(etag: &str, index: &[Digest]) -> Option<Digest> {
    index.iter().copied().find(|d| {
        let md5 = Md5::digest(gc::format_digest(d).as_bytes());
        hex::encode(md5).eq_ignore_ascii_case(etag)
    })
}

/// One repository's keys, gathered while its namespace is listed.
#[derive(Default)]
struct Gathered {
    has_layers: bool,
    layers: Vec<Digest>,
    revisions: Vec<Digest>,
    /// Tag → ETag of its `current/link`.
    current: HashMap<String, String>,
    index: HashMap<String, Vec<Digest>>,
    uploads: HashMap<String, Pending>,
}

/// One upload's objects and parts.
#[derive(Default)]
struct Pending {
    startedat: Option<SystemTime>,
    earliest: Option<SystemTime>,
    bytes: u64,
    multipart: Vec<MultipartUpload>,
}

impl Pending {
    fn seen(&mut self, t: Option<SystemTime>) {
        if let Some(t) = t {
            self.earliest = Some(self.earliest.map_or(t, |e| e.min(t)));
        }
    }
}

impl Gathered {
    fn add(&mut self, kind: RepoKey<'_>, o: &Object) {
        match kind {
            RepoKey::Layer(d) => {
                self.has_layers = true;
                self.layers.push(d);
            }
            RepoKey::LayersDir => self.has_layers = true,
            RepoKey::Revision(d) => self.revisions.push(d),
            RepoKey::TagCurrent(tag) => {
                self.current.insert(tag.to_string(), o.etag.clone());
            }
            RepoKey::TagIndex(tag, d) => self.index.entry(tag.to_string()).or_default().push(d),
            RepoKey::UploadFile { id, startedat } => {
                let u = self.uploads.entry(id.to_string()).or_default();
                u.bytes += o.size;
                u.seen(o.last_modified);
                if startedat {
                    // Written once when the upload starts: its time is the start time.
                    u.startedat = o.last_modified;
                }
            }
            RepoKey::Other => {}
        }
    }
}

impl S3Layout {
    fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        each: &mut dyn FnMut(Object),
    ) -> Result<Vec<String>, WalkError> {
        self.client
            .list(prefix, delimiter, &mut |o| {
                self.stored.fetch_add(o.size, Ordering::Relaxed);
                each(o)
            })
            .map_err(s3_err)
    }

    /// Lists one namespace (`repositories/<top>/`) and hands over its repositories.
    fn namespace(
        &self,
        top: &str,
        multipart: Vec<MultipartUpload>,
        visit: &(dyn Fn(Repository) + Sync),
    ) -> Result<(), WalkError> {
        let base = format!("{}repositories/", self.prefix);
        let mut repos: HashMap<String, Gathered> = HashMap::new();
        self.list(&format!("{base}{top}"), None, &mut |o| {
            let Some((repo, kind)) = o.key.strip_prefix(&base).and_then(parse_repo_key) else {
                return;
            };
            let repo = repo.to_string();
            repos.entry(repo).or_default().add(kind, &o);
        })?;
        for m in multipart {
            let Some((repo, RepoKey::UploadFile { id, .. })) =
                m.key.strip_prefix(&base).and_then(parse_repo_key)
            else {
                continue;
            };
            let (repo, id) = (repo.to_string(), id.to_string());
            let bytes = self
                .client
                .uploaded_bytes(&m.key, &m.upload_id)
                .map_err(s3_err)?;
            self.stored.fetch_add(bytes, Ordering::Relaxed);
            let u = repos
                .entry(repo)
                .or_default()
                .uploads
                .entry(id)
                .or_default();
            u.bytes += bytes;
            u.seen(m.initiated);
            u.multipart.push(m);
        }
        for (name, g) in repos {
            visit(self.repository(&base, name, g)?);
        }
        Ok(())
    }

    fn repository(&self, base: &str, name: String, g: Gathered) -> Result<Repository, WalkError> {
        let mut tags = Vec::with_capacity(g.current.len());
        for (tag, etag) in g.current {
            let index = g.index.get(&tag).map(Vec::as_slice).unwrap_or_default();
            let target = match resolve_by_etag(&etag, index) {
                Some(d) => Some(d),
                // SSE-KMS or a multipart upload: the ETag is not the content's MD5.
                None => {
                    let key = format!("{base}{name}/_manifests/tags/{tag}/current/link");
                    match self.client.get(&key, LINK_LIMIT) {
                        Ok(body) => std::str::from_utf8(&body).ok().and_then(gc::parse_digest),
                        Err(e) if e.not_found => None,
                        Err(e) => return Err(s3_err(e)),
                    }
                }
            };
            tags.push((tag, target));
        }
        let uploads = g
            .uploads
            .into_values()
            .map(|u| Upload {
                started: u.startedat.or(u.earliest),
                bytes: u.bytes,
            })
            .collect();
        Ok(Repository {
            name,
            has_layers: g.has_layers,
            layers: g.layers,
            revisions: g.revisions.into_iter().map(|d| (d, d)).collect(),
            tags,
            uploads,
        })
    }
}

impl Layout for S3Layout {
    fn blobs(&self) -> Result<BlobList, WalkError> {
        let blobs = format!("{}blobs/", self.prefix);
        let algorithms = self.list(&blobs, Some("/"), &mut |_| {})?;
        let mut jobs = Vec::new();
        for alg in algorithms {
            for h in "0123456789abcdef".chars() {
                jobs.push((alg.clone(), format!("{alg}{h}")));
            }
        }
        let out = Mutex::new(BlobList::default());
        parallel(jobs, &|(alg, range)| {
            let sha256 = alg.ends_with("/sha256/");
            let mut part = BlobList::default();
            self.list(&range, None, &mut |o| {
                let Some(name) = o.key.strip_prefix(alg.as_str()).and_then(parse_blob_key) else {
                    return;
                };
                match gc::parse_hex(name) {
                    Some(d) if sha256 => part.sha256.push((d, o.size)),
                    _ => {
                        part.other += 1;
                        part.other_bytes += o.size;
                    }
                }
            })?;
            let mut all = out.lock().expect("blob list lock");
            all.sha256.extend(part.sha256);
            all.other += part.other;
            all.other_bytes += part.other_bytes;
            Ok(())
        })?;
        Ok(out.into_inner().expect("blob list lock"))
    }

    fn repositories(&self, visit: &(dyn Fn(Repository) + Sync)) -> Result<(), WalkError> {
        let base = format!("{}repositories/", self.prefix);
        let mut by_top: HashMap<String, Vec<MultipartUpload>> = HashMap::new();
        for m in self.client.multipart_uploads(&base).map_err(s3_err)? {
            if let Some(top) = m.key.strip_prefix(&base).and_then(|r| r.split('/').next()) {
                by_top.entry(format!("{top}/")).or_default().push(m);
            }
        }
        let mut tops: Vec<String> = self
            .list(&base, Some("/"), &mut |_| {})?
            .into_iter()
            .filter_map(|p| p.strip_prefix(&base).map(str::to_string))
            .collect();
        for top in by_top.keys() {
            if !tops.contains(top) {
                tops.push(top.clone());
            }
        }
        let jobs: Vec<(String, Vec<MultipartUpload>)> = tops
            .into_iter()
            .map(|t| {
                let m = by_top.remove(&t).unwrap_or_default();
                (t, m)
            })
            .collect();
        parallel(jobs, &|(top, multipart)| {
            self.namespace(&top, multipart, visit)
        })
    }

    fn read_blob(&self, d: &Digest, size: u64) -> Result<Vec<u8>, String> {
        let hex = hex::encode(d);
        let key = format!("{}blobs/sha256/{}/{hex}/data", self.prefix, &hex[..2]);
        self.client.get(&key, size).map_err(|e| e.message)
    }

    fn describe(&self) -> String {
        self.client.name().to_string()
    }

    fn requests(&self) -> Requests {
        self.client.requests()
    }

    fn stored_bytes(&self) -> Option<u64> {
        Some(self.stored.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "dd78d3e88a60942b6d38a58949ad297c4aef438c28f8cf76aaa484fccb4db1b1";

    #[test]
    fn keys_name_their_repository_and_digest() {
        let d = gc::parse_hex(HEX).unwrap();
        let k = |s: String| parse_repo_key(Box::leak(s.into_boxed_str()));
        assert_eq!(
            k(format!("team/app/_layers/sha256/{HEX}/link")),
            Some(("team/app", RepoKey::Layer(d)))
        );
        // A repository nested below another, named like a reserved word.
        assert_eq!(
            k(format!(
                "team/app/0sub/_manifests/revisions/sha256/{HEX}/link"
            )),
            Some(("team/app/0sub", RepoKey::Revision(d)))
        );
        assert_eq!(
            k("a/_manifests/tags/1.0/current/link".into()),
            Some(("a", RepoKey::TagCurrent("1.0")))
        );
        assert_eq!(
            k(format!("a/_manifests/tags/v1/index/sha256/{HEX}/link")),
            Some(("a", RepoKey::TagIndex("v1", d)))
        );
        assert_eq!(
            k("a/_uploads/5f0c/startedat".into()),
            Some((
                "a",
                RepoKey::UploadFile {
                    id: "5f0c",
                    startedat: true
                }
            ))
        );
        assert_eq!(
            k("a/_uploads/5f0c/hashstates/sha256/0".into()),
            Some((
                "a",
                RepoKey::UploadFile {
                    id: "5f0c",
                    startedat: false
                }
            ))
        );
        assert_eq!(
            k("a/_layers/sha256/short/link".into()),
            Some(("a", RepoKey::LayersDir))
        );
        assert_eq!(k("nothing/here".into()), None);
        assert_eq!(
            parse_blob_key(&format!("dd/{HEX}/data")),
            Some(HEX),
            "blobs/<alg>/<2 hex>/<hex>/data"
        );
        assert_eq!(parse_blob_key(&format!("dd/{HEX}/data/x")), None);
    }

    #[test]
    fn a_tag_resolves_by_the_etag_of_its_current_link() {
        let a = gc::parse_hex(HEX).unwrap();
        let b = [7u8; 32];
        // What S3 answers as the ETag of an object holding "sha256:<HEX>".
        let etag = hex::encode(Md5::digest(format!("sha256:{HEX}").as_bytes()));
        assert_eq!(resolve_by_etag(&etag, &[b, a]), Some(a));
        assert_eq!(resolve_by_etag(&etag.to_uppercase(), &[a]), Some(a));
        // A multipart ETag ("<md5>-2") or SSE-KMS: no match, the link is read instead.
        assert_eq!(resolve_by_etag(&format!("{etag}-2"), &[a]), None);
        assert_eq!(resolve_by_etag(&etag, &[b]), None);
    }
}
