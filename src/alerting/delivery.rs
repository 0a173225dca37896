//! One delivery worker per channel: reads the channel's outbox oldest first, sends what is
//! due, and has the writer record each attempt. A notification leaves the outbox only when
//! the receiver accepted it; a failure backs its row off (1 s, 2 s, 4 s … capped at a
//! minute), and later rows of the same alert wait for it ([`due_in_order`]).

use crate::channels::{self, Notification};
use crate::config::channel::ChannelConfig;
use crate::metrics::Metrics;
use crate::store::{DeliveryOutcome, OutboxClaim, OutboxEntry, Reader, Sink, Store, StoreError};
use prometheus::IntCounter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify as Wake;
use tokio_util::sync::CancellationToken;

/// First retry after a failed delivery; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts: a receiver that comes back is served within this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Outbox rows sent per round by one worker.
const BATCH: usize = 50;
/// Most outbox rows of one channel looked at per round; a longer backlog is reached as the
/// head is delivered.
const LOOKAHEAD: i64 = 1000;

/// The wait before attempt `attempts + 1` (attempts already failed ≥ 1). Kept with the row
/// (`next_attempt_ms`), so the backoff survives a restart.
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Delivers one channel's outbox until `shutdown`.
pub async fn deliver_channel(
    channel: ChannelConfig,
    store: Store,
    sink: Sink,
    metrics: Arc<Metrics>,
    wake: Arc<Wake>,
    shutdown: CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(channel.timeout)
        .build()
        .expect("a reqwest client builds");
    let mut outbox = Outbox {
        channel: channel.name.clone(),
        store,
        metrics: metrics.clone(),
        db: None,
    };
    let w = Worker {
        sent: metrics
            .alerts
            .notifications_total
            .with_label_values(&[&channel.name]),
        failed: metrics
            .alerts
            .notifications_failed_total
            .with_label_values(&[&channel.name]),
        channel,
        client,
        sink,
    };
    while !shutdown.is_cancelled() {
        let (due, next) = outbox.due();
        let due = if outbox.store.is_shared() {
            w.claim(due).await
        } else {
            due
        };
        let Some(progressed) = w.send_all(due, &shutdown).await else {
            return;
        };
        outbox.update_pending();
        if progressed {
            continue;
        }
        let wait = match next {
            Some(at) => Duration::from_millis((at - now_ms()).clamp(10, 1000) as u64),
            None => Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The reading side of one channel's outbox.
struct Outbox {
    channel: String,
    store: Store,
    metrics: Arc<Metrics>,
    /// The read connection, reopened after a failure.
    db: Option<Reader>,
}

impl Outbox {
    /// The rows that may be sent now and when the next held-back one is due.
    fn due(&mut self) -> DueRows {
        if self.db.is_none() {
            self.db = self
                .store
                .reader()
                .map_err(|e| tracing::error!(error = %e, "outbox: cannot open the database"))
                .ok();
        }
        let Some(db) = &self.db else {
            return (Vec::new(), None);
        };
        match read_due(db, &self.channel) {
            Ok(due) => {
                self.update_pending();
                due
            }
            Err(e) => {
                tracing::error!(channel = %self.channel, error = %e, "outbox: read failed");
                self.db = None;
                (Vec::new(), None)
            }
        }
    }

    fn update_pending(&self) {
        if let Some(Ok(n)) = self.db.as_ref().map(Reader::outbox_pending) {
            self.metrics.alerts.outbox_pending.set(n);
        }
    }
}

/// The sending side: the channel, its client and where attempts are recorded.
struct Worker {
    channel: ChannelConfig,
    client: reqwest::Client,
    sink: Sink,
    sent: IntCounter,
    failed: IntCounter,
}

impl Worker {
    /// On a database shared by several agents: the rows of `due` this agent holds now (the
    /// others skip them), so each notification is sent by one agent. Held long enough to
    /// send them all, each taking up to the channel's timeout.
    async fn claim(&self, due: Vec<(i64, i64, String)>) -> Vec<(i64, i64, String)> {
        if due.is_empty() {
            return due;
        }
        let hold = self.channel.timeout * (due.len() as u32 + 1) + Duration::from_secs(10);
        let now = now_ms();
        let claim = OutboxClaim {
            channel: self.channel.name.clone(),
            ids: due.iter().map(|(id, _, _)| *id).collect(),
            now_ms: now,
            until_ms: now + hold.as_millis() as i64,
        };
        match self.sink.claim_outbox(claim).await {
            Ok(mine) => due
                .into_iter()
                .filter(|(id, _, _)| mine.contains(id))
                .collect(),
            Err(e) => {
                tracing::error!(channel = %self.channel.name, error = %e, "outbox: claim failed");
                Vec::new()
            }
        }
    }

    /// Sends `due` in order, stopping at the first refusal (the rows behind it would fail
    /// the same way). Whether any was accepted; `None` when stopping.
    async fn send_all(
        &self,
        due: Vec<(i64, i64, String)>,
        shutdown: &CancellationToken,
    ) -> Option<bool> {
        let mut progressed = false;
        for (id, attempts, payload) in due {
            let n = match serde_json::from_str::<Notification>(&payload) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(id, error = %e, "outbox row unreadable; dropped");
                    self.record(id, String::new(), None, 0).await?;
                    continue;
                }
            };
            let error = tokio::select! {
                r = self.send(&n, attempts) => r,
                _ = shutdown.cancelled() => return None,
            };
            let failed = error.is_some();
            let retry_at_ms = now_ms() + backoff(attempts as u32 + 1).as_millis() as i64;
            self.record(id, n.idempotency_key.clone(), error, retry_at_ms)
                .await?;
            if failed {
                break;
            }
            progressed = true;
        }
        Some(progressed)
    }

    /// One attempt; the error text when the receiver did not accept it.
    async fn send(&self, n: &Notification, attempts: i64) -> Option<String> {
        let name = &self.channel.name;
        match channels::deliver(&self.channel, &self.client, n).await {
            Ok(()) => {
                self.sent.inc();
                tracing::info!(channel = %name, rule = %n.rule, status = %n.status, "notification delivered");
                None
            }
            Err(e) => {
                self.failed.inc();
                tracing::warn!(channel = %name, rule = %n.rule, attempt = attempts + 1, error = %e, "notification not delivered; will retry");
                Some(e.to_string())
            }
        }
    }

    /// Records an attempt; `None` when the store cannot (the worker stops).
    async fn record(
        &self,
        outbox_id: i64,
        idempotency_key: String,
        error: Option<String>,
        retry_at_ms: i64,
    ) -> Option<()> {
        let outcome = DeliveryOutcome {
            outbox_id,
            channel: self.channel.name.clone(),
            idempotency_key,
            error,
            retry_at_ms,
        };
        match self.sink.store_delivery(outcome).await {
            Ok(()) => Some(()),
            Err(e) => {
                tracing::error!(error = %e, "delivery outcome not stored");
                None
            }
        }
    }
}

type DueRows = (Vec<(i64, i64, String)>, Option<i64>);

fn read_due(db: &Reader, channel: &str) -> Result<DueRows, StoreError> {
    Ok(due_in_order(
        db.outbox(channel, LOOKAHEAD)?,
        now_ms(),
        BATCH,
    ))
}

/// Which of `rows` (in id order) may be sent now, at most `batch`, and when the next
/// held-back one is due. A row waits while an older row *of the same alert* is still in
/// the outbox: a receiver must never see "resolved" before the "firing" it ends (for
/// Alertmanager that would leave the alert open). Other alerts are not held up by one
/// that a receiver keeps refusing.
fn due_in_order(rows: Vec<OutboxEntry>, now_ms: i64, batch: usize) -> DueRows {
    #[derive(serde::Deserialize)]
    struct Identity {
        rule: String,
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
    }
    let mut seen = std::collections::HashSet::new();
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    for row in rows {
        // An unreadable payload is its own alert (the worker drops it when it is due).
        let identity = serde_json::from_str::<Identity>(&row.payload)
            .map(|i| (i.rule, i.labels))
            .map_err(|_| row.id);
        if !seen.insert(identity) {
            continue;
        }
        if row.next_attempt_ms <= now_ms && due.len() < batch {
            due.push((row.id, row.attempts, row.payload));
        } else {
            next = Some(next.map_or(row.next_attempt_ms, |n: i64| n.min(row.next_attempt_ms)));
        }
    }
    (due, next)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_is_capped() {
        use std::time::Duration;
        assert_eq!(super::backoff(1), Duration::from_secs(1));
        assert_eq!(super::backoff(2), Duration::from_secs(2));
        assert_eq!(super::backoff(4), Duration::from_secs(8));
        assert_eq!(super::backoff(7), Duration::from_secs(60));
        assert_eq!(super::backoff(1000), Duration::from_secs(60));
    }

    fn row(id: i64, rule: &str, address: &str, status: &str, next: i64) -> super::OutboxEntry {
        super::OutboxEntry {
            id,
            attempts: 0,
            payload: serde_json::json!({
                "rule": rule, "status": status, "labels": {"address": address}
            })
            .to_string(),
            next_attempt_ms: next,
        }
    }

    fn ids(due: &super::DueRows) -> Vec<i64> {
        due.0.iter().map(|r| r.0).collect()
    }

    #[test]
    fn resolved_waits_for_its_firing_but_other_alerts_do_not() {
        // Row 1 (firing) failed and backs off until 5000; its resolved (2) is due but must
        // wait. Another address's alert (3) goes now.
        let rows = vec![
            row(1, "guessing", "10.0.0.5", "firing", 5000),
            row(2, "guessing", "10.0.0.5", "resolved", 1000),
            row(3, "guessing", "10.0.0.6", "firing", 1000),
        ];
        let due = super::due_in_order(rows.clone(), 2000, 50);
        assert_eq!(ids(&due), vec![3]);
        assert_eq!(due.1, Some(5000));
        // Once the firing is due, only it goes; the resolved follows in a later round.
        let due = super::due_in_order(rows[..2].to_vec(), 6000, 50);
        assert_eq!(ids(&due), vec![1]);
        let due = super::due_in_order(rows[1..2].to_vec(), 6000, 50);
        assert_eq!(ids(&due), vec![2]);
    }

    #[test]
    fn due_rows_are_capped_by_the_batch_and_unreadable_ones_stand_alone() {
        let mut rows: Vec<_> = (1..=5)
            .map(|i| row(i, "r", &format!("a{i}"), "firing", 0))
            .collect();
        rows.push(super::OutboxEntry {
            id: 6,
            attempts: 0,
            payload: "not json".into(),
            next_attempt_ms: 0,
        });
        assert_eq!(
            ids(&super::due_in_order(rows.clone(), 10, 3)),
            vec![1, 2, 3]
        );
        assert_eq!(
            ids(&super::due_in_order(rows, 10, 50)),
            vec![1, 2, 3, 4, 5, 6]
        );
    }
}
