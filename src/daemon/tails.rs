//! The log tailers: a thread per `[[log]]` (tailing blocks on file reads and commits), each
//! resuming from its checkpoint, all stopped by one token.

use super::Shared;
use crate::config::Config;
use crate::config::log::LogConfig;
use crate::model::glob;
use crate::sources::tail::follower::Follower;
use crate::sources::tail::lines::LineHandler;
use crate::sources::tail::logins::Correlator;
use crate::sources::tail::{Files, Glob, Tail};
use crate::store::Reader;
use anyhow::Context;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The tailer threads and their stop signal.
#[derive(Default)]
pub(super) struct Tails {
    stop: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Tails {
    /// Starts a thread per `[[log]]` of the current config, stopped by `stop`.
    pub(super) fn start(
        s: &Shared,
        alert_wake: &mpsc::Sender<()>,
        stop: CancellationToken,
    ) -> anyhow::Result<Tails> {
        let config = s.config.borrow().clone();
        let mut tails = Tails {
            stop,
            threads: Vec::new(),
        };
        if config.logs.is_empty() {
            return Ok(tails);
        }
        let db = s.store.reader()?;
        // One pairing of failed-login reports per registry, shared by all its logs.
        let mut logins: HashMap<&str, Arc<Mutex<Correlator>>> = HashMap::new();
        for log in &config.logs {
            let shared = logins.entry(log.registry.as_str()).or_default().clone();
            let Some(tail) = tail_for(s, &config, &db, log, alert_wake, shared)? else {
                continue;
            };
            let (sink, clock, stop) = (s.sink.clone(), s.clock.clone(), tails.stop.clone());
            tails.threads.push(
                std::thread::Builder::new()
                    .name(format!("tail-{}", log.name))
                    .spawn(move || tail.run(sink, clock, stop))
                    .context("starting a tailer thread")?,
            );
            tracing::info!(log = %log.name, path = %log.path.display(), format = %log.format_name, "tailing");
        }
        Ok(tails)
    }

    /// Stops every tailer after its current batch is committed.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// The tailer of one `[[log]]`, resuming from its checkpoints; `None` when its registry
/// has no traffic windows (added by a reload: tailed after a restart).
fn tail_for(
    s: &Shared,
    config: &Config,
    db: &Reader,
    log: &LogConfig,
    alert_wake: &mpsc::Sender<()>,
    logins: Arc<Mutex<Correlator>>,
) -> anyhow::Result<Option<Tail>> {
    let (Some(registry), Some(stats)) =
        (config.registry(&log.registry), s.traffic.get(&log.registry))
    else {
        tracing::warn!(log = %log.name, registry = %log.registry, "the log's registry was added by a reload; it is tailed after a restart");
        return Ok(None);
    };
    let handler = LineHandler {
        log: log.name.clone(),
        registry: log.registry.clone(),
        format: log.format.clone(),
        counts: log.counts,
        audit_requests: registry.audit_from_logs,
        stats: stats.clone(),
        counters: s.metrics.log_counters(&log.name, &log.registry),
        alert_wake: Some(alert_wake.clone()),
        logins,
        parallel: crate::sources::tail::parallel::Parallel::available(),
    };
    let is_glob = log
        .path
        .file_name()
        .is_some_and(|n| glob::is_pattern(&n.to_string_lossy()));
    let files = if is_glob {
        let resume = db
            .checkpoints_of(&log.name)
            .with_context(|| format!("reading the checkpoints of log {}", log.name))?
            .into_iter()
            .map(|c| (c.log.clone(), c))
            .collect();
        Files::Glob(Glob::new(
            &log.path,
            log.start_at,
            log.max_line_bytes,
            resume,
        ))
    } else {
        let resume = db
            .checkpoint(&log.name)
            .with_context(|| format!("reading the checkpoint of log {}", log.name))?;
        Files::One(Follower::new(
            &log.name,
            &log.path,
            log.start_at,
            log.max_line_bytes,
            resume,
        ))
    };
    let logs = &s.metrics.logs;
    Ok(Some(Tail {
        files,
        handler,
        poll_interval: log.poll_interval,
        lag: logs.lag_bytes.with_label_values(&[&log.name]),
        truncated: logs.lines_truncated_total.with_label_values(&[&log.name]),
    }))
}
