//! The registry under test: a real `docker-registry serve` (distribution 2.8) configured from
//! scripts/env/registry.yml.in, the template scripts/demo.sh uses too, so the demo and the
//! tests run the same registry. Every instance has its own storage, its own htpasswd file
//! (bcrypt, the only hash the registry accepts) with the throwaway users [`ALICE`], who may
//! write, and [`BOB`], who only reads through nginx, and a debug port with Prometheus
//! metrics; optionally it sends notifications to regwatch or uses bearer-token auth against a
//! [`TokenServer`](super::TokenServer). [`Registry::stop`] and [`Registry::restart`] keep the
//! storage and the ports, so a test can take the registry away and bring it back. Like every
//! server here it starts without `AWS_CA_BUNDLE` ([`SCRUBBED_ENV`](super::SCRUBBED_ENV)), with
//! which it panics when configured for S3.

use super::proc::{Proc, free_port, require, shared_tempdir};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Throwaway credentials in every test registry: alice may write, bob only reads (via nginx).
pub const ALICE: (&str, &str) = ("alice", "alice-pass");
pub const BOB: (&str, &str) = ("bob", "bob-pass");
/// Writes the shared bcrypt htpasswd file (the registry accepts bcrypt only).
fn write_htpasswd(path: &Path) {
    require("htpasswd", "apache2-utils");
    let mut text = String::new();
    for (user, pass) in [ALICE, BOB] {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, pass])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.push_str(String::from_utf8(out.stdout).unwrap().trim_end());
        text.push('\n');
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Where the registry POSTs notification envelopes.
    pub notify_url: Option<String>,
    /// More endpoints notified of every event, with the same token (several regwatch
    /// agents on one shared database); `/debug/vars` lists them after `notify_url`.
    pub notify_also: Vec<String>,
    /// Sent as `Authorization: Bearer …` with every notification.
    pub notify_token: Option<String>,
    /// `json`, `text` or `logstash`.
    pub log_format: &'static str,
    /// Bearer-token auth against this token server instead of htpasswd.
    pub token: Option<TokenAuth>,
    /// Storage in an S3 bucket (the s3-aws driver) instead of the filesystem.
    pub s3: Option<S3Backend>,
}

/// The registry's `storage.s3` section.
#[derive(Clone, Debug)]
pub struct S3Backend {
    pub endpoint: String,
    pub bucket: String,
    /// `rootdirectory`, e.g. `/regprefix`.
    pub root: String,
    pub keys: (String, String),
    /// Blob GETs answered 307 to a presigned URL (the driver's default).
    pub redirect: bool,
}

/// The registry's `auth.token` section.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub rootcertbundle: PathBuf,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            notify_url: None,
            notify_also: Vec::new(),
            notify_token: None,
            log_format: "json",
            token: None,
            s3: None,
        }
    }
}

/// Shared with scripts/demo.sh.
const REGISTRY_CONF: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/env/registry.yml.in"
));

/// A real `docker-registry serve` with htpasswd auth.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub debug_port: u16,
    pub options: RegistryOptions,
    proc: Option<Proc>,
}

impl Registry {
    pub fn start(options: RegistryOptions) -> Registry {
        require("docker-registry", "docker-registry");
        let dir = shared_tempdir("regwatch-registry-");
        for d in ["storage", "logs", "auth"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::set_permissions(dir.path().join("auth"), fs::Permissions::from_mode(0o755)).unwrap();
        write_htpasswd(&dir.path().join("auth/htpasswd"));
        let mut reg = Registry {
            dir,
            port: free_port(),
            debug_port: free_port(),
            options,
            proc: None,
        };
        reg.write_config();
        reg.launch();
        reg
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let endpoint = |name: String, url: &String| {
            format!(
                "    - name: {name}\n      url: {url}\n      headers:\n        Authorization: [Bearer {}]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n",
                self.options.notify_token.as_deref().unwrap_or("none")
            )
        };
        let notifications = match &self.options.notify_url {
            Some(url) => {
                let mut text =
                    "notifications:\n  events:\n    includereferences: true\n  endpoints:\n"
                        .to_string()
                        + &endpoint("regwatch".into(), url);
                for (i, url) in self.options.notify_also.iter().enumerate() {
                    text += &endpoint(format!("regwatch-{}", i + 2), url);
                }
                text
            }
            None => String::new(),
        };
        let config = REGISTRY_CONF
            .replace("@FORMAT@", self.options.log_format)
            .replace("@STORAGE@", &format!("{d}/storage"))
            .replace("@PORT@", &self.port.to_string())
            .replace("@DEBUG_PORT@", &self.debug_port.to_string())
            .replace("@HTPASSWD@", &format!("{d}/auth/htpasswd"))
            + &notifications;
        let config = match &self.options.s3 {
            None => config,
            Some(s3) => {
                let fs = format!("  filesystem:\n    rootdirectory: {d}/storage\n");
                assert!(
                    config.contains(&fs),
                    "registry.yml.in changed its storage section"
                );
                config.replace(
                    &fs,
                    &format!(
                        "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: us-east-1\n    regionendpoint: {}\n    bucket: {}\n    rootdirectory: {}\n    forcepathstyle: true\n    secure: false\n    v4auth: true\n  redirect:\n    disable: {}\n",
                        s3.keys.0, s3.keys.1, s3.endpoint, s3.bucket, s3.root, !s3.redirect
                    ),
                )
            }
        };
        let config = match &self.options.token {
            None => config,
            Some(t) => {
                let htpasswd = format!(
                    "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {d}/auth/htpasswd\n"
                );
                assert!(
                    config.contains(&htpasswd),
                    "registry.yml.in changed its auth section"
                );
                config.replace(
                    &htpasswd,
                    &format!(
                        "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                        t.realm,
                        t.service,
                        t.issuer,
                        t.rootcertbundle.display()
                    ),
                )
            }
        };
        fs::write(self.dir.path().join("config.yml"), config).unwrap();
    }

    fn launch(&mut self) {
        let logs = self.dir.path().join("logs");
        let mut p = Proc::spawn(
            "docker-registry",
            Command::new("docker-registry")
                .arg("serve")
                .arg(self.dir.path().join("config.yml")),
            &logs.join("registry-access.log"),
            &logs.join("registry.log"),
        );
        p.wait_port(self.port);
        p.wait_port(self.debug_port);
        self.proc = Some(p);
    }

    /// Stops the registry (SIGKILL), keeping its storage.
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts it again on the same ports with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// `host:port` for skopeo's `docker://` references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
    pub fn htpasswd(&self) -> PathBuf {
        self.dir.path().join("auth/htpasswd")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }
    /// The registry's structured log (stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("logs/registry.log")
    }
    /// The registry's combined access log (stdout).
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("logs/registry-access.log")
    }
}
