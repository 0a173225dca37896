//! The single writer of the database: a thread that owns the write connection, takes events
//! from a bounded channel and commits them in batches, extending the hash chain.

use super::chain::{self, Row};
use super::schema::{self, StoreError};
use crate::event::Event;
use rusqlite::{Connection, params};
use std::path::Path;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Most commands committed in one transaction. Large enough to amortise the fsync, small
/// enough that the first event of a batch is not kept waiting.
const MAX_BATCH: usize = 1024;

type Ack = oneshot::Sender<Result<bool, StoreError>>;

enum Command {
    Append {
        event: Box<Event>,
        ack: Option<Ack>,
    },
    /// Retention: delete rows older than the cutoff (an `audit_events.time` value).
    Prune {
        cutoff: String,
        ack: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Runs a closure on the write connection, between batches (for tables other than the
    /// audit trail, e.g. storage samples), so there is never a second write connection.
    Execute(Job),
    /// Everything queued before this is committed; then the thread ends.
    Close,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A cheap, clonable handle for sources that produce events.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Command>,
}

impl AuditSink {
    /// Queues `event` and waits until it is committed. Returns `false` when an event with
    /// the same source and event id was already stored (a re-delivery).
    pub async fn append(&self, event: Event) -> Result<bool, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Command::Append {
                event: Box::new(event),
                ack: Some(ack),
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues all `events` and waits until they are committed (in as few transactions as
    /// the writer batches them into). Returns how many were new (not re-deliveries).
    pub async fn append_all(&self, events: Vec<Event>) -> Result<usize, StoreError> {
        let mut waits = Vec::with_capacity(events.len());
        for event in events {
            let (ack, done) = oneshot::channel();
            self.tx
                .send(Command::Append {
                    event: Box::new(event),
                    ack: Some(ack),
                })
                .await
                .map_err(|_| StoreError::Closed)?;
            waits.push(done);
        }
        let mut stored = 0;
        for done in waits {
            if done.await.map_err(|_| StoreError::Closed)?? {
                stored += 1;
            }
        }
        Ok(stored)
    }

    /// Queues `event` without waiting for the commit (waits only while the queue is full).
    /// Everything queued before [`AuditWriter::close`] is committed.
    pub async fn enqueue(&self, event: Event) -> Result<(), StoreError> {
        self.tx
            .send(Command::Append {
                event: Box::new(event),
                ack: None,
            })
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Deletes audit rows older than `cutoff`, keeping the chain verifiable (see
    /// [`prune`]). Runs on the writer thread, between batches.
    pub async fn prune(&self, cutoff: time::OffsetDateTime) -> Result<u64, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Command::Prune {
                cutoff: super::format_time(cutoff),
                ack,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the writer's connection (after the events queued before it) and returns
    /// its result. Keep `f` short: the audit trail waits while it runs.
    pub async fn execute<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (ack, done) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = ack.send(f(conn).map_err(StoreError::from));
        });
        self.tx
            .send(Command::Execute(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Like [`enqueue`](Self::enqueue), from a thread outside the async runtime.
    pub fn enqueue_blocking(&self, event: Event) -> Result<(), StoreError> {
        self.tx
            .blocking_send(Command::Append {
                event: Box::new(event),
                ack: None,
            })
            .map_err(|_| StoreError::Closed)
    }
}

/// Called after each commit with the actions of the rows inserted (for metrics).
pub type OnCommit = Box<dyn Fn(&[&'static str]) + Send>;

/// Owns the writer thread.
pub struct AuditWriter {
    sink: AuditSink,
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Opens the database (see [`schema::open_for_writing`]) and starts the writer thread.
    pub fn start(path: &Path, capacity: usize, on_commit: OnCommit) -> Result<Self, StoreError> {
        let conn = schema::open_for_writing(path)?;
        let head = head_hash(&conn)?;
        let (tx, rx) = mpsc::channel(capacity);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(conn, rx, head, on_commit))
            .map_err(|e| StoreError::Create {
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(AuditWriter {
            sink: AuditSink { tx },
            thread: Some(thread),
        })
    }

    pub fn sink(&self) -> AuditSink {
        self.sink.clone()
    }

    /// Commits everything accepted so far and stops the thread. Appends after this fail
    /// with [`StoreError::Closed`].
    pub async fn close(mut self) {
        let _ = self.sink.tx.send(Command::Close).await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// [`close`](Self::close) for callers outside the async runtime.
    pub fn close_blocking(mut self) {
        let _ = self.sink.tx.blocking_send(Command::Close);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn head_hash(conn: &Connection) -> Result<String, StoreError> {
    let head: Option<String> = conn
        .query_row(
            "SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(head.unwrap_or_else(|| chain::GENESIS.to_string()))
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    mut head: String,
    on_commit: OnCommit,
) {
    let mut batch: Vec<(Box<Event>, Option<Ack>)> = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut closing = false;
        let mut pending_prune = None;
        let mut pending_job = None;
        match rx.blocking_recv() {
            None | Some(Command::Close) => closing = true,
            Some(Command::Append { event, ack }) => batch.push((event, ack)),
            Some(Command::Prune { cutoff, ack }) => pending_prune = Some((cutoff, ack)),
            Some(Command::Execute(job)) => pending_job = Some(job),
        }
        while !closing
            && pending_prune.is_none()
            && pending_job.is_none()
            && batch.len() < MAX_BATCH
        {
            match rx.try_recv() {
                Ok(Command::Append { event, ack }) => batch.push((event, ack)),
                Ok(Command::Prune { cutoff, ack }) => pending_prune = Some((cutoff, ack)),
                Ok(Command::Execute(job)) => pending_job = Some(job),
                Ok(Command::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit(&mut conn, &mut head, &mut batch, &on_commit);
        }
        if let Some((cutoff, ack)) = pending_prune {
            let _ = ack.send(prune(&mut conn, &cutoff).map_err(StoreError::from));
        }
        if let Some(job) = pending_job {
            job(&mut conn);
        }
        if closing {
            // Refuse new work, then commit what was queued behind the Close.
            rx.close();
            while let Ok(cmd) = rx.try_recv() {
                if let Command::Append { event, ack } = cmd {
                    batch.push((event, ack));
                }
            }
            if !batch.is_empty() {
                commit(&mut conn, &mut head, &mut batch, &on_commit);
            }
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
            }
            tracing::debug!("audit writer closed");
            return;
        }
    }
}

fn commit(
    conn: &mut Connection,
    head: &mut String,
    batch: &mut Vec<(Box<Event>, Option<Ack>)>,
    on_commit: &OnCommit,
) {
    let before = head.clone();
    let result = (|| -> Result<Vec<bool>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let mut inserted = Vec::with_capacity(batch.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO audit_events (time, registry, action, repository, tag, digest,
                    media_type, size, actor, remote_addr, user_agent, request_id, method, source,
                    status, event_id, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            )?;
            for (e, _) in batch.iter() {
                let time = super::format_time(e.time);
                let row = Row {
                    time: &time,
                    registry: e.registry.as_deref(),
                    action: e.action.as_str(),
                    repository: e.repository.as_deref(),
                    tag: e.tag.as_deref(),
                    digest: e.digest.as_deref(),
                    media_type: e.media_type.as_deref(),
                    size: e.size.map(|s| s.min(i64::MAX as u64) as i64),
                    actor: e.actor.as_deref(),
                    remote_addr: e.remote_addr.as_deref(),
                    user_agent: e.user_agent.as_deref(),
                    request_id: e.request_id.as_deref(),
                    method: e.method.as_deref(),
                    source: e.source.as_str(),
                    status: e.status.map(i64::from),
                    event_id: e.event_id.as_deref(),
                    detail: e.detail.as_deref(),
                };
                let hash = chain::link(head, &row);
                let n = stmt.execute(params![
                    row.time,
                    row.registry,
                    row.action,
                    row.repository,
                    row.tag,
                    row.digest,
                    row.media_type,
                    row.size,
                    row.actor,
                    row.remote_addr,
                    row.user_agent,
                    row.request_id,
                    row.method,
                    row.source,
                    row.status,
                    row.event_id,
                    row.detail,
                    head.as_str(),
                    hash
                ])?;
                // A duplicate (same source + event id) is ignored and does not extend the chain.
                if n == 1 {
                    *head = hash;
                }
                inserted.push(n == 1);
            }
        }
        tx.commit()?;
        Ok(inserted)
    })();
    match result {
        Ok(inserted) => {
            let actions: Vec<&'static str> = batch
                .iter()
                .zip(&inserted)
                .filter(|(_, ins)| **ins)
                .map(|((e, _), _)| e.action.as_str())
                .collect();
            on_commit(&actions);
            for ((_, ack), ins) in batch.drain(..).zip(inserted) {
                if let Some(ack) = ack {
                    let _ = ack.send(Ok(ins));
                }
            }
        }
        Err(e) => {
            *head = before;
            tracing::error!(error = %e, events = batch.len(), "audit batch not committed");
            for (_, ack) in batch.drain(..) {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(StoreError::Batch(e.to_string())));
                }
            }
        }
    }
}

/// Deletes rows older than `cutoff` (but never the newest row, which holds the chain head)
/// and moves the anchor to the first remaining row. Returns the number of rows deleted.
pub(crate) fn prune(conn: &mut Connection, cutoff: &str) -> Result<u64, rusqlite::Error> {
    let tx = conn.transaction()?;
    let first_kept: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, prev_hash FROM audit_events
             WHERE time >= ?1 OR id = (SELECT max(id) FROM audit_events)
             ORDER BY id LIMIT 1",
            [cutoff],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let Some((first_id, prev_hash)) = first_kept else {
        return Ok(0);
    };
    let deleted = tx.execute("DELETE FROM audit_events WHERE id < ?1", [first_id])? as u64;
    if deleted > 0 {
        let now = super::format_time(time::OffsetDateTime::now_utc());
        tx.execute(
            "INSERT INTO chain_anchor (id, first_id, prev_hash, rows_deleted, deleted_until, updated_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET first_id = excluded.first_id,
                prev_hash = excluded.prev_hash,
                rows_deleted = chain_anchor.rows_deleted + excluded.rows_deleted,
                deleted_until = excluded.deleted_until, updated_at = excluded.updated_at",
            params![first_id, prev_hash, deleted as i64, cutoff, now],
        )?;
    }
    tx.commit()?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Source};

    #[test]
    fn close_commits_everything_queued_and_chains_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let writer = AuditWriter::start(&path, 64, Box::new(|_| {})).unwrap();
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
        let conn = Connection::open(&path).unwrap();
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
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn duplicates_are_stored_once_and_closed_store_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let writer = AuditWriter::start(&path, 8, Box::new(|_| {})).unwrap();
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
}
