//! A real PostgreSQL 15 (Debian's `postgresql`): a cluster of its own made with `initdb` in
//! a temporary directory, started and stopped with `pg_ctl` on a free loopback port, with a
//! password-protected `regwatch` role (SCRAM) and a `regwatch` database. Tests run as root,
//! and PostgreSQL refuses to run as root, so then the cluster belongs to the `postgres`
//! user (its directory chowned to it, every command through `runuser -u postgres --`).
//! [`Postgres::stop`] and [`Postgres::start`] take the server away and back under traffic;
//! dropping it stops it. [`Postgres::psql`] is the independent reader tests check against.

use super::proc::{assert_ok, free_port, require};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The test role's password: it must never appear in regwatch's output.
pub const PG_PASSWORD: &str = "pg-test-secret-4f1d";

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    data: PathBuf,
}

fn bin(name: &str) -> PathBuf {
    let p = Path::new(BIN).join(name);
    if !p.is_file() {
        panic!(
            "{} is not installed; it comes with the Debian package `postgresql` (15): \
             run `apt-get install -y postgresql` (all test dependencies: `scripts/deps.sh`)",
            p.display()
        );
    }
    p
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program args…`, as the `postgres` user when running as root.
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new(require("runuser", "util-linux"));
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = super::proc::scrub_env(cmd).output().unwrap();
    assert_ok(&out, what);
    out
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, format!("{PG_PASSWORD}\n")).unwrap();
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path()),
                "chown the cluster directory",
            );
        }
        let data = dir.path().join("data");
        run(
            command(&bin("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "regwatch", "-E", "UTF8", "--locale=C.UTF-8"])
                .args(["--auth=scram-sha-256", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );
        let pg = Postgres {
            port: free_port(),
            dir,
            data,
        };
        pg.start_server();
        pg.psql_db("postgres", "CREATE DATABASE regwatch");
        pg
    }

    /// The URL regwatch connects with (it holds the password).
    pub fn url(&self) -> String {
        format!(
            "postgres://regwatch:{PG_PASSWORD}@127.0.0.1:{}/regwatch",
            self.port
        )
    }

    /// (Re)starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run(
            command(&bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-o", &opts, "-w", "-t", "30", "start"]),
            "pg_ctl start",
        );
    }

    /// Stops the server at once (connections are cut, as in a crash).
    pub fn stop(&self) {
        run(
            command(&bin("pg_ctl")).arg("-D").arg(&self.data).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]),
            "pg_ctl stop",
        );
    }

    /// Runs `sql` with psql in the `regwatch` database; its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("regwatch", sql)
    }

    fn psql_db(&self, db: &str, sql: &str) -> String {
        let out = run(
            Command::new(bin("psql"))
                .env("PGPASSWORD", PG_PASSWORD)
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "regwatch", "-d", db, "-c", sql]),
            &format!("psql {sql}"),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The rows of `sql` as CSV with a header line (`psql --csv`).
    pub fn psql_csv(&self, sql: &str) -> String {
        let out = run(
            Command::new(bin("psql"))
                .env("PGPASSWORD", PG_PASSWORD)
                .args(["-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "regwatch", "-d", "regwatch", "-c", sql]),
            &format!("psql --csv {sql}"),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The rows of `sql`, one a line, fields separated by `sep`, NULL printed as `null`.
    pub fn psql_fields(&self, sql: &str, sep: &str, null: &str) -> String {
        let out = run(
            Command::new(bin("psql"))
                .env("PGPASSWORD", PG_PASSWORD)
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(["-F", sep, "-P", &format!("null={null}")])
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "regwatch", "-d", "regwatch", "-c", sql]),
            &format!("psql {sql}"),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One integer from `sql`.
    pub fn count(&self, sql: &str) -> i64 {
        let out = self.psql(sql);
        out.parse()
            .unwrap_or_else(|_| panic!("{sql} printed {out:?}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = super::proc::scrub_env(command(&bin("pg_ctl")).arg("-D").arg(&self.data).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]))
        .output();
    }
}
