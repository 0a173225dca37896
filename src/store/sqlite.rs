//! The SQLite backend of the writer: one connection (WAL mode), the chain head kept in
//! memory between commits, each command one transaction through the table modules.

use super::alerts::{self, AlertUpdate, DeliveryOutcome};
use super::chain::GENESIS;
use super::inventory::{self, InventoryUpdate};
use super::manifests::{self, ManifestUpdate};
use super::silences::{self, Silence};
use super::writer::{Backend, Item};
use super::{StoreError, audit, checkpoints, forward_cursors, marker, samples, tag_facts};
use crate::model::clock::SharedClock;
use crate::model::usage::Sample;
use rusqlite::Connection;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// Pages the write-ahead log may hold before a commit checkpoints it (64 MiB of 4 KiB pages).
const WAL_PAGES: i64 = 16_384;

/// Bytes of a checkpointed write-ahead log kept on disk for reuse.
const WAL_KEPT: i64 = 4 << 20;

pub(super) struct SqliteWriter {
    conn: Connection,
    /// The hash of the newest row: the next row links to it.
    head: String,
    clock: SharedClock,
    path: PathBuf,
    /// Device and inode of the file opened: a different one at `path` (or none) means the
    /// database was replaced or deleted, and the connection would write into a file nobody
    /// will ever open again.
    identity: (u64, u64),
    /// The trail marker exists (written once rows do).
    marked: bool,
}

impl SqliteWriter {
    pub(super) fn new(
        conn: Connection,
        path: &Path,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        // The write-ahead log is checkpointed when the writer is idle (`idle`), not every
        // 1000 pages as SQLite would: during a catch-up, checkpoints copied and fsynced the
        // same index pages again and again (34 MB written for 1 M log lines; 22 MB now),
        // with the tailer waiting. The log may grow to WAL_PAGES before a commit checkpoints
        // it anyway (a long burst); a checkpointed log is cut back to WAL_KEPT on disk.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_PAGES)
            .and_then(|()| conn.pragma_update(None, "journal_size_limit", WAL_KEPT))
            .map_err(StoreError::Write)?;
        let head = audit::head_hash(&conn).map_err(StoreError::Read)?;
        let has_rows = head != GENESIS;
        marker::check(path, has_rows)?;
        let meta = std::fs::metadata(path).map_err(|source| StoreError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let mut w = SqliteWriter {
            conn,
            head,
            clock,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            marked: false,
        };
        if has_rows {
            w.mark();
        }
        Ok(w)
    }

    /// Fails with [`StoreError::Replaced`] unless `path` is still the file opened: a `stat`
    /// per transaction, microseconds next to the commit's fsync.
    fn check_file(&self) -> Result<(), StoreError> {
        let how = match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => return Ok(()),
            Ok(_) => "replaced",
            Err(_) => "deleted",
        };
        Err(StoreError::Replaced {
            path: self.path.clone(),
            how,
        })
    }

    fn mark(&mut self) {
        match marker::ensure(&self.path) {
            Ok(()) => self.marked = true,
            Err(e) => tracing::warn!(
                path = %marker::path_for(&self.path).display(),
                error = %e,
                "cannot write the trail marker"
            ),
        }
    }

    /// Runs `f` in a transaction that extends the chain; on failure the head is restored,
    /// so the next commit links to the last row that really is in the table.
    fn chained<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &mut String) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let before = self.head.clone();
        let result = (|| {
            let tx = self.conn.transaction()?;
            let out = f(&tx, &mut self.head)?;
            tx.commit()?;
            Ok(out)
        })();
        if result.is_err() {
            self.head = before;
        }
        result
    }
}

impl Backend for SqliteWriter {
    fn write(&mut self, items: &[Item]) -> Result<Vec<Vec<bool>>, StoreError> {
        self.check_file()?;
        let now = self.clock.now();
        let flags = self
            .chained(|tx, head| {
                let mut flags = Vec::with_capacity(items.len());
                for item in items {
                    flags.push(audit::insert_events(tx, head, item.events.iter(), now)?);
                    if let Some(c) = &item.checkpoint {
                        checkpoints::save(tx, c, now)?;
                    }
                }
                let inserted = items.iter().zip(&flags);
                tag_facts::observe(
                    tx,
                    inserted.map(|(i, f)| (i.events.as_slice(), f.as_slice())),
                )?;
                Ok(flags)
            })
            .map_err(|e| StoreError::Batch(e.to_string()))?;
        if !self.marked && self.head != GENESIS {
            self.mark();
        }
        Ok(flags)
    }

    fn prune(&mut self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        self.check_file()?;
        audit::prune(&mut self.conn, cutoff, self.clock.now()).map_err(StoreError::Write)
    }

    fn inventory(&mut self, update: &InventoryUpdate) -> Result<Vec<bool>, StoreError> {
        self.check_file()?;
        let now = self.clock.now();
        self.chained(|tx, head| {
            let new = inventory::apply(tx, head, update, now)?;
            tag_facts::apply_inventory(tx, update)?;
            Ok(new)
        })
        .map_err(|e| StoreError::Batch(e.to_string()))
    }

    fn alerts(&mut self, update: &AlertUpdate) -> Result<(), StoreError> {
        self.check_file()?;
        alerts::apply(&mut self.conn, update, self.clock.now()).map_err(StoreError::Write)
    }

    fn delivery(&mut self, outcome: &DeliveryOutcome) -> Result<(), StoreError> {
        self.check_file()?;
        alerts::record_delivery(&mut self.conn, outcome, self.clock.now())
            .map_err(StoreError::Write)
    }

    fn silence(&mut self, silence: &Silence) -> Result<i64, StoreError> {
        self.check_file()?;
        silences::insert(&self.conn, silence).map_err(StoreError::Write)
    }

    fn sample(
        &mut self,
        registry: &str,
        sample: &Sample,
        keep: Duration,
    ) -> Result<(), StoreError> {
        self.check_file()?;
        samples::record(&mut self.conn, registry, sample, keep).map_err(StoreError::Write)
    }

    fn manifests(&mut self, update: &ManifestUpdate) -> Result<(), StoreError> {
        self.check_file()?;
        manifests::apply(&mut self.conn, update).map_err(StoreError::Write)
    }

    fn forward_cursor(&mut self, forward: &str, last_id: i64) -> Result<(), StoreError> {
        self.check_file()?;
        forward_cursors::save(&self.conn, forward, last_id, self.clock.now())
            .map_err(StoreError::Write)
    }

    fn idle(&mut self) {
        // PASSIVE: copies what no reader still needs, without waiting for readers.
        let done = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
        match done {
            Ok((log, copied)) => tracing::debug!(log, copied, "WAL checkpoint while idle"),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint while idle failed"),
        }
    }

    fn close(&mut self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
        }
    }
}
