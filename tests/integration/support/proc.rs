//! Processes and waiting, the building blocks of every server in this harness. [`Proc`] owns
//! a child process and kills and reaps it when dropped, so a failing assertion never leaves a
//! registry or a daemon running behind the test; its stdout and stderr go to files in the
//! server's own directory, a server that dies during start-up fails the test with its
//! stderr, and every server starts without the variables in [`SCRUBBED_ENV`]. [`require`]
//! turns a missing program into the `apt-get install` line that provides it; [`free_port`]
//! and [`shared_tempdir`] give every server its own port and directory, because the tests run
//! in parallel in one process and must share nothing; [`wait_until`] is the one polling loop
//! tests use instead of fixed sleeps.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Variables every server the harness starts runs without. The test machines set
/// `AWS_CA_BUNDLE`, and Debian's docker-registry panics at start with it when it uses the S3
/// storage driver; the servers here are all local, and none of them needs it.
pub const SCRUBBED_ENV: &[&str] = &["AWS_CA_BUNDLE"];

/// Removes [`SCRUBBED_ENV`] from `cmd`'s environment. [`Proc::spawn`] does it for every
/// server; a one-off run of a server's program (`docker-registry garbage-collect`) calls it.
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
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
        let child = scrub_env(cmd)
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
        if let Err(e) = self.try_wait_port(port) {
            panic!("{e}");
        }
    }

    /// [`Proc::wait_port`] that says why instead of failing, for a caller that can retry.
    pub fn try_wait_port(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if !self.is_running() {
                return Err(format!(
                    "{} exited during start-up:\n{}",
                    self.name,
                    self.stderr()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not open 127.0.0.1:{port} within 20s:\n{}",
                    self.name,
                    self.stderr()
                ));
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
/// Fails the test unless `out` (a finished command) succeeded, showing its status and output.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
