//! Classifies a registry API request (method, path, status) into what it did and how it
//! went, without allocating: the repository and reference borrow from the path.
//!
//! Routes are matched from the end of the path, as distribution's router effectively does:
//! repository names nest and may even contain a `blobs` or `manifests` component, but a
//! reference or digest never contains `/`.

/// What the request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GET/HEAD of a manifest, GET of a blob. A manifest HEAD is a pull: clients resolve
    /// tags with it (and a 404 there is a pull that failed).
    Pull,
    /// HEAD of a blob: a pusher asking whether the registry has a layer before uploading
    /// it (404 for a new layer, 200 for a known one). Neither a pull nor a failure.
    Check,
    /// Blob upload steps (POST/PATCH/PUT) and manifest PUT.
    Push,
    /// DELETE of a manifest or blob.
    Delete,
    Catalog,
    Tags,
    /// `/v2/` version check.
    Ping,
    Other,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Pull => "pull",
            Operation::Check => "check",
            Operation::Push => "push",
            Operation::Delete => "delete",
            Operation::Catalog => "catalog",
            Operation::Tags => "tags",
            Operation::Ping => "ping",
            Operation::Other => "other",
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// 1xx, 2xx, 3xx.
    Ok,
    /// 401 although credentials (a user name) were sent: a failed login.
    AuthFailure,
    /// 401 without credentials: the normal first step of every client, not a failure.
    Challenge,
    /// 403, 404, 5xx and every other status.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::AuthFailure => "auth_failure",
            Outcome::Challenge => "challenge",
            Outcome::Failed => "failed",
        }
    }
}

/// The API route, named like the registry's `handler` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    /// `POST /v2/<name>/blobs/uploads/` (start, or cross-repository mount).
    BlobUpload,
    /// `/v2/<name>/blobs/uploads/<uuid>`.
    BlobUploadChunk,
    /// Not a distribution API route (the registry answers `404 page not found`).
    Unknown,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags => "tags",
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::BlobUpload => "blob_upload",
            Route::BlobUploadChunk => "blob_upload_chunk",
            Route::Unknown => "unknown",
        }
    }
}

/// The classification of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified<'a> {
    pub operation: Operation,
    pub outcome: Outcome,
    pub route: Route,
    /// `team/app` for every route under a repository.
    pub repository: Option<&'a str>,
    /// Manifest tag or digest, blob digest, or upload UUID.
    pub reference: Option<&'a str>,
}

impl<'a> Classified<'a> {
    /// The reference when it is a digest (`algorithm:hex`).
    pub fn digest(&self) -> Option<&'a str> {
        self.reference
            .filter(|r| matches!(self.route, Route::Manifest | Route::Blob) && r.contains(':'))
    }

    /// The reference when it is a manifest tag.
    pub fn tag(&self) -> Option<&'a str> {
        self.reference
            .filter(|r| self.route == Route::Manifest && !r.contains(':'))
    }
}

/// Outcome of a status; `user_present` tells a failed login from a challenge on 401.
pub fn outcome(status: u16, user_present: bool) -> Outcome {
    match status {
        100..=399 => Outcome::Ok,
        401 if user_present => Outcome::AuthFailure,
        401 => Outcome::Challenge,
        _ => Outcome::Failed,
    }
}

/// The route, repository and reference of a request path (query ignored).
pub fn route(path: &str) -> (Route, Option<&str>, Option<&str>) {
    // Byte searches (the delimiters are ASCII, so the cuts are char boundaries): the
    // char-pattern searches of `str` were a tenth of a log line's parse.
    let path = match memchr::memchr2(b'?', b'#', path.as_bytes()) {
        Some(q) => &path[..q],
        None => path,
    };
    let Some(rest) = path.strip_prefix("/v2") else {
        return (Route::Unknown, None, None);
    };
    let rest = match rest {
        "" | "/" => return (Route::Base, None, None),
        _ => match rest.strip_prefix('/') {
            Some(r) => r,
            None => return (Route::Unknown, None, None),
        },
    };
    if rest == "_catalog" {
        return (Route::Catalog, None, None);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return named(Route::Tags, name, None);
    }
    // `rest` is `<name>/<kind>/<last>`; `<name>` must be non-empty.
    let Some((head, last)) = split_last(rest) else {
        return (Route::Unknown, None, None);
    };
    let Some((name, kind)) = split_last(head) else {
        return (Route::Unknown, None, None);
    };
    match kind {
        "manifests" if !last.is_empty() => named(Route::Manifest, name, Some(last)),
        "blobs" if !last.is_empty() => named(Route::Blob, name, Some(last)),
        "uploads" => match name.strip_suffix("/blobs") {
            Some(name) if last.is_empty() => named(Route::BlobUpload, name, None),
            Some(name) => named(Route::BlobUploadChunk, name, Some(last)),
            None => (Route::Unknown, None, None),
        },
        _ => (Route::Unknown, None, None),
    }
}

/// `s` split at its last `/`.
fn split_last(s: &str) -> Option<(&str, &str)> {
    let slash = memchr::memrchr(b'/', s.as_bytes())?;
    Some((&s[..slash], &s[slash + 1..]))
}

fn named<'a>(
    route: Route,
    name: &'a str,
    reference: Option<&'a str>,
) -> (Route, Option<&'a str>, Option<&'a str>) {
    if name.is_empty()
        || name.starts_with('/')
        || name.ends_with('/')
        || name.as_bytes().windows(2).any(|w| w == b"//")
    {
        (Route::Unknown, None, None)
    } else {
        (route, Some(name), reference)
    }
}

/// Classifies one request. `method` is compared case-insensitively.
pub fn classify<'a>(
    method: &str,
    path: &'a str,
    status: u16,
    user_present: bool,
) -> Classified<'a> {
    let (route, repository, reference) = route(path);
    let is = |m: &str| method.eq_ignore_ascii_case(m);
    let read = is("GET") || is("HEAD");
    let operation = match route {
        Route::Base if read => Operation::Ping,
        Route::Catalog if read => Operation::Catalog,
        Route::Tags if read => Operation::Tags,
        Route::Blob if is("HEAD") => Operation::Check,
        Route::Manifest | Route::Blob if read => Operation::Pull,
        Route::Manifest | Route::Blob if is("DELETE") => Operation::Delete,
        Route::Manifest if is("PUT") => Operation::Push,
        Route::BlobUpload if is("POST") => Operation::Push,
        Route::BlobUploadChunk if is("PATCH") || is("PUT") => Operation::Push,
        _ => Operation::Other,
    };
    Classified {
        operation,
        outcome: outcome(status, user_present),
        route,
        repository,
        reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:dd78d3e88a60942b6d38a58949ad297c4aef438c28f8cf76aaa484fccb4db1b1";

    fn op(
        method: &str,
        path: &str,
    ) -> (Operation, Route, Option<&'static str>, Option<&'static str>) {
        // Leak is fine in tests: it lets the table below hold &'static results.
        let path: &'static str = Box::leak(path.to_owned().into_boxed_str());
        let c = classify(method, path, 200, true);
        (c.operation, c.route, c.repository, c.reference)
    }

    #[test]
    fn operations_from_real_paths() {
        use Operation::*;
        let d = DIGEST;
        let cases = [
            ("GET", "/v2/", (Ping, Route::Base, None, None)),
            ("GET", "/v2", (Ping, Route::Base, None, None)),
            (
                "GET",
                "/v2/_catalog?n=2&last=tools%2Ftool",
                (Catalog, Route::Catalog, None, None),
            ),
            (
                "GET",
                "/v2/team/app/tags/list?n=1",
                (Tags, Route::Tags, Some("team/app"), None),
            ),
            (
                "GET",
                "/v2/team/app/manifests/1.1",
                (Pull, Route::Manifest, Some("team/app"), Some("1.1")),
            ),
            (
                "HEAD",
                "/v2/team/app/manifests/1.1",
                (Pull, Route::Manifest, Some("team/app"), Some("1.1")),
            ),
            (
                "PUT",
                "/v2/bobs/tool/manifests/0.2",
                (Push, Route::Manifest, Some("bobs/tool"), Some("0.2")),
            ),
            (
                "DELETE",
                &format!("/v2/team/app/manifests/{d}"),
                (Delete, Route::Manifest, Some("team/app"), Some(d)),
            ),
            (
                "HEAD",
                &format!("/v2/team/base/blobs/{d}"),
                (Check, Route::Blob, Some("team/base"), Some(d)),
            ),
            (
                "GET",
                &format!("/v2/team/base/blobs/{d}"),
                (Pull, Route::Blob, Some("team/base"), Some(d)),
            ),
            (
                "DELETE",
                &format!("/v2/scratch/doomed/blobs/{d}"),
                (Delete, Route::Blob, Some("scratch/doomed"), Some(d)),
            ),
            (
                "POST",
                "/v2/team/base/blobs/uploads/",
                (Push, Route::BlobUpload, Some("team/base"), None),
            ),
            (
                "POST",
                "/v2/scratch/mounted/blobs/uploads/?mount=sha256:aa&from=team/base",
                (Push, Route::BlobUpload, Some("scratch/mounted"), None),
            ),
            (
                "PATCH",
                "/v2/team/base/blobs/uploads/d9a0e92d-d8b0-43b1-9121-1c5e27f52aa4?_state=yAh%3D",
                (
                    Push,
                    Route::BlobUploadChunk,
                    Some("team/base"),
                    Some("d9a0e92d-d8b0-43b1-9121-1c5e27f52aa4"),
                ),
            ),
            (
                "PUT",
                "/v2/team/base/blobs/uploads/d9a0e92d?_state=x&digest=sha256%3A868b",
                (
                    Push,
                    Route::BlobUploadChunk,
                    Some("team/base"),
                    Some("d9a0e92d"),
                ),
            ),
            (
                "GET",
                "/v2/team/base/blobs/uploads/d9a0e92d",
                (
                    Other,
                    Route::BlobUploadChunk,
                    Some("team/base"),
                    Some("d9a0e92d"),
                ),
            ),
            (
                "DELETE",
                "/v2/team/base/blobs/uploads/d9a0e92d",
                (
                    Other,
                    Route::BlobUploadChunk,
                    Some("team/base"),
                    Some("d9a0e92d"),
                ),
            ),
            (
                "GET",
                "/v2/a/b/c/manifests/latest",
                (Pull, Route::Manifest, Some("a/b/c"), Some("latest")),
            ),
            (
                "GET",
                "/v2/app/manifests/latest",
                (Pull, Route::Manifest, Some("app"), Some("latest")),
            ),
            // A repository may be called `manifests`; the route is decided from the end.
            (
                "GET",
                &format!("/v2/x/manifests/blobs/{d}"),
                (Pull, Route::Blob, Some("x/manifests"), Some(d)),
            ),
            (
                "GET",
                "/v2/Team/App/tags/list",
                (Tags, Route::Tags, Some("Team/App"), None),
            ),
            (
                "GET",
                "/v2/team/app/nothing",
                (Other, Route::Unknown, None, None),
            ),
            ("GET", "/", (Other, Route::Unknown, None, None)),
            ("GET", "/v20/x", (Other, Route::Unknown, None, None)),
            (
                "GET",
                "/v2/manifests/latest",
                (Other, Route::Unknown, None, None),
            ),
            (
                "GET",
                "/v2//manifests/latest",
                (Other, Route::Unknown, None, None),
            ),
            ("GET", "/v2/tags/list", (Other, Route::Unknown, None, None)),
            (
                "GET",
                "/v2/a/manifests/",
                (Other, Route::Unknown, None, None),
            ),
            (
                "POST",
                "/v2/team/app/manifests/1.0",
                (Other, Route::Manifest, Some("team/app"), Some("1.0")),
            ),
            ("get", "/v2/", (Ping, Route::Base, None, None)),
        ];
        for (method, path, want) in cases {
            assert_eq!(op(method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn outcomes() {
        let o = |status, user| classify("GET", "/v2/", status, user).outcome;
        assert_eq!(o(200, false), Outcome::Ok);
        assert_eq!(o(307, true), Outcome::Ok);
        assert_eq!(o(401, true), Outcome::AuthFailure);
        assert_eq!(o(401, false), Outcome::Challenge);
        for status in [0, 400, 403, 404, 416, 500, 503, 999] {
            assert_eq!(o(status, true), Outcome::Failed, "{status}");
        }
    }

    #[test]
    fn tag_and_digest() {
        let by_tag = classify("GET", "/v2/team/app/manifests/1.0", 200, false);
        assert_eq!((by_tag.tag(), by_tag.digest()), (Some("1.0"), None));
        let path = format!("/v2/team/app/manifests/{DIGEST}");
        let by_digest = classify("GET", &path, 200, false);
        assert_eq!((by_digest.tag(), by_digest.digest()), (None, Some(DIGEST)));
        let upload = classify("PATCH", "/v2/a/blobs/uploads/uuid", 202, false);
        assert_eq!((upload.tag(), upload.digest()), (None, None));
    }

    #[test]
    fn random_paths_do_not_panic() {
        use crate::formats::log::test_support::XorShift;
        const PIECES: [&str; 12] = [
            "/",
            "v2",
            "blobs",
            "uploads",
            "manifests",
            "tags",
            "list",
            "_catalog",
            "?",
            "é",
            ":",
            "a",
        ];
        let mut rng = XorShift::new(0xc1a55);
        for _ in 0..20_000 {
            let path: String = (0..rng.below(12))
                .map(|_| PIECES[rng.below(PIECES.len())])
                .collect();
            let c = classify("GET", &path, 200, false);
            if let Some(repo) = c.repository {
                assert!(!repo.is_empty() && path.contains(repo), "{path}");
            }
        }
    }

    #[test]
    fn arbitrary_paths_do_not_panic() {
        for path in [
            "",
            "?",
            "/v2?",
            "/v2/?x",
            "/v2/a/",
            "/v2/a/blobs/uploads",
            "/v2/a//",
            "//",
            "/v2/é/ü/manifests/ä",
        ] {
            let _ = classify("GET", path, 200, false);
        }
    }

    #[test]
    fn blob_heads_are_existence_checks_and_manifest_heads_are_pulls() {
        // What skopeo sends while pushing: a HEAD per layer, 404 for a new one.
        let blob = format!("/v2/team/app/blobs/{DIGEST}");
        for status in [200, 404, 307] {
            let c = classify("HEAD", &blob, status, true);
            assert_eq!(c.operation, Operation::Check, "{status}");
        }
        // A tag resolved by HEAD (docker pull, skopeo inspect): a pull, a failed one on 404.
        let manifest = "/v2/team/app/manifests/9.9";
        let c = classify("HEAD", manifest, 404, true);
        assert_eq!((c.operation, c.outcome), (Operation::Pull, Outcome::Failed));
        let c = classify("HEAD", manifest, 500, true);
        assert_eq!((c.operation, c.outcome), (Operation::Pull, Outcome::Failed));
    }

    #[test]
    fn a_blob_get_redirected_to_object_storage_is_a_successful_pull() {
        // distribution on S3 (redirects on, its default there) answers a blob GET with 307
        // to a presigned URL: the client fetches the bytes from the bucket.
        let path = format!("/v2/team/app/blobs/{DIGEST}");
        for (method, status) in [("GET", 307), ("GET", 302)] {
            let c = classify(method, &path, status, true);
            assert_eq!(
                (c.operation, c.outcome, c.route, c.digest()),
                (Operation::Pull, Outcome::Ok, Route::Blob, Some(DIGEST)),
                "{method} {status}"
            );
        }
    }
}
