//! Layer 2: the database. One writer thread owns the only write connection and commits
//! typed commands in batches ([`Sink`], [`Writer`]); readers open their own read-only
//! connections ([`Reader`]). Every audit row is hash-chained ([`chain`]), so `regwatch audit
//! verify` names the first row that was changed, inserted or removed.
//!
//! One owner per table: every SQL statement on a table lives in that table's module —
//! [`audit`] (`audit_events`, `chain_anchor`), [`checkpoints`] (`log_checkpoints`),
//! [`forward_cursors`] (`forward_cursors`),
//! [`inventory`] (`inventory_*`), [`alerts`] (`alert_states`, `alert_outbox`,
//! `alert_deliveries`), [`silences`] (`alert_silences`), [`samples`] (`storage_samples`) and
//! [`manifests`] (`storage_manifests`), [`tag_facts`] (`tag_facts`);
//! [`schema`] opens the file and migrates it ([`pg_schema`] the PostgreSQL database). Every
//! table module also holds its statements in PostgreSQL form (its `pg` module). Nothing
//! outside this module sees SQL or a connection.
//!
//! The backend seam: [`Store`] says where the database is; the writer drives a
//! [`writer::Backend`] ([`sqlite::SqliteWriter`] or [`pg_writer::PgWriter`]) and [`Reader`]
//! dispatches on its backend. On PostgreSQL several agents share one database: appends are
//! serialised by an advisory lock, so the chain stays one chain, and re-deliveries are
//! recognised whichever agent stored the first.

pub mod alerts;
pub mod audit;
pub mod chain;
mod checkpoints;
mod error;
mod forward_cursors;
mod health;
pub mod inventory;
mod lease;
pub mod manifests;
pub mod marker;
mod pg;
mod pg_append;
mod pg_schema;
mod pg_writer;
mod reader;
mod samples;
mod schema;
pub mod silences;
mod sqlite;
pub mod tag_facts;
pub mod verify;
mod writer;

pub use alerts::{
    AlertStateRow, AlertUpdate, DeliveryOutcome, OutboxClaim, OutboxEntry, OutboxRow, StoredState,
};
pub use audit::{Anchor, AuditRow, COLUMNS, Filter};
pub use error::StoreError;
pub use health::Health;
pub use inventory::{InventoryUpdate, StoredInventory};
pub use lease::Leases;
pub use manifests::ManifestUpdate;
pub use pg::PgTarget;
pub use reader::Reader;
pub use silences::Silence;
pub use tag_facts::TagFact;
pub use verify::{Problem, Verdict};
pub use writer::{EventTap, OnCommit, Sink, TailCommit, Writer};

use crate::config::{DatabaseConfig, DatabaseTarget};
use crate::model::clock::SharedClock;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (created mode 0600).
    Sqlite(PathBuf),
    /// A PostgreSQL database, possibly shared with other agents.
    Postgres(PgTarget),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(t) => write!(f, "{t}"),
        }
    }
}

/// A handle on the database: cheap to clone, opens connections on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    location: Location,
    /// Recorded on the rows this agent writes (PostgreSQL).
    agent: String,
}

/// The agent name of a store opened without one (the CLI, tests).
const DEFAULT_AGENT: &str = "regwatch";

impl Store {
    /// The SQLite database in `path`.
    pub fn sqlite(path: impl AsRef<Path>) -> Store {
        Store {
            location: Location::Sqlite(path.as_ref().to_path_buf()),
            agent: DEFAULT_AGENT.into(),
        }
    }

    /// A PostgreSQL database.
    pub fn postgres(target: PgTarget) -> Store {
        Store {
            location: Location::Postgres(target),
            agent: DEFAULT_AGENT.into(),
        }
    }

    /// The database `[database]` names.
    pub fn open(config: &DatabaseConfig) -> Result<Store, StoreError> {
        Ok(match &config.target {
            DatabaseTarget::Sqlite(p) => Store::sqlite(p),
            DatabaseTarget::Postgres(url) => Store::postgres(PgTarget::parse(url.value.clone())?),
        })
    }

    /// The same database, written as `agent`.
    pub fn with_agent(mut self, agent: &str) -> Store {
        self.agent = agent.to_string();
        self
    }

    /// Whether several agents may share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.location, Location::Postgres(_))
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// A read-only connection. Fails with [`StoreError::Missing`] when there is no database
    /// yet, and refuses a database written by a newer regwatch.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        match &self.location {
            Location::Sqlite(path) => schema::open_read_only(path).map(Reader::sqlite),
            Location::Postgres(target) => {
                let conn = pg::PgConn::open(target)?;
                conn.run_checked(pg_schema::check)?;
                Ok(Reader::postgres(conn))
            }
        }
    }

    /// Creates or migrates the schema of a PostgreSQL database, refusing one written by a
    /// newer regwatch ([`StoreError::TooNew`]); [`StoreError::PgUnreachable`] when the server
    /// cannot be reached. A SQLite file is migrated when its writer opens it: nothing to do.
    pub fn migrate(&self) -> Result<(), StoreError> {
        match &self.location {
            Location::Sqlite(_) => Ok(()),
            // Migrated on a connection thread: this may be called from async code.
            Location::Postgres(target) => pg::PgConn::open(target)?.run_checked(pg_schema::migrate),
        }
    }

    /// Opens (creating and migrating if needed) the database for writing and starts the
    /// writer thread, with room for `capacity` queued commands. `on_commit` sees the
    /// actions of the rows each commit inserted; `clock` stamps the bookkeeping columns.
    pub fn start_writer(
        &self,
        capacity: usize,
        clock: SharedClock,
        on_commit: OnCommit,
    ) -> Result<Writer, StoreError> {
        self.migrate()?;
        self.start_writer_deferred(capacity, clock, on_commit)
    }

    /// [`start_writer`](Self::start_writer) without waiting for a PostgreSQL server: its
    /// writer connects with its first command (and again after the connection broke), each
    /// command failing while the server is unreachable, so an agent can start and answer
    /// (503) while the database is down. Call [`migrate`](Self::migrate) before anything
    /// relies on the schema. A SQLite file is opened and migrated at once.
    pub fn start_writer_deferred(
        &self,
        capacity: usize,
        clock: SharedClock,
        on_commit: OnCommit,
    ) -> Result<Writer, StoreError> {
        match &self.location {
            Location::Sqlite(path) => {
                let conn = schema::open_for_writing(path)?;
                let backend = sqlite::SqliteWriter::new(conn, path, clock)?;
                Writer::start(backend, capacity, on_commit).map_err(|source| StoreError::Create {
                    path: path.clone(),
                    source,
                })
            }
            Location::Postgres(target) => {
                let backend = pg_writer::PgWriter::new(target.clone(), self.agent.clone(), clock);
                Writer::start(backend, capacity, on_commit).map_err(|e| StoreError::Postgres {
                    target: target.to_string(),
                    detail: format!("cannot start the writer thread: {e}"),
                })
            }
        }
    }
}

pub use crate::model::text::format_time;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::clock::SystemClock;
    use crate::model::{Action, Event, Source};
    use std::sync::Arc;

    fn writer(path: &Path, capacity: usize) -> Writer {
        Store::sqlite(path)
            .start_writer(capacity, Arc::new(SystemClock), Box::new(|_| {}))
            .unwrap()
    }

    #[test]
    fn close_commits_everything_queued_and_chains_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let writer = writer(&path, 64);
        let sink = writer.sink();
        let producer = std::thread::spawn(move || {
            for i in 0..5000 {
                let mut e = Event::new(time::OffsetDateTime::now_utc(), Action::Pull, Source::Log);
                e.event_id = Some(format!("e{i}"));
                sink.enqueue_blocking(e).unwrap();
            }
        });
        producer.join().unwrap();
        writer.close_blocking();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5000);
        let broken: i64 = conn
            .query_row(
                "SELECT count(*) FROM audit_events a JOIN audit_events b ON b.id = a.id + 1
                 WHERE b.prev_hash != a.hash",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(broken, 0);
        let verdict = Store::sqlite(&path).reader().unwrap().verify(None).unwrap();
        assert!(
            matches!(verdict, Verdict::Ok { rows: 5000, .. }),
            "{verdict:?}"
        );
    }

    /// `sync` answers once what was queued before it is committed, not merely queued.
    #[tokio::test(flavor = "multi_thread")]
    async fn sync_waits_for_the_events_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let writer = writer(&path, 64);
        let sink = writer.sink();
        for _ in 0..100 {
            let e = Event::new(time::OffsetDateTime::now_utc(), Action::Pull, Source::Log);
            sink.enqueue(e).await.unwrap();
        }
        sink.sync().await.unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100);
        writer.close().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn duplicates_are_stored_once_and_closed_store_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let writer = writer(&path, 8);
        let sink = writer.sink();
        let mut e = Event::new(
            time::OffsetDateTime::now_utc(),
            Action::Push,
            Source::Notification,
        );
        e.event_id = Some("same".into());
        assert!(sink.append(e.clone()).await.unwrap());
        assert!(!sink.append(e.clone()).await.unwrap());
        writer.close().await;
        assert!(matches!(sink.append(e).await, Err(StoreError::Closed)));
    }

    /// A burst of commits leaves its pages in the write-ahead log (checkpoints would copy
    /// and fsync them again and again); they reach the database file once the writer idles.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_write_ahead_log_is_checkpointed_once_the_writer_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = writer(&path, 64);
        let sink = writer.sink();
        let size = || std::fs::metadata(&path).unwrap().len();
        sink.sync().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let empty = size();
        // About 6 MB of rows: more than SQLite's default 1000-page checkpoint interval.
        for burst in 0..3 {
            let events = (0..4000)
                .map(|i| {
                    let mut e =
                        Event::new(time::OffsetDateTime::now_utc(), Action::Pull, Source::Log);
                    e.detail = Some(format!("{burst}-{i}-{}", "x".repeat(400)));
                    e
                })
                .collect();
            assert_eq!(sink.append_all(events).await.unwrap(), 4000);
        }
        assert!(
            size() < empty + (1 << 20),
            "checkpointed during the burst: {}",
            size()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() < empty + (5 << 20) {
            assert!(
                std::time::Instant::now() < deadline,
                "never checkpointed: {}",
                size()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        writer.close().await;
        let verdict = Store::sqlite(&path).reader().unwrap().verify(None).unwrap();
        assert!(
            matches!(verdict, Verdict::Ok { rows: 12000, .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_missing_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        let err = Store::sqlite(&path).reader().err().unwrap();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("has regwatch run yet?"), "{err}");
    }

    /// Retention follows the trail's own order (when rows were stored), so one event dated
    /// 9999 by its sender cannot hold back the deletion of everything stored after it.
    #[tokio::test(flavor = "multi_thread")]
    async fn retention_prunes_by_receipt_not_by_the_senders_time() {
        use crate::model::clock::ManualClock;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let t0 = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = ManualClock::new(t0);
        let writer = Store::sqlite(&path)
            .start_writer(8, Arc::new(clock.clone()), Box::new(|_| {}))
            .unwrap();
        let sink = writer.sink();
        let event = |time, id: &str| {
            let mut e = Event::new(time, Action::Push, Source::Notification);
            e.event_id = Some(id.into());
            e
        };
        let far = time::macros::datetime!(9999-12-31 23:59 UTC);
        sink.append(event(far, "far")).await.unwrap();
        for i in 0..5 {
            sink.append(event(t0, &format!("old{i}"))).await.unwrap();
        }
        clock.advance(time::Duration::days(10));
        sink.append(event(t0 + time::Duration::days(10), "new"))
            .await
            .unwrap();
        let deleted = sink.prune(t0 + time::Duration::days(5)).await.unwrap();
        assert_eq!(deleted, 6, "the 9999 row and the five stored with it");
        writer.close().await;
        let reader = Store::sqlite(&path).reader().unwrap();
        assert!(matches!(
            reader.verify(None).unwrap(),
            Verdict::Ok { rows: 1, .. }
        ));
    }

    #[test]
    fn totals_by_action_count_blob_heads_as_checks_not_pulls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = writer(&path, 64);
        let sink = writer.sink();
        let text = include_str!("../../tests/fixtures/notifications.ndjson");
        let events: Vec<Event> = text
            .lines()
            .flat_map(|l| crate::formats::notification::parse(l.as_bytes(), "main").unwrap())
            .collect();
        let is = |e: &Event, method: &str, blob: bool| {
            e.action == Action::Pull
                && e.method.as_deref() == Some(method)
                && (e.media_type.as_deref() == Some("application/octet-stream")) == blob
        };
        let blob_heads = events.iter().filter(|e| is(e, "HEAD", true)).count() as i64;
        let pulls = events
            .iter()
            .filter(|e| is(e, "GET", true) || is(e, "GET", false) || is(e, "HEAD", false))
            .count() as i64;
        assert!(blob_heads > 0 && pulls > 0);
        for e in events {
            sink.enqueue_blocking(e).unwrap();
        }
        writer.close_blocking();
        let totals = Store::sqlite(&path)
            .reader()
            .unwrap()
            .totals_by(&crate::store::Filter::default(), "action", 20)
            .unwrap();
        let get = |k: &str| totals.iter().find(|(a, _)| a == k).map(|t| t.1);
        assert_eq!(get("pull"), Some(pulls), "{totals:?}");
        assert_eq!(get("blob check"), Some(blob_heads), "{totals:?}");
    }
}
