//! nginx in front of a [`Registry`]: the proxy most registries sit behind, and the source of
//! the access logs regwatch tails. The configuration comes from scripts/env/nginx.conf.in
//! (shared with scripts/demo.sh) and is checked with `nginx -t` before the server starts.
//! nginx does its own basic auth with the registry's htpasswd and lets `bob` only read,
//! writes a combined and a JSON access log and an error log, and is stopped with SIGTERM
//! rather than SIGKILL so that its master takes its workers with it.

use super::proc::{Proc, free_port, require, shared_tempdir};
use super::registry::Registry;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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
