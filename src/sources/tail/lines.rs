//! What one log line means: counters, sliding windows, and audit events for failed logins
//! (and, where the registry sends no notifications, for pulls, pushes and deletes).

use super::follower::Lines;
use super::logins::{self, Attempt, Correlator, Report, Seen};
use super::parallel::Parallel;
use crate::formats::classify::{Operation, Outcome, Route};
use crate::formats::log::{self, LineKind, LogFormat, RequestFacts};
use crate::metrics::LogCounters;
use crate::model::event::{Action, Event, Source};
use crate::model::traffic::RegistryStats;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// A failed login as one line reports it.
struct Login<'a> {
    report: Report,
    user: Option<&'a str>,
    /// The clock, in unix seconds (how long an unpaired report waits).
    now: i64,
}

/// Turns lines of one log into counts and events.
pub struct LineHandler {
    pub log: String,
    pub registry: String,
    pub format: LogFormat,
    /// False for a log whose traffic another log already counts (e.g. the registry's own
    /// access log behind nginx): its lines are parsed but not counted twice.
    pub counts: bool,
    /// Also record pulls, pushes and deletes in the audit trail (for registries that send no
    /// notifications).
    pub audit_requests: bool,
    pub stats: Arc<Mutex<RegistryStats>>,
    pub counters: LogCounters,
    /// Wakes the alert evaluator after a batch in which a line changed a window it watches
    /// (a failed login, a pull), so those rules fire within moments of the line, not at the
    /// next tick. `try_send` on a channel of one: never blocks the tailer.
    pub alert_wake: Option<tokio::sync::mpsc::Sender<()>>,
    /// The failed logins the registry's logs reported, shared by its tailers, so that
    /// nginx's access and error logs (or the registry's own log) count each one once.
    pub logins: Arc<Mutex<Correlator>>,
    /// The threads a large block of lines is judged on (see [`LineHandler::handle_lines`]):
    /// [`Parallel::available`], or `Parallel::new(1)` for the tailer's thread only.
    pub parallel: Parallel<ChunkSummary>,
}

/// What a batch's lines added to the log's counters, added to them when the batch ends
/// (one atomic add per counter and batch instead of several per line).
#[derive(Default)]
struct Tally {
    lines: u64,
    parse_errors: u64,
    self_requests: u64,
    blob_checks: u64,
    pulls: u64,
    pull_failures: u64,
    pushes: u64,
    deletes: u64,
    auth_failures: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.lines += o.lines;
        self.parse_errors += o.parse_errors;
        self.self_requests += o.self_requests;
        self.blob_checks += o.blob_checks;
        self.pulls += o.pulls;
        self.pull_failures += o.pull_failures;
        self.pushes += o.pushes;
        self.deletes += o.deletes;
        self.auth_failures += o.auth_failures;
    }

    fn add_to(&self, c: &LogCounters) {
        for (counter, n) in [
            (&c.lines, self.lines),
            (&c.parse_errors, self.parse_errors),
            (&c.self_requests, self.self_requests),
            (&c.blob_checks, self.blob_checks),
            (&c.pulls, self.pulls),
            (&c.pull_failures, self.pull_failures),
            (&c.pushes, self.pushes),
            (&c.deletes, self.deletes),
            (&c.auth_failures, self.auth_failures),
        ] {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }
}

/// What one line means, decided from the line alone (no shared state), so that the lines
/// of a block can be judged on several threads and then applied in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Blank, a challenge, not about a request, or not counted by this log.
    Nothing,
    Unparsable,
    /// regwatch's own request (its poller reading through nginx).
    SelfRequest,
    /// A blob HEAD: an existence check, not a pull.
    Check,
    /// A pull at second `at`; `audit` when it becomes an audit row.
    Pull {
        at: i64,
        failed: bool,
        audit: bool,
    },
    /// A completed push step: `manifest` when it completes an image push.
    Push {
        manifest: bool,
        audit: bool,
    },
    Delete {
        audit: bool,
    },
    /// A failed login, paired across the registry's logs (in order: see [`logins`]).
    Login(Report),
}

/// What a line needs beyond its counts, from the tailer's thread in file order: the
/// pairing of a failed login, or an audit event (a few lines per hundred).
#[derive(Debug, Clone, Copy)]
enum Need {
    Login(Report),
    Event(Action),
}

/// Pulls per second: (second, pulls, failed pulls), one entry per run of lines in the
/// same second (what the traffic windows take).
#[derive(Default)]
struct PullRuns(Vec<(i64, u32, u32)>);

impl PullRuns {
    fn add(&mut self, at: i64, n: u32, failed: u32) {
        match self.0.last_mut() {
            Some((second, pulls, f)) if *second == at => {
                *pulls += n;
                *f += failed;
            }
            _ => self.0.push((at, n, failed)),
        }
    }
}

/// What the lines of one chunk of a block add up to, judged on either thread (see
/// [`Parallel`]): their counts and pulls, and the lines that need the tailer's thread.
#[derive(Default)]
pub struct ChunkSummary {
    tally: Tally,
    pulls: PullRuns,
    /// By index in the chunk, in order.
    needs: Vec<(u32, Need)>,
}

/// What the lines of one read batch did: the changes to the registry's traffic windows,
/// applied under one lock when the batch ends (not per line, and without holding the lock
/// while reading, so the registry's other logs, `/metrics` and the evaluator never wait for
/// a batch); the counts, added to the counters then too; the audit events, committed with
/// the batch's checkpoint; and whether a window the alert rules watch changed (the
/// evaluator is woken once, when the batch ends, not per line: a catch-up of a million
/// lines costs a few hundred wake-ups, and a live line still wakes it at once).
#[derive(Default)]
pub struct Batch {
    pulls: PullRuns,
    /// (second, user, address) of each failed login.
    logins: Vec<(i64, Option<String>, Option<String>)>,
    tally: Tally,
    pub events: Vec<Event>,
}

impl LineHandler {
    /// Starts a batch of lines.
    pub fn begin(&self) -> Batch {
        Batch::default()
    }

    /// Ends a batch: its counts and window changes are applied, the evaluator woken if a
    /// window changed; returns the audit events.
    pub fn finish(&self, batch: Batch) -> Vec<Event> {
        let Batch {
            pulls,
            logins,
            tally,
            events,
        } = batch;
        tally.add_to(&self.counters);
        if pulls.0.is_empty() && logins.is_empty() {
            return events;
        }
        {
            let mut stats = self.stats.lock().expect("stats lock");
            for (at, n, failed) in pulls.0 {
                stats.pulls(at, n, failed);
            }
            for (at, user, address) in &logins {
                stats.auth_failure(*at, user.as_deref(), address.as_deref());
            }
        }
        if let Some(w) = &self.alert_wake {
            // A channel of one: a wake already pending covers this batch too.
            let _ = w.try_send(());
        }
        events
    }

    /// Handles the lines of one read, in order. A large block (a catch-up) is judged on
    /// two threads while this one applies the chunks judged so far (see [`Parallel`]).
    pub fn handle_lines(&self, lines: Lines<'_>, now: OffsetDateTime, batch: &mut Batch) {
        self.parallel.run(
            lines,
            |chunk, summary| self.judge_chunk(chunk, now, summary),
            |chunk, summary| self.apply_chunk(chunk, summary, now, batch),
        );
    }

    /// Counts a chunk's lines into `summary` (overwritten) and notes those that need more.
    fn judge_chunk(&self, chunk: Lines<'_>, now: OffsetDateTime, summary: &mut ChunkSummary) {
        let ChunkSummary {
            tally,
            pulls,
            needs,
        } = summary;
        *tally = Tally::default();
        pulls.0.clear();
        needs.clear();
        for (i, line) in chunk.iter().enumerate() {
            if let Some(need) = count(self.judge(line, now), tally, pulls) {
                needs.push((i as u32, need));
            }
        }
    }

    /// Adds a judged chunk to the batch, in file order.
    fn apply_chunk(
        &self,
        chunk: Lines<'_>,
        summary: &ChunkSummary,
        now: OffsetDateTime,
        batch: &mut Batch,
    ) {
        batch.tally.add(&summary.tally);
        for &(at, n, failed) in &summary.pulls.0 {
            batch.pulls.add(at, n, failed);
        }
        for &(i, need) in &summary.needs {
            let Some(line) = chunk.get(i as usize) else {
                continue;
            };
            match need {
                Need::Login(report) => self.login(report, line, now, batch),
                Need::Event(action) => self.request_event(line, action, now, batch),
            }
        }
    }

    /// What `line` means; touches nothing shared. A request line of a combined access log
    /// (nearly every line of a busy registry) is judged from its [`RequestFacts`] alone.
    fn judge(&self, line: &[u8], now: OffsetDateTime) -> Verdict {
        match log::request_facts(&self.format, line) {
            Ok(Some(facts)) => return self.judge_request(&facts, now),
            Ok(None) => {}
            Err(e) => return self.unparsable(e),
        }
        let parsed = match log::parse(&self.format, line) {
            Ok(p) => p,
            Err(e) => return self.unparsable(e),
        };
        match &parsed.kind {
            LineKind::Request => self.judge_request(&RequestFacts::of(&parsed), now),
            // The poller's requests only: the registry logs no failed login of its own.
            _ if crate::model::event::is_self_user_agent(parsed.user_agent.as_deref()) => {
                Verdict::Nothing
            }
            // A log whose requests another log counts still reports failed logins: the
            // pairing counts each once, with the reason this line gives.
            LineKind::FailedLogin { .. } => Verdict::Login(Report::Reason),
            LineKind::NoCredentials | LineKind::Other => Verdict::Nothing,
        }
    }

    fn unparsable(&self, e: log::ParseError) -> Verdict {
        match e {
            log::ParseError::Empty => Verdict::Nothing,
            e => {
                tracing::trace!(log = %self.log, error = %e, "unparsable line");
                Verdict::Unparsable
            }
        }
    }

    /// What a request line means.
    fn judge_request(&self, facts: &RequestFacts<'_>, now: OffsetDateTime) -> Verdict {
        if crate::model::event::is_self_user_agent(facts.user_agent) {
            // The poller reading manifests through nginx: not users' traffic.
            return Verdict::SelfRequest;
        }
        if !self.counts {
            return Verdict::Nothing;
        }
        let Some(c) = facts.classify() else {
            return Verdict::Nothing;
        };
        let audit = self.audit_requests;
        match (c.operation, c.outcome) {
            (_, Outcome::AuthFailure) => Verdict::Login(Report::Response),
            (_, Outcome::Challenge) => Verdict::Nothing,
            (Operation::Check, _) => Verdict::Check,
            (Operation::Pull, outcome) => {
                let failed = outcome == Outcome::Failed;
                // The line's own time, never later than now (as [`line_time`]).
                let now = now.unix_timestamp();
                let at = facts.unix_time.map_or(now, |t| t.min(now));
                Verdict::Pull {
                    at,
                    failed,
                    audit: audit && !failed,
                }
            }
            // One image push is many upload requests; the manifest PUT completes it.
            (Operation::Push, Outcome::Ok) if facts.method == Some("PUT") => Verdict::Push {
                manifest: c.route == Route::Manifest,
                audit,
            },
            (Operation::Delete, Outcome::Ok) => Verdict::Delete { audit },
            _ => Verdict::Nothing,
        }
    }

    /// A failed login (`report` says which kind of line reports it).
    fn login(&self, report: Report, line: &[u8], now: OffsetDateTime, batch: &mut Batch) {
        let Ok(parsed) = log::parse(&self.format, line) else {
            return;
        };
        let user = match &parsed.kind {
            LineKind::FailedLogin { user } => Some(user.as_ref()),
            _ => parsed.user.as_deref(),
        };
        let login = Login {
            report,
            user,
            now: now.unix_timestamp(),
        };
        let time = line_time(&parsed, now);
        self.auth_failure(&parsed, login, time, time.unix_timestamp(), batch);
    }

    fn auth_failure(
        &self,
        p: &log::ParsedLine<'_>,
        login: Login<'_>,
        time: OffsetDateTime,
        at: i64,
        batch: &mut Batch,
    ) {
        let user = login.user;
        let attempt = Attempt {
            address: p.remote_ip(),
            user,
            method: p.method.as_deref(),
            path: p.path.as_deref(),
            at,
        };
        let seen =
            self.logins
                .lock()
                .expect("logins lock")
                .observe(login.report, &attempt, login.now);
        if seen == Seen::Again {
            return;
        }
        batch.tally.auth_failures += 1;
        let address = attempt.address.map(|ip| ip.to_string());
        batch
            .logins
            .push((at, user.map(str::to_string), address.clone()));
        let mut e = Event::new(time, Action::AuthFailure, Source::Log);
        e.registry = Some(self.registry.clone());
        e.actor = user.map(str::to_string);
        e.remote_addr = address.or_else(|| p.remote_addr.as_deref().map(str::to_string));
        e.user_agent = p.user_agent.as_deref().map(str::to_string);
        e.method = p.method.as_deref().map(str::to_string);
        e.request_id = p.request_id.as_deref().map(str::to_string);
        e.status = Some(p.status.unwrap_or(401));
        e.repository = p.classify().and_then(|c| c.repository).map(str::to_string);
        e.detail = Some(match p.message.as_deref().and_then(logins::reason) {
            Some(reason) => format!("log {}: {reason}", self.log),
            None => format!("log {}", self.log),
        });
        batch.events.push(e);
    }

    /// The audit event of a pull, push or delete (for registries without notifications).
    fn request_event(&self, line: &[u8], action: Action, now: OffsetDateTime, batch: &mut Batch) {
        let Ok(p) = log::parse(&self.format, line) else {
            return;
        };
        let Some(c) = p.classify() else { return };
        let mut e = Event::new(line_time(&p, now), action, Source::Log);
        e.registry = Some(self.registry.clone());
        e.repository = c.repository.map(str::to_string);
        e.tag = c.tag().map(str::to_string);
        e.digest = c.digest().map(str::to_string);
        e.actor = p.user.as_deref().map(str::to_string);
        e.remote_addr = p.remote_addr.as_deref().map(str::to_string);
        e.user_agent = p.user_agent.as_deref().map(str::to_string);
        e.request_id = p.request_id.as_deref().map(str::to_string);
        e.method = p.method.as_deref().map(str::to_string);
        e.status = p.status;
        e.size = p.bytes;
        e.detail = Some(format!("log {}", self.log));
        batch.events.push(e);
    }
}

/// Counts what a line judged `verdict` adds; what it needs beyond that, if anything (the
/// lines that become audit events or failed logins are parsed again for their fields).
fn count(verdict: Verdict, tally: &mut Tally, pulls: &mut PullRuns) -> Option<Need> {
    tally.lines += 1;
    let action = match verdict {
        Verdict::Nothing => None,
        Verdict::Unparsable => {
            tally.parse_errors += 1;
            None
        }
        Verdict::SelfRequest => {
            tally.self_requests += 1;
            None
        }
        Verdict::Check => {
            tally.blob_checks += 1;
            None
        }
        Verdict::Pull { at, failed, audit } => {
            tally.pulls += 1;
            tally.pull_failures += u64::from(failed);
            pulls.add(at, 1, u32::from(failed));
            audit.then_some(Action::Pull)
        }
        Verdict::Push { manifest, audit } => {
            tally.pushes += u64::from(manifest);
            audit.then_some(Action::Push)
        }
        Verdict::Delete { audit } => {
            tally.deletes += 1;
            audit.then_some(Action::Delete)
        }
        Verdict::Login(report) => return Some(Need::Login(report)),
    };
    action.map(Need::Event)
}

/// The line's own time, or `now` for a line without one; never later than `now`.
fn line_time(p: &log::ParsedLine<'_>, now: OffsetDateTime) -> OffsetDateTime {
    p.time.map(|t| t.min(now)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::sources::tail::follower::{Follower, StartAt};
    use std::io::Write;

    /// Registry traffic with every kind of line the handler treats apart: pulls over several
    /// seconds (some failed), blob checks, failed logins, manifest pushes, deletes,
    /// regwatch's own requests and lines that do not parse.
    fn traffic(lines: usize) -> String {
        let mut out = String::new();
        for i in 0..lines {
            let (sec, addr, user) = (i / 97 % 60, i % 13, i % 7);
            let (request, status) = match i % 11 {
                0..=3 => (
                    format!("GET /v2/team/app{}/blobs/sha256:{i:064x}", i % 5),
                    200,
                ),
                4 => ("GET /v2/team/app/manifests/1.0".to_string(), 404),
                5 => ("HEAD /v2/team/app/blobs/sha256:aa".to_string(), 404),
                6 => ("GET /v2/".to_string(), 401),
                7 => ("PUT /v2/team/app/manifests/2.0".to_string(), 201),
                8 => ("DELETE /v2/team/app/manifests/sha256:bb".to_string(), 202),
                9 if i % 3 == 0 => {
                    out.push_str("not a log line\n");
                    continue;
                }
                _ => ("HEAD /v2/team/app/manifests/latest".to_string(), 200),
            };
            let agent = if i % 50 == 0 {
                "regwatch/0.1.0"
            } else {
                "skopeo/1.9.3"
            };
            out.push_str(&format!(
                "10.0.0.{addr} - user{user} [28/Nov/2026:10:00:{sec:02} +0000] \"{request} HTTP/1.1\" {status} 12 \"-\" \"{agent}\"\n"
            ));
        }
        out
    }

    fn handler(parse_threads: usize) -> LineHandler {
        LineHandler {
            log: "access".into(),
            registry: "main".into(),
            format: LogFormat::NginxCombined,
            counts: true,
            audit_requests: true,
            stats: Default::default(),
            counters: Metrics::new().log_counters("access", "main"),
            alert_wake: None,
            logins: Default::default(),
            parallel: Parallel::new(parse_threads),
        }
    }

    /// Tails `text` to its end as the daemon does; the events, and the largest block read.
    fn tail(h: &LineHandler, text: &str) -> (Vec<Event>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let mut f = Follower::new("access", &path, StartAt::Beginning, 64 * 1024, None);
        let now = time::macros::datetime!(2026-11-28 10:01:00 UTC);
        let (mut events, mut largest) = (Vec::new(), 0);
        loop {
            let mut batch = h.begin();
            let p = f
                .poll_lines(4 << 20, &mut |lines| {
                    largest = largest.max(lines.len());
                    h.handle_lines(lines, now, &mut batch)
                })
                .unwrap();
            events.extend(h.finish(batch));
            if !p.more {
                return (events, largest);
            }
        }
    }

    fn counts(h: &LineHandler) -> Vec<u64> {
        let c = &h.counters;
        let now = 1_764_324_060; // 2026-11-28 10:01:00 UTC
        let s = h.stats.lock().unwrap();
        let (failed, pulls) = s.pull_counts(now, 300);
        [
            c.lines.get(),
            c.parse_errors.get(),
            c.pulls.get(),
            c.pull_failures.get(),
            c.blob_checks.get(),
            c.self_requests.get(),
            c.pushes.get(),
            c.deletes.get(),
            c.auth_failures.get(),
            failed,
            pulls,
            s.auth_total(now, 60),
            s.auth_by_address.count("10.0.0.6", now),
        ]
        .to_vec()
    }

    #[test]
    fn two_threads_count_and_record_exactly_what_one_does_in_file_order() {
        let text = traffic(30_000);
        let (one, two) = (handler(1), handler(2));
        let (events_one, _) = tail(&one, &text);
        let (events_two, largest) = tail(&two, &text);
        assert!(
            largest >= crate::sources::tail::parallel::PARALLEL_MIN_LINES,
            "no block was split: {largest}"
        );
        assert_eq!(counts(&one), counts(&two));
        assert_eq!(events_one, events_two);
        // And the numbers are the traffic's: every line counted, each kind where it belongs.
        let c = counts(&two);
        assert_eq!(c[0], 30_000);
        assert_eq!(
            c[1],
            (0..30_000).filter(|i| i % 11 == 9 && i % 3 == 0).count() as u64
        );
        let logins = events_two
            .iter()
            .filter(|e| e.action == Action::AuthFailure)
            .count() as u64;
        assert_eq!(c[8], logins);
        assert!(logins > 0 && c[2] > 0 && c[3] > 0 && c[4] > 0 && c[5] > 0);
    }
}
