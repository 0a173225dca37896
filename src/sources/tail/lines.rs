//! What one log line means: counters, sliding windows, and audit events for failed logins
//! (and, where the registry sends no notifications, for pulls, pushes and deletes).

use super::logins::{self, Attempt, Correlator, Report, Seen};
use crate::formats::classify::{Operation, Outcome, Route};
use crate::formats::log::{self, LineKind, LogFormat};
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
}

/// What the lines of one read batch did: the changes to the registry's traffic windows,
/// applied under one lock when the batch ends (not per line, and without holding the lock
/// while reading, so the registry's other logs, `/metrics` and the evaluator never wait for
/// a batch); the audit events, committed with the batch's checkpoint; and whether a window
/// the alert rules watch changed (the evaluator is woken once, when the batch ends, not per
/// line: a catch-up of a million lines costs a few hundred wake-ups, and a live line still
/// wakes it at once).
#[derive(Default)]
pub struct Batch {
    /// (second, pulls, failed pulls), one entry per run of lines in the same second.
    pulls: Vec<(i64, u32, u32)>,
    /// (second, user, address) of each failed login.
    logins: Vec<(i64, Option<String>, Option<String>)>,
    pub events: Vec<Event>,
}

impl Batch {
    fn pull(&mut self, at: i64, failed: bool) {
        match self.pulls.last_mut() {
            Some((second, n, f)) if *second == at => {
                *n += 1;
                *f += u32::from(failed);
            }
            _ => self.pulls.push((at, 1, u32::from(failed))),
        }
    }
}

impl LineHandler {
    /// Starts a batch of lines.
    pub fn begin(&self) -> Batch {
        Batch::default()
    }

    /// Ends a batch: its window changes are applied, the evaluator woken if there were any;
    /// returns the audit events.
    pub fn finish(&self, batch: Batch) -> Vec<Event> {
        let Batch {
            pulls,
            logins,
            events,
        } = batch;
        if pulls.is_empty() && logins.is_empty() {
            return events;
        }
        {
            let mut stats = self.stats.lock().expect("stats lock");
            for (at, n, failed) in pulls {
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

    /// Handles one line of `batch`. `now` bounds times from the future.
    pub fn handle(&self, line: &[u8], now: OffsetDateTime, batch: &mut Batch) {
        self.counters.lines.inc();
        let parsed = match log::parse(&self.format, line) {
            Ok(p) => p,
            Err(log::ParseError::Empty) => return,
            Err(e) => {
                self.counters.parse_errors.inc();
                tracing::trace!(log = %self.log, error = %e, "unparsable line");
                return;
            }
        };
        if crate::model::event::is_self_user_agent(parsed.user_agent.as_deref()) {
            // The poller reading manifests through nginx: not users' traffic.
            if parsed.kind == LineKind::Request {
                self.counters.self_requests.inc();
            }
            return;
        }
        let time = parsed.time.map(|t| t.min(now)).unwrap_or(now);
        let at = time.unix_timestamp();
        match &parsed.kind {
            // A log whose requests another log counts still reports failed logins: the
            // pairing counts each once, with the reason this line gives.
            LineKind::FailedLogin { user } => {
                let login = Login {
                    report: Report::Reason,
                    user: Some(user.as_ref()),
                    now: now.unix_timestamp(),
                };
                self.auth_failure(&parsed, login, time, at, batch);
            }
            _ if !self.counts => {}
            LineKind::Request => {
                let Some(c) = parsed.classify() else { return };
                match (c.operation, c.outcome) {
                    (_, Outcome::AuthFailure) => {
                        let login = Login {
                            report: Report::Response,
                            user: parsed.user.as_deref(),
                            now: now.unix_timestamp(),
                        };
                        self.auth_failure(&parsed, login, time, at, batch);
                    }
                    (_, Outcome::Challenge) => {}
                    (Operation::Check, _) => self.counters.blob_checks.inc(),
                    (Operation::Pull, outcome) => {
                        let failed = outcome == Outcome::Failed;
                        self.counters.pulls.inc();
                        if failed {
                            self.counters.pull_failures.inc();
                        }
                        batch.pull(at, failed);
                        if !failed && self.audit_requests {
                            batch
                                .events
                                .push(self.request_event(&parsed, &c, Action::Pull, time));
                        }
                    }
                    (Operation::Push, Outcome::Ok) if parsed.method.as_deref() == Some("PUT") => {
                        // One image push is many upload requests; the manifest PUT completes it.
                        if c.route == Route::Manifest {
                            self.counters.pushes.inc();
                        }
                        if self.audit_requests {
                            let e = self.request_event(&parsed, &c, Action::Push, time);
                            batch.events.push(e);
                        }
                    }
                    (Operation::Delete, Outcome::Ok) => {
                        self.counters.deletes.inc();
                        if self.audit_requests {
                            let e = self.request_event(&parsed, &c, Action::Delete, time);
                            batch.events.push(e);
                        }
                    }
                    _ => {}
                }
            }
            LineKind::NoCredentials | LineKind::Other => {}
        }
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
        self.counters.auth_failures.inc();
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

    fn request_event(
        &self,
        p: &log::ParsedLine<'_>,
        c: &crate::formats::classify::Classified<'_>,
        action: Action,
        time: OffsetDateTime,
    ) -> Event {
        let mut e = Event::new(time, action, Source::Log);
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
        e
    }
}
