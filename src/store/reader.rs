//! Reading the database: a read-only connection (readers never block the writer in WAL
//! mode; in PostgreSQL, its own connection) and one method per question the rest of
//! regwatch asks, answered the same by either backend. Nothing outside the store sees a
//! connection or SQL.

use super::alerts::{self, OutboxEntry, StoredState};
use super::audit::{self, AuditRow, Filter};
use super::inventory::{self, StoredInventory};
use super::manifests::{self, ManifestRefs};
use super::pg::PgConn;
use super::silences::{self, Silence};
use super::tag_facts::{self, TagFact};
use super::verify::{self, Verdict};
use super::{StoreError, checkpoints, forward_cursors, samples, schema};
use crate::model::Checkpoint;
use crate::model::usage::Sample;
use time::OffsetDateTime;

pub struct Reader {
    backend: Backend,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(PgConn),
}

/// A read failure or the caller's own error, inside a row callback.
enum ReadOr<E> {
    Read(rusqlite::Error),
    Caller(E),
}

impl<E> From<rusqlite::Error> for ReadOr<E> {
    fn from(e: rusqlite::Error) -> Self {
        ReadOr::Read(e)
    }
}

type Result<T> = std::result::Result<T, StoreError>;

impl Reader {
    pub(super) fn sqlite(conn: rusqlite::Connection) -> Reader {
        Reader {
            backend: Backend::Sqlite(conn),
        }
    }

    pub(super) fn postgres(conn: PgConn) -> Reader {
        Reader {
            backend: Backend::Postgres(conn),
        }
    }

    /// Asks SQLite with `sqlite` or PostgreSQL with `pg` (run on the connection's thread).
    fn ask<T: Send + 'static>(
        &self,
        sqlite: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
        pg: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error>
        + Send
        + 'static,
    ) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(c) => sqlite(c).map_err(StoreError::Read),
            Backend::Postgres(c) => c.run(pg),
        }
    }

    /// Calls `f` for every audit row `filter` selects, in id order, holding one row at a
    /// time; returns the number of rows.
    pub fn events<E: From<StoreError>>(
        &self,
        filter: &Filter,
        mut f: impl FnMut(&AuditRow) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        match &self.backend {
            Backend::Sqlite(c) => audit::for_each(c, filter, |r| f(r).map_err(ReadOr::Caller))
                .map_err(|e| match e {
                    ReadOr::Read(e) => E::from(StoreError::Read(e)),
                    ReadOr::Caller(e) => e,
                }),
            Backend::Postgres(c) => {
                // Rows cross from the connection's thread a few at a time: constant memory.
                let (tx, rows) = std::sync::mpsc::sync_channel::<AuditRow>(256);
                let filter = filter.clone();
                let done =
                    c.submit(move |c| audit::pg::for_each(c, &filter, |r| tx.send(r).is_ok()));
                let mut n = 0;
                for r in rows {
                    f(&r)?;
                    n += 1;
                }
                done.recv().map_err(|_| E::from(StoreError::Closed))??;
                Ok(n)
            }
        }
    }

    /// Every audit row `filter` selects, in memory (for pages of the API and the CLI).
    pub fn event_rows(&self, filter: &Filter) -> Result<Vec<AuditRow>> {
        let mut rows = Vec::new();
        self.events(filter, |r| -> Result<()> {
            rows.push(r.clone());
            Ok(())
        })?;
        Ok(rows)
    }

    /// Counts per value of `column` (one of [`audit::COLUMNS`]), largest first.
    pub fn totals_by(
        &self,
        filter: &Filter,
        column: &str,
        top: usize,
    ) -> Result<Vec<(String, i64)>> {
        let (f, col) = (filter.clone(), column.to_string());
        self.ask(
            |c| audit::totals_by(c, filter, column, top),
            move |c| audit::pg::totals_by(c, &f, &col, top),
        )
    }

    /// The earliest and latest event time `filter` selects.
    pub fn time_bounds(&self, filter: &Filter) -> Result<(Option<String>, Option<String>)> {
        let f = filter.clone();
        self.ask(
            |c| audit::time_bounds(c, filter),
            move |c| audit::pg::time_bounds(c, &f),
        )
    }

    /// Events per time bucket (`bucket_chars` of the stored time: 13 = hour, 10 = day).
    pub fn activity(&self, filter: &Filter, bucket_chars: usize) -> Result<Vec<(String, i64)>> {
        let f = filter.clone();
        self.ask(
            |c| audit::activity(c, filter, bucket_chars),
            move |c| audit::pg::activity(c, &f, bucket_chars),
        )
    }

    /// The row count and the chain head, cheaply (no walk).
    pub fn head(&self) -> Result<(i64, String)> {
        self.ask(audit::head, audit::pg::head)
    }

    /// The id of the newest row (0 for an empty trail).
    pub fn last_id(&self) -> Result<i64> {
        self.ask(audit::last_id, |c| audit::pg::last(c).map(|(id, _)| id))
    }

    /// Where `forward` is in the trail; `None` when it never sent anything.
    pub fn forward_cursor(&self, forward: &str) -> Result<Option<i64>> {
        let name = forward.to_string();
        self.ask(
            |c| forward_cursors::load(c, forward),
            move |c| forward_cursors::pg::load(c, &name),
        )
    }

    /// The hash of the newest row: one index lookup.
    pub fn head_hash(&self) -> Result<String> {
        self.ask(audit::head_hash, |c| audit::pg::last(c).map(|(_, h)| h))
    }

    /// Walks the whole chain (see [`verify`]).
    pub fn verify(&self, expect_head: Option<&str>) -> Result<Verdict> {
        let expect = expect_head.map(str::to_string);
        self.ask(
            |c| verify::verify(c, expect_head),
            move |c| {
                let anchor = audit::pg::anchor(c)?;
                verify::walk(anchor, expect.as_deref(), |step| {
                    audit::pg::for_each(c, &Filter::default(), step).map(|_| ())
                })
            },
        )
    }

    /// The database's own structural check of every page: `Ok(())` or what it found.
    /// PostgreSQL checks its pages itself (checksums, WAL); there the check is that the
    /// server answers.
    pub fn integrity(&self) -> Result<std::result::Result<(), String>> {
        self.ask(schema::integrity, |c| {
            c.simple_query("SELECT 1").map(|_| Ok(()))
        })
    }

    /// Runs `f` on one consistent snapshot (a read transaction): what it reads in several
    /// queries is the same state of the trail, however busy the writer is.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Reader) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        match &self.backend {
            Backend::Sqlite(c) => {
                let tx = c
                    .unchecked_transaction()
                    .map_err(|e| E::from(StoreError::Read(e)))?;
                let out = f(self);
                drop(tx);
                out
            }
            Backend::Postgres(c) => {
                // Jobs run in order on the one connection, so every query `f` asks sees
                // this transaction's snapshot.
                c.run(|c| c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))?;
                let out = f(self);
                c.run(|c| c.batch_execute("COMMIT"))?;
                out
            }
        }
    }

    pub fn checkpoint(&self, log: &str) -> Result<Option<Checkpoint>> {
        let l = log.to_string();
        self.ask(
            |c| checkpoints::load(c, log),
            move |c| checkpoints::pg::load(c, &l),
        )
    }

    /// The checkpoints of every file of a glob `[[log]]`.
    pub fn checkpoints_of(&self, log: &str) -> Result<Vec<Checkpoint>> {
        let l = log.to_string();
        self.ask(
            |c| checkpoints::load_of(c, log),
            move |c| checkpoints::pg::load_of(c, &l),
        )
    }

    /// What the last poll of `registry` stored; `None` when it was never polled.
    pub fn inventory(&self, registry: &str) -> Result<Option<StoredInventory>> {
        let r = registry.to_string();
        self.ask(
            |c| inventory::load(c, registry),
            move |c| inventory::pg::load(c, &r),
        )
    }

    /// Every tag of `registry` with its push and pull facts, by repository and tag.
    pub fn tag_facts(&self, registry: &str) -> Result<Vec<TagFact>> {
        let name = registry.to_string();
        self.ask(
            |c| tag_facts::load(c, registry),
            move |c| tag_facts::pg::load(c, &name),
        )
    }

    /// The JSON report of the last poll of `registry`.
    pub fn inventory_report(&self, registry: &str) -> Result<Option<String>> {
        let r = registry.to_string();
        self.ask(
            |c| inventory::load_report(c, registry),
            move |c| inventory::pg::load_report(c, &r),
        )
    }

    pub fn alert_states(&self) -> Result<Vec<StoredState>> {
        self.ask(alerts::states, alerts::pg::states)
    }

    /// The oldest `limit` notifications waiting for `channel`.
    pub fn outbox(&self, channel: &str, limit: i64) -> Result<Vec<OutboxEntry>> {
        let ch = channel.to_string();
        self.ask(
            |c| alerts::outbox(c, channel, limit),
            move |c| alerts::pg::outbox(c, &ch, limit),
        )
    }

    pub fn outbox_pending(&self) -> Result<i64> {
        self.ask(alerts::outbox_pending, alerts::pg::outbox_pending)
    }

    pub fn outbox_by_channel(&self) -> Result<Vec<(String, i64)>> {
        self.ask(alerts::outbox_by_channel, |c| {
            alerts::pg::outbox_by_channel(c)
        })
    }

    /// Silences that have not ended at `now`.
    pub fn silences(&self, now: OffsetDateTime) -> Result<Vec<Silence>> {
        self.ask(
            |c| silences::load(c, now),
            move |c| silences::pg::load(c, now),
        )
    }

    /// The manifest cache of `registry`'s storage walks.
    pub fn manifest_refs(&self, registry: &str) -> Result<Vec<ManifestRefs>> {
        let r = registry.to_string();
        self.ask(
            |c| manifests::load(c, registry),
            move |c| manifests::pg::load(c, &r),
        )
    }

    /// The storage samples of `registry` after `since`, oldest first.
    pub fn samples(&self, registry: &str, since: OffsetDateTime) -> Result<Vec<Sample>> {
        let r = registry.to_string();
        self.ask(
            |c| samples::load(c, registry, since),
            move |c| samples::pg::load(c, &r, since),
        )
    }
}
