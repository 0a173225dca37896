//! Tailing log files: a thread per log follows the file ([`follower`]), turns lines into
//! counts and events ([`lines`]), and commits the events with the file position in one
//! transaction, so a crash neither loses nor repeats a line.

pub mod follower;
pub mod lines;
pub mod logins;
pub mod parallel;

use crate::config::log::StartAt;
use crate::model::clock::SharedClock;
use crate::model::{Checkpoint, Event, glob};
use crate::store::{Sink, StoreError};
use backon::{BlockingRetryable, ConstantBuilder};
use follower::Follower;
use lines::LineHandler;
use prometheus::{IntCounter, IntGauge};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Bytes read between commits: bounds the events held in memory (about four thousand for
/// 32 MiB of access log) and the work a crash repeats... none of which is visible, since
/// the checkpoint commits with the events. Live, a batch is what was appended since the last
/// look; catching up, 32 MiB keeps the commits to ~6 per million lines (eight reads each).
/// Each commit rewrites the index pages its rows touch (the `(actor, time)` index takes rows
/// all over), more of them as the trail grows: against 8 MiB, a 5 M-line catch-up wrote
/// 195 MB instead of 367 MB and the writer's CPU fell by a quarter.
const BUDGET: usize = 32 << 20;

/// The files of one `[[log]]`: one path, or every file in a directory whose name matches a
/// pattern (`/var/log/nginx/*.access.log`), each followed on its own.
pub enum Files {
    One(Follower),
    Glob(Glob),
}

pub struct Glob {
    pub dir: PathBuf,
    pub pattern: String,
    pub start_at: StartAt,
    pub max_line: usize,
    /// Checkpoints by key (`<log>:<file name>`), for files not opened yet.
    pub resume: HashMap<String, Checkpoint>,
    followers: BTreeMap<String, Follower>,
    scanned: Option<Instant>,
}

/// How often a glob's directory is listed for new files (change events also trigger it).
const RESCAN: Duration = Duration::from_secs(2);

impl Glob {
    pub fn new(
        path: &Path,
        start_at: StartAt,
        max_line: usize,
        resume: HashMap<String, Checkpoint>,
    ) -> Self {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let pattern = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Glob {
            dir,
            pattern,
            start_at,
            max_line,
            resume,
            followers: BTreeMap::new(),
            scanned: None,
        }
    }

    /// Adds a follower for each new matching file. Files there at the first scan start where
    /// `start_at` says; files that appear later are new, so they are read from their start.
    fn scan(&mut self, log: &str) {
        let first = self.scanned.is_none();
        self.scanned = Some(Instant::now());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if self.followers.contains_key(&name) || !glob::matches(&self.pattern, &name) {
                continue;
            }
            // A FIFO, device or directory matching the glob is never tailed (it would block,
            // never end, or spin): only regular files (a symlink to one is fine).
            if !std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let key = format!("{log}:{name}");
            let resume = self.resume.remove(&key);
            let start_at = if first {
                self.start_at
            } else {
                StartAt::Beginning
            };
            self.followers.insert(
                name,
                Follower::new(&key, &e.path(), start_at, self.max_line, resume),
            );
        }
    }
}

pub struct Tail {
    pub handler: LineHandler,
    pub files: Files,
    pub poll_interval: Duration,
    pub lag: IntGauge,
    pub truncated: IntCounter,
}

impl Tail {
    fn watched_path(&self) -> PathBuf {
        match &self.files {
            Files::One(f) => f.path().to_path_buf(),
            Files::Glob(g) => g.dir.join(&g.pattern),
        }
    }

    /// Runs until `stop` is cancelled; the last position is committed before it returns.
    pub fn run(mut self, sink: Sink, clock: SharedClock, stop: CancellationToken) {
        let (wake_tx, wake) = mpsc::channel::<()>();
        let _watcher = watch_dir(&self.watched_path(), wake_tx);
        let mut state = State::default();
        while !stop.is_cancelled() {
            let Some(more) = self.round(&sink, &clock, &stop, &mut state) else {
                return;
            };
            if !more {
                // Nothing more to read: the last batch is stored before the tailer sleeps.
                if settle(&sink, &self.handler.log, &mut state, &stop).is_none() {
                    return;
                }
                let _ = wake.recv_timeout(self.poll_interval);
                // Several change events for one write: read once.
                while wake.try_recv().is_ok() {}
            }
        }
        let _ = settle(&sink, &self.handler.log, &mut state, &stop);
    }

    /// Reads every file once (up to [`BUDGET`] each) and commits what it read. Returns
    /// whether there may be more to read at once, or `None` when the store is closed.
    fn round(
        &mut self,
        sink: &Sink,
        clock: &SharedClock,
        stop: &CancellationToken,
        state: &mut State,
    ) -> Option<bool> {
        let log = self.handler.log.clone();
        let followers: Vec<&mut Follower> = match &mut self.files {
            Files::One(f) => vec![f],
            Files::Glob(g) => {
                if g.scanned.is_none_or(|t| t.elapsed() >= RESCAN) {
                    g.scan(&log);
                }
                g.followers.values_mut().collect()
            }
        };
        let mut more = false;
        let mut lag = 0u64;
        for follower in followers {
            let now = clock.now();
            let truncated_before = follower.truncated_lines;
            let handler = &self.handler;
            let mut batch = handler.begin();
            let progress = follower.poll_lines(BUDGET, &mut |lines| {
                handler.handle_lines(lines, now, &mut batch)
            });
            let events = Arc::new(handler.finish(batch));
            self.truncated
                .inc_by(follower.truncated_lines - truncated_before);
            match progress {
                Ok(p) => {
                    state.failures = 0;
                    more |= p.more;
                }
                Err(e) => {
                    state.failures += 1;
                    if state.failures == 1 || state.failures % 100 == 0 {
                        tracing::warn!(log = %log, path = %follower.path().display(), error = %e, "cannot read log");
                    }
                    continue;
                }
            }
            if let Some(cp) = follower
                .checkpoint()
                .filter(|cp| state.committed.get(&cp.log) != Some(cp) || !events.is_empty())
            {
                // The previous batch is stored (or retried) before this one is queued, so
                // batches commit in order and at most one is in flight while reading on.
                settle(sink, &log, state, stop)?;
                let done = match sink.send_tail_blocking(Arc::clone(&events), cp.clone()) {
                    Ok(done) => done,
                    Err(_) => return None,
                };
                state.in_flight = Some(InFlight { done, events, cp });
            }
            lag += follower.lag_bytes();
        }
        if let Files::Glob(g) = &mut self.files {
            // A matched file that is gone and fully read is let go (dated file names would
            // otherwise keep every old file open).
            g.followers
                .retain(|_, f| f.path().exists() || f.lag_bytes() > 0);
        }
        self.lag.set(lag.min(i64::MAX as u64) as i64);
        Some(more)
    }
}

/// What a tailer remembers between rounds.
#[derive(Default)]
struct State {
    /// The last checkpoint committed per file (an unchanged one is not committed again).
    committed: HashMap<String, Checkpoint>,
    /// Read failures in a row (logged once, then every hundredth).
    failures: u32,
    /// The batch the writer is committing while the tailer reads the next one.
    in_flight: Option<InFlight>,
}

/// A batch queued for commit, kept until the writer says it is stored.
struct InFlight {
    done: crate::store::TailCommit,
    events: Arc<Vec<Event>>,
    cp: Checkpoint,
}

/// Waits for the batch in flight; if the store refused it, commits it again until it is
/// stored. `None` when the store is closed or the tailer is stopping.
fn settle(sink: &Sink, log: &str, state: &mut State, stop: &CancellationToken) -> Option<()> {
    let Some(InFlight { done, events, cp }) = state.in_flight.take() else {
        return Some(());
    };
    match done.wait() {
        Ok(_) => {}
        Err(StoreError::Closed) => return None,
        Err(e) => {
            tracing::error!(log = %log, error = %e, "cannot commit log position; retrying");
            std::thread::sleep(COMMIT_RETRY);
            commit(sink, log, events, &cp, stop)?;
        }
    }
    state.committed.insert(cp.log.clone(), cp);
    Some(())
}

/// How long a tailer waits before committing a batch again after the store refused it.
const COMMIT_RETRY: Duration = Duration::from_secs(1);

/// Commits `events` with the checkpoint after them, retrying the same batch until it is
/// stored: the tailer waits meanwhile (back-pressure), and re-reading the bytes instead
/// would count them twice in the in-memory metrics. `None` when the store is closed or
/// the tailer is stopping.
fn commit(
    sink: &Sink,
    log: &str,
    events: Arc<Vec<Event>>,
    cp: &Checkpoint,
    stop: &CancellationToken,
) -> Option<()> {
    let attempt = || sink.commit_tail_blocking(Arc::clone(&events), cp.clone());
    let stored = attempt
        .retry(
            ConstantBuilder::default()
                .with_delay(COMMIT_RETRY)
                .without_max_times(),
        )
        .when(|e| !matches!(e, StoreError::Closed) && !stop.is_cancelled())
        .notify(|e, _| {
            tracing::error!(log = %log, error = %e, "cannot commit log position; retrying");
        })
        .call();
    stored.ok().map(|_| ())
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
