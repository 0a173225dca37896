//! Layer 3: forwarding the audit trail to a SIEM. One task per `[[forward]]` reads the rows
//! after its cursor through its own read connection (in id order, [`Selection`] applied),
//! sends them as one batch, and only then has the single writer move its cursor. A receiver
//! that is down is retried with backoff by its own task: the writer, alerting and the other
//! forwarders never wait for it, and it catches up in order when it comes back.
//!
//! Delivery is at least once; exactly once unless regwatch dies between a send and the
//! cursor commit, when at most one batch is sent again (receivers deduplicate by row id).

pub mod cloudevents;
pub mod syslog;
pub mod transport;

use crate::config::forward::{ForwardConfig, ForwardKind, Selection, SyslogForward};
use crate::metrics::ForwardCounters;
use crate::model::glob;
use crate::store::{AuditRow, Filter, Reader, Sink, Store, StoreError};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::{Stream, TransportError};

/// First wait after a failed send; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts: a receiver that comes back is served within this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a send under way may still take once regwatch stops (below the daemon's drain
/// deadline, so its cursor commit still reaches the writer).
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often the trail is looked at without a commit notice (a reader's own safety net).
const IDLE_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("building the request: {0}")]
    Build(String),
    #[error("HTTP request failed: {0}")]
    Http(reqwest::Error),
    #[error("the receiver answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// Whether `row` is one `selection` forwards: every non-empty list must match.
pub fn selected(selection: &Selection, row: &AuditRow) -> bool {
    let action =
        selection.actions.is_empty() || selection.actions.iter().any(|a| a.as_str() == row.action);
    let registry = selection.registries.is_empty()
        || row
            .registry
            .as_deref()
            .is_some_and(|r| selection.registries.iter().any(|s| s == r));
    let repository = selection.repositories.is_empty()
        || row
            .repository
            .as_deref()
            .is_some_and(|r| selection.repositories.iter().any(|p| glob::matches(p, r)));
    action && registry && repository
}

/// What one forwarder task needs besides its config.
pub struct Context {
    pub store: Store,
    pub sink: Sink,
    pub counters: ForwardCounters,
    /// Changes after every commit of audit rows.
    pub commits: watch::Receiver<u64>,
}

/// One read of the trail after the cursor.
struct Batch {
    /// The rows the selection forwards.
    rows: Vec<AuditRow>,
    /// The id of the last row looked at (selected or not): the cursor after this batch.
    last_id: i64,
    /// The newest row in the trail.
    head_id: i64,
    /// Rows looked at; 0 when the cursor is at the head.
    examined: usize,
}

/// Runs one forwarder until `stop`.
pub async fn run(config: ForwardConfig, mut ctx: Context, stop: CancellationToken) {
    let mut sender = match Sender::new(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(forward = %config.name, error = %e, "forwarder cannot start");
            return;
        }
    };
    let mut trail = Trail {
        store: ctx.store.clone(),
        db: None,
        cursor: None,
    };
    tracing::info!(forward = %config.name, kind = config.kind.as_str(), "forwarder started");
    while !stop.is_cancelled() {
        let batch = match trail.next(&config) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(forward = %config.name, error = %e, "forwarder cannot read the audit trail");
                trail.db = None;
                if sleep_or_stop(IDLE_POLL, &stop).await {
                    break;
                }
                continue;
            }
        };
        let cursor = trail.cursor.unwrap_or(0);
        ctx.counters.lag.set(batch.head_id - cursor);
        if batch.examined == 0 {
            if wait_for_commit(&mut ctx.commits, &stop).await {
                break;
            }
            continue;
        }
        if !batch.rows.is_empty()
            && !sender
                .send_until_accepted(&config, &batch.rows, &ctx, &mut trail, &stop)
                .await
        {
            break;
        }
        trail.cursor = Some(batch.last_id);
        ctx.counters.lag.set(batch.head_id - batch.last_id);
        if let Err(e) = ctx
            .sink
            .store_forward_cursor(&config.name, batch.last_id)
            .await
        {
            // Sent but not recorded: the next commit (cursors only move forward) records it,
            // or a restart resends this batch once.
            tracing::error!(forward = %config.name, error = %e, "forward cursor not stored");
            if matches!(e, StoreError::Closed) {
                break;
            }
        }
    }
    sender.close().await;
}

/// The reading side: a read connection (reopened after a failure) and the cursor.
struct Trail {
    store: Store,
    db: Option<Reader>,
    /// `None` until read from the database.
    cursor: Option<i64>,
}

impl Trail {
    /// The id of the newest row, if the trail can be read.
    fn head(&self) -> Option<i64> {
        self.db.as_ref()?.last_id().ok()
    }

    /// The next batch after the cursor (none examined when there is nothing new).
    fn next(&mut self, config: &ForwardConfig) -> Result<Batch, StoreError> {
        if self.db.is_none() {
            self.db = Some(self.store.reader()?);
        }
        let db = self.db.as_ref().expect("opened above");
        let cursor = match self.cursor {
            Some(c) => c,
            None => {
                let c = db.forward_cursor(&config.name)?.unwrap_or(0);
                self.cursor = Some(c);
                c
            }
        };
        let filter = Filter {
            after_id: Some(cursor),
            limit: Some(config.batch_size as u64),
            ..Filter::default()
        };
        let (rows, head_id) = db.snapshot(|db| -> Result<_, StoreError> {
            Ok((db.event_rows(&filter)?, db.last_id()?))
        })?;
        let examined = rows.len();
        let last_id = rows.last().map_or(cursor, |r| r.id);
        let rows = rows
            .into_iter()
            .filter(|r| selected(&config.selection, r))
            .collect();
        Ok(Batch {
            rows,
            last_id,
            head_id,
            examined,
        })
    }
}

/// Waits for the next commit (or [`IDLE_POLL`]); `true` when stopping.
async fn wait_for_commit(commits: &mut watch::Receiver<u64>, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = commits.changed() => false,
        _ = tokio::time::sleep(IDLE_POLL) => false,
    }
}

/// `true` when stopping.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// The sending side, by kind.
enum Sender {
    Syslog(SyslogSender),
    CloudEvents {
        client: reqwest::Client,
        config: crate::config::forward::CloudEventsForward,
    },
}

impl Sender {
    fn new(config: &ForwardConfig) -> Result<Sender, ForwardError> {
        Ok(match &config.kind {
            ForwardKind::Syslog(s) => Sender::Syslog(SyslogSender::new(s)?),
            ForwardKind::CloudEvents(c) => Sender::CloudEvents {
                client: reqwest::Client::builder()
                    .timeout(config.timeout)
                    .build()
                    .map_err(ForwardError::Http)?,
                config: c.clone(),
            },
        })
    }

    async fn send(
        &mut self,
        config: &ForwardConfig,
        rows: &[AuditRow],
    ) -> Result<(), ForwardError> {
        match self {
            Sender::Syslog(s) => s.send(rows, config.timeout).await,
            Sender::CloudEvents { client, config } => cloudevents::post(client, config, rows).await,
        }
    }

    /// Sends `rows` until the receiver accepts them, backing off between attempts (capped
    /// exponential with jitter, from backon); `false` when stopped first.
    async fn send_until_accepted(
        &mut self,
        config: &ForwardConfig,
        rows: &[AuditRow],
        ctx: &Context,
        trail: &mut Trail,
        stop: &CancellationToken,
    ) -> bool {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_BACKOFF)
            .with_max_delay(MAX_BACKOFF)
            .with_jitter()
            .without_max_times()
            .build();
        let mut failures = 0u32;
        loop {
            let result = {
                let send = self.send(config, rows);
                tokio::pin!(send);
                tokio::select! {
                    r = &mut send => r,
                    // A send under way when regwatch stops is finished (and its cursor
                    // committed), so a clean stop never makes the receiver see rows twice.
                    _ = stop.cancelled() => match tokio::time::timeout(STOP_GRACE, &mut send).await {
                        Ok(r) => r,
                        Err(_) => return false,
                    },
                }
            };
            if result.is_err() && stop.is_cancelled() {
                return false;
            }
            match result {
                Ok(()) => {
                    ctx.counters.sent.inc_by(rows.len() as u64);
                    if failures > 0 {
                        tracing::info!(forward = %config.name, failures, "forward receiver accepts again");
                    }
                    return true;
                }
                Err(e) => {
                    ctx.counters.errors.inc();
                    failures += 1;
                    // The trail keeps growing while the receiver is away: the lag says so.
                    if let Some(head) = trail.head() {
                        ctx.counters.lag.set(head - trail.cursor.unwrap_or(0));
                    }
                    let wait = backoff.next().unwrap_or(MAX_BACKOFF);
                    tracing::warn!(forward = %config.name, error = %e, rows = rows.len(), retry_in = ?wait, "forward not accepted; will retry");
                    if sleep_or_stop(wait, stop).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn close(self) {
        if let Sender::Syslog(s) = self {
            s.close().await;
        }
    }
}

/// A syslog receiver: its settings, the RFC 5424 header, the open connection (if any).
struct SyslogSender {
    config: SyslogForward,
    header: syslog::Header,
    tls: Option<tokio_rustls::TlsConnector>,
    stream: Option<Stream>,
}

impl SyslogSender {
    fn new(config: &SyslogForward) -> Result<SyslogSender, ForwardError> {
        let tls = config
            .tls
            .as_ref()
            .map(transport::tls_connector)
            .transpose()?;
        let header = syslog::Header {
            facility: config.facility,
            hostname: config.hostname.clone().unwrap_or_else(local_hostname),
            app_name: config.app_name.clone(),
            procid: std::process::id(),
            enterprise_number: config.enterprise_number,
        };
        Ok(SyslogSender {
            config: config.clone(),
            header,
            tls,
            stream: None,
        })
    }

    /// One write of every row's framed message, on a connection the receiver has not
    /// closed before or after it; any failure drops the connection (the batch is resent on
    /// a new one).
    async fn send(&mut self, rows: &[AuditRow], limit: Duration) -> Result<(), ForwardError> {
        let mut bytes = Vec::with_capacity(rows.len() * 512);
        for r in rows {
            syslog::frame(&syslog::message(r, &self.header), &mut bytes);
        }
        if let Some(s) = &mut self.stream
            && s.closed_by_peer().await
        {
            self.stream = None;
        }
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => transport::connect(&self.config, self.tls.as_ref(), limit).await?,
        };
        stream.send(&bytes, limit).await?;
        // A reset caused by this very write arrives at once on a closed connection.
        tokio::task::yield_now().await;
        if stream.closed_by_peer().await {
            return Err(TransportError::Closed.into());
        }
        self.stream = Some(stream);
        Ok(())
    }

    async fn close(self) {
        if let Some(s) = self.stream {
            s.close().await;
        }
    }
}

/// The machine's host name for the HOSTNAME field ("-", the nil value, if unknown).
fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() { "-".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;

    fn row(action: &str, registry: Option<&str>, repository: Option<&str>) -> AuditRow {
        AuditRow {
            id: 1,
            time: "2026-11-28T19:59:40.000000Z".into(),
            registry: registry.map(String::from),
            action: action.into(),
            repository: repository.map(String::from),
            tag: None,
            digest: None,
            media_type: None,
            size: None,
            actor: None,
            remote_addr: None,
            user_agent: None,
            request_id: None,
            method: None,
            source: "log".into(),
            status: None,
            event_id: None,
            detail: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn every_list_of_the_selection_narrows() {
        let all = Selection::default();
        assert!(selected(&all, &row("monitor_start", None, None)));
        let s = Selection {
            actions: vec![Action::Push, Action::Delete],
            repositories: vec!["prod/*".into()],
            registries: vec!["main".into()],
        };
        assert!(selected(&s, &row("push", Some("main"), Some("prod/app"))));
        assert!(!selected(&s, &row("pull", Some("main"), Some("prod/app"))));
        assert!(!selected(&s, &row("push", Some("other"), Some("prod/app"))));
        assert!(!selected(&s, &row("push", Some("main"), Some("dev/app"))));
        assert!(!selected(&s, &row("push", None, None)));
    }
}
