//! `regwatch run`: opens the store, serves HTTP, starts the sources, the evaluator and the
//! report scheduler, and stops them all on one signal.
//!
//! Task structure (in the manner of mini-redis's `server::run`): the caller binds the
//! listener and passes a shutdown future; [`run`] resolves when that future does and every
//! accepted event is committed. One [`CancellationToken`] reaches every task and thread
//! (the log tailers get a child token, so a reload can restart them alone); every task is
//! spawned on one [`TaskTracker`]; stopping is: readiness off, cancel, wait for the tracker
//! up to one drain deadline, let the tailers commit their last batch, record
//! `monitor_stop`, close the writer. SIGHUP reloads the configuration in between.
//!
//! Starting is two steps: [`Daemon::start`] needs no database (the HTTP server answers
//! `/healthz`, `/readyz` says why it is not ready, notifications get 503 so the registry
//! retries), [`Daemon::connect`] waits for the database with backoff, migrates it and
//! starts everything else. An agent whose PostgreSQL is down (or not up yet) therefore
//! waits instead of exiting; a database it must refuse (newer schema, wrong login) still
//! stops it.

mod reload;
mod tails;
mod tasks;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::model::build::{REVISION, VERSION};
use crate::model::clock::{SharedClock, SystemClock};
use crate::model::observed::Observations;
use crate::model::retention::LatestPlans;
use crate::model::signatures::SignatureFacts;
use crate::model::traffic::{RegistryStats, Traffic};
use crate::model::{Action, Event, Source};
use crate::report::scheduled::{self, Kinds};
use crate::sources::registry_api::{Reports, poller};
use crate::store::{Leases, Sink, Store, Writer};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tails::Tails;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the tasks get to finish (in-flight requests, a delivery, a report being written)
/// after the shutdown signal; then the daemon stops without them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Binds the configured `server.listen` address.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let listen = config.server.listen;
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))
}

/// Resolves with the signal's name on SIGTERM or SIGINT. The handlers are installed at
/// once, so a signal that arrives while the daemon starts is not lost.
pub fn shutdown_signals() -> anyhow::Result<impl Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Runs the daemon on `listener` until `shutdown` resolves (with the reason to record),
/// then stops every task and commits everything accepted. `config_path` is re-read on
/// SIGHUP (`None`: the built-in default).
pub async fn run(
    listener: TcpListener,
    config_path: Option<PathBuf>,
    config: Config,
    shutdown: impl Future<Output = &'static str>,
) -> anyhow::Result<()> {
    raise_fd_limit(config.server.max_connections);
    tokio::pin!(shutdown);
    let mut daemon = Daemon::start(listener, config_path, config).await?;
    // A signal while the daemon still waits for its database stops it there.
    let stopped = tokio::select! {
        connected = daemon.connect() => { connected?; None }
        reason = &mut shutdown => Some(reason),
    };
    let reason = match stopped {
        Some(reason) => reason,
        None => daemon.serve(shutdown).await?,
    };
    daemon.stop(reason).await;
    Ok(())
}

/// Descriptors kept for everything but HTTP clients: the database and its WAL, log files,
/// outgoing requests, the watcher.
const FD_RESERVE: u64 = 256;

/// Raises the soft descriptor limit to the hard one (systemd's default soft limit of 1024 is
/// below what `max_connections` plus the tailers may need), and warns when even the hard
/// limit leaves too little room beside the connection cap.
fn raise_fd_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let needed = max_connections as u64 + FD_RESERVE;
    if lim.rlim_cur < needed {
        tracing::warn!(
            limit = lim.rlim_cur,
            max_connections,
            "the file descriptor limit leaves little room beside server.max_connections; \
             lower max_connections or raise LimitNOFILE"
        );
    }
}

/// The handles every task shares.
#[derive(Clone)]
struct Shared {
    clock: SharedClock,
    metrics: Arc<Metrics>,
    store: Store,
    sink: Sink,
    traffic: Arc<Traffic>,
    observed: Observations,
    signatures: SignatureFacts,
    reports: Reports,
    /// Each retention policy's latest plan (written by the pollers, read by retention
    /// reports, which therefore run under the inventory lease).
    plans: LatestPlans,
    silences: crate::alerting::silence::Silences,
    config: watch::Receiver<Arc<Config>>,
    /// Changes after each commit of audit rows (forwarders wait on it).
    commits: watch::Receiver<u64>,
    /// Which singleton tasks this agent runs (all of them on SQLite).
    leases: Leases,
}

struct Daemon {
    shared: Shared,
    writer: Writer,
    config_path: Option<PathBuf>,
    config_tx: watch::Sender<Arc<Config>>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    tails: Tails,
    /// Given to each tailer, to wake the evaluator when a window changes.
    alert_wake: mpsc::Sender<()>,
    /// What [`Daemon::connect`] starts; `None` once it did.
    pending: Option<Pending>,
}

/// Made at start-up, used once the database answers.
struct Pending {
    alert_wake: mpsc::Receiver<()>,
    listeners: Vec<(TcpListener, crate::config::listen::ListenConfig)>,
    listen: Option<SocketAddr>,
}

impl Daemon {
    /// Everything that needs no database: the writer (which connects on its first command
    /// on PostgreSQL), the leases, the HTTP server (healthy, not ready) and the `[[listen]]`
    /// sockets (a taken port stops the start at once). [`connect`](Self::connect) does the
    /// rest once the database answers.
    async fn start(
        listener: TcpListener,
        config_path: Option<PathBuf>,
        config: Config,
    ) -> anyhow::Result<Daemon> {
        let clock: SharedClock = Arc::new(SystemClock);
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(&config.database)?.with_agent(&config.server.agent);
        let (commits_tx, commits) = watch::channel(0u64);
        let writer = start_writer(&store, &config, &clock, &metrics, commits_tx)?;
        let traffic = Arc::new(traffic_windows(&config, &metrics));
        let leases = Leases::start(&store, tasks::LEASES);
        let listen = listener.local_addr().ok();
        let listeners = bind_listeners(&config).await?;
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let shared = Shared {
            clock,
            metrics,
            store,
            sink: writer.sink(),
            traffic,
            observed: Observations::default(),
            signatures: SignatureFacts::default(),
            reports: Reports::default(),
            plans: LatestPlans::default(),
            silences: Default::default(),
            config: config_rx,
            commits,
            leases,
        };
        let (alert_wake, alert_wake_rx) = crate::alerting::evaluator::wake_channel();
        let mut daemon = Daemon {
            shared,
            writer,
            config_path,
            config_tx,
            ready: Arc::new(AtomicBool::new(false)),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            tails: Tails::default(),
            alert_wake,
            pending: Some(Pending {
                alert_wake: alert_wake_rx,
                listeners,
                listen,
            }),
        };
        daemon.serve_http(listener);
        daemon.tracker.spawn(tasks::publish_leases(
            daemon.shared.clone(),
            daemon.shutdown.clone(),
        ));
        Ok(daemon)
    }

    /// Waits for the database (see [`wait_for_database`]), then restores what the API
    /// answers from it, starts the tailers from their checkpoints and every task, records
    /// `monitor_start` and turns ready.
    async fn connect(&mut self) -> anyhow::Result<()> {
        wait_for_database(&self.shared.store).await?;
        let pending = self.pending.take().expect("connect runs once");
        let feed_start = restore(&self.shared)?;
        let token = self.shutdown.child_token();
        self.tails = Tails::start(&self.shared, &self.alert_wake, token)?;
        self.record(
            Event::new(self.now(), Action::MonitorStart, Source::Daemon)
                .with_detail(format!("regwatch {VERSION} ({REVISION})")),
        )
        .await;
        // Ready says the store takes commits, so not before the start row's commit (on
        // PostgreSQL the first write opens the append connection). A failed commit is
        // logged by the writer and keeps /readyz at 503 through the store's health.
        let _ = self.shared.sink.sync().await;
        self.ready.store(true, Ordering::Release);
        self.spawn_tasks(pending.alert_wake, feed_start);
        self.spawn_listeners(pending.listeners);
        self.log_started(pending.listen);
        Ok(())
    }

    fn now(&self) -> time::OffsetDateTime {
        self.shared.clock.now()
    }

    fn serve_http(&mut self, listener: TcpListener) {
        let c = self.shared.config.borrow().clone();
        let state = AppState {
            metrics: self.shared.metrics.clone(),
            ready: self.ready.clone(),
            config: self.shared.config.clone(),
            sink: self.shared.sink.clone(),
            store: self.shared.store.clone(),
            traffic: self.shared.traffic.clone(),
            reports: self.shared.reports.clone(),
            silences: self.shared.silences.clone(),
            leases: self.shared.leases.clone(),
        };
        let router = http::router(state, c.server.request_timeout);
        let limits = http::serve::Limits {
            header_read_timeout: c.server.header_read_timeout,
            max_connections: c.server.max_connections,
        };
        self.tracker.spawn(http::serve::serve(
            listener,
            router,
            limits,
            self.shutdown.clone(),
        ));
    }

    /// The long-running tasks, each on the tracker with the shutdown token.
    fn spawn_tasks(&mut self, alert_wake: mpsc::Receiver<()>, feed_start: i64) {
        let (s, stop) = (&self.shared, &self.shutdown);
        let c = s.config.borrow().clone();
        if let Some(keep) = c.database.retention {
            let (sink, clock) = (s.sink.clone(), s.clock.clone());
            self.tracker.spawn(tasks::while_held(
                s.leases.clone(),
                "retention",
                stop.clone(),
                move |generation| tasks::retain(sink.clone(), keep, clock.clone(), generation),
            ));
        }
        self.tracker.spawn(tasks::check_integrity(
            s.store.clone(),
            s.metrics.database.integrity_ok.clone(),
            stop.clone(),
        ));
        self.tracker.spawn(tasks::supervise_alerting(
            s.clone(),
            alert_wake,
            feed_start,
            stop.clone(),
        ));
        // Audit reports run on the holder of the reports lease; retention reports on the
        // inventory lease's, whose pollers hold the plans.
        for (lease, kind) in [("reports", Kinds::Audit), ("inventory", Kinds::Retention)] {
            let reports = s.clone();
            self.tracker.spawn(tasks::while_held(
                s.leases.clone(),
                lease,
                stop.clone(),
                move |generation| {
                    crate::report::scheduled::run(
                        reports.config.clone(),
                        scheduled::Inputs {
                            store: reports.store.clone(),
                            plans: reports.plans.clone(),
                            kinds: kind,
                        },
                        reports.metrics.reports.clone(),
                        reports.clock.clone(),
                        generation,
                    )
                },
            ));
        }
        let pollers = s.clone();
        self.tracker.spawn(tasks::while_held(
            s.leases.clone(),
            "inventory",
            stop.clone(),
            move |generation| tasks::supervise_pollers(pollers.clone(), generation),
        ));
        let monitors = s.clone();
        self.tracker.spawn(tasks::while_held(
            s.leases.clone(),
            "storage",
            stop.clone(),
            move |generation| tasks::run_storage_monitors(monitors.clone(), generation),
        ));
        // One agent forwards: the cursors are shared, two senders would send every row twice.
        let forwards = s.clone();
        self.tracker.spawn(tasks::while_held(
            s.leases.clone(),
            "forward",
            stop.clone(),
            move |generation| tasks::supervise_forwards(forwards.clone(), generation),
        ));
    }

    /// The `[[listen]]` inputs, bound at start-up (a reload that changes them warns).
    fn spawn_listeners(
        &mut self,
        listeners: Vec<(TcpListener, crate::config::listen::ListenConfig)>,
    ) {
        for (listener, config) in listeners {
            self.tracker.spawn(crate::sources::harbor_syslog::run(
                listener,
                config,
                self.shared.sink.clone(),
                self.shared.clock.clone(),
                self.shutdown.clone(),
            ));
        }
    }

    fn log_started(&self, listen: Option<SocketAddr>) {
        let c = self.shared.config.borrow();
        for w in &c.warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            listen = %listen.map(|a| a.to_string()).unwrap_or_default(),
            database = %c.database.target,
            agent = %c.server.agent,
            registries = c.registries.len(),
            "regwatch started"
        );
    }

    /// Serves until `shutdown` resolves, reloading on SIGHUP; returns the stop reason.
    async fn serve(
        &mut self,
        shutdown: impl Future<Output = &'static str>,
    ) -> anyhow::Result<&'static str> {
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                reason = &mut shutdown => return Ok(reason),
                _ = hup.recv() => self.reload().await,
            }
        }
    }

    /// SIGHUP: the new config applies to every task that watches it; the tailers restart
    /// (from their checkpoints) only when a `[[log]]` changed.
    async fn reload(&mut self) {
        let old = self.shared.config.borrow().clone();
        let event = reload::reload(
            self.config_path.as_deref(),
            &self.config_tx,
            &self.shared.metrics,
            self.now(),
        );
        self.record(event).await;
        let new = self.shared.config.borrow().clone();
        if old.logs == new.logs {
            return;
        }
        // Each tailer commits its batch and checkpoint before it stops, and the new ones
        // resume from those checkpoints: nothing lost or doubled.
        std::mem::take(&mut self.tails).stop().await;
        let token = self.shutdown.child_token();
        self.tails = Tails::start(&self.shared, &self.alert_wake, token).unwrap_or_else(|e| {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot restart the log tailers; no logs are tailed until the next reload"
            );
            Tails::default()
        });
    }

    /// Stops every task, then commits everything accepted.
    async fn stop(self, reason: &'static str) {
        tracing::info!(signal = reason, "stopping");
        self.ready.store(false, Ordering::Release);
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            // A report being written is finished by its blocking thread or abandoned with
            // its temporary file; a storage walk thread ends on its own.
            tracing::warn!("tasks still running after {DRAIN_TIMEOUT:?}; stopping without them");
        }
        self.tails.stop().await;
        self.shared.leases.stop();
        // Stopped while still waiting for the database: no monitor_start to match.
        if self.pending.is_none() {
            let stopped = Event::new(self.shared.clock.now(), Action::MonitorStop, Source::Daemon)
                .with_detail(format!("stopped by {reason}"));
            record(&self.shared.sink, stopped).await;
        }
        match self.writer.close().await {
            0 => tracing::info!("stopped; every accepted event is committed"),
            lost => tracing::error!(
                lost,
                "stopped; every acknowledged event is committed, but {lost} of regwatch's own \
                 events (start, reload, stop) could not be stored"
            ),
        }
    }

    async fn record(&self, event: Event) {
        record(&self.shared.sink, event).await;
    }
}

/// The writer, counting committed rows by action for `regwatch_audit_events_total` and
/// telling the forwarders (through `commits`) that there are new rows.
fn start_writer(
    store: &Store,
    config: &Config,
    clock: &SharedClock,
    metrics: &Metrics,
    commits: watch::Sender<u64>,
) -> anyhow::Result<Writer> {
    let counter = metrics.audit_events_total.clone();
    Ok(store.start_writer_deferred(
        config.database.queue_capacity,
        clock.clone(),
        Box::new(move |actions| {
            for a in actions {
                counter.with_label_values(&[a]).inc();
            }
            if !actions.is_empty() {
                commits.send_modify(|n| *n = n.wrapping_add(1));
            }
        }),
    )?)
}

/// First wait between connection attempts to an unreachable database, and the longest
/// before jitter (which adds up to as much again): the agent connects within about 4 s of
/// the database coming back.
const DB_FIRST_RETRY: Duration = Duration::from_millis(500);
const DB_MAX_RETRY: Duration = Duration::from_secs(2);

/// Migrates the database (see [`Store::migrate`]), trying again with capped exponential
/// backoff while it is unreachable, so an agent started before its PostgreSQL server
/// connects when the server comes up. Any other failure (a refused login, a database
/// written by a newer regwatch) is returned: waiting would not fix it. Errors name the
/// database without its password.
async fn wait_for_database(store: &Store) -> anyhow::Result<()> {
    use backon::{ExponentialBuilder, Retryable};
    let attempt = || {
        let store = store.clone();
        async move {
            tokio::task::spawn_blocking(move || store.migrate())
                .await
                .unwrap_or(Err(crate::store::StoreError::Closed))
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(DB_FIRST_RETRY)
        .with_max_delay(DB_MAX_RETRY)
        .with_jitter()
        .without_max_times();
    let mut failures = 0u32;
    attempt
        .retry(backoff)
        .when(|e| e.is_unreachable())
        .notify(|e, wait| {
            failures += 1;
            if failures == 1 || failures.is_power_of_two() {
                tracing::warn!(
                    error = %e,
                    attempts = failures,
                    retry_in = ?wait,
                    "database unreachable; serving /healthz, not ready, notifications answered 503 until it answers"
                );
            }
        })
        .await?;
    if failures > 0 {
        tracing::info!(database = %store.location(), attempts = failures + 1, "database reachable; starting");
    }
    Ok(())
}

/// Binds every `[[listen]]` address, so a taken port stops the start with its name.
async fn bind_listeners(
    config: &Config,
) -> anyhow::Result<Vec<(TcpListener, crate::config::listen::ListenConfig)>> {
    let mut bound = Vec::new();
    for l in &config.listens {
        let listener = TcpListener::bind(l.address).await.with_context(|| {
            format!(
                "cannot listen on {} ([[listen]] {})",
                l.address,
                l.kind.as_str()
            )
        })?;
        bound.push((listener, l.clone()));
    }
    Ok(bound)
}

/// The traffic windows of every registry, made at start-up (a registry added by a reload
/// gets its windows, and its logs tailed, after a restart).
fn traffic_windows(config: &Config, metrics: &Metrics) -> Traffic {
    config
        .registries
        .iter()
        .map(|r| {
            metrics.init_registry(&r.name);
            (
                r.name.clone(),
                Arc::new(Mutex::new(RegistryStats::default())),
            )
        })
        .collect()
}

/// What the database remembers that the API must answer from the first request: the
/// silences and each registry's last inventory (also while a registry is down). Returns
/// the last audit row's id before anything of this start is stored (where the alerting
/// feed of a shared database starts when it has no cursor yet).
fn restore(s: &Shared) -> anyhow::Result<i64> {
    let db = s.store.reader()?;
    let last_id = db.last_id().context("reading the audit trail's last row")?;
    *s.silences.write().expect("silences lock") = db
        .silences(s.clock.now())
        .context("reading the alert silences")?;
    poller::restore_reports(
        &db,
        &s.config.borrow().registries,
        &poller::Published {
            metrics: &s.metrics.registries,
            reports: &s.reports,
            signatures: &s.signatures,
        },
    );
    Ok(last_id)
}

async fn record(sink: &Sink, event: Event) {
    if let Err(e) = sink.enqueue(event).await {
        tracing::error!(error = %e, "cannot record regwatch's own event in the audit trail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, parse};
    use std::path::Path;

    /// The daemon in-process on port 0, stopped through its shutdown future: healthy and
    /// ready while it runs, its own start and stop in a verified chain afterwards.
    #[tokio::test(flavor = "multi_thread")]
    async fn runs_in_process_and_stops_on_its_shutdown_future() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.db");
        let text = format!(
            "[database]\npath = {:?}\n[[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:9\"\n",
            db.display().to_string()
        );
        let config = parse(&text, Origin::Embedded, Path::new("/")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(listener, None, config, async move {
            let _ = stopped.await;
            "test"
        }));
        let get = |path: &str| format!("http://{addr}{path}");
        let client = reqwest::Client::new();
        let ready = loop {
            match client.get(get("/readyz")).send().await {
                Ok(r) if r.status().is_success() => break r.text().await.unwrap(),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert_eq!(ready, "ready\n");
        let health = client.get(get("/healthz")).send().await.unwrap();
        assert_eq!(health.text().await.unwrap(), "ok\n");
        stop.send(()).unwrap();
        daemon.await.unwrap().unwrap();
        let reader = Store::sqlite(&db).reader().unwrap();
        let rows = reader.event_rows(&crate::store::Filter::default()).unwrap();
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["monitor_start", "monitor_stop"]);
        assert_eq!(rows[1].detail.as_deref(), Some("stopped by test"));
        assert!(matches!(
            reader.verify(None).unwrap(),
            crate::store::Verdict::Ok { rows: 2, .. }
        ));
    }
}
