//! A real SMTP server for alert and report mail: Debian's aiosmtpd storing every message in
//! a Maildir, so a test reads exactly what was delivered (raw RFC 5322 text, with the
//! X-RcptTo header in which aiosmtpd records the envelope recipients).
//! [`SmtpSink::start_secure`] runs tests/fixtures/smtp_tls.py instead, with STARTTLS or
//! implicit TLS and AUTH, and a CA and server certificate made with openssl for that one
//! server; [`SmtpSink::start_on`] opens a server on a port a daemon was given while nothing
//! listened there, which is how tests check delivery after an outage.

use super::proc::{Proc, free_port, require};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// A mail's text with quoted-printable soft breaks and `=3D` undone, so a test can look for
/// a summary or subject that was wrapped.
pub fn decoded(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}
