//! Sliding windows over traffic: pull-failure rate per registry, auth failures per user and
//! per address. O(1) per event, bounded memory, time passed in (no clock reads here).

use std::collections::HashMap;

/// Per-second counts over the last `N` seconds, in a ring.
#[derive(Debug, Clone)]
pub struct Ring<const N: usize> {
    slots: [u32; N],
    /// The second the newest slot stands for.
    newest: i64,
    /// The sum of all slots: an upper bound of every [`Ring::sum`], so scans over many
    /// rings (the evaluator, `/metrics`) skip the quiet ones without summing their slots.
    total: u64,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Ring {
            slots: [0; N],
            newest: i64::MIN,
            total: 0,
        }
    }
}

impl<const N: usize> Ring<N> {
    /// Moves the window to `now`, clearing the seconds that passed (at most N slots).
    fn advance(&mut self, now: i64) {
        if self.newest == i64::MIN || now - self.newest >= N as i64 {
            self.slots = [0; N];
            self.total = 0;
        } else {
            for s in self.newest + 1..=now {
                let slot = &mut self.slots[s.rem_euclid(N as i64) as usize];
                self.total -= u64::from(*slot);
                *slot = 0;
            }
        }
        if now > self.newest {
            self.newest = now;
        }
    }

    /// Counts `n` at second `at`; times older than the window are ignored, times ahead of
    /// the window move it.
    pub fn add(&mut self, at: i64, n: u32) {
        if self.newest != i64::MIN && at <= self.newest - N as i64 {
            return;
        }
        self.advance(at);
        let slot = &mut self.slots[at.rem_euclid(N as i64) as usize];
        let added = slot.saturating_add(n) - *slot;
        *slot += added;
        self.total += u64::from(added);
    }

    /// At least every [`Ring::sum`] (the sum of every slot, however old).
    pub fn upper_bound(&self) -> u64 {
        self.total
    }

    /// The total over the `secs` seconds up to and including `now` (`secs` ≤ N).
    pub fn sum(&self, now: i64, secs: usize) -> u64 {
        let secs = secs.min(N) as i64;
        if self.newest == i64::MIN {
            return 0;
        }
        (now - secs + 1..=now.min(self.newest))
            .filter(|s| *s > self.newest - N as i64)
            .map(|s| u64::from(self.slots[s.rem_euclid(N as i64) as usize]))
            .sum()
    }

    pub fn is_empty_at(&self, now: i64) -> bool {
        self.newest == i64::MIN || now - self.newest >= N as i64 || self.sum(now, N) == 0
    }
}

/// Most distinct users or addresses tracked at once; beyond this (e.g. a spray from a
/// botnet) the quietest are dropped, so memory stays bounded under hostile input.
pub const MAX_KEYS: usize = 50_000;

/// Auth failures per key (a user name or an address) over the last minute.
#[derive(Debug)]
pub struct KeyedWindow {
    // Boxed rings keep the table's slots at 24 bytes: the table is sized for its high-water
    // mark and, after evictions, may double once while the live entries stay ≤ MAX_KEYS.
    // Inline 248-byte rings made that 35 MB per window (plus the old table while it grows);
    // boxed, the rings cost only for live keys.
    keys: HashMap<Box<str>, Box<Ring<60>>>,
    /// At least every ring's [`Ring::upper_bound`]: raised by each add (the only way a
    /// ring's total grows), made exact again by the scans that visit every ring. With it a
    /// rule's scan (after every batch of lines) and `/metrics` skip the table when no key
    /// can be over the threshold or above the best found.
    hi: u64,
    /// At least the newest second any ring counts (`i64::MIN` before the first add). A
    /// catch-up of an old log leaves thousands of rings that are all past at the wall clock;
    /// with it, a scan at that time (every `/metrics` scrape) returns without visiting them.
    newest: i64,
}

impl Default for KeyedWindow {
    fn default() -> Self {
        KeyedWindow {
            keys: HashMap::new(),
            hi: 0,
            newest: i64::MIN,
        }
    }
}

impl KeyedWindow {
    pub fn add(&mut self, key: &str, at: i64) {
        self.newest = self.newest.max(at);
        if let Some(r) = self.keys.get_mut(key) {
            r.add(at, 1);
            self.hi = self.hi.max(r.upper_bound());
            return;
        }
        if self.keys.len() >= MAX_KEYS {
            self.shrink(at);
        }
        let mut r = Box::<Ring<60>>::default();
        r.add(at, 1);
        self.hi = self.hi.max(r.upper_bound());
        self.keys.insert(key.into(), r);
    }

    /// Makes [`hi`](Self::hi) exact after rings were dropped.
    fn reset_hi(&mut self) {
        self.hi = self
            .keys
            .values()
            .map(|r| r.upper_bound())
            .max()
            .unwrap_or(0);
    }

    /// Makes room in bulk (so a spray costs O(1) amortised per event, not a scan each):
    /// forget quiet keys, then, if still nearly full, the tenth with the fewest failures.
    fn shrink(&mut self, now: i64) {
        self.keys.retain(|_, r| !r.is_empty_at(now));
        if self.keys.len() < MAX_KEYS * 9 / 10 {
            self.reset_hi();
            return;
        }
        let mut counts: Vec<u64> = self.keys.values().map(|r| r.sum(now, 60)).collect();
        let cut = counts.len() / 10;
        let (_, threshold, _) = counts.select_nth_unstable(cut);
        let threshold = *threshold;
        let mut to_drop = cut + 1;
        self.keys.retain(|_, r| {
            if to_drop > 0 && r.sum(now, 60) <= threshold {
                to_drop -= 1;
                false
            } else {
                true
            }
        });
        self.reset_hi();
    }

    /// Whether no ring can hold a failure in the `secs` seconds up to `now`.
    fn past(&self, now: i64, secs: usize) -> bool {
        self.newest == i64::MIN || self.newest <= now - secs.min(60) as i64
    }

    pub fn count(&self, key: &str, now: i64) -> u64 {
        self.keys.get(key).map(|r| r.sum(now, 60)).unwrap_or(0)
    }

    /// Every key with more than `threshold` failures in the last `secs` seconds (≤ 60).
    pub fn over(&self, now: i64, secs: usize, threshold: f64) -> Vec<(String, u64)> {
        if self.hi as f64 <= threshold || self.past(now, secs) {
            return Vec::new();
        }
        let mut v: Vec<(String, u64)> = self
            .keys
            .iter()
            .filter(|(_, r)| r.upper_bound() as f64 > threshold)
            .map(|(k, r)| (k, r.sum(now, secs)))
            .filter(|(_, n)| *n as f64 > threshold)
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        v.sort();
        v
    }

    /// The key with the most failures in the last minute.
    pub fn max(&self, now: i64) -> Option<(&str, u64)> {
        if self.past(now, 60) {
            return None;
        }
        let mut best: Option<(&str, u64)> = None;
        for (k, r) in &self.keys {
            // Only a ring that could reach the best so far is summed.
            if best.is_some_and(|(_, n)| r.upper_bound() < n) {
                continue;
            }
            let n = r.sum(now, 60);
            let better = match best {
                None => n > 0,
                Some((bk, bn)) => n > bn || (n == bn && &**k < bk),
            };
            if better {
                best = Some((k, n));
            }
        }
        best
    }

    /// The most failures by one key in the last minute (what `/metrics` shows): like
    /// [`max`](Self::max) without the tie-break by name, so rings that cannot beat the
    /// best so far are not summed, and the scan ends when one reaches [`hi`](Self::hi).
    pub fn max_count(&self, now: i64) -> u64 {
        if self.past(now, 60) {
            return 0;
        }
        let mut best = 0;
        for r in self.keys.values() {
            if best >= self.hi {
                break;
            }
            if r.upper_bound() > best {
                best = best.max(r.sum(now, 60));
            }
        }
        best
    }

    /// Forgets keys with nothing in the window (called from time to time).
    pub fn expire(&mut self, now: i64) {
        self.keys.retain(|_, r| !r.is_empty_at(now));
        self.reset_hi();
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The traffic state of one registry.
#[derive(Debug, Default)]
pub struct RegistryStats {
    pulls: Ring<300>,
    pull_failures: Ring<300>,
    pub auth_by_user: KeyedWindow,
    pub auth_by_address: KeyedWindow,
    /// Every failed login, whoever and wherever from (`group_by = "none"` rules).
    auth_all: Ring<60>,
}

impl RegistryStats {
    pub fn pull(&mut self, at: i64, failed: bool) {
        self.pulls(at, 1, u32::from(failed));
    }

    /// `n` pulls at second `at`, `failed` of them failed.
    pub fn pulls(&mut self, at: i64, n: u32, failed: u32) {
        self.pulls.add(at, n);
        if failed > 0 {
            self.pull_failures.add(at, failed);
        }
    }

    pub fn auth_failure(&mut self, at: i64, user: Option<&str>, address: Option<&str>) {
        self.auth_all.add(at, 1);
        if let Some(u) = user {
            self.auth_by_user.add(u, at);
        }
        if let Some(a) = address {
            self.auth_by_address.add(a, at);
        }
    }

    /// Failed logins over the last `secs` seconds (≤ 60).
    pub fn auth_total(&self, now: i64, secs: usize) -> u64 {
        self.auth_all.sum(now, secs)
    }

    /// (failed pulls, pulls) over the last `secs` seconds.
    pub fn pull_counts(&self, now: i64, secs: usize) -> (u64, u64) {
        (self.pull_failures.sum(now, secs), self.pulls.sum(now, secs))
    }

    /// Failed pulls / pulls over the last `secs` seconds; `None` without pulls.
    pub fn pull_failure_ratio(&self, now: i64, secs: usize) -> Option<f64> {
        let (failed, total) = self.pull_counts(now, secs);
        (total > 0).then(|| failed as f64 / total as f64)
    }

    /// The most failed logins by one user or one address in the last minute.
    pub fn auth_burst_max(&self, now: i64) -> u64 {
        let u = self.auth_by_user.max_count(now);
        let a = self.auth_by_address.max_count(now);
        u.max(a)
    }
}

/// The traffic state of every registry, shared by the tailers (writers) and `/metrics`.
pub type Traffic =
    std::collections::BTreeMap<String, std::sync::Arc<std::sync::Mutex<RegistryStats>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sums_the_last_seconds_and_forgets_older_ones() {
        let mut r: Ring<60> = Ring::default();
        r.add(1000, 1);
        r.add(1010, 2);
        r.add(1059, 3);
        assert_eq!(r.sum(1059, 60), 6);
        assert_eq!(r.sum(1060, 60), 5, "second 1000 left the window");
        assert_eq!(r.sum(1069, 60), 5);
        assert_eq!(r.sum(1070, 60), 3);
        assert_eq!(r.sum(1059, 10), 3);
        r.add(2000, 1);
        assert_eq!(r.sum(2000, 60), 1, "a jump clears everything");
        r.add(1000, 5);
        assert_eq!(
            r.sum(2000, 60),
            1,
            "times older than the window are ignored"
        );
    }

    #[test]
    fn the_upper_bound_is_the_sum_of_the_slots_in_the_window() {
        let mut r: Ring<60> = Ring::default();
        r.add(1000, 1);
        r.add(1010, 2);
        assert_eq!(r.upper_bound(), 3);
        r.add(1065, 4); // 1000 and its neighbours up to 1005 are cleared
        assert_eq!(r.upper_bound(), 6);
        assert!(r.upper_bound() >= r.sum(1065, 60));
        r.add(1065, u32::MAX);
        assert_eq!(r.sum(1065, 1), u64::from(u32::MAX));
        assert_eq!(r.upper_bound(), 2 + u64::from(u32::MAX));
        r.add(5000, 1);
        assert_eq!(r.upper_bound(), 1);
    }

    #[test]
    fn max_and_over_agree_with_a_plain_scan() {
        let mut w = KeyedWindow::default();
        for i in 0..500i64 {
            for _ in 0..(i % 7) {
                w.add(&format!("k{}", i % 40), 1000 + i % 90);
            }
        }
        let now = 1089;
        let plain = w
            .keys
            .iter()
            .map(|(k, r)| (k.to_string(), r.sum(now, 60)))
            .filter(|(_, n)| *n > 0)
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
        assert_eq!(w.max(now).map(|(k, n)| (k.to_string(), n)), plain);
        assert_eq!(w.max_count(now), plain.map_or(0, |(_, n)| n));
        let mut over: Vec<(String, u64)> = w
            .keys
            .iter()
            .map(|(k, r)| (k.to_string(), r.sum(now, 30)))
            .filter(|(_, n)| *n as f64 > 20.0)
            .collect();
        over.sort();
        assert_eq!(w.over(now, 30, 20.0), over);
        assert!(w.keys.values().all(|r| r.upper_bound() <= w.hi));
        assert!(w.over(now, 60, w.hi as f64).is_empty());
        // After a scan dropped rings, the bound is exact again and still bounds them all.
        w.expire(now + 50);
        assert!(w.keys.values().all(|r| r.upper_bound() <= w.hi));
        assert_eq!(
            w.max_count(now + 50),
            w.keys
                .values()
                .map(|r| r.sum(now + 50, 60))
                .max()
                .unwrap_or(0)
        );
    }

    #[test]
    fn pull_failure_ratio_over_one_and_five_minutes() {
        let mut s = RegistryStats::default();
        for i in 0..95 {
            s.pull(10_000 + i % 50, false);
        }
        for _ in 0..5 {
            s.pull(10_040, true);
        }
        assert_eq!(s.pull_failure_ratio(10_050, 60), Some(0.05));
        // Two minutes later the 1-minute window is empty, the 5-minute one still sees it.
        assert_eq!(s.pull_failure_ratio(10_170, 60), None);
        assert_eq!(s.pull_failure_ratio(10_170, 300), Some(0.05));
    }

    #[test]
    fn burst_max_is_per_user_or_address_in_the_last_minute() {
        let mut s = RegistryStats::default();
        for i in 0..11 {
            s.auth_failure(500 + i, Some("bob"), Some("10.0.0.5"));
        }
        for i in 0..3 {
            s.auth_failure(505 + i, Some("eve"), Some("10.0.0.9"));
        }
        assert_eq!(s.auth_by_user.max(511), Some(("bob", 11)));
        assert_eq!(s.auth_burst_max(511), 11);
        assert_eq!(
            s.auth_burst_max(565),
            5,
            "bob's failures at 506..=510 remain"
        );
        assert_eq!(s.auth_burst_max(700), 0);
    }

    #[test]
    fn a_window_whose_failures_all_left_the_minute_reports_none() {
        let mut w = KeyedWindow::default();
        for i in 0..1000 {
            w.add(&format!("10.0.{}.{}", i / 250, i % 250), 1000 + i % 11);
        }
        // One key failed twice at second 1010, 89 others once then.
        w.add("10.0.0.10", 1010);
        assert_eq!(w.max_count(1069), 2, "second 1010 is the minute's oldest");
        assert_eq!(w.max(1069), Some(("10.0.0.10", 2)));
        assert_eq!(w.over(1069, 60, 1.0), vec![("10.0.0.10".to_string(), 2)]);
        assert_eq!(w.over(1069, 60, 0.0).len(), 90);
        assert!(
            w.over(1069, 59, 0.0).is_empty(),
            "not in the last 59 seconds"
        );
        assert_eq!(w.max_count(1070), 0);
        assert_eq!(w.max(1070), None);
        assert!(w.over(1070, 60, 0.0).is_empty());
    }

    #[test]
    fn memory_stays_bounded_under_a_spray() {
        let mut w = KeyedWindow::default();
        for i in 0..(MAX_KEYS as i64 + 5000) {
            w.add(
                &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                1000 + i / 1000,
            );
        }
        assert!(w.len() <= MAX_KEYS);
    }
}
