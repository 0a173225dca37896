//! Tailing log files: a thread per log follows the file ([`follower`]), turns lines into
//! counts and events ([`lines`]), and commits the events with the file position in one
//! transaction, so a crash neither loses nor repeats a line.

pub mod follower;
pub mod lines;

use crate::audit::{AuditSink, Checkpoint};
use crate::clock::SharedClock;
use follower::Follower;
use lines::LineHandler;
use prometheus::{IntCounter, IntGauge};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// Bytes read between commits: bounds the events held in memory and the work a crash
/// repeats... none of which is visible, since the checkpoint commits with the events.
const BUDGET: usize = 1 << 20;

pub struct Tail {
    pub handler: LineHandler,
    pub follower: Follower,
    pub poll_interval: Duration,
    pub lag: IntGauge,
    pub truncated: IntCounter,
}

impl Tail {
    /// Runs until `stop` is set; the last position is committed before it returns.
    pub fn run(mut self, sink: AuditSink, clock: SharedClock, stop: Arc<AtomicBool>) {
        let (wake_tx, wake) = mpsc::channel::<()>();
        let _watcher = watch_dir(self.follower.path(), wake_tx);
        let mut committed: Option<Checkpoint> = None;
        let mut failures = 0u32;
        while !stop.load(Ordering::Acquire) {
            let mut events = Vec::new();
            let now = clock.now();
            let truncated_before = self.follower.truncated_lines;
            let handler = &self.handler;
            let progress = self
                .follower
                .poll(BUDGET, &mut |line| handler.handle(line, now, &mut events));
            self.truncated
                .inc_by(self.follower.truncated_lines - truncated_before);
            let progress = match progress {
                Ok(p) => {
                    failures = 0;
                    p
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures % 100 == 0 {
                        tracing::warn!(log = %self.handler.log, path = %self.follower.path().display(), error = %e, "cannot read log");
                    }
                    let _ = wake.recv_timeout(self.poll_interval.max(Duration::from_secs(1)));
                    continue;
                }
            };
            let checkpoint = self.follower.checkpoint();
            if let Some(cp) =
                checkpoint.filter(|cp| committed.as_ref() != Some(cp) || !events.is_empty())
            {
                // Retry the same batch until it is stored: re-reading the bytes instead would
                // count them twice in the in-memory metrics.
                loop {
                    match sink.commit_tail_blocking(std::mem::take(&mut events), cp.clone()) {
                        Ok(_) => break,
                        Err(crate::audit::StoreError::Closed) => return,
                        Err(e) => {
                            tracing::error!(log = %self.handler.log, error = %e, "cannot commit log position; retrying");
                            std::thread::sleep(Duration::from_secs(1));
                            if stop.load(Ordering::Acquire) {
                                return;
                            }
                        }
                    }
                }
                committed = Some(cp);
            }
            self.lag
                .set(self.follower.lag_bytes().min(i64::MAX as u64) as i64);
            if !progress.more {
                let _ = wake.recv_timeout(self.poll_interval);
                // Several change events for one write: read once.
                while wake.try_recv().is_ok() {}
            }
        }
    }
}

/// Wakes the tailer when the log's directory changes; polling covers filesystems that send
/// no events (NFS, some container mounts).
fn watch_dir(path: &std::path::Path, wake: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = path.parent()?;
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = wake.send(());
    })
    .ok()?;
    match watcher.watch(dir, RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "no change events; polling");
            None
        }
    }
}
