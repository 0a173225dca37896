//! The S3 requests the storage walk makes: ListObjectsV2 (1,000 keys a page), GetObject,
//! ListMultipartUploads and ListParts. rusty-s3 signs each request (SigV4, as a short-lived
//! presigned URL) and parses the list responses; reqwest's blocking client sends them from
//! the walk's threads. ListMultipartUploads, which rusty-s3 has no action for, is a bucket
//! GET signed by the same signer, and its response is parsed with the same XML crate.
//!
//! Every attempt is counted (what a walk costs). Transport errors, 5xx and 429 are retried
//! three times with capped exponential backoff. Errors say what failed and what to check,
//! and never contain a URL: a presigned URL is a credential for as long as it is valid.

use super::walk::Requests;
// reqwest's message names the URL (here a presigned one, a credential while it is valid) and
// hides the cause in its source chain; this drops the one and spells out the other.
use crate::config::storage::S3Storage;
use crate::sources::registry_api::client::describe;
use backon::{BlockingRetryable, ExponentialBuilder};
use instant_xml::FromXml;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How long a signed request stays valid: long enough for a slow answer, short enough that
/// a URL that escaped somewhere is useless soon.
const SIGNED_FOR: Duration = Duration::from_secs(300);
const TIMEOUT: Duration = Duration::from_secs(30);
const RETRIES: usize = 3;
const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// Without the quotes.
    pub etag: String,
    pub last_modified: Option<SystemTime>,
}

/// An unfinished multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct S3Error {
    pub message: String,
    /// The server answered 404 NoSuchKey (the object went away meanwhile).
    pub not_found: bool,
}

/// A client for one bucket.
pub struct S3Client {
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::blocking::Client,
    /// `s3://bucket at endpoint`, for messages.
    name: String,
    list: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
}

#[derive(FromXml)]
#[xml(rename = "ListMultipartUploadsResult", ns(S3_NS))]
struct UploadsPage {
    #[xml(rename = "IsTruncated")]
    is_truncated: Option<bool>,
    #[xml(rename = "NextKeyMarker")]
    next_key_marker: Option<String>,
    #[xml(rename = "NextUploadIdMarker")]
    next_upload_id_marker: Option<String>,
    uploads: Vec<UploadEntry>,
}

#[derive(FromXml)]
#[xml(rename = "Upload", ns(S3_NS))]
struct UploadEntry {
    #[xml(rename = "Key")]
    key: String,
    #[xml(rename = "UploadId")]
    upload_id: String,
    #[xml(rename = "Initiated")]
    initiated: Option<String>,
}

/// `<Error><Code>…</Code><Message>…</Message></Error>`, which S3 sends without a namespace.
#[derive(FromXml)]
#[xml(rename = "Error")]
struct ErrorBody {
    #[xml(rename = "Code")]
    code: Option<String>,
    #[xml(rename = "Message")]
    message: Option<String>,
}

fn parse_time(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// What to check for an S3 error code.
fn hint(code: &str) -> &'static str {
    match code {
        "SignatureDoesNotMatch" => ": check secret_key",
        "InvalidAccessKeyId" => ": check access_key",
        "AccessDenied" => {
            ": the keys need s3:ListBucket, s3:GetObject and s3:ListBucketMultipartUploads on the bucket"
        }
        "NoSuchBucket" => ": check bucket (and endpoint / region)",
        "RequestTimeTooSkewed" => ": this host's clock is off",
        "PermanentRedirect" | "AuthorizationHeaderMalformed" => ": check region",
        _ => "",
    }
}

/// An answer worth another attempt.
enum Again {
    Status(u16, String),
    Transport(String),
}

impl S3Client {
    pub fn new(cfg: &S3Storage) -> Result<S3Client, S3Error> {
        let err = |message: String| S3Error {
            message,
            not_found: false,
        };
        let style = if cfg.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            cfg.endpoint.clone(),
            style,
            cfg.bucket.clone(),
            cfg.region.clone(),
        )
        .map_err(|e| err(format!("s3://{}: {e}", cfg.bucket)))?;
        let http = reqwest::blocking::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| err(format!("cannot build the HTTP client: {}", describe(e))))?;
        Ok(S3Client {
            bucket,
            credentials: Credentials::new(
                cfg.access_key.value.expose(),
                cfg.secret_key.value.expose(),
            ),
            http,
            name: format!(
                "s3://{} at {}",
                cfg.bucket,
                cfg.endpoint.as_str().trim_end_matches('/')
            ),
            list: AtomicU64::new(0),
            get: AtomicU64::new(0),
            head: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn requests(&self) -> Requests {
        Requests {
            list: self.list.load(Ordering::Relaxed),
            get: self.get.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
        }
    }

    /// Sends the signed GET `url` (counted in `counter`) with retries; the body of a 2xx, at
    /// most `limit` bytes.
    fn send(
        &self,
        what: &str,
        url: reqwest::Url,
        counter: &AtomicU64,
        limit: u64,
    ) -> Result<Vec<u8>, S3Error> {
        let attempt = || -> Result<Result<Vec<u8>, S3Error>, Again> {
            counter.fetch_add(1, Ordering::Relaxed);
            let resp = self
                .http
                .get(url.clone())
                .send()
                .map_err(|e| Again::Transport(describe(e)))?;
            let status = resp.status();
            let body = read_body(resp, limit).map_err(Again::Transport)?;
            if status.is_success() {
                return Ok(Ok(body));
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            if status.is_server_error() || status.as_u16() == 429 {
                return Err(Again::Status(status.as_u16(), text));
            }
            Ok(Err(self.status_error(what, status.as_u16(), &text)))
        };
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(RETRIES);
        match attempt.retry(policy).call() {
            Ok(answer) => answer,
            Err(Again::Status(status, text)) => Err(self.status_error(what, status, &text)),
            Err(Again::Transport(e)) => Err(S3Error {
                message: format!("{}: {what}: cannot reach the endpoint: {e}", self.name),
                not_found: false,
            }),
        }
    }

    fn status_error(&self, what: &str, status: u16, body: &str) -> S3Error {
        let parsed = instant_xml::from_str::<ErrorBody>(body).ok();
        let code = parsed
            .as_ref()
            .and_then(|e| e.code.clone())
            .unwrap_or_default();
        let message = parsed.and_then(|e| e.message).unwrap_or_default();
        let detail = match (code.is_empty(), message.is_empty()) {
            (true, _) => format!("HTTP {status}"),
            (false, true) => format!("HTTP {status} {code}"),
            (false, false) => format!("HTTP {status} {code} ({message})"),
        };
        S3Error {
            message: format!("{}: {what}: {detail}{}", self.name, hint(&code)),
            not_found: status == 404 && code != "NoSuchBucket",
        }
    }

    /// Lists every key under `prefix` (flat, or with `delimiter`), calling `each` for every
    /// object; returns the common prefixes.
    pub fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        each: &mut dyn FnMut(Object),
    ) -> Result<Vec<String>, S3Error> {
        let mut token: Option<String> = None;
        let mut prefixes = Vec::new();
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix);
            action.with_max_keys(1000);
            if let Some(d) = delimiter {
                action.with_delimiter(d);
            }
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let what = format!("ListObjectsV2 of {prefix:?}");
            let body = self.send(&what, action.sign(SIGNED_FOR), &self.list, 64 << 20)?;
            let page =
                ListObjectsV2::parse_response(&String::from_utf8_lossy(&body)).map_err(|e| {
                    S3Error {
                        message: format!("{}: {what}: unreadable answer: {e}", self.name),
                        not_found: false,
                    }
                })?;
            for c in page.contents {
                each(Object {
                    size: c.size,
                    etag: c.etag.trim_matches('"').to_string(),
                    last_modified: parse_time(&c.last_modified),
                    key: c.key,
                });
            }
            prefixes.extend(page.common_prefixes.into_iter().map(|p| p.prefix));
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(prefixes),
            }
        }
    }

    /// The object `key`, at most `limit` bytes.
    pub fn get(&self, key: &str, limit: u64) -> Result<Vec<u8>, S3Error> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.send(&format!("GetObject {key:?}"), url, &self.get, limit)
    }

    /// Unfinished multipart uploads of keys under `prefix` (invisible to ListObjectsV2).
    pub fn multipart_uploads(&self, prefix: &str) -> Result<Vec<MultipartUpload>, S3Error> {
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            // A bucket GET like ListObjectsV2, with the `uploads` subresource instead.
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            let q = action.query_mut();
            q.remove("list-type");
            q.remove("encoding-type");
            q.insert("uploads", "");
            q.insert("prefix", prefix.to_string());
            if let Some((key, id)) = &marker {
                q.insert("key-marker", key.clone());
                q.insert("upload-id-marker", id.clone());
            }
            let what = format!("ListMultipartUploads of {prefix:?}");
            let body = self.send(&what, action.sign(SIGNED_FOR), &self.list, 64 << 20)?;
            let page: UploadsPage = instant_xml::from_str(&String::from_utf8_lossy(&body))
                .map_err(|e| S3Error {
                    message: format!("{}: {what}: unreadable answer: {e}", self.name),
                    not_found: false,
                })?;
            out.extend(page.uploads.into_iter().map(|u| MultipartUpload {
                initiated: u.initiated.as_deref().and_then(parse_time),
                key: u.key,
                upload_id: u.upload_id,
            }));
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (Some(true), Some(k), Some(id)) if !k.is_empty() => marker = Some((k, id)),
                _ => return Ok(out),
            }
        }
    }

    /// The bytes uploaded so far to the multipart upload `upload_id` of `key`.
    pub fn uploaded_bytes(&self, key: &str, upload_id: &str) -> Result<u64, S3Error> {
        let mut total = 0;
        let mut marker = None;
        loop {
            let mut action = self
                .bucket
                .list_parts(Some(&self.credentials), key, upload_id);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let what = format!("ListParts of {key:?}");
            let body = self.send(&what, action.sign(SIGNED_FOR), &self.list, 64 << 20)?;
            let page =
                rusty_s3::actions::ListParts::parse_response(&String::from_utf8_lossy(&body))
                    .map_err(|e| S3Error {
                        message: format!("{}: {what}: unreadable answer: {e}", self.name),
                        not_found: false,
                    })?;
            total += page.parts.iter().map(|p| p.size).sum::<u64>();
            match page.next_part_number_marker {
                Some(m) => marker = Some(m),
                None => return Ok(total),
            }
        }
    }
}

/// At most `limit` bytes of body; more is an error.
fn read_body(resp: reqwest::blocking::Response, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    resp.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("answer larger than {limit} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multipart_uploads_and_errors() {
        let page: UploadsPage = instant_xml::from_str(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>registry</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker><MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated><Upload><Key>docker/registry/v2/repositories/a/_uploads/x/data</Key><UploadId>u1</UploadId><Initiator><ID>i</ID><DisplayName>d</DisplayName></Initiator><StorageClass>STANDARD</StorageClass><Initiated>2026-12-01T21:51:05.000Z</Initiated></Upload><Prefix>docker/</Prefix></ListMultipartUploadsResult>"#,
        )
        .unwrap();
        assert_eq!(page.uploads.len(), 1);
        assert_eq!(page.uploads[0].upload_id, "u1");
        assert!(parse_time(page.uploads[0].initiated.as_deref().unwrap()).is_some());
        assert_eq!(page.is_truncated, Some(true));
        assert_eq!(page.next_key_marker.as_deref(), Some("k2"));
        let e: ErrorBody = instant_xml::from_str(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message><Resource>/registry</Resource><RequestId>1</RequestId></Error>"#,
        )
        .unwrap();
        assert_eq!(e.code.as_deref(), Some("SignatureDoesNotMatch"));
    }
}
