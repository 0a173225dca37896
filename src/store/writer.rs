//! The single writer of the database: a thread that owns the write connection, takes events
//! from a bounded channel and commits them in batches, extending the hash chain.

use super::chain::{self, Row};
use super::schema::{self, StoreError};
use crate::model::event::Event;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Most commands committed in one transaction. Large enough to amortise the fsync, small
/// enough that the first event of a batch is not kept waiting.
const MAX_BATCH: usize = 1024;

/// Answered with how many of the item's events were new (not re-deliveries).
type Ack = oneshot::Sender<Result<usize, StoreError>>;

/// Where a tailed log was read up to. Committed in the same transaction as the events read
/// from those bytes, so a crash neither loses nor repeats a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub log: String,
    pub dev: u64,
    pub ino: u64,
    /// The file is recognised by the hash of its first `fp_len` bytes (inode numbers are
    /// reused).
    pub fp_len: u64,
    pub fp_hash: String,
    pub offset: u64,
}

/// Events (and a checkpoint) committed together.
struct Item {
    events: Vec<Event>,
    checkpoint: Option<Checkpoint>,
    ack: Option<Ack>,
}

enum Command {
    Write(Item),
    /// Retention: delete rows older than the cutoff (an `audit_events.time` value).
    Prune {
        cutoff: String,
        ack: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// A poll's changes: the stored inventory and the audit events in one transaction.
    Inventory {
        update: Box<InventoryUpdate>,
        ack: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Alert state changes and the notifications they cause, in one transaction.
    Alerts {
        update: Box<AlertUpdate>,
        ack: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The outcome of one delivery attempt.
    Delivery {
        outcome: DeliveryOutcome,
        ack: oneshot::Sender<Result<(), StoreError>>,
    },
    /// From now on, send every newly committed audit event to this channel (alert rules on
    /// audit events see only what is stored).
    Tap(EventTap),
    /// A new silence; answered with its id.
    Silence {
        silence: Box<crate::alerting::silence::Silence>,
        ack: oneshot::Sender<Result<i64, StoreError>>,
    },
    /// Runs a closure on the write connection, between batches (for tables other than the
    /// audit trail, e.g. storage samples), so there is never a second write connection.
    Execute(Job),
    /// Everything queued before this is committed; then the thread ends.
    Close,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Receives every audit event after it is committed (re-deliveries excluded).
pub type EventTap = mpsc::UnboundedSender<Event>;

/// One alert's new state (`phase` "inactive" removes it).
#[derive(Debug, Clone)]
pub struct AlertStateRow {
    pub rule: String,
    pub key: String,
    pub phase: &'static str,
    /// The whole state as JSON.
    pub state: String,
}

/// A notification for one channel, waiting in the outbox until the channel accepts it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub idempotency_key: String,
    pub channel: String,
    /// The notification as JSON.
    pub payload: String,
}

#[derive(Debug, Clone, Default)]
pub struct AlertUpdate {
    pub states: Vec<AlertStateRow>,
    pub outbox: Vec<OutboxRow>,
}

/// What one delivery attempt of an outbox row came to.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub outbox_id: i64,
    pub channel: String,
    pub idempotency_key: String,
    /// `None`: accepted (the row leaves the outbox); `Some(error)`: retried at `retry_at_ms`.
    pub error: Option<String>,
    pub retry_at_ms: i64,
}

/// What one poll changed. Applied with its events in one transaction, so a crash between
/// the two can neither lose the events nor report them twice.
#[derive(Debug, Clone)]
pub struct InventoryUpdate {
    pub registry: String,
    pub time: time::OffsetDateTime,
    /// The first poll of this registry: store everything, no per-tag events.
    pub replace: bool,
    pub add_repositories: Vec<String>,
    pub remove_repositories: Vec<String>,
    /// (repository, tag, digest), inserted or replaced.
    pub upsert_tags: Vec<(String, String, String)>,
    /// (repository, tag).
    pub remove_tags: Vec<(String, String)>,
    pub events: Vec<Event>,
    pub repositories: usize,
    pub tags: usize,
    pub unique_bytes: u64,
    /// The poll's report as JSON (see [`load_inventory_report`]).
    pub report: Option<String>,
}

/// A cheap, clonable handle for sources that produce events.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Command>,
}

impl AuditSink {
    /// Sends the command `make` builds around a reply channel and waits for the reply.
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(make(ack))
            .await
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    async fn write(
        &self,
        events: Vec<Event>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<usize, StoreError> {
        self.request(|ack| {
            Command::Write(Item {
                events,
                checkpoint,
                ack: Some(ack),
            })
        })
        .await
    }

    /// Queues `event` and waits until it is committed. Returns `false` when an event with
    /// the same source and event id was already stored (a re-delivery).
    pub async fn append(&self, event: Event) -> Result<bool, StoreError> {
        self.write(vec![event], None).await.map(|n| n == 1)
    }

    /// Commits all `events` in one transaction and waits for it. Returns how many were new
    /// (not re-deliveries).
    pub async fn append_all(&self, events: Vec<Event>) -> Result<usize, StoreError> {
        self.write(events, None).await
    }

    /// Commits `events` and the log `checkpoint` in one transaction, from a tailer thread.
    pub fn commit_tail_blocking(
        &self,
        events: Vec<Event>,
        checkpoint: Checkpoint,
    ) -> Result<usize, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .blocking_send(Command::Write(Item {
                events,
                checkpoint: Some(checkpoint),
                ack: Some(ack),
            }))
            .map_err(|_| StoreError::Closed)?;
        done.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues `event` without waiting for the commit (waits only while the queue is full).
    /// Everything queued before [`AuditWriter::close`] is committed.
    pub async fn enqueue(&self, event: Event) -> Result<(), StoreError> {
        self.tx
            .send(Command::Write(Item {
                events: vec![event],
                checkpoint: None,
                ack: None,
            }))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Deletes audit rows older than `cutoff`, keeping the chain verifiable (see
    /// [`prune`]). Runs on the writer thread, between batches.
    pub async fn prune(&self, cutoff: time::OffsetDateTime) -> Result<u64, StoreError> {
        let cutoff = super::format_time(cutoff);
        self.request(|ack| Command::Prune { cutoff, ack }).await
    }

    /// Stores a poll's inventory changes and their events (see [`InventoryUpdate`]) and
    /// waits for the commit.
    pub async fn store_inventory(&self, update: InventoryUpdate) -> Result<(), StoreError> {
        self.request(|ack| Command::Inventory {
            update: Box::new(update),
            ack,
        })
        .await
    }

    /// Stores alert state changes and their outbox rows in one transaction; waits for it.
    pub async fn store_alerts(&self, update: AlertUpdate) -> Result<(), StoreError> {
        self.request(|ack| Command::Alerts {
            update: Box::new(update),
            ack,
        })
        .await
    }

    /// Sends every audit event committed from now on to `tap`.
    pub async fn set_event_tap(&self, tap: EventTap) -> Result<(), StoreError> {
        self.tx
            .send(Command::Tap(tap))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Stores a silence; returns its id.
    pub async fn store_silence(
        &self,
        silence: crate::alerting::silence::Silence,
    ) -> Result<i64, StoreError> {
        self.request(|ack| Command::Silence {
            silence: Box::new(silence),
            ack,
        })
        .await
    }

    /// Records a delivery attempt (see [`DeliveryOutcome`]); waits for the commit.
    pub async fn store_delivery(&self, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        self.request(|ack| Command::Delivery { outcome, ack }).await
    }

    /// Runs `f` on the writer's connection (after the events queued before it) and returns
    /// its result. Keep `f` short: the audit trail waits while it runs.
    pub async fn execute<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.request(|ack| {
            Command::Execute(Box::new(move |conn| {
                let _ = ack.send(f(conn).map_err(StoreError::from));
            }))
        })
        .await
    }

    /// Like [`enqueue`](Self::enqueue), from a thread outside the async runtime.
    pub fn enqueue_blocking(&self, event: Event) -> Result<(), StoreError> {
        self.tx
            .blocking_send(Command::Write(Item {
                events: vec![event],
                checkpoint: None,
                ack: None,
            }))
            .map_err(|_| StoreError::Closed)
    }
}

/// The checkpoints of every file of a glob log (keys `<log>:<file name>`).
pub fn load_checkpoints_of(conn: &Connection, log: &str) -> rusqlite::Result<Vec<Checkpoint>> {
    let mut stmt = conn.prepare(
        "SELECT log, dev, ino, fp_len, fp_hash, offset FROM log_checkpoints WHERE substr(log, 1, ?2) = ?1",
    )?;
    let prefix = format!("{log}:");
    let rows = stmt.query_map(rusqlite::params![prefix, prefix.len() as i64], |r| {
        Ok(Checkpoint {
            log: r.get(0)?,
            dev: r.get::<_, i64>(1)? as u64,
            ino: r.get::<_, i64>(2)? as u64,
            fp_len: r.get::<_, i64>(3)? as u64,
            fp_hash: r.get(4)?,
            offset: r.get::<_, i64>(5)? as u64,
        })
    })?;
    rows.collect()
}

/// The last checkpoint committed for `log`.
pub fn load_checkpoint(conn: &Connection, log: &str) -> rusqlite::Result<Option<Checkpoint>> {
    conn.query_row(
        "SELECT dev, ino, fp_len, fp_hash, offset FROM log_checkpoints WHERE log = ?1",
        [log],
        |r| {
            Ok(Checkpoint {
                log: log.to_string(),
                dev: r.get::<_, i64>(0)? as u64,
                ino: r.get::<_, i64>(1)? as u64,
                fp_len: r.get::<_, i64>(2)? as u64,
                fp_hash: r.get(3)?,
                offset: r.get::<_, i64>(4)? as u64,
            })
        },
    )
    .optional()
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
    Ok(super::verify::head_hash(conn)?)
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    mut head: String,
    on_commit: OnCommit,
) {
    let mut batch: Vec<Item> = Vec::with_capacity(64);
    let mut tap: Option<EventTap> = None;
    loop {
        let mut closing = false;
        let mut pending_prune = None;
        let mut pending_inventory = None;
        let mut pending_alert = None;
        let mut events = 0;
        match rx.blocking_recv() {
            None | Some(Command::Close) => closing = true,
            Some(Command::Write(item)) => {
                events += item.events.len();
                batch.push(item);
            }
            Some(Command::Prune { cutoff, ack }) => pending_prune = Some((cutoff, ack)),
            Some(Command::Inventory { update, ack }) => pending_inventory = Some((update, ack)),
            // Alerts, deliveries, silences, the event tap: one at a time, between batches.
            Some(cmd) => pending_alert = Some(cmd),
        }
        while !closing
            && pending_prune.is_none()
            && pending_inventory.is_none()
            && pending_alert.is_none()
            && events < MAX_BATCH
        {
            match rx.try_recv() {
                Ok(Command::Write(item)) => {
                    events += item.events.len();
                    batch.push(item);
                }
                Ok(Command::Prune { cutoff, ack }) => pending_prune = Some((cutoff, ack)),
                Ok(Command::Inventory { update, ack }) => pending_inventory = Some((update, ack)),
                Ok(Command::Close) => closing = true,
                Ok(cmd) => pending_alert = Some(cmd),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit(&mut conn, &mut head, &mut batch, &on_commit, tap.as_ref());
        }
        if let Some((cutoff, ack)) = pending_prune {
            let _ = ack.send(prune(&mut conn, &cutoff).map_err(StoreError::from));
        }
        if let Some((update, ack)) = pending_inventory {
            let _ = ack.send(store_inventory(
                &mut conn,
                &mut head,
                &update,
                &on_commit,
                tap.as_ref(),
            ));
        }
        if let Some(cmd) = pending_alert {
            if let Command::Tap(t) = cmd {
                tap = Some(t);
            } else {
                alert_command(&mut conn, cmd);
            }
        }
        if closing {
            // Refuse new work, then commit what was queued behind the Close.
            rx.close();
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Command::Write(item) => batch.push(item),
                    Command::Inventory { update, ack } => {
                        if !batch.is_empty() {
                            commit(&mut conn, &mut head, &mut batch, &on_commit, tap.as_ref());
                        }
                        let _ = ack.send(store_inventory(
                            &mut conn,
                            &mut head,
                            &update,
                            &on_commit,
                            tap.as_ref(),
                        ));
                    }
                    Command::Prune { .. } | Command::Tap(_) | Command::Close => {}
                    cmd => alert_command(&mut conn, cmd),
                }
            }
            if !batch.is_empty() {
                commit(&mut conn, &mut head, &mut batch, &on_commit, tap.as_ref());
            }
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
            }
            tracing::debug!("audit writer closed");
            return;
        }
    }
}

fn alert_command(conn: &mut Connection, cmd: Command) {
    match cmd {
        Command::Execute(job) => job(conn),
        Command::Alerts { update, ack } => {
            let _ = ack.send(store_alerts(conn, &update).map_err(StoreError::from));
        }
        Command::Delivery { outcome, ack } => {
            let _ = ack.send(store_delivery(conn, &outcome).map_err(StoreError::from));
        }
        Command::Silence { silence, ack } => {
            let s = &silence;
            let r = conn
                .execute(
                    "INSERT INTO alert_silences (matchers, starts_at, ends_at, created_by, comment)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        serde_json::to_string(&s.matchers).unwrap_or_default(),
                        super::format_time(s.starts_at),
                        super::format_time(s.ends_at),
                        s.created_by,
                        s.comment
                    ],
                )
                .map(|_| conn.last_insert_rowid());
            let _ = ack.send(r.map_err(StoreError::from));
        }
        _ => {}
    }
}

/// State changes and their outbox rows: one transaction, so a notification exists exactly
/// when its state change does.
fn store_alerts(conn: &mut Connection, u: &AlertUpdate) -> rusqlite::Result<()> {
    let now = super::format_time(time::OffsetDateTime::now_utc());
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let tx = conn.transaction()?;
    for s in &u.states {
        if s.phase == "inactive" {
            tx.execute(
                "DELETE FROM alert_states WHERE rule = ?1 AND key = ?2",
                params![s.rule, s.key],
            )?;
        } else {
            tx.execute(
                "INSERT INTO alert_states (rule, key, phase, state, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(rule, key) DO UPDATE SET phase = excluded.phase,
                    state = excluded.state, updated_at = excluded.updated_at",
                params![s.rule, s.key, s.phase, s.state, now],
            )?;
        }
    }
    for o in &u.outbox {
        tx.execute(
            "INSERT OR IGNORE INTO alert_outbox (idempotency_key, channel, payload, created_at,
                attempts, next_attempt_ms)
             VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            params![o.idempotency_key, o.channel, o.payload, now, now_ms],
        )?;
    }
    tx.commit()
}

/// Records an attempt; an accepted notification leaves the outbox in the same transaction.
fn store_delivery(conn: &mut Connection, o: &DeliveryOutcome) -> rusqlite::Result<()> {
    let now = super::format_time(time::OffsetDateTime::now_utc());
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO alert_deliveries (outbox_id, idempotency_key, channel, time, ok, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            o.outbox_id,
            o.idempotency_key,
            o.channel,
            now,
            o.error.is_none(),
            o.error
        ],
    )?;
    match &o.error {
        None => {
            tx.execute("DELETE FROM alert_outbox WHERE id = ?1", [o.outbox_id])?;
        }
        Some(e) => {
            tx.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?2,
                    next_attempt_ms = ?3 WHERE id = ?1",
                params![o.outbox_id, e, o.retry_at_ms],
            )?;
        }
    }
    tx.commit()
}

fn commit(
    conn: &mut Connection,
    head: &mut String,
    batch: &mut Vec<Item>,
    on_commit: &OnCommit,
    tap: Option<&EventTap>,
) {
    let before = head.clone();
    let mut actions: Vec<&'static str> = Vec::new();
    let mut tapped: Vec<Event> = Vec::new();
    let result = (|| -> Result<Vec<usize>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let mut stored = Vec::with_capacity(batch.len());
        {
            let mut checkpoint = tx.prepare_cached(
                "INSERT INTO log_checkpoints (log, dev, ino, fp_len, fp_hash, offset, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(log) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,
                    fp_len = excluded.fp_len, fp_hash = excluded.fp_hash, offset = excluded.offset,
                    updated_at = excluded.updated_at",
            )?;
            for item in batch.iter() {
                let inserted = insert_events(&tx, head, item.events.iter())?;
                for (e, _) in item.events.iter().zip(&inserted).filter(|(_, i)| **i) {
                    actions.push(e.action.as_str());
                    if tap.is_some() {
                        tapped.push(e.clone());
                    }
                }
                let new = inserted.iter().filter(|i| **i).count();
                if let Some(c) = &item.checkpoint {
                    checkpoint.execute(params![
                        c.log,
                        c.dev as i64,
                        c.ino as i64,
                        c.fp_len as i64,
                        c.fp_hash,
                        c.offset as i64,
                        super::format_time(time::OffsetDateTime::now_utc())
                    ])?;
                }
                stored.push(new);
            }
        }
        tx.commit()?;
        Ok(stored)
    })();
    match result {
        Ok(stored) => {
            on_commit(&actions);
            if let Some(t) = tap {
                for e in tapped {
                    let _ = t.send(e);
                }
            }
            for (item, n) in batch.drain(..).zip(stored) {
                if let Some(ack) = item.ack {
                    let _ = ack.send(Ok(n));
                }
            }
        }
        Err(e) => {
            *head = before;
            tracing::error!(error = %e, items = batch.len(), "audit batch not committed");
            for item in batch.drain(..) {
                if let Some(ack) = item.ack {
                    let _ = ack.send(Err(StoreError::Batch(e.to_string())));
                }
            }
        }
    }
}

fn insert_events<'a>(
    tx: &rusqlite::Transaction<'_>,
    head: &mut String,
    events: impl Iterator<Item = &'a Event>,
) -> Result<Vec<bool>, rusqlite::Error> {
    let mut inserted = Vec::new();
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO audit_events (time, registry, action, repository, tag, digest,
            media_type, size, actor, remote_addr, user_agent, request_id, method, source,
            status, event_id, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?;
    for e in events {
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
        if n == 1 {
            *head = hash;
        }
        inserted.push(n == 1);
    }
    Ok(inserted)
}

fn store_inventory(
    conn: &mut Connection,
    head: &mut String,
    u: &InventoryUpdate,
    on_commit: &OnCommit,
    tap: Option<&EventTap>,
) -> Result<(), StoreError> {
    let before = head.clone();
    let result = (|| -> Result<Vec<bool>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let r = u.registry.as_str();
        if u.replace {
            tx.execute("DELETE FROM inventory_tags WHERE registry = ?1", [r])?;
            tx.execute(
                "DELETE FROM inventory_repositories WHERE registry = ?1",
                [r],
            )?;
        }
        {
            let mut add =
                tx.prepare_cached("INSERT OR IGNORE INTO inventory_repositories VALUES (?1, ?2)")?;
            for repo in &u.add_repositories {
                add.execute(params![r, repo])?;
            }
            let mut del_repo = tx.prepare_cached(
                "DELETE FROM inventory_repositories WHERE registry = ?1 AND repository = ?2",
            )?;
            let mut del_repo_tags = tx.prepare_cached(
                "DELETE FROM inventory_tags WHERE registry = ?1 AND repository = ?2",
            )?;
            for repo in &u.remove_repositories {
                del_repo.execute(params![r, repo])?;
                del_repo_tags.execute(params![r, repo])?;
            }
            let mut up =
                tx.prepare_cached("INSERT OR REPLACE INTO inventory_tags VALUES (?1, ?2, ?3, ?4)")?;
            for (repo, tag, digest) in &u.upsert_tags {
                up.execute(params![r, repo, tag, digest])?;
            }
            let mut del = tx.prepare_cached(
                "DELETE FROM inventory_tags WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
            )?;
            for (repo, tag) in &u.remove_tags {
                del.execute(params![r, repo, tag])?;
            }
            tx.execute(
                "INSERT OR REPLACE INTO inventory_polls VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    r,
                    super::format_time(u.time),
                    u.repositories as i64,
                    u.tags as i64,
                    u.unique_bytes.min(i64::MAX as u64) as i64,
                    u.report
                ],
            )?;
        }
        let inserted = insert_events(&tx, head, u.events.iter())?;
        tx.commit()?;
        Ok(inserted)
    })();
    match result {
        Ok(inserted) => {
            let actions: Vec<&'static str> = u
                .events
                .iter()
                .zip(&inserted)
                .filter(|(_, ins)| **ins)
                .map(|(e, _)| e.action.as_str())
                .collect();
            on_commit(&actions);
            if let Some(t) = tap {
                for (e, _) in u.events.iter().zip(&inserted).filter(|(_, ins)| **ins) {
                    let _ = t.send(e.clone());
                }
            }
            Ok(())
        }
        Err(e) => {
            *head = before;
            tracing::error!(error = %e, registry = %u.registry, "inventory update not committed");
            Err(StoreError::Batch(e.to_string()))
        }
    }
}

/// The inventory the last poll of `registry` stored: repositories and (repository, tag) →
/// digest. `None` when the registry was never polled.
#[allow(clippy::type_complexity)]
pub fn load_inventory(
    conn: &Connection,
    registry: &str,
) -> Result<
    Option<(
        std::collections::BTreeSet<String>,
        std::collections::BTreeMap<(String, String), String>,
    )>,
    rusqlite::Error,
> {
    let polled: i64 = conn.query_row(
        "SELECT count(*) FROM inventory_polls WHERE registry = ?1",
        [registry],
        |r| r.get(0),
    )?;
    if polled == 0 {
        return Ok(None);
    }
    let mut stmt =
        conn.prepare("SELECT repository FROM inventory_repositories WHERE registry = ?1")?;
    let repos = stmt
        .query_map([registry], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare("SELECT repository, tag, digest FROM inventory_tags WHERE registry = ?1")?;
    let tags = stmt
        .query_map([registry], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some((repos, tags)))
}

/// The report of the last stored poll of `registry`, as JSON, if any.
pub fn load_inventory_report(
    conn: &Connection,
    registry: &str,
) -> Result<Option<String>, rusqlite::Error> {
    // No row (never polled) and a NULL report (stored before migration 6) are both None.
    Ok(conn
        .query_row(
            "SELECT report FROM inventory_polls WHERE registry = ?1",
            [registry],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
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
        .optional()?;
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
    use crate::model::event::{Action, Source};

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
