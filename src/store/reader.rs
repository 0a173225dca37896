//! Reading the database: a read-only connection (readers never block the writer in WAL
//! mode) and one method per question the rest of regwatch asks. Nothing outside the store
//! sees a connection or SQL; a PostgreSQL backend adds a variant to [`Backend`].

use super::alerts::{self, OutboxEntry, StoredState};
use super::audit::{self, AuditRow, Filter};
use super::inventory::{self, StoredInventory};
use super::manifests::{self, ManifestRefs};
use super::silences::{self, Silence};
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

    fn conn(&self) -> &rusqlite::Connection {
        match &self.backend {
            Backend::Sqlite(c) => c,
        }
    }

    /// Calls `f` for every audit row `filter` selects, in id order, holding one row at a
    /// time; returns the number of rows.
    pub fn events<E: From<StoreError>>(
        &self,
        filter: &Filter,
        mut f: impl FnMut(&AuditRow) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        audit::for_each(self.conn(), filter, |r| f(r).map_err(ReadOr::Caller)).map_err(
            |e| match e {
                ReadOr::Read(e) => E::from(StoreError::Read(e)),
                ReadOr::Caller(e) => e,
            },
        )
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
        audit::totals_by(self.conn(), filter, column, top).map_err(StoreError::Read)
    }

    /// The earliest and latest event time `filter` selects.
    pub fn time_bounds(&self, filter: &Filter) -> Result<(Option<String>, Option<String>)> {
        audit::time_bounds(self.conn(), filter).map_err(StoreError::Read)
    }

    /// Events per time bucket (`bucket_chars` of the stored time: 13 = hour, 10 = day).
    pub fn activity(&self, filter: &Filter, bucket_chars: usize) -> Result<Vec<(String, i64)>> {
        audit::activity(self.conn(), filter, bucket_chars).map_err(StoreError::Read)
    }

    /// The row count and the chain head, cheaply (no walk).
    pub fn head(&self) -> Result<(i64, String)> {
        audit::head(self.conn()).map_err(StoreError::Read)
    }

    /// The id of the newest row (0 for an empty trail): one index lookup.
    pub fn last_id(&self) -> Result<i64> {
        audit::last_id(self.conn()).map_err(StoreError::Read)
    }

    /// Where `forward` is in the trail; `None` when it never sent anything.
    pub fn forward_cursor(&self, forward: &str) -> Result<Option<i64>> {
        forward_cursors::load(self.conn(), forward).map_err(StoreError::Read)
    }

    /// The hash of the newest row: one index lookup.
    pub fn head_hash(&self) -> Result<String> {
        audit::head_hash(self.conn()).map_err(StoreError::Read)
    }

    /// Walks the whole chain (see [`verify`]).
    pub fn verify(&self, expect_head: Option<&str>) -> Result<Verdict> {
        verify::verify(self.conn(), expect_head).map_err(StoreError::Read)
    }

    /// The database's own structural check of every page: `Ok(())` or what it found.
    pub fn integrity(&self) -> Result<std::result::Result<(), String>> {
        schema::integrity(self.conn()).map_err(StoreError::Read)
    }

    /// Runs `f` on one consistent snapshot (a read transaction): what it reads in several
    /// queries is the same state of the trail, however busy the writer is.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Reader) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let tx = self
            .conn()
            .unchecked_transaction()
            .map_err(|e| E::from(StoreError::Read(e)))?;
        let out = f(self);
        drop(tx);
        out
    }

    pub fn checkpoint(&self, log: &str) -> Result<Option<Checkpoint>> {
        checkpoints::load(self.conn(), log).map_err(StoreError::Read)
    }

    /// The checkpoints of every file of a glob `[[log]]`.
    pub fn checkpoints_of(&self, log: &str) -> Result<Vec<Checkpoint>> {
        checkpoints::load_of(self.conn(), log).map_err(StoreError::Read)
    }

    /// What the last poll of `registry` stored; `None` when it was never polled.
    pub fn inventory(&self, registry: &str) -> Result<Option<StoredInventory>> {
        inventory::load(self.conn(), registry).map_err(StoreError::Read)
    }

    /// The JSON report of the last poll of `registry`.
    pub fn inventory_report(&self, registry: &str) -> Result<Option<String>> {
        inventory::load_report(self.conn(), registry).map_err(StoreError::Read)
    }

    pub fn alert_states(&self) -> Result<Vec<StoredState>> {
        alerts::states(self.conn()).map_err(StoreError::Read)
    }

    /// The oldest `limit` notifications waiting for `channel`.
    pub fn outbox(&self, channel: &str, limit: i64) -> Result<Vec<OutboxEntry>> {
        alerts::outbox(self.conn(), channel, limit).map_err(StoreError::Read)
    }

    pub fn outbox_pending(&self) -> Result<i64> {
        alerts::outbox_pending(self.conn()).map_err(StoreError::Read)
    }

    pub fn outbox_by_channel(&self) -> Result<Vec<(String, i64)>> {
        alerts::outbox_by_channel(self.conn()).map_err(StoreError::Read)
    }

    /// Silences that have not ended at `now`.
    pub fn silences(&self, now: OffsetDateTime) -> Result<Vec<Silence>> {
        silences::load(self.conn(), now).map_err(StoreError::Read)
    }

    /// The manifest cache of `registry`'s storage walks.
    pub fn manifest_refs(&self, registry: &str) -> Result<Vec<ManifestRefs>> {
        manifests::load(self.conn(), registry).map_err(StoreError::Read)
    }

    /// The storage samples of `registry` after `since`, oldest first.
    pub fn samples(&self, registry: &str, since: OffsetDateTime) -> Result<Vec<Sample>> {
        samples::load(self.conn(), registry, since).map_err(StoreError::Read)
    }
}
