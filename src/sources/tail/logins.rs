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
//! forgotten after [`KEEP_SECS`] of that time, and at most [`MAX_PENDING`] are held; a
//! report is judged in O(1), however many wait.

use std::collections::{HashMap, VecDeque};
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
    /// Insertion order: tells the live entry from one already paired in [`Correlator::order`].
    seq: u64,
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

/// The unmatched reports of one registry, by login (so a report is judged in O(1) however
/// many others wait), and in arrival order for forgetting the oldest.
#[derive(Default)]
pub struct Correlator {
    by_login: HashMap<u64, VecDeque<Pending>>,
    /// (seen at, login, seq), oldest first; entries already paired are skipped when reached.
    order: VecDeque<(i64, u64, u64)>,
    live: usize,
    next_seq: u64,
}

impl Correlator {
    /// Judges one report seen at `now` (unix seconds, the clock).
    pub fn observe(&mut self, report: Report, attempt: &Attempt<'_>, now: i64) -> Seen {
        self.expire(now);
        let key = login_key(attempt);
        if let Some(queue) = self.by_login.get_mut(&key) {
            if let Some(i) = queue.iter().position(|p| p.pairs_with(report, attempt)) {
                queue.remove(i);
                if queue.is_empty() {
                    self.by_login.remove(&key);
                }
                self.live -= 1;
                return Seen::Again;
            }
        }
        if self.live >= MAX_PENDING {
            self.forget_oldest();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_login.entry(key).or_default().push_back(Pending {
            report,
            address: attempt.address,
            user: attempt.user.unwrap_or("").into(),
            method: attempt.method.unwrap_or("").into(),
            path: attempt.path.unwrap_or("").into(),
            at: attempt.at,
            seq,
        });
        self.order.push_back((now, key, seq));
        self.live += 1;
        if self.order.len() > 2 * MAX_PENDING {
            // Many pairs completed without time passing: drop what they left behind.
            let by_login = &self.by_login;
            self.order.retain(|(_, k, seq)| {
                by_login
                    .get(k)
                    .is_some_and(|q| q.iter().any(|p| p.seq == *seq))
            });
        }
        Seen::First
    }

    fn expire(&mut self, now: i64) {
        self.skip_paired();
        while self
            .order
            .front()
            .is_some_and(|(seen, _, _)| now - seen > KEEP_SECS)
        {
            self.forget_oldest();
        }
    }

    /// Drops the entries at the front of `order` that were paired since.
    fn skip_paired(&mut self) {
        while let Some(&(_, key, seq)) = self.order.front() {
            // A login's queue is in arrival order too: its front is its oldest.
            let live = self
                .by_login
                .get(&key)
                .and_then(|q| q.front())
                .is_some_and(|p| p.seq == seq);
            if live {
                return;
            }
            self.order.pop_front();
        }
    }

    /// Forgets the oldest entry still waiting.
    fn forget_oldest(&mut self) {
        self.skip_paired();
        if let Some((_, key, _)) = self.order.pop_front() {
            if let Some(queue) = self.by_login.get_mut(&key) {
                queue.pop_front();
                if queue.is_empty() {
                    self.by_login.remove(&key);
                }
                self.live -= 1;
            }
        }
        self.skip_paired();
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

/// The login a report is about (not its time), hashed.
fn login_key(a: &Attempt<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (a.address, a.user, a.method, a.path).hash(&mut h);
    h.finish()
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
    fn forgetting_the_oldest_passes_over_entries_paired_since() {
        let mut c = Correlator::default();
        c.observe(Report::Reason, &bob(100), 1000); // paired below
        c.observe(Report::Reason, &bob(100), 1001); // waits
        assert_eq!(c.observe(Report::Response, &bob(100), 1002), Seen::Again);
        assert_eq!(c.len(), 1);
        // At 1000 + KEEP_SECS + 1 the first is due, but it is gone: the second stays...
        assert_eq!(
            c.observe(Report::Reason, &bob(500), 1000 + KEEP_SECS + 1),
            Seen::First
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.observe(Report::Response, &bob(100), 1000 + KEEP_SECS + 1),
            Seen::Again
        );
        // ...and pairs all finished without time passing leave nothing behind.
        let mut c = Correlator::default();
        for _ in 0..(3 * MAX_PENDING) {
            c.observe(Report::Reason, &bob(100), 5);
            c.observe(Report::Response, &bob(100), 5);
        }
        assert!(c.is_empty() && c.order.len() <= 2 * MAX_PENDING);
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
