//! The two stores a daemon test can run on, so one test body checks both: [`TestDb`] is a
//! SQLite file of the test's own or a PostgreSQL 15 cluster of its own ([`Postgres`]),
//! with what the body needs from either: the `[database]` of its config
//! ([`TestDb::configure`]), the independent reader to check against (the sqlite3 CLI or
//! psql, never regwatch's store code), and a way to tamper with the trail and put it back.
//! [`both_backends!`](crate::support::both_backends) turns `fn name(backend: Backend)` into
//! the tests `name::sqlite` and `name::postgres`.

use super::config::ConfigBuilder;
use super::oracles::sqlite3;
use super::postgres::Postgres;
use regwatch::store::{PgTarget, Store};
use std::path::PathBuf;

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database of one test.
pub struct TestDb {
    /// The SQLite file, or the directory holding the PostgreSQL URL (`db-url`).
    dir: tempfile::TempDir,
    pg: Option<Postgres>,
}

impl TestDb {
    /// A new, empty database: a SQLite path nothing exists at yet, or a started cluster
    /// with an empty `regwatch` database.
    pub fn start(backend: Backend) -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("regwatch-db-")
            .tempdir()
            .unwrap();
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let pg = Postgres::start();
                std::fs::write(dir.path().join("db-url"), format!("{}\n", pg.url())).unwrap();
                Some(pg)
            }
        };
        TestDb { dir, pg }
    }

    pub fn backend(&self) -> Backend {
        match self.pg {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        }
    }

    fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("regwatch.db")
    }

    /// `builder` with this database as its `[database]` (`path` or `url_file`).
    pub fn configure(&self, builder: ConfigBuilder) -> ConfigBuilder {
        match &self.pg {
            None => builder.database(self.sqlite_path()),
            Some(_) => builder.postgres(self.dir.path().join("db-url")),
        }
    }

    /// A store handle on it, for tests that write through the library.
    pub fn store(&self) -> Store {
        match &self.pg {
            None => Store::sqlite(self.sqlite_path()),
            Some(pg) => Store::postgres(
                PgTarget::parse(regwatch::config::secret::Secret::new(pg.url())).unwrap(),
            ),
        }
    }

    /// A config file with only this database (and a registry nobody polls), for the
    /// commands that read the database (`regwatch audit … -c FILE`).
    pub fn cli_config(&self) -> PathBuf {
        let path = self.dir.path().join("cli.toml");
        let text = self
            .configure(ConfigBuilder::new("http://127.0.0.1:9").no_server())
            .build();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `sql` with the backend's own CLI (sqlite3, psql); its output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        match &self.pg {
            None => sqlite3(&self.sqlite_path(), sql).trim().to_string(),
            Some(pg) => pg.psql(sql),
        }
    }

    /// One integer from `sql`.
    pub fn count(&self, sql: &str) -> i64 {
        let out = self.sql(sql);
        out.parse()
            .unwrap_or_else(|_| panic!("{sql} printed {out:?}"))
    }

    /// The rows of `sql`, each column `None` for NULL: read with the backend's CLI, fields
    /// split at a unit separator and NULL printed as a marker no test value contains.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        const NULL: &str = "\u{1}NULL\u{1}";
        const SEP: &str = "\u{1f}";
        let out = match &self.pg {
            None => {
                let out = std::process::Command::new("sqlite3")
                    .args(["-list", "-separator", SEP, "-nullvalue", NULL])
                    .arg(self.sqlite_path())
                    .arg(sql)
                    .output()
                    .unwrap();
                super::proc::assert_ok(&out, "sqlite3 -list");
                String::from_utf8(out.stdout).unwrap()
            }
            Some(pg) => pg.psql_fields(sql, SEP, NULL),
        };
        out.lines()
            .map(|line| {
                line.split(SEP)
                    .map(|v| (v != NULL).then(|| v.to_string()))
                    .collect()
            })
            .collect()
    }

    /// `SELECT … FROM audit_events …` as CSV with a header, as the backend's CLI writes it.
    pub fn csv(&self, sql: &str) -> String {
        match &self.pg {
            None => {
                let out = std::process::Command::new("sqlite3")
                    .args(["-csv", "-header"])
                    .arg(self.sqlite_path())
                    .arg(sql)
                    .output()
                    .unwrap();
                super::proc::assert_ok(&out, "sqlite3 -csv");
                String::from_utf8(out.stdout).unwrap().replace('\r', "")
            }
            Some(pg) => pg.psql_csv(sql),
        }
    }

    /// Changes the trail with `sql`, runs `check` on the changed trail, and puts the
    /// trail back as it was (no regwatch may be writing meanwhile).
    pub fn tampered<T>(&self, sql: &str, check: impl FnOnce() -> T) -> T {
        match &self.pg {
            None => {
                let saved = self.dir.path().join("saved.db");
                std::fs::copy(self.sqlite_path(), &saved).unwrap();
                sqlite3(&self.sqlite_path(), sql);
                let result = check();
                std::fs::rename(&saved, self.sqlite_path()).unwrap();
                result
            }
            Some(pg) => {
                pg.psql("DROP TABLE IF EXISTS saved_events; CREATE TABLE saved_events AS SELECT * FROM audit_events");
                pg.psql(sql);
                let result = check();
                pg.psql("DELETE FROM audit_events; INSERT INTO audit_events SELECT * FROM saved_events; DROP TABLE saved_events");
                result
            }
        }
    }

    /// The cluster, on PostgreSQL.
    pub fn postgres(&self) -> Option<&Postgres> {
        self.pg.as_ref()
    }
}

/// `both_backends!(name, …)`: for each `fn name(backend: Backend)`, the tests
/// `name::sqlite` and `name::postgres`. (The benches mount this harness and use no test.)
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[test]
            fn sqlite() {
                super::$test($crate::support::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$test($crate::support::Backend::Postgres)
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use both_backends;
