//! Tailing log files: a thread per log follows the file ([`follower`]), turns lines into
//! counts and events ([`lines`]), and commits the events with the file position in one
//! transaction, so a crash neither loses nor repeats a line.

pub mod follower;
pub mod lines;

use crate::config::log::StartAt;
use crate::model::clock::SharedClock;
use crate::store::{AuditSink, Checkpoint};
use follower::Follower;
use lines::LineHandler;
use prometheus::{IntCounter, IntGauge};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Bytes read between commits: bounds the events held in memory and the work a crash
/// repeats... none of which is visible, since the checkpoint commits with the events.
const BUDGET: usize = 1 << 20;

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
            if self.followers.contains_key(&name) || !wildcard_match(&self.pattern, &name) {
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

/// `*` matches any run of characters, `?` one character; everything else itself.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
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

    /// Runs until `stop` is set; the last position is committed before it returns.
    pub fn run(mut self, sink: AuditSink, clock: SharedClock, stop: Arc<AtomicBool>) {
        let (wake_tx, wake) = mpsc::channel::<()>();
        let _watcher = watch_dir(&self.watched_path(), wake_tx);
        let mut committed: HashMap<String, Checkpoint> = HashMap::new();
        let mut failures = 0u32;
        while !stop.load(Ordering::Acquire) {
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
                let mut events = Vec::new();
                let now = clock.now();
                let truncated_before = follower.truncated_lines;
                let handler = &self.handler;
                let progress =
                    follower.poll(BUDGET, &mut |line| handler.handle(line, now, &mut events));
                self.truncated
                    .inc_by(follower.truncated_lines - truncated_before);
                match progress {
                    Ok(p) => {
                        failures = 0;
                        more |= p.more;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures % 100 == 0 {
                            tracing::warn!(log = %log, path = %follower.path().display(), error = %e, "cannot read log");
                        }
                        continue;
                    }
                }
                if let Some(cp) = follower
                    .checkpoint()
                    .filter(|cp| committed.get(&cp.log) != Some(cp) || !events.is_empty())
                {
                    // Retry the same batch until it is stored: re-reading the bytes instead
                    // would count them twice in the in-memory metrics.
                    loop {
                        match sink.commit_tail_blocking(std::mem::take(&mut events), cp.clone()) {
                            Ok(_) => break,
                            Err(crate::store::StoreError::Closed) => return,
                            Err(e) => {
                                tracing::error!(log = %log, error = %e, "cannot commit log position; retrying");
                                std::thread::sleep(Duration::from_secs(1));
                                if stop.load(Ordering::Acquire) {
                                    return;
                                }
                            }
                        }
                    }
                    committed.insert(cp.log.clone(), cp);
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
            if !more {
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

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards_match_file_names() {
        assert!(wildcard_match("*.access.log", "registry.access.log"));
        assert!(wildcard_match("*.access.log", ".access.log"));
        assert!(!wildcard_match("*.access.log", "registry.access.log.1"));
        assert!(wildcard_match(
            "access-????-??-??.log",
            "access-2026-11-28.log"
        ));
        assert!(!wildcard_match(
            "access-????-??-??.log",
            "access-2026-11-8.log"
        ));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
    }
}
