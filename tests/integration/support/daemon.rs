//! regwatch itself. [`Daemon`] runs the binary cargo built for this test run
//! (`regwatch run`) in a directory of its own, with a config whose `{port}` and `{dir}` are
//! filled in, and returns once `/readyz` answers ([`Daemon::launch_on`]: once it listens);
//! [`Daemon::stop`] stops it with SIGTERM and
//! hands the directory back, so a test can start it again on the same database and
//! checkpoints. [`regwatch`] runs one CLI command and returns its exit code and output.

use super::http::http_get;
use super::proc::{Proc, free_port};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

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
        let d = Self::launch_on(port, dir, config, env);
        d.wait_ready();
        d
    }

    /// Like [`start_on`](Self::start_on), but returns once the port is open, ready or not
    /// (an agent whose database is down serves, unready, until it comes up).
    pub fn launch_on(
        port: u16,
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        fs::write(dir.path().join("regwatch.toml"), fill(config, port, &dir)).unwrap();
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
        Daemon { dir, port, proc }
    }

    /// Waits up to 10 s for `/readyz` to answer 200.
    pub fn wait_ready(&self) {
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

    /// Replaces the config (placeholders filled as at start) and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        fs::write(self.config_path(), fill(config, self.port, &self.dir)).unwrap();
        self.proc.signal("HUP");
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

/// `config` with `{port}` and `{dir}` filled in.
fn fill(config: &str, port: u16, dir: &tempfile::TempDir) -> String {
    config
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.path().display().to_string())
}
