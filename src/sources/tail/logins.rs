//! One failed login is one failed login, however many logs report it.
//!
//! nginx writes a failed basic-auth login twice: a 401 in the access log (with the user
//! agent and status) and a `user "bob": password mismatch` line in the error log (with the
//! reason). The registry's own log says `error authenticating user` next to nginx's 401.
//! Tailing both logs of a registry is the natural setup, so the reports are paired here:
//! same client address, user and request line, log times within [`WINDOW_SECS`], one report
//! of each kind. The first report of a pair counts and makes the audit row (at once, in its
//! own log's batch, so the row commits with that log's checkpoint); its partner only
//! confirms it. A report without a partner counts on its own: the error log alone still
//! counts every failed login.
//!
//! Pure and bounded: the caller passes the time (the injected clock), unmatched reports are
//! forgotten after [`KEEP_SECS`] of that time, and at most [`MAX_PENDING`] are held.

use std::collections::VecDeque;
use std::net::IpAddr;

/// Log times of the two reports of one failed login are at most this far apart (nginx
/// writes both within the same request, in whole seconds).
pub const WINDOW_SECS: i64 = 2;

/// How long an unmatched report waits for its partner, by the clock (the other log may be
/// read a little later, e.g. while both are caught up after a restart).
pub const KEEP_SECS: i64 = 30;

/// Most unmatched reports held; beyond that the oldest is forgotten (a spray of failed
/// logins with one log not tailed must not grow memory).
pub const MAX_PENDING: usize = 10_000;

/// Which kind of line reports the failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A 401 response to a request with a user name, from an access log.
    Response,
    /// A dedicated failed-login line (nginx error log, the registry's log), with the reason.
    Reason,
}

/// What identifies one failed login in both reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt<'a> {
    pub address: Option<IpAddr>,
    pub user: Option<&'a str>,
    pub method: Option<&'a str>,
    /// Path and query, as in the request line.
    pub path: Option<&'a str>,
    /// The line's own time (unix seconds).
    pub at: i64,
}

/// The verdict on one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not reported before: count it and record it.
    First,
    /// The second report of a login already counted.
    Again,
}

struct Pending {
    report: Report,
    address: Option<IpAddr>,
    user: Box<str>,
    method: Box<str>,
    path: Box<str>,
    at: i64,
    /// When it was seen, by the caller's clock.
    seen: i64,
}

impl Pending {
    fn pairs_with(&self, report: Report, a: &Attempt<'_>) -> bool {
        self.report != report
            && (self.at - a.at).abs() <= WINDOW_SECS
            && self.address == a.address
            && *self.user == *a.user.unwrap_or("")
            && *self.method == *a.method.unwrap_or("")
            && *self.path == *a.path.unwrap_or("")
    }
}

/// The unmatched reports of one registry, oldest first.
#[derive(Default)]
pub struct Correlator {
    pending: VecDeque<Pending>,
}

impl Correlator {
    /// Judges one report seen at `now` (unix seconds, the clock).
    pub fn observe(&mut self, report: Report, attempt: &Attempt<'_>, now: i64) -> Seen {
        self.expire(now);
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| p.pairs_with(report, attempt))
        {
            self.pending.remove(i);
            return Seen::Again;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending {
            report,
            address: attempt.address,
            user: attempt.user.unwrap_or("").into(),
            method: attempt.method.unwrap_or("").into(),
            path: attempt.path.unwrap_or("").into(),
            at: attempt.at,
            seen: now,
        });
        Seen::First
    }

    fn expire(&mut self, now: i64) {
        while self
            .pending
            .front()
            .is_some_and(|p| now - p.seen > KEEP_SECS)
        {
            self.pending.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The reason a failed-login line gives: `password mismatch`, `user not found` (nginx), or
/// what follows the user name in the registry's `error authenticating user "bob": …`.
pub fn reason(message: &str) -> Option<&str> {
    if message.ends_with(": password mismatch") {
        return Some("password mismatch");
    }
    if message.contains("\" was not found in \"") {
        return Some("user not found");
    }
    if message.starts_with("error authenticating user") {
        return message.rsplit_once("\": ").map(|(_, r)| r);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob(at: i64) -> Attempt<'static> {
        Attempt {
            address: Some("10.0.0.5".parse().unwrap()),
            user: Some("bob"),
            method: Some("GET"),
            path: Some("/v2/"),
            at,
        }
    }

    #[test]
    fn both_reports_of_one_login_count_once_in_either_order() {
        let mut c = Correlator::default();
        assert_eq!(c.observe(Report::Reason, &bob(100), 100), Seen::First);
        assert_eq!(c.observe(Report::Response, &bob(100), 100), Seen::Again);
        assert_eq!(c.observe(Report::Response, &bob(200), 200), Seen::First);
        assert_eq!(c.observe(Report::Reason, &bob(199), 201), Seen::Again);
        assert!(c.is_empty());
    }

    #[test]
    fn three_wrong_passwords_in_one_second_are_three_logins() {
        let mut c = Correlator::default();
        let firsts = [Report::Reason, Report::Reason, Report::Reason]
            .iter()
            .chain(&[Report::Response, Report::Response, Report::Response])
            .filter(|r| c.observe(**r, &bob(100), 100) == Seen::First)
            .count();
        assert_eq!(firsts, 3);
        // A fourth access-log 401 has no partner left: a login of its own.
        assert_eq!(c.observe(Report::Response, &bob(100), 100), Seen::First);
    }

    #[test]
    fn the_same_kind_twice_is_two_logins() {
        let mut c = Correlator::default();
        assert_eq!(c.observe(Report::Response, &bob(100), 100), Seen::First);
        assert_eq!(c.observe(Report::Response, &bob(100), 100), Seen::First);
    }

    #[test]
    fn different_user_address_request_or_time_do_not_pair() {
        let mut c = Correlator::default();
        c.observe(Report::Reason, &bob(100), 100);
        let other = [
            Attempt {
                user: Some("eve"),
                ..bob(100)
            },
            Attempt {
                address: Some("10.0.0.6".parse().unwrap()),
                ..bob(100)
            },
            Attempt {
                path: Some("/v2/team/app/manifests/1.0"),
                ..bob(100)
            },
            Attempt {
                method: Some("HEAD"),
                ..bob(100)
            },
            bob(100 + WINDOW_SECS + 1),
        ];
        for a in &other {
            assert_eq!(c.observe(Report::Response, a, 100), Seen::First, "{a:?}");
        }
        assert_eq!(c.observe(Report::Response, &bob(101), 100), Seen::Again);
    }

    #[test]
    fn unmatched_reports_are_forgotten_by_the_clock_and_capped() {
        let mut c = Correlator::default();
        c.observe(Report::Reason, &bob(100), 1000);
        // The access log read more than KEEP_SECS later: counted again (and said so in the
        // module docs); memory does not wait for partners forever.
        assert_eq!(
            c.observe(Report::Response, &bob(100), 1000 + KEEP_SECS + 1),
            Seen::First
        );
        let mut c = Correlator::default();
        for i in 0..(MAX_PENDING as i64 + 500) {
            c.observe(Report::Reason, &bob(i), 5000);
        }
        assert_eq!(c.len(), MAX_PENDING);
    }

    #[test]
    fn reasons_from_real_lines() {
        assert_eq!(
            reason("user \"bob\": password mismatch"),
            Some("password mismatch")
        );
        assert_eq!(
            reason("user \"eve\" was not found in \"/etc/nginx/htpasswd\""),
            Some("user not found")
        );
        assert_eq!(
            reason("error authenticating user \"bob\": authentication failure"),
            Some("authentication failure")
        );
        assert_eq!(reason("upstream timed out"), None);
    }
}
