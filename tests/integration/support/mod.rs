//! Test harness: real servers from Debian packages on free loopback ports, each in its own
//! temporary directory, stopped when dropped. Shared by every integration test.
//!
//! - [`Registry`]: `docker-registry` (distribution 2.8) with htpasswd auth, the debug server
//!   with Prometheus metrics, and optionally notifications to a given URL.
//! - [`Nginx`]: nginx in front of it with its own basic auth (same htpasswd), combined and
//!   JSON access logs, an error log; `bob` is read-only through it.
//! - [`SmtpSink`]: `/usr/bin/python3 -m aiosmtpd` writing a Maildir.
//! - [`Images`]: small OCI images built with `umoci`, pushed and pulled with `skopeo`.
//! - [`Daemon`]: the regwatch binary under test.
//! - [`Alertmanager`]: Debian's `prometheus-alertmanager`, single node; [`WebhookSink`]: a
//!   recording HTTP receiver (webhook, Slack, Teams) that can fail or close on demand.
//!
//! A missing program fails the test with the `apt-get install` line that provides it.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Throwaway credentials in every test registry: alice may write, bob only reads (via nginx).
pub const ALICE: (&str, &str) = ("alice", "alice-pass");
pub const BOB: (&str, &str) = ("bob", "bob-pass");

/// What installs every Debian package the integration tests need.
pub const APT_LINE: &str = "scripts/deps.sh";

/// Fails the test unless `program` is installed, naming the package that provides it.
pub fn require(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "`{program}` is not installed; it comes with the Debian package `{package}`: \
             run `apt-get install -y {package}` (all test dependencies: `{APT_LINE}`)"
        ),
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral loopback port")
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory that other users can traverse (nginx workers run as `nobody`).
pub fn shared_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub stderr_path: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, stdout: &Path, stderr: &Path) -> Proc {
        let out = fs::File::create(stdout).unwrap();
        let err = fs::File::create(stderr).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            stderr_path: stderr.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {} failed", self.name);
    }

    /// Waits up to `limit` for the process to exit; returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < limit {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some((st, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// Waits until `port` accepts connections, failing with the process's stderr if it dies.
    pub fn wait_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if !self.is_running() {
                panic!("{} exited during start-up:\n{}", self.name, self.stderr());
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not open 127.0.0.1:{port} within 20s:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

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
    /// Sent as `Authorization: Bearer …` with every notification.
    pub notify_token: Option<String>,
    /// `json`, `text` or `logstash`.
    pub log_format: &'static str,
    /// Bearer-token auth against this token server instead of htpasswd.
    pub token: Option<TokenAuth>,
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
            notify_token: None,
            log_format: "json",
            token: None,
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
        let notifications = match &self.options.notify_url {
            Some(url) => format!(
                "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: regwatch\n      url: {url}\n      headers:\n        Authorization: [Bearer {}]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n",
                self.options.notify_token.as_deref().unwrap_or("none")
            ),
            None => String::new(),
        };
        let config = REGISTRY_CONF
            .replace("@FORMAT@", self.options.log_format)
            .replace("@STORAGE@", &format!("{d}/storage"))
            .replace("@PORT@", &self.port.to_string())
            .replace("@DEBUG_PORT@", &self.debug_port.to_string())
            .replace("@HTPASSWD@", &format!("{d}/auth/htpasswd"))
            + &notifications;
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

/// Real nginx in front of a [`Registry`], with its own basic auth.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Proc,
}

impl Nginx {
    pub fn start(registry: &Registry) -> Nginx {
        require("nginx", "nginx");
        let dir = shared_tempdir("regwatch-nginx-");
        let d = dir.path().display();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::create_dir_all(dir.path().join("logs")).unwrap();
        let port = free_port();
        let conf = NGINX_CONF
            .replace("@DIR@", &d.to_string())
            .replace("@PORT@", &port.to_string())
            .replace("@UPSTREAM@", &registry.host())
            .replace("@HTPASSWD@", &registry.htpasswd().display().to_string());
        fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let conf_path = dir.path().join("nginx.conf");
        let error_log = dir.path().join("logs/error.log");
        let check = Command::new("nginx")
            .args(["-t", "-q", "-p"])
            .arg(dir.path())
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf_path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut proc = Proc::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(&error_log)
                .arg("-c")
                .arg(&conf_path),
            &dir.path().join("logs/nginx.stdout"),
            &dir.path().join("logs/nginx.stderr"),
        );
        proc.wait_port(port);
        Nginx { dir, port, proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("logs/access.log")
    }
    pub fn access_json_log(&self) -> PathBuf {
        self.dir.path().join("logs/access.json.log")
    }
    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("logs/error.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // nginx's master exits on SIGTERM and takes its workers with it; SIGKILL would
        // orphan them.
        self.proc.signal("TERM");
        let _ = self.proc.wait_exit(Duration::from_secs(5));
    }
}

/// Shared with scripts/demo.sh, so the demo and the tests run the same proxy.
const NGINX_CONF: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/env/nginx.conf.in"
));

/// A real SMTP server (aiosmtpd) storing every message in a Maildir.
pub struct SmtpSink {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Proc,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        Self::start_on(free_port())
    }

    /// On a given port (e.g. one a daemon was configured with while no server listened).
    pub fn start_on(port: u16) -> SmtpSink {
        let python = Path::new("/usr/bin/python3");
        assert!(
            python.is_file(),
            "/usr/bin/python3 is missing: run `apt-get install -y python3 python3-aiosmtpd`"
        );
        let probe = Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .unwrap();
        assert!(
            probe.status.success(),
            "Debian's python3 has no aiosmtpd: run `apt-get install -y python3-aiosmtpd`"
        );
        let dir = tempfile::Builder::new()
            .prefix("regwatch-smtp-")
            .tempdir()
            .unwrap();
        // The Mailbox handler treats an existing directory as a complete Maildir.
        for sub in ["mail/cur", "mail/new", "mail/tmp"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let mut proc = Proc::spawn(
            "aiosmtpd",
            Command::new(python)
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(dir.path().join("mail")),
            &dir.path().join("stdout.log"),
            &dir.path().join("stderr.log"),
        );
        proc.wait_port(port);
        SmtpSink { dir, port, proc }
    }

    /// A server that requires TLS (`mode` "starttls" or "tls" for implicit TLS) and AUTH
    /// as `login`, with a fresh self-signed certificate for 127.0.0.1 (see [`Self::ca`]).
    pub fn start_secure(mode: &str, login: (&str, &str)) -> SmtpSink {
        require("openssl", "openssl");
        let python = Path::new("/usr/bin/python3");
        let dir = tempfile::Builder::new()
            .prefix("regwatch-smtps-")
            .tempdir()
            .unwrap();
        for sub in ["mail/cur", "mail/new", "mail/tmp"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // A CA and a server certificate it signed (webpki refuses a CA certificate used as
        // the server's own).
        let d = dir.path();
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=regwatch test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]);
        let port = free_port();
        let mut proc = Proc::spawn(
            "aiosmtpd-tls",
            Command::new(python)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/smtp_tls.py"
                ))
                .args([mode, &port.to_string()])
                .arg(dir.path().join("mail"))
                .args([&cert, &key])
                .args([login.0, login.1]),
            &dir.path().join("stdout.log"),
            &dir.path().join("stderr.log"),
        );
        proc.wait_port(port);
        SmtpSink { dir, port, proc }
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Every message received so far, as raw RFC 5322 text, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = fs::read_dir(self.dir.path().join("mail/new"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Waits until at least `n` messages arrived.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A Docker registry token server (tests/fixtures/token_server.py, Debian's python3-jwt and
/// python3-cryptography) with its own ES256 key and self-signed certificate (openssl).
pub struct TokenServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Proc,
}

impl TokenServer {
    pub const SERVICE: &'static str = "regwatch-test-registry";
    pub const ISSUER: &'static str = "regwatch-test-issuer";

    pub fn start() -> TokenServer {
        let python = Path::new("/usr/bin/python3");
        assert!(
            python.is_file(),
            "/usr/bin/python3 is missing: run `apt-get install -y python3 python3-jwt python3-cryptography`"
        );
        let probe = Command::new(python)
            .args(["-c", "import jwt, cryptography"])
            .output()
            .unwrap();
        assert!(
            probe.status.success(),
            "Debian's python3 lacks jwt/cryptography: run `apt-get install -y python3-jwt python3-cryptography`"
        );
        require("openssl", "openssl");
        let dir = shared_tempdir("regwatch-token-");
        let key = dir.path().join("token.key");
        let cert = dir.path().join("token.crt");
        let out = Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&key)
            .output()
            .unwrap();
        assert_ok(&out, "openssl ecparam");
        let out = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=regwatch test token issuer",
                "-key",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert_ok(&out, "openssl req -x509");
        fs::set_permissions(&cert, fs::Permissions::from_mode(0o644)).unwrap();
        let port = free_port();
        let users = format!(
            "{{\"{}\": \"{}\", \"{}\": \"{}\"}}",
            ALICE.0, ALICE.1, BOB.0, BOB.1
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/token_server.py");
        let mut proc = Proc::spawn(
            "token_server.py",
            Command::new(python)
                .arg(script)
                .arg(port.to_string())
                .arg(&key)
                .arg(&cert)
                .arg(Self::ISSUER)
                .arg(users)
                .arg(dir.path().join("requests.ndjson")),
            &dir.path().join("stdout.log"),
            &dir.path().join("stderr.log"),
        );
        proc.wait_port(port);
        TokenServer { dir, port, proc }
    }

    /// The registry's `auth.token` section for this server.
    pub fn auth(&self) -> TokenAuth {
        TokenAuth {
            realm: format!("http://127.0.0.1:{}/token", self.port),
            service: Self::SERVICE.into(),
            issuer: Self::ISSUER.into(),
            rootcertbundle: self.dir.path().join("token.crt"),
        }
    }

    /// Every token request so far, one JSON object each (user, service, scopes, status).
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("requests.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Small OCI images in an OCI layout, built with umoci (no Docker engine).
pub struct Images {
    pub dir: tempfile::TempDir,
}

impl Images {
    /// `base-1.0` (two layers), `app-1.0` and `app-1.1` (the base layers plus one own layer
    /// each), `tool-0.1` (unrelated). Content is random, so digests differ per build.
    pub fn build() -> Images {
        require("umoci", "umoci");
        let dir = tempfile::Builder::new()
            .prefix("regwatch-oci-")
            .tempdir()
            .unwrap();
        let layout = dir.path().join("layout");
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let l = |tag: &str| format!("{}:{tag}", layout.display());
        let umoci = |args: &[&str]| {
            let out = Command::new("umoci").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "umoci {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let random_file = |name: &str, len: usize| {
            let mut f = fs::File::create(src.join(name)).unwrap();
            let mut r = fs::File::open("/dev/urandom").unwrap();
            let mut buf = vec![0u8; len];
            r.read_exact(&mut buf).unwrap();
            f.write_all(&buf).unwrap();
            src.join(name).display().to_string()
        };
        umoci(&["init", "--layout", &layout.display().to_string()]);
        umoci(&["new", "--image", &l("base-1.0")]);
        let release = src.join("release");
        fs::write(&release, "NAME=\"regwatch test base\"\n").unwrap();
        umoci(&[
            "insert",
            "--image",
            &l("base-1.0"),
            &release.display().to_string(),
            "/etc/release",
        ]);
        let blob = random_file("base.bin", 64 * 1024);
        umoci(&[
            "insert",
            "--image",
            &l("base-1.0"),
            &blob,
            "/usr/share/base.bin",
        ]);
        umoci(&[
            "config",
            "--image",
            &l("base-1.0"),
            "--os",
            "linux",
            "--architecture",
            "amd64",
        ]);
        for (tag, size) in [("app-1.0", 16 * 1024), ("app-1.1", 24 * 1024)] {
            let f = random_file(tag, size);
            umoci(&[
                "insert",
                "--image",
                &l("base-1.0"),
                "--tag",
                tag,
                &f,
                "/app/app.bin",
            ]);
        }
        umoci(&["new", "--image", &l("tool-0.1")]);
        let f = random_file("tool.bin", 32 * 1024);
        umoci(&["insert", "--image", &l("tool-0.1"), &f, "/usr/bin/tool"]);
        umoci(&[
            "config",
            "--image",
            &l("tool-0.1"),
            "--os",
            "linux",
            "--architecture",
            "amd64",
        ]);
        Images { dir }
    }

    /// `oci:<layout>:<tag>` for skopeo.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.path().join("layout").display())
    }

    /// Adds `name` to the layout: an OCI image index over `base` (amd64) and an arm64
    /// variant of it (same layers, another config, tagged `{base}-arm64`), like
    /// shared/tools/realenv.sh builds. `note` goes into the index's annotations, so two
    /// indexes over the same children can have different digests. Push with
    /// [`skopeo_push_all`]. Returns the index digest.
    pub fn add_multi_platform_index(&self, base: &str, name: &str, note: &str) -> String {
        let layout = self.dir.path().join("layout");
        let index_path = layout.join("index.json");
        let read_index = || -> serde_json::Value {
            serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap()
        };
        let find = |index: &serde_json::Value, tag: &str| {
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
                .cloned()
        };
        let arm = format!("{base}-arm64");
        if find(&read_index(), &arm).is_none() {
            let out = Command::new("umoci")
                .args(["config", "--image"])
                .arg(format!("{}:{base}", layout.display()))
                .args(["--tag", &arm, "--architecture", "arm64"])
                .output()
                .unwrap();
            assert_ok(&out, "umoci config --architecture arm64");
        }
        let mut index = read_index();
        let mut children = Vec::new();
        for (tag, arch) in [(base, "amd64"), (arm.as_str(), "arm64")] {
            let m = find(&index, tag).unwrap();
            children.push(serde_json::json!({
                "mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
                "platform": {"architecture": arch, "os": "linux"}
            }));
        }
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
            "annotations": {"org.opencontainers.image.description": note},
        }))
        .unwrap();
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&body))
        };
        fs::write(layout.join("blobs/sha256").join(&digest), &body).unwrap();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{digest}"),
                "size": body.len(),
                "annotations": {"org.opencontainers.image.ref.name": name}
            }));
        fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        format!("sha256:{digest}")
    }
}

fn skopeo(args: &[&str]) -> Output {
    require("skopeo", "skopeo");
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap()
}

/// Pushes `src` (e.g. [`Images::reference`]) to `host/repo:tag` as `creds`.
pub fn skopeo_push(src: &str, host: &str, repo_tag: &str, creds: (&str, &str)) -> Output {
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{}:{}", creds.0, creds.1),
        src,
        &format!("docker://{host}/{repo_tag}"),
    ])
}

/// [`skopeo_push`] with `--all`: an image index is pushed with every child manifest.
pub fn skopeo_push_all(src: &str, host: &str, repo_tag: &str, creds: (&str, &str)) -> Output {
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{}:{}", creds.0, creds.1),
        src,
        &format!("docker://{host}/{repo_tag}"),
    ])
}

/// Pulls `host/repo:tag` into a `dir:` destination as `creds`.
pub fn skopeo_pull(host: &str, repo_tag: &str, creds: (&str, &str), dest: &Path) -> Output {
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("{}:{}", creds.0, creds.1),
        &format!("docker://{host}/{repo_tag}"),
        &format!("dir:{}", dest.display()),
    ])
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The regwatch binary under test, running `regwatch run --config <dir>/regwatch.toml`.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub proc: Proc,
}

impl Daemon {
    /// Writes `config` (with `{port}` and `{dir}` substituted) and starts the daemon,
    /// waiting for `/readyz`.
    pub fn start(config: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("regwatch-daemon-")
            .tempdir()
            .unwrap();
        Self::start_in(dir, config, &[])
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_on(free_port(), dir, config, env)
    }

    /// Like [`start_in`](Self::start_in) on a given port (e.g. one a registry already sends
    /// notifications to).
    pub fn start_on(
        port: u16,
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        fs::write(dir.path().join("regwatch.toml"), text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regwatch"));
        cmd.arg("run")
            .arg("--config")
            .arg(dir.path().join("regwatch.toml"))
            .current_dir(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn(
            "regwatch",
            &mut cmd,
            &dir.path().join("stdout.log"),
            &dir.path().join("stderr.log"),
        );
        proc.wait_port(port);
        let d = Daemon { dir, port, proc };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(self.port, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("regwatch never became ready:\n{}", self.proc.stderr());
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("regwatch.toml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("regwatch.db")
    }

    /// Stops the daemon with SIGTERM and hands back its directory (config, database).
    pub fn stop(mut self) -> tempfile::TempDir {
        self.proc.signal("TERM");
        self.proc
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("regwatch did not stop on SIGTERM:\n{}", self.proc.stderr()));
        self.dir
    }
}

/// An HTTP request to regwatch with optional bearer token; returns status and body.
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.request(
        method.parse().unwrap(),
        format!("http://127.0.0.1:{port}{path}"),
    );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req
        .send()
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

/// Polls `cond` every 50 ms for up to `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the regwatch binary with `args`; returns exit code, stdout, stderr.
pub fn regwatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regwatch"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sqlite3 DB SQL` (the real CLI), failing the test if it fails.
pub fn sqlite3(db: &Path, sql: &str) -> String {
    require("sqlite3", "sqlite3");
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert_ok(&out, &format!("sqlite3 {sql}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plain HTTP/1.1 GET on loopback; returns status and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().map_err(std::io::Error::other)?))
}

/// `df -B1` for the filesystem holding `path`: (used, available) bytes, as df counts them
/// (available = what an unprivileged writer can still use).
pub fn df(path: &Path) -> (u64, u64) {
    let out = Command::new("df")
        .args(["-B1", "--output=used,avail"])
        .arg(path)
        .output()
        .unwrap();
    assert_ok(&out, "df");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let nums: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("df printed {text:?}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

/// Parses Prometheus text format into (series, value) pairs, failing on malformed lines.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed metric line {l:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// The value of the one series named exactly `series` (with its labels, as rendered).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    parse_metrics(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A real Alertmanager (Debian's prometheus-alertmanager), alone: no cluster peers
/// (`--cluster.listen-address=`), one receiver that sends nothing. Tests read its own API.
pub struct Alertmanager {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Proc,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        Self::start_config(
            "route:\n  receiver: blackhole\n  group_wait: 0s\nreceivers:\n  - name: blackhole\n",
        )
    }

    /// Routing every alert to a webhook at once (group_wait 0s), resolved ones too.
    pub fn start_with_webhook(url: &str) -> Alertmanager {
        Self::start_config(&format!(
            "route:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: \"{url}\"\n        send_resolved: true\n"
        ))
    }

    pub fn start_config(config: &str) -> Alertmanager {
        let bin = require("prometheus-alertmanager", "prometheus-alertmanager");
        let dir = tempfile::Builder::new()
            .prefix("regwatch-am-")
            .tempdir()
            .unwrap();
        fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        let port = free_port();
        let mut proc = Proc::spawn(
            "alertmanager",
            Command::new(bin)
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("alertmanager.yml").display()
                ))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address="),
            &dir.path().join("stdout.log"),
            &dir.path().join("stderr.log"),
        );
        proc.wait_port(port);
        // The port opens before the API is wired up; /-/ready says when it is.
        wait_until(Duration::from_secs(30), "Alertmanager /-/ready", || {
            matches!(http_get(port, "/-/ready"), Ok((200, _)))
        });
        Alertmanager { dir, port, proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts` (Alertmanager lists alerts that are not resolved yet).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(self.port, "/api/v2/alerts").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

/// One request a [`WebhookSink`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names lower-cased.
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A small HTTP server recording every request (webhook, Slack and Teams receivers). It
/// answers 200, or 503 while `failing` is set; [`WebhookSink::stop`] closes the port
/// (connections refused) and [`WebhookSink::start_on`] opens it again.
pub struct WebhookSink {
    pub port: u16,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        Self::start_on(free_port(), Default::default())
    }

    pub fn start_on(
        port: u16,
        received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    ) -> WebhookSink {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s, f) = (received.clone(), stop.clone(), failing.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = std::collections::BTreeMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let status = if f.load(Ordering::Acquire) {
                    "503 Service Unavailable"
                } else {
                    r.lock().unwrap().push(Received {
                        path,
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    "200 OK"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        WebhookSink {
            port,
            received,
            failing,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests were received (and accepted).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.received();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the port; what was received stays in `received`.
    pub fn stop(mut self) -> std::sync::Arc<std::sync::Mutex<Vec<Received>>> {
        self.shutdown();
        self.received.clone()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}
