//! PostgreSQL connections: where the database is ([`PgTarget`], printed without its
//! password), and a connection that lives on its own thread ([`PgConn`]).
//!
//! The `postgres` client drives tokio-postgres on a runtime of its own, which must not be
//! entered from a thread that already runs async tasks; readers are opened from async code
//! too, so each reader's connection runs on a thread of its own and callers hand it jobs.
//! A connection that broke (the server restarted) is opened again by the next job.

use super::StoreError;
use crate::config::secret::Secret;
use postgres::config::Host;
use postgres::{Client, NoTls};
use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

/// A PostgreSQL database: the URL (a secret: it may carry the password) and how it is shown
/// in logs and errors (`user@host:port/db`, no password).
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    url: Secret,
    shown: String,
}

/// How long a connection attempt may take before the agent reports the database down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a lock (the chain lock another agent holds) before the commit fails.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

impl PgTarget {
    /// Checks that `url` is a PostgreSQL connection string.
    pub fn parse(url: Secret) -> Result<PgTarget, StoreError> {
        let config: postgres::Config =
            url.expose()
                .parse()
                .map_err(|e: postgres::Error| StoreError::Postgres {
                    target: "(database.url)".into(),
                    detail: format!("not a PostgreSQL URL: {e}"),
                })?;
        Ok(PgTarget {
            shown: describe(&config),
            url,
        })
    }

    fn config(&self) -> postgres::Config {
        self.async_config().into()
    }

    /// The connection settings, for tokio-postgres (the writer's pipelined appends).
    pub(super) fn async_config(&self) -> tokio_postgres::Config {
        let mut c: tokio_postgres::Config = self.url.expose().parse().expect("checked by parse");
        if c.get_connect_timeout().is_none() {
            c.connect_timeout(CONNECT_TIMEOUT);
        }
        if c.get_application_name().is_none() {
            c.application_name("regwatch");
        }
        // An agent cut off in the middle of an append would hold the chain lock until the
        // server notices: keepalives end its session soon, and the others give up waiting
        // after LOCK_TIMEOUT (their senders retry) instead of hanging.
        c.keepalives(true).keepalives_idle(Duration::from_secs(10));
        if c.get_options().is_none() {
            c.options(format!("-c lock_timeout={}", LOCK_TIMEOUT.as_millis()));
        }
        c
    }

    /// Opens a connection (on the calling thread, which must not run async tasks).
    pub(super) fn connect(&self) -> Result<Client, StoreError> {
        self.config().connect(NoTls).map_err(|e| self.error(e))
    }

    /// A client error, naming the database but not the password; one that says the server
    /// is not there (or not yet, or no longer) is [`StoreError::PgUnreachable`].
    pub(super) fn error(&self, e: postgres::Error) -> StoreError {
        let (target, detail) = (self.shown.clone(), detail(&e));
        if is_unreachable(&e) {
            StoreError::PgUnreachable { target, detail }
        } else {
            StoreError::Postgres { target, detail }
        }
    }
}

/// Whether `e` means the server could not be reached, rather than that it refused what was
/// asked: no connection (refused, timed out, cut), a server shutting down, crashed or still
/// starting up (SQLSTATE 57P01-57P03), a connection exception (class 08), or no connection
/// slot free (53300). A refused login or a missing database is not: it will not pass by
/// itself.
fn is_unreachable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(state) => {
            let code = state.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// The server's own message when there is one (`ERROR: relation … does not exist`), else
/// the client's (`error connecting to server: Connection refused`).
pub(super) fn detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

fn describe(c: &postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = c.get_dbname().unwrap_or_default();
    format!("postgres://{user}{host}:{port}/{db}")
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({})", self.shown)
    }
}

type Job = Box<dyn FnOnce(&mut Option<Client>) + Send>;

/// A connection on its own thread. Dropping the handle closes it.
pub(super) struct PgConn {
    jobs: mpsc::Sender<Job>,
    target: PgTarget,
}

impl PgConn {
    /// Connects (waiting for the outcome, so a wrong URL fails here).
    pub(super) fn open(target: &PgTarget) -> Result<PgConn, StoreError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let t = target.clone();
        std::thread::Builder::new()
            .name("db-postgres".into())
            .spawn(move || {
                let mut client = match t.connect() {
                    Ok(c) => Some(c),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = rx.recv() {
                    job(&mut client);
                }
            })
            .map_err(|e| StoreError::Postgres {
                target: target.shown.clone(),
                detail: format!("cannot start a connection thread: {e}"),
            })?;
        ready.recv().map_err(|_| StoreError::Closed)??;
        Ok(PgConn {
            jobs,
            target: target.clone(),
        })
    }

    /// Runs `f` on the connection and waits for its result; reconnects first if the
    /// connection broke since the last job.
    pub(super) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f).recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` without waiting: its result arrives on the returned channel (for a job
    /// that streams rows to the caller meanwhile).
    pub(super) fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> mpsc::Receiver<Result<T, StoreError>> {
        self.submit_checked(move |c, target| f(c).map_err(|e| target.error(e)))
    }

    /// [`run`](Self::run) for a job that reports its own errors.
    pub(super) fn run_checked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, &PgTarget) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit_checked(f)
            .recv()
            .map_err(|_| StoreError::Closed)?
    }

    fn submit_checked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, &PgTarget) -> Result<T, StoreError> + Send + 'static,
    ) -> mpsc::Receiver<Result<T, StoreError>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let target = self.target.clone();
        let job: Job = Box::new(move |slot| {
            let result = with_client(slot, &target, |c| f(c, &target));
            let _ = tx.send(result);
        });
        // A send fails only when the thread ended; the dropped sender then reads as Closed.
        let _ = self.jobs.send(job);
        rx
    }
}

/// Calls `f` with a live client, connecting first when there is none or it broke.
pub(super) fn with_client<T>(
    slot: &mut Option<Client>,
    target: &PgTarget,
    f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if slot.as_ref().is_none_or(|c| c.is_closed()) {
        *slot = None;
        *slot = Some(target.connect()?);
    }
    f(slot.as_mut().expect("connected above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let t = PgTarget::parse(Secret::new("postgres://alice:hunter2@127.0.0.1:1/trail")).unwrap();
        let shown = format!("{t} {t:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(t.to_string(), "postgres://alice@127.0.0.1:1/trail");
        let err = t.connect().err().unwrap();
        assert!(err.is_unreachable(), "{err:?}");
        let err = err.to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("127.0.0.1:1/trail unreachable"), "{err}");
    }
}
