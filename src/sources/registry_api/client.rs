//! The OCI distribution API client: auth (Basic, Bearer with cached tokens), bounded
//! concurrency, per-request timeouts, capped exponential backoff.

use super::artifacts;
use super::auth::{self, Challenge};
use super::inventory::{self, ACCEPT, Manifest};
use crate::config::RegistryConfig;
use crate::config::secret::Secret;
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Retries after the first attempt for transport errors, 5xx and 429.
const RETRIES: u32 = 3;
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Largest JSON body read (catalog page, tag list, manifest): a registry answering garbage
/// must not make regwatch allocate without bound.
const MAX_BODY: usize = 16 << 20;
/// A token is renewed this long before it expires, so a request never carries a dead one.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// Most catalog or tag-list pages followed; a registry whose Link never ends is garbage.
const MAX_PAGES: usize = 100_000;
/// Most referrers pages followed for one digest.
const MAX_REFERRER_PAGES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {url}: {detail}")]
    Transport {
        method: Method,
        url: String,
        /// The whole cause chain on one line, without repeating the URL.
        detail: String,
    },
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: authentication refused ({detail})")]
    Unauthorized { url: String, detail: String },
    #[error("{url}: unusable answer: {detail}")]
    Garbage { url: String, detail: String },
    #[error("token server {realm}: {detail}")]
    Token { realm: String, detail: String },
    #[error(transparent)]
    Manifest(#[from] inventory::ManifestError),
}

impl ApiError {
    /// 404: the repository, tag or manifest is gone (a race with a delete, not a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// What the registry says about `/v2/`.
#[derive(Debug)]
pub struct Probe {
    pub duration: Duration,
}

/// A fetched manifest and how it was named.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub manifest: Manifest,
}

struct Token {
    value: Secret,
    expires: Instant,
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    username: Option<String>,
    password: Option<Secret>,
    permits: Semaphore,
    /// The scheme the registry asked for last; learned from the first 401 so later requests
    /// authenticate up front instead of paying a 401 round trip each.
    challenge: Mutex<Option<Challenge>>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, Token>>,
    requests: AtomicU64,
}

pub fn catalog_scope() -> &'static str {
    "registry:catalog:*"
}
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

impl Client {
    pub fn new(cfg: &RegistryConfig) -> Result<Arc<Client>, ApiError> {
        let mut base = Url::parse(&cfg.url).map_err(|e| ApiError::Garbage {
            url: cfg.url.clone(),
            detail: e.to_string(),
        })?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(crate::model::SELF_USER_AGENT)
            .pool_max_idle_per_host(cfg.concurrency)
            .build()
            .map_err(|e| ApiError::Transport {
                method: Method::GET,
                url: cfg.url.clone(),
                detail: describe(e),
            })?;
        Ok(Arc::new(Client {
            http,
            base,
            username: cfg.username.clone(),
            password: cfg.password.as_ref().map(|p| p.value.clone()),
            permits: Semaphore::new(cfg.concurrency),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        }))
    }

    /// HTTP requests sent so far (token requests included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("paths built by regwatch are valid URL references")
    }

    /// `GET /v2/`, one attempt (a health check must report, not hide, a flaky registry).
    pub async fn probe(&self) -> Result<Probe, ApiError> {
        let start = Instant::now();
        let resp = self.send(Method::GET, self.url("v2/"), None, "", 0).await?;
        let url = resp.url().to_string();
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(ApiError::Status {
                method: Method::GET,
                url,
                status,
                body: snippet(&read_body(resp, 4096).await.unwrap_or_default()),
            });
        }
        Ok(Probe {
            duration: start.elapsed(),
        })
    }

    /// Every repository, following the catalog's `Link` pages.
    pub async fn catalog(&self, page_size: usize) -> Result<Vec<String>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Page {
            repositories: Option<Vec<String>>,
        }
        let mut url = self.url(&format!("v2/_catalog?n={page_size}"));
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (page, next): (Page, _) = self.get_json(url.clone(), catalog_scope()).await?;
            out.extend(page.repositories.unwrap_or_default());
            match next {
                Some(n) if n != url => url = n,
                _ => return Ok(out),
            }
        }
        Err(ApiError::Garbage {
            url: url.to_string(),
            detail: format!("catalog pagination did not end after {MAX_PAGES} pages"),
        })
    }

    /// Every tag of `repo` (distribution 2.8 returns them all at once; a registry that
    /// paginates with `Link` works too). A repository with no tags left gives an empty list.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        let scope = pull_scope(repo);
        let mut url = self.url(&format!("v2/{repo}/tags/list"));
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (page, next): (Page, _) = self.get_json(url.clone(), &scope).await?;
            out.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) if n != url => url = n,
                _ => return Ok(out),
            }
        }
        Err(ApiError::Garbage {
            url: url.to_string(),
            detail: format!("tag pagination did not end after {MAX_PAGES} pages"),
        })
    }

    /// `HEAD` a manifest: its digest, without the body (answers "did this tag move?").
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<String, ApiError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .send_retrying(Method::HEAD, url, Some(ACCEPT), &pull_scope(repo))
            .await?;
        let url = resp.url().to_string();
        check_status(Method::HEAD, resp)
            .await?
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| ApiError::Garbage {
                url,
                detail: "HEAD answer has no Docker-Content-Digest".into(),
            })
    }

    /// `GET` a manifest by tag or digest, with the full Accept list.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Fetched, ApiError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .send_retrying(Method::GET, url, Some(ACCEPT), &pull_scope(repo))
            .await?;
        let url = resp.url().to_string();
        let resp = check_status(Method::GET, resp).await?;
        let content_type = header_str(resp.headers(), header::CONTENT_TYPE);
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let body = read_body(resp, MAX_BODY)
            .await
            .map_err(|e| ApiError::Garbage {
                url: url.clone(),
                detail: e,
            })?;
        let computed = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        let digest = match header_digest {
            // Another algorithm (sha512) cannot be checked here; trust the registry.
            Some(d) if d.starts_with("sha256:") && d != computed => {
                return Err(ApiError::Garbage {
                    url,
                    detail: format!(
                        "body digest {computed} does not match Docker-Content-Digest {d}"
                    ),
                });
            }
            Some(d) => d,
            None => computed,
        };
        Ok(Fetched {
            manifest: inventory::parse_manifest(&digest, content_type.as_deref(), &body)?,
        })
    }

    /// The referrers of `digest` from the referrers API, following `Link` pages; `None` when
    /// the registry does not serve the API (distribution 2.8 answers 404 to the route; a
    /// registry that serves it answers an empty index for a digest without referrers).
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<Vec<artifacts::Referrer>>, ApiError> {
        const INDEX: &str = inventory::OCI_INDEX;
        let scope = pull_scope(repo);
        let mut url = self.url(&format!("v2/{repo}/referrers/{digest}"));
        let mut out = Vec::new();
        for _ in 0..MAX_REFERRER_PAGES {
            let resp = self
                .send_retrying(Method::GET, url.clone(), Some(INDEX), &scope)
                .await?;
            if matches!(
                resp.status(),
                StatusCode::NOT_FOUND
                    | StatusCode::METHOD_NOT_ALLOWED
                    | StatusCode::BAD_REQUEST
                    | StatusCode::NOT_IMPLEMENTED
            ) && out.is_empty()
            {
                return Ok(None);
            }
            let (here, body, next) = page_of(resp).await?;
            let page = artifacts::parse_referrers(&body).ok_or_else(|| ApiError::Garbage {
                url: here.to_string(),
                detail: format!("not an OCI index: {}", snippet(&body)),
            })?;
            out.extend(page);
            match next {
                Some(n) if n != url => url = n,
                _ => return Ok(Some(out)),
            }
        }
        Err(ApiError::Garbage {
            url: url.to_string(),
            detail: format!("referrers pagination did not end after {MAX_REFERRER_PAGES} pages"),
        })
    }

    /// `GET` a small blob (a signature payload), at most `limit` bytes, checked against its
    /// digest.
    pub async fn blob(&self, repo: &str, digest: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self
            .send_retrying(Method::GET, url, None, &pull_scope(repo))
            .await?;
        let url = resp.url().to_string();
        let resp = check_status(Method::GET, resp).await?;
        let body = read_body(resp, limit)
            .await
            .map_err(|e| ApiError::Garbage {
                url: url.clone(),
                detail: e,
            })?;
        let computed = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if digest.starts_with("sha256:") && computed != digest {
            return Err(ApiError::Garbage {
                url,
                detail: format!("blob digest {computed} does not match"),
            });
        }
        Ok(body)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
        scope: &str,
    ) -> Result<(T, Option<Url>), ApiError> {
        let resp = self
            .send_retrying(Method::GET, url, Some("application/json"), scope)
            .await?;
        let (url, body, next) = page_of(resp).await?;
        let value = serde_json::from_slice(&body).map_err(|e| ApiError::Garbage {
            url: url.to_string(),
            detail: format!("not the expected JSON ({e}): {}", snippet(&body)),
        })?;
        Ok((value, next))
    }

    /// [`send`](Self::send) with retries: transport errors, 5xx and 429 are retried with
    /// capped exponential backoff; anything else is the answer (after the last retry, the
    /// last answer, 5xx included).
    async fn send_retrying(
        &self,
        method: Method,
        url: Url,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<reqwest::Response, ApiError> {
        /// An attempt's outcome that is worth another try.
        enum Again {
            Answer(reqwest::Response),
            Error(ApiError),
        }
        let attempt = || async {
            match self
                .send(method.clone(), url.clone(), accept, scope, 0)
                .await
            {
                Ok(r)
                    if r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    Err(Again::Answer(r))
                }
                Ok(r) => Ok(Ok(r)),
                Err(e @ ApiError::Transport { .. }) => Err(Again::Error(e)),
                Err(e) => Ok(Err(e)),
            }
        };
        let policy = ExponentialBuilder::default()
            .with_min_delay(BACKOFF_FIRST)
            .with_max_delay(BACKOFF_CAP)
            .with_max_times(RETRIES as usize);
        let outcome = attempt
            .retry(policy)
            .notify(|_, wait| tracing::debug!(%url, ?wait, "retrying registry request"))
            .await;
        match outcome {
            Ok(answer) => answer,
            Err(Again::Answer(r)) => Ok(r),
            Err(Again::Error(e)) => Err(e),
        }
    }

    /// One request (plus, on a 401, one more with the credentials the challenge asks for),
    /// holding a concurrency permit.
    async fn send(
        &self,
        method: Method,
        url: Url,
        accept: Option<&str>,
        scope: &str,
        depth: u8,
    ) -> Result<reqwest::Response, ApiError> {
        let mut req = self.http.request(method.clone(), url.clone());
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let known = self.challenge.lock().expect("not poisoned").clone();
        match &known {
            Some(Challenge::Basic) => {
                if let Some(u) = &self.username {
                    req = req.basic_auth(u, self.password.as_ref().map(|p| p.expose()));
                }
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let token = self.token(realm, service.as_deref(), scope, false).await?;
                req = req.bearer_auth(token.expose());
            }
            None => {}
        }
        let resp = {
            let _permit = self.permits.acquire().await.expect("never closed");
            self.requests.fetch_add(1, Ordering::Relaxed);
            req.send().await.map_err(|e| ApiError::Transport {
                method: method.clone(),
                url: url.to_string(),
                detail: describe(e),
            })?
        };
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let offered = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse);
        let Some(challenge) = offered else {
            return Err(ApiError::Unauthorized {
                url: url.to_string(),
                detail: "401 without a Basic or Bearer challenge".into(),
            });
        };
        if depth > 0
            || (known.as_ref() == Some(&challenge)
                && !matches!(challenge, Challenge::Bearer { .. }))
        {
            return Err(ApiError::Unauthorized {
                url: url.to_string(),
                detail: match (&challenge, &self.username) {
                    (_, None) => "the registry wants credentials; set username and password".into(),
                    (Challenge::Basic, Some(u)) => format!("user {u} was refused (Basic)"),
                    (Challenge::Bearer { .. }, Some(u)) => {
                        format!("user {u}'s token does not grant {scope:?}")
                    }
                },
            });
        }
        if let Challenge::Bearer { realm, service, .. } = &challenge {
            // The cached token was refused (revoked, clock skew): fetch a fresh one.
            self.token(realm, service.as_deref(), scope, true).await?;
        }
        *self.challenge.lock().expect("not poisoned") = Some(challenge);
        Box::pin(self.send(method, url, accept, scope, depth + 1)).await
    }

    /// A bearer token for `scope` from the cache, or from the token server.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        refresh: bool,
    ) -> Result<Secret, ApiError> {
        if !refresh {
            let tokens = self.tokens.lock().expect("not poisoned");
            if let Some(t) = tokens.get(scope) {
                if Instant::now() + TOKEN_MARGIN < t.expires {
                    return Ok(t.value.clone());
                }
            }
        }
        let err = |detail: String| ApiError::Token {
            realm: realm.to_string(),
            detail,
        };
        let mut url = Url::parse(realm).map_err(|e| err(format!("invalid realm URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if !scope.is_empty() {
                q.append_pair("scope", scope);
            }
        }
        let mut req = self.http.get(url);
        if let Some(u) = &self.username {
            req = req.basic_auth(u, self.password.as_ref().map(|p| p.expose()));
        }
        let resp = {
            let _permit = self.permits.acquire().await.expect("never closed");
            self.requests.fetch_add(1, Ordering::Relaxed);
            req.send().await.map_err(|e| err(describe(e)))?
        };
        let status = resp.status();
        let body = read_body(resp, 1 << 20).await.map_err(err)?;
        if !status.is_success() {
            return Err(err(format!("HTTP {status}: {}", snippet(&body))));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let a: Answer =
            serde_json::from_slice(&body).map_err(|e| err(format!("not a token answer ({e})")))?;
        let value = a
            .token
            .or(a.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err("answer has no token".into()))?;
        // The distribution token spec: 60 s when the server does not say.
        let ttl = Duration::from_secs(a.expires_in.unwrap_or(60).max(1));
        let value = Secret::new(value);
        self.tokens.lock().expect("not poisoned").insert(
            scope.to_string(),
            Token {
                value: value.clone(),
                expires: Instant::now() + ttl,
            },
        );
        Ok(value)
    }
}

/// One page of a paged answer (catalog, tags, referrers): where it came from, its body (at
/// most [`MAX_BODY`]) and the target of its `Link: rel="next"`.
async fn page_of(resp: reqwest::Response) -> Result<(Url, Vec<u8>, Option<Url>), ApiError> {
    let url = resp.url().clone();
    let resp = check_status(Method::GET, resp).await?;
    let next = resp
        .headers()
        .get(header::LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(next_link)
        .and_then(|l| url.join(&l).ok());
    let body = read_body(resp, MAX_BODY)
        .await
        .map_err(|e| ApiError::Garbage {
            url: url.to_string(),
            detail: e,
        })?;
    Ok((url, body, next))
}

async fn check_status(
    method: Method,
    resp: reqwest::Response,
) -> Result<reqwest::Response, ApiError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let url = resp.url().to_string();
    let body = if method == Method::HEAD {
        String::new()
    } else {
        snippet(&read_body(resp, 4096).await.unwrap_or_default())
    };
    Err(ApiError::Status {
        method,
        url,
        status,
        body,
    })
}

/// "error sending request: client error (Connect): tcp connect error: Connection refused":
/// reqwest's message names the URL and hides the cause in its source chain.
pub(crate) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads at most `limit` bytes of body; more is an error (a registry answering garbage).
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("body larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The start of a body for an error message, on one line.
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The target of `rel="next"` in a `Link` header (RFC 8288), e.g.
/// `</v2/_catalog?last=direct%2Fapp&n=2>; rel="next"`.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r == "next")
            })
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_from_registry_header() {
        // Verbatim from distribution 2.8 (tests/fixtures/api/README.md).
        assert_eq!(
            next_link("</v2/_catalog?last=direct%2Fapp&n=2>; rel=\"next\"").as_deref(),
            Some("/v2/_catalog?last=direct%2Fapp&n=2")
        );
        assert_eq!(
            next_link("<https://r/v2/x/tags/list?n=1&last=a>; rel=prev, <https://r/v2/x/tags/list?n=1&last=b>; rel=next").as_deref(),
            Some("https://r/v2/x/tags/list?n=1&last=b")
        );
        assert_eq!(next_link("garbage"), None);
        let base = Url::parse("http://127.0.0.1:5000/v2/_catalog?n=2").unwrap();
        assert_eq!(
            base.join("/v2/_catalog?last=direct%2Fapp&n=2")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5000/v2/_catalog?last=direct%2Fapp&n=2"
        );
    }

    /// `app` on a loopback port, and a client for it as registry `r`.
    async fn serve(
        app: axum::Router,
    ) -> (Arc<Client>, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let toml = format!("[[registry]]\nname = \"r\"\nurl = \"http://127.0.0.1:{port}\"\n");
        let cfg = crate::config::parse(
            &toml,
            crate::config::Origin::Embedded,
            std::path::Path::new("."),
        )
        .unwrap()
        .registries
        .remove(0);
        (Client::new(&cfg).unwrap(), server)
    }

    /// distribution 2.8 ignores `n` on tags/list (so the integration tests cannot page
    /// it); Harbor and others page with `Link`. One local server plays such a registry.
    #[tokio::test]
    async fn tags_follow_link_pages_to_the_end() {
        use axum::extract::Query;
        use axum::response::IntoResponse;
        use std::collections::HashMap;
        const ALL: [&str; 5] = ["1.0", "1.1", "2.0", "latest", "nightly"];
        async fn tags(Query(q): Query<HashMap<String, String>>) -> axum::response::Response {
            let n: usize = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(2);
            let start = q
                .get("last")
                .map(|l| ALL.iter().position(|t| t == l).unwrap() + 1)
                .unwrap_or(0);
            let page = &ALL[start..(start + n).min(ALL.len())];
            let body = serde_json::json!({ "name": "team/app", "tags": page }).to_string();
            let mut headers = axum::http::HeaderMap::new();
            if start + n < ALL.len() {
                let link = format!(
                    "</v2/team/app/tags/list?last={}&n={n}>; rel=\"next\"",
                    page.last().unwrap()
                );
                headers.insert(header::LINK, link.parse().unwrap());
            }
            (headers, body).into_response()
        }
        let app = axum::Router::new().route("/v2/team/app/tags/list", axum::routing::get(tags));
        let (client, server) = serve(app).await;
        assert_eq!(client.tags("team/app").await.unwrap(), ALL);
        // One request per page of two: three pages.
        assert_eq!(client.requests(), 3);
        server.abort();
    }

    /// distribution 2.8 has no referrers API (the integration tests use its tag schema);
    /// Harbor, zot and distribution 3 serve it, paged with `Link`. One local server plays
    /// such a registry for the referrers call.
    #[tokio::test]
    async fn referrers_follow_pages_and_a_404_means_not_served() {
        use axum::extract::{Path as UrlPath, Query};
        use axum::response::IntoResponse;
        use std::collections::HashMap;
        const SUBJECT: &str =
            "sha256:4b2b1cbb1c1c4bd1e2b1ebd1a8d5f7f0b7c0a3e1f9d2c6b4a8e7f6d5c4b3a291";
        let entry = |n: u8, t: &str| {
            serde_json::json!({"mediaType": inventory::OCI_MANIFEST, "size": 9,
                "digest": format!("sha256:{}", hex::encode([n; 32])), "artifactType": t})
        };
        let pages = [
            vec![
                entry(1, artifacts::COSIGN_SIG_ARTIFACT),
                entry(2, "application/spdx+json"),
            ],
            vec![entry(3, "application/vnd.cncf.notary.signature")],
        ];
        let referrers = move |UrlPath((repo, digest)): UrlPath<(String, String)>,
                              Query(q): Query<HashMap<String, String>>| {
            let pages = pages.clone();
            async move {
                if repo != "served" {
                    return (StatusCode::NOT_FOUND, "404 page not found").into_response();
                }
                assert_eq!(digest, SUBJECT);
                let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
                let body = serde_json::json!({"schemaVersion": 2,
                    "mediaType": inventory::OCI_INDEX, "manifests": pages[page]});
                let mut headers = axum::http::HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, inventory::OCI_INDEX.parse().unwrap());
                if page == 0 {
                    let link = format!("</v2/served/referrers/{digest}?page=1>; rel=\"next\"");
                    headers.insert(header::LINK, link.parse().unwrap());
                }
                (headers, body.to_string()).into_response()
            }
        };
        let app = axum::Router::new().route(
            "/v2/{repo}/referrers/{digest}",
            axum::routing::get(referrers),
        );
        let (client, server) = serve(app).await;
        let found = client.referrers("served", SUBJECT).await.unwrap().unwrap();
        let kinds: Vec<artifacts::Kind> = found.iter().map(|r| r.kind()).collect();
        assert_eq!(
            kinds,
            [
                artifacts::Kind::Signature,
                artifacts::Kind::Sbom,
                artifacts::Kind::Signature
            ]
        );
        assert_eq!(client.referrers("plain", SUBJECT).await.unwrap(), None);
        server.abort();
    }
}
