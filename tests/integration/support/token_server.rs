//! A Docker registry token server for bearer-token auth: tests/fixtures/token_server.py on
//! Debian's python3-jwt and python3-cryptography. A [`Registry`](super::Registry) started
//! with [`TokenServer::auth`] challenges for tokens instead of passwords, and regwatch has to
//! fetch and cache them the way a docker client does. Every server has its own ES256 key and
//! self-signed certificate (openssl), knows the same users as the htpasswd registries, and
//! records every token request, so a test can count what regwatch asked for.

use super::proc::{Proc, assert_ok, free_port, require, shared_tempdir};
use super::registry::{ALICE, BOB, TokenAuth};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

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
