//! A real syslog receiver: Debian's `rsyslogd` in the foreground (`-n`) with an `imtcp`
//! input on a free loopback port, plain or TLS (the `gtls` stream driver from
//! `rsyslog-gnutls`, with a test CA made by openssl, optionally requiring a client
//! certificate). Every message is written twice: raw as received (`%rawmsg%`, one per line,
//! in `raw.log`) and as rsyslog's RFC 5424 parser understood it (APP-NAME, MSGID and the
//! structured data, in `parsed.log`). [`Rsyslog::stop`] and [`Rsyslog::start_again`] take it
//! down and bring it back on the same port, appending to the same files.

use super::proc::{Proc, free_port, require};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Rsyslog {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Option<Proc>,
    starts: u32,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and the server and client certificates it signs in `dir`.
pub fn make_test_ca(dir: &Path) -> TestCa {
    require("openssl", "openssl");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=regwatch syslog test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "subjectAltName=DNS:regwatch.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        fs::write(dir.join(format!("{name}.cnf")), ext).unwrap();
        let (key, csr, pem, cnf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.cnf"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &cnf,
                "-out",
                &pem,
            ],
        );
    }
    TestCa {
        dir: dir.to_path_buf(),
    }
}

/// How the test input listens.
pub enum SyslogInput<'a> {
    Tcp,
    /// TLS with the CA's server certificate; `true`: clients must present a certificate
    /// the CA signed.
    Tls(&'a TestCa, bool),
}

impl Rsyslog {
    pub fn start(input: SyslogInput<'_>) -> Rsyslog {
        require("rsyslogd", "rsyslog");
        let dir = tempfile::Builder::new()
            .prefix("regwatch-rsyslog-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let d = dir.path().display().to_string();
        let input_conf = match input {
            SyslogInput::Tcp => format!(
                "module(load=\"imtcp\" MaxSessions=\"50\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"test\")\n"
            ),
            SyslogInput::Tls(ca, client_required) => {
                assert!(
                    Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists()
                        || Path::new("/usr/lib/rsyslog/lmnsd_gtls.so").exists(),
                    "rsyslog's TLS driver is not installed: run `apt-get install -y rsyslog-gnutls` (all test dependencies: scripts/deps.sh)"
                );
                let auth = if client_required {
                    "x509/certvalid"
                } else {
                    "anon"
                };
                format!(
                    "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{ca}\" \
                     DefaultNetstreamDriverCertFile=\"{cert}\" DefaultNetstreamDriverKeyFile=\"{key}\")\n\
                     module(load=\"imtcp\" MaxSessions=\"50\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"{auth}\")\n\
                     input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"test\")\n",
                    ca = ca.ca().display(),
                    cert = ca.dir.join("server.pem").display(),
                    key = ca.dir.join("server.key").display(),
                )
            }
        };
        let conf = format!(
            "global(workDirectory=\"{d}\")\n{input_conf}\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             template(name=\"parsed\" type=\"string\" string=\"%app-name% %msgid% %structured-data%\\n\")\n\
             ruleset(name=\"test\") {{\n\
               action(type=\"omfile\" file=\"{d}/raw.log\" template=\"raw\")\n\
               action(type=\"omfile\" file=\"{d}/parsed.log\" template=\"parsed\")\n\
             }}\n"
        );
        fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
        let mut r = Rsyslog {
            dir,
            port,
            proc: None,
            starts: 0,
        };
        r.start_again();
        r
    }

    /// Starts rsyslogd (again) on the same port and files.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "rsyslog is already running");
        self.starts += 1;
        let d = self.dir.path();
        let mut proc = Proc::spawn(
            "rsyslogd",
            Command::new(require("rsyslogd", "rsyslog"))
                .arg("-n")
                .arg("-f")
                .arg(d.join("rsyslog.conf"))
                .arg("-i")
                .arg(d.join("rsyslogd.pid")),
            &d.join(format!("stdout.{}.log", self.starts)),
            &d.join(format!("stderr.{}.log", self.starts)),
        );
        proc.wait_port(self.port);
        self.proc = Some(proc);
    }

    /// Stops rsyslogd with SIGTERM (it writes what it received, then exits).
    pub fn stop(&mut self) {
        let mut proc = self.proc.take().expect("rsyslog is running");
        proc.signal("TERM");
        proc.wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("rsyslogd did not stop:\n{}", proc.stderr()));
    }

    fn lines(&self, file: &str) -> Vec<String> {
        fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The messages as received, oldest first.
    pub fn raw(&self) -> Vec<String> {
        self.lines("raw.log")
    }

    /// `APP-NAME MSGID STRUCTURED-DATA` of each message, as rsyslog parsed it.
    pub fn parsed(&self) -> Vec<String> {
        self.lines("parsed.log")
    }

    pub fn stderr(&self) -> String {
        self.proc.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }
}

/// The value of SD-PARAM `name` in a message (`name="…"`, escapes undone).
pub fn sd_param(message: &str, name: &str) -> Option<String> {
    let start = message.find(&format!(" {name}=\""))? + name.len() + 3;
    let mut out = String::new();
    let mut chars = message[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}
