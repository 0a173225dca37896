//! The single writer of the database: a thread that owns the write connection, takes typed
//! commands from a bounded channel and commits events in batches, extending the hash chain.
//!
//! The loop here knows nothing of SQL: it batches, acknowledges and reports commits; a
//! [`Backend`] does the writing. Events are committed in batches of up to [`MAX_BATCH`];
//! any other command (an inventory update, alert states, a delivery outcome, a silence, a
//! storage sample, retention) ends the batch and runs on its own, so every command sees the
//! events queued before it committed.

use super::StoreError;
use super::alerts::{AlertUpdate, DeliveryOutcome, OutboxClaim};
use super::health::Health;
use super::inventory::InventoryUpdate;
use super::manifests::ManifestUpdate;
use super::silences::Silence;
use crate::model::usage::Sample;
use crate::model::{Checkpoint, Event};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

/// Most events committed in one transaction. Large enough to amortise the fsync, small
/// enough that the first event of a batch is not kept waiting.
const MAX_BATCH: usize = 1024;

/// How long the writer waits before committing regwatch's own retained events again after a
/// failed commit, when nothing else arrives meanwhile.
const RETRY: Duration = Duration::from_secs(1);

/// Commits tried at shutdown for events still retained, before they are reported lost.
const CLOSE_ATTEMPTS: usize = 3;

/// How long the writer goes without a command, after some, before it calls
/// [`Backend::idle`]: longer than a catch-up's pauses between batches (tens of ms), so that
/// work waits until the catch-up is over.
const IDLE: Duration = Duration::from_millis(500);

/// Answered with how many of the item's events were new (not re-deliveries).
type Ack = oneshot::Sender<Result<usize, StoreError>>;
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Events (and a checkpoint) committed together. Shared: a tailer keeps its batch until
/// the commit is acknowledged (to send it again if it fails) without copying it.
pub(super) struct Item {
    pub events: Arc<Vec<Event>>,
    pub checkpoint: Option<Checkpoint>,
    ack: Option<Ack>,
}

enum Command {
    Write(Item),
    /// Retention: delete rows older than the cutoff.
    Prune {
        cutoff: OffsetDateTime,
        ack: Reply<u64>,
    },
    /// A poll's changes: the stored inventory and the audit events in one transaction.
    Inventory {
        update: Box<InventoryUpdate>,
        ack: Reply<()>,
    },
    /// Alert state changes and the notifications they cause, in one transaction.
    Alerts {
        update: Box<AlertUpdate>,
        ack: Reply<()>,
    },
    /// Outbox rows this agent is about to send, claimed from the other agents.
    Claim {
        claim: Box<OutboxClaim>,
        ack: Reply<Vec<i64>>,
    },
    /// The outcome of one delivery attempt.
    Delivery {
        outcome: DeliveryOutcome,
        ack: Reply<()>,
    },
    /// A new silence; answered with its id.
    Silence {
        silence: Box<Silence>,
        ack: Reply<i64>,
    },
    /// A storage usage sample; older samples than `keep` are dropped.
    Sample {
        registry: String,
        sample: Sample,
        keep: Duration,
        ack: Reply<()>,
    },
    /// A storage walk's manifests for the cache.
    Manifests {
        update: Box<ManifestUpdate>,
        ack: Reply<()>,
    },
    /// A forwarder's receiver accepted the rows up to `last_id`.
    ForwardCursor {
        forward: String,
        last_id: i64,
        ack: Reply<()>,
    },
    /// From now on, send every newly committed audit event to this channel (alert rules on
    /// audit events see only what is stored); `None` stops sending.
    Tap(Option<EventTap>),
    /// Everything queued before this is committed; then the thread ends.
    Close,
}

/// Receives every audit event after it is committed (re-deliveries excluded).
pub type EventTap = mpsc::UnboundedSender<Event>;

/// Called after each commit with the actions of the rows inserted (for metrics).
pub type OnCommit = Box<dyn Fn(&[&'static str]) + Send>;

/// What a database must do for the writer. Each method is one transaction; the events'
/// "new" flags tell re-deliveries (same source and event id) from new rows.
pub(super) trait Backend: Send + 'static {
    /// Commits every item's events and checkpoint; per item, which events were new.
    fn write(&mut self, items: &[Item]) -> Result<Vec<Vec<bool>>, StoreError>;
    fn prune(&mut self, cutoff: OffsetDateTime) -> Result<u64, StoreError>;
    /// Applies a poll's changes with its events; which events were new.
    fn inventory(&mut self, update: &InventoryUpdate) -> Result<Vec<bool>, StoreError>;
    fn alerts(&mut self, update: &AlertUpdate) -> Result<(), StoreError>;
    fn delivery(&mut self, outcome: &DeliveryOutcome) -> Result<(), StoreError>;
    /// Which of the claim's rows this agent may send. A database of one agent has nobody
    /// to claim them from: all of them.
    fn claim(&mut self, claim: &OutboxClaim) -> Result<Vec<i64>, StoreError> {
        Ok(claim.ids.clone())
    }
    fn silence(&mut self, silence: &Silence) -> Result<i64, StoreError>;
    fn sample(&mut self, registry: &str, sample: &Sample, keep: Duration)
    -> Result<(), StoreError>;
    fn manifests(&mut self, update: &ManifestUpdate) -> Result<(), StoreError>;
    fn forward_cursor(&mut self, forward: &str, last_id: i64) -> Result<(), StoreError>;
    /// Called once after the last command (e.g. to checkpoint a write-ahead log).
    fn close(&mut self);
    /// Called when no command came for [`IDLE`] after some did: upkeep that would slow a
    /// burst of commits (SQLite checkpoints its write-ahead log here).
    fn idle(&mut self) {}
}

/// The writer's timer for [`IDLE`]: a small runtime of its own, as the writer is a plain
/// thread and may be started outside any runtime.
fn idle_timer() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .inspect_err(|e| tracing::warn!(error = %e, "database writer: no idle timer"))
        .ok()
}

/// A tailer's transaction on its way: [`TailCommit::wait`] says how it went.
pub struct TailCommit(oneshot::Receiver<Result<usize, StoreError>>);

impl TailCommit {
    /// Waits for the transaction; the number of new events, or why it was not stored.
    pub fn wait(self) -> Result<usize, StoreError> {
        self.0.blocking_recv().map_err(|_| StoreError::Closed)?
    }
}

/// A cheap, clonable handle for everything that writes to the database.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Command>,
    health: Arc<Health>,
}

impl Sink {
    /// Whether the store could write at its last commit.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Sends the command `make` builds around a reply channel and waits for the reply.
    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
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
                events: Arc::new(events),
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

    /// Waits until everything queued before it has been through a commit: `Ok` when it was
    /// committed, the commit's error when not (regwatch's own events are then retained for
    /// the next commit). An empty write: items are committed in the order they are queued.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.write(Vec::new(), None).await.map(|_| ())
    }

    /// Commits all `events` in one transaction and waits for it. Returns how many were new
    /// (not re-deliveries).
    pub async fn append_all(&self, events: Vec<Event>) -> Result<usize, StoreError> {
        self.write(events, None).await
    }

    /// Commits `events` and the log `checkpoint` in one transaction, from a tailer thread.
    pub fn commit_tail_blocking(
        &self,
        events: Arc<Vec<Event>>,
        checkpoint: Checkpoint,
    ) -> Result<usize, StoreError> {
        self.send_tail_blocking(events, checkpoint)?.wait()
    }

    /// Queues `events` and the log `checkpoint` for one transaction, from a tailer thread,
    /// without waiting for it: the tailer reads its next batch meanwhile. Transactions are
    /// committed in the order they are queued.
    pub fn send_tail_blocking(
        &self,
        events: Arc<Vec<Event>>,
        checkpoint: Checkpoint,
    ) -> Result<TailCommit, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .blocking_send(Command::Write(Item {
                events,
                checkpoint: Some(checkpoint),
                ack: Some(ack),
            }))
            .map_err(|_| StoreError::Closed)?;
        Ok(TailCommit(done))
    }

    /// Queues `event` without waiting for the commit (waits only while the queue is full).
    /// A failed commit keeps it for the next one; [`Writer::close`] says how many could not
    /// be committed in the end.
    pub async fn enqueue(&self, event: Event) -> Result<(), StoreError> {
        self.tx
            .send(unacknowledged(event))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Like [`enqueue`](Self::enqueue), from a thread outside the async runtime.
    pub fn enqueue_blocking(&self, event: Event) -> Result<(), StoreError> {
        self.tx
            .blocking_send(unacknowledged(event))
            .map_err(|_| StoreError::Closed)
    }

    /// Deletes audit rows older than `cutoff`, keeping the chain verifiable (an anchor row
    /// remembers the link of the first remaining row). Runs between batches.
    pub async fn prune(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
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

    /// Claims outbox rows before sending them (see [`OutboxClaim`]); the ids this agent
    /// may send (on PostgreSQL, those no other agent holds).
    pub async fn claim_outbox(&self, claim: OutboxClaim) -> Result<Vec<i64>, StoreError> {
        self.request(|ack| Command::Claim {
            claim: Box::new(claim),
            ack,
        })
        .await
    }

    /// Records a delivery attempt (see [`DeliveryOutcome`]); waits for the commit.
    pub async fn store_delivery(&self, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        self.request(|ack| Command::Delivery { outcome, ack }).await
    }

    /// Stores a silence; returns its id.
    pub async fn store_silence(&self, silence: Silence) -> Result<i64, StoreError> {
        self.request(|ack| Command::Silence {
            silence: Box::new(silence),
            ack,
        })
        .await
    }

    /// Stores one storage usage sample of `registry` and drops its samples older than `keep`.
    pub async fn store_sample(
        &self,
        registry: &str,
        sample: Sample,
        keep: Duration,
    ) -> Result<(), StoreError> {
        let registry = registry.to_string();
        self.request(|ack| Command::Sample {
            registry,
            sample,
            keep,
            ack,
        })
        .await
    }

    /// Replaces the manifest cache of `update.registry` with what a storage walk found.
    pub async fn store_manifests(&self, update: ManifestUpdate) -> Result<(), StoreError> {
        self.request(|ack| Command::Manifests {
            update: Box::new(update),
            ack,
        })
        .await
    }

    /// Moves `forward`'s cursor to `last_id` (never backwards); waits for the commit.
    pub async fn store_forward_cursor(
        &self,
        forward: &str,
        last_id: i64,
    ) -> Result<(), StoreError> {
        let forward = forward.to_string();
        self.request(|ack| Command::ForwardCursor {
            forward,
            last_id,
            ack,
        })
        .await
    }

    /// Sends every audit event committed from now on to `tap`; `None` stops it (each event
    /// is cloned for the tap, so nobody should hold one that no rule reads).
    pub async fn set_event_tap(&self, tap: Option<EventTap>) -> Result<(), StoreError> {
        self.tx
            .send(Command::Tap(tap))
            .await
            .map_err(|_| StoreError::Closed)
    }
}

fn unacknowledged(event: Event) -> Command {
    Command::Write(Item {
        events: Arc::new(vec![event]),
        checkpoint: None,
        ack: None,
    })
}

/// Owns the writer thread.
pub struct Writer {
    sink: Sink,
    /// Answers how many retained events could not be committed by the end.
    thread: Option<JoinHandle<usize>>,
}

impl Writer {
    /// Starts the writer thread on `backend`.
    pub(super) fn start(
        backend: impl Backend,
        capacity: usize,
        on_commit: OnCommit,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(capacity);
        let health = Arc::new(Health::default());
        let state = Loop {
            backend,
            on_commit,
            tap: None,
            batch: Vec::with_capacity(64),
            retained: Vec::new(),
            health: health.clone(),
            upkeep_due: false,
            timer: None,
        };
        let thread = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || state.run(rx))?;
        Ok(Writer {
            sink: Sink { tx, health },
            thread: Some(thread),
        })
    }

    pub fn sink(&self) -> Sink {
        self.sink.clone()
    }

    /// Commits everything accepted so far and stops the thread; returns how many of the
    /// unacknowledged events (see [`Sink::enqueue`]) could not be committed. Appends after
    /// this fail with [`StoreError::Closed`].
    pub async fn close(mut self) -> usize {
        let _ = self.sink.tx.send(Command::Close).await;
        match self.thread.take() {
            Some(t) => tokio::task::spawn_blocking(move || t.join().unwrap_or(0))
                .await
                .unwrap_or(0),
            None => 0,
        }
    }

    /// [`close`](Self::close) for callers outside the async runtime.
    pub fn close_blocking(mut self) -> usize {
        let _ = self.sink.tx.blocking_send(Command::Close);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// The writer thread's state.
struct Loop<B> {
    backend: B,
    on_commit: OnCommit,
    tap: Option<EventTap>,
    batch: Vec<Item>,
    /// Unacknowledged items of a batch that failed: nobody waits to resend them, so they go
    /// first into the next commit.
    retained: Vec<Item>,
    health: Arc<Health>,
    /// Commands came since the backend's last [`Backend::idle`].
    upkeep_due: bool,
    /// Only to wait for a command with a timeout (tokio's channel has no blocking one);
    /// without it, no idle upkeep.
    timer: Option<tokio::runtime::Runtime>,
}

impl<B: Backend> Loop<B> {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) -> usize {
        // Built on this thread: a runtime must not be dropped inside another's tasks.
        self.timer = idle_timer();
        loop {
            let Some(first) = self.next(&mut rx) else {
                return self.finish(&mut rx);
            };
            self.upkeep_due = true;
            let after = self.gather(first, &mut rx);
            self.commit_batch();
            match after {
                Some(Command::Close) => return self.finish(&mut rx),
                Some(cmd) => self.apply(cmd),
                None => {}
            }
        }
    }

    /// The next command; while events are retained, waits at most [`RETRY`] for one and
    /// commits them alone if none came. `None` when every sender is gone.
    fn next(&mut self, rx: &mut mpsc::Receiver<Command>) -> Option<Command> {
        while !self.retained.is_empty() {
            std::thread::sleep(RETRY);
            match rx.try_recv() {
                Ok(cmd) => return Some(cmd),
                Err(mpsc::error::TryRecvError::Empty) => self.commit_batch(),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
            }
        }
        if let Some(timer) = self.timer.as_ref().filter(|_| self.upkeep_due) {
            // The timeout is made inside: its timer belongs to this runtime.
            let wait = async { tokio::time::timeout(IDLE, rx.recv()).await };
            if let Ok(cmd) = timer.block_on(wait) {
                return cmd;
            }
            self.upkeep_due = false;
            self.backend.idle();
        }
        rx.blocking_recv()
    }

    /// Collects writes into the batch, starting with `first`, until [`MAX_BATCH`] events,
    /// an empty queue, or another kind of command (returned, to run after the batch).
    fn gather(&mut self, first: Command, rx: &mut mpsc::Receiver<Command>) -> Option<Command> {
        let mut events = 0;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            let Command::Write(item) = cmd else {
                return Some(cmd);
            };
            events += item.events.len();
            self.batch.push(item);
            if events < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        None
    }

    /// Refuses new work, then commits what was queued behind the close.
    fn finish(mut self, rx: &mut mpsc::Receiver<Command>) -> usize {
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::Write(item) => self.batch.push(item),
                // Retention and a new tap are not worth delaying a shutdown for.
                Command::Prune { .. } | Command::Tap(_) | Command::Close => {}
                cmd => {
                    self.commit_batch();
                    self.apply(cmd);
                }
            }
        }
        self.commit_batch();
        for _ in 1..CLOSE_ATTEMPTS {
            if self.retained.is_empty() {
                break;
            }
            std::thread::sleep(RETRY);
            self.commit_batch();
        }
        self.backend.close();
        let lost: usize = self.retained.iter().map(|i| i.events.len()).sum();
        if lost > 0 {
            tracing::error!(
                events = lost,
                "regwatch's own events could not be committed before shutdown"
            );
        }
        tracing::debug!("database writer closed");
        lost
    }

    fn commit_batch(&mut self) {
        let mut batch = std::mem::take(&mut self.retained);
        batch.append(&mut self.batch);
        if batch.is_empty() {
            return;
        }
        let result = self.backend.write(&batch);
        self.observe(&result);
        match result {
            Ok(flags) => {
                let new: Vec<&Event> = batch
                    .iter()
                    .zip(&flags)
                    .flat_map(|(item, f)| new_events(&item.events, f))
                    .collect();
                self.committed(&new);
                for (item, f) in batch.into_iter().zip(flags) {
                    if let Some(ack) = item.ack {
                        let _ = ack.send(Ok(f.iter().filter(|n| **n).count()));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, items = batch.len(), "audit batch not committed");
                let message = e.to_string();
                for mut item in batch {
                    match item.ack.take() {
                        // The sender hears of it and sends again (a tailer, the registry).
                        Some(ack) => {
                            let _ = ack.send(Err(StoreError::Batch(message.clone())));
                        }
                        None => self.retained.push(item),
                    }
                }
            }
        }
        self.health.set_retained(self.retained.len());
    }

    /// Keeps [`Health`] up to date with a backend call's outcome.
    fn observe<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.health.set_writable(true),
            Err(StoreError::Replaced { .. }) => self.health.set_replaced(),
            Err(_) => self.health.set_writable(false),
        }
    }

    /// Counts and taps the rows a commit inserted.
    fn committed(&self, new: &[&Event]) {
        let actions: Vec<&'static str> = new.iter().map(|e| e.action.as_str()).collect();
        (self.on_commit)(&actions);
        if let Some(t) = &self.tap {
            for e in new {
                let _ = t.send((*e).clone());
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Prune { cutoff, ack } => {
                let _ = ack.send(self.observed(|b| b.prune(cutoff)));
            }
            Command::Inventory { update, ack } => {
                let result = self.observed(|b| b.inventory(&update)).map(|flags| {
                    self.committed(&new_events(&update.events, &flags).collect::<Vec<_>>());
                });
                if let Err(e) = &result {
                    tracing::error!(error = %e, registry = %update.registry, "inventory update not committed");
                }
                let _ = ack.send(result);
            }
            Command::Alerts { update, ack } => {
                let _ = ack.send(self.observed(|b| b.alerts(&update)));
            }
            Command::Delivery { outcome, ack } => {
                let _ = ack.send(self.observed(|b| b.delivery(&outcome)));
            }
            Command::Claim { claim, ack } => {
                let _ = ack.send(self.backend.claim(&claim));
            }
            Command::Silence { silence, ack } => {
                let _ = ack.send(self.observed(|b| b.silence(&silence)));
            }
            Command::Sample {
                registry,
                sample,
                keep,
                ack,
            } => {
                let _ = ack.send(self.observed(|b| b.sample(&registry, &sample, keep)));
            }
            Command::Manifests { update, ack } => {
                let _ = ack.send(self.observed(|b| b.manifests(&update)));
            }
            Command::ForwardCursor {
                forward,
                last_id,
                ack,
            } => {
                let _ = ack.send(self.observed(|b| b.forward_cursor(&forward, last_id)));
            }
            Command::Tap(t) => self.tap = t,
            Command::Write(_) | Command::Close => unreachable!("handled by the loop"),
        }
    }
}

impl<B: Backend> Loop<B> {
    /// Runs one backend call and records its outcome in [`Health`].
    fn observed<T>(
        &mut self,
        call: impl FnOnce(&mut B) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = call(&mut self.backend);
        self.observe(&result);
        result
    }
}

fn new_events<'a>(events: &'a [Event], flags: &'a [bool]) -> impl Iterator<Item = &'a Event> {
    events
        .iter()
        .zip(flags)
        .filter(|(_, new)| **new)
        .map(|(e, _)| e)
}
