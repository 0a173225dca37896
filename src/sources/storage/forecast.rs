//! Growth trend and "days until full" from used-bytes samples: pure functions, the caller
//! supplies "now" (from its [`crate::model::clock::Clock`]).
//!
//! The trend is the Theil–Sen slope (median of the pairwise slopes): a garbage collection, a
//! big push or a deleted log file moves a least-squares line a lot and the median hardly.

use std::time::Duration;
use time::OffsetDateTime;

pub use crate::model::usage::Sample;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Forecast {
    /// Samples in the window the trend was computed from.
    pub samples: usize,
    /// Seconds between the first and last of them.
    pub span_seconds: f64,
    pub growth_bytes_per_day: f64,
    /// Days until `available_bytes` of the newest sample is used up at that rate; `None`
    /// when the usage is flat or shrinking (exported as +Inf).
    pub days_until_full: Option<f64>,
}

/// Pairwise slopes grow with the square of the points; this many (about 80 000 pairs) keep
/// a forecast under a few milliseconds while still sampling a week every ~25 minutes.
const MAX_POINTS: usize = 400;
/// Fewer samples than this give no trend at all.
pub const MIN_SAMPLES: usize = 3;

/// The shortest history a trend is computed from: half the window, at most an hour, so a
/// restart does not extrapolate a week from three minutes.
pub fn min_span(window: Duration) -> Duration {
    (window / 2).min(Duration::from_secs(3600))
}

/// The trend over the samples in `(now - window, now]`; `None` without enough history.
pub fn forecast(samples: &[Sample], now: OffsetDateTime, window: Duration) -> Option<Forecast> {
    let from = now - window;
    let mut pts: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.time > from && s.time <= now)
        .collect();
    pts.sort_by_key(|s| s.time);
    if pts.len() < MIN_SAMPLES {
        return None;
    }
    let first = pts[0].time;
    let latest = *pts[pts.len() - 1];
    let span = (latest.time - first).as_seconds_f64();
    if span < min_span(window).as_secs_f64() {
        return None;
    }
    let total = pts.len();
    let step = total.div_ceil(MAX_POINTS);
    let xy: Vec<(f64, f64)> = pts
        .iter()
        .step_by(step)
        .map(|s| ((s.time - first).as_seconds_f64(), s.used_bytes as f64))
        .collect();
    let mut slopes = Vec::with_capacity(xy.len() * (xy.len() - 1) / 2);
    for (i, a) in xy.iter().enumerate() {
        for b in &xy[i + 1..] {
            let dx = b.0 - a.0;
            if dx > 0.0 {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    let per_second = median(&mut slopes);
    let per_day = per_second * 86_400.0;
    // Less than a byte a day is flat, not a disk that fills in a billion years.
    let days_until_full = (per_day >= 1.0).then(|| latest.available_bytes as f64 / per_day);
    Some(Forecast {
        samples: total,
        span_seconds: span,
        growth_bytes_per_day: per_day,
        days_until_full,
    })
}

fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    let cmp = |a: &f64, b: &f64| a.total_cmp(b);
    let (_, &mut hi, _) = v.select_nth_unstable_by(n / 2, cmp);
    if n % 2 == 1 {
        hi
    } else {
        let lo = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::clock::{Clock, ManualClock};
    use time::macros::datetime;

    const GIB: f64 = (1u64 << 30) as f64;
    const WEEK: Duration = Duration::from_secs(7 * 86400);

    /// Hourly samples for `hours` hours on a 100 GiB disk, `used(h)` bytes at hour h.
    fn record(clock: &ManualClock, hours: usize, used: impl Fn(usize) -> f64) -> Vec<Sample> {
        (0..hours)
            .map(|h| {
                if h > 0 {
                    clock.advance(time::Duration::hours(1));
                }
                let u = used(h).max(0.0) as u64;
                let cap = 100 * (1u64 << 30);
                Sample {
                    time: clock.now(),
                    used_bytes: u,
                    capacity_bytes: cap,
                    available_bytes: cap - u,
                }
            })
            .collect()
    }

    #[test]
    fn steady_growth_gives_rate_and_days_left() {
        let clock = ManualClock::new(datetime!(2026-11-01 00:00 UTC));
        // 50 GiB used, growing 1 GiB a day, for 10 days: the window sees the last 7.
        let s = record(&clock, 240, |h| 50.0 * GIB + h as f64 * GIB / 24.0);
        let f = forecast(&s, clock.now(), WEEK).unwrap();
        assert!((f.growth_bytes_per_day - GIB).abs() < 1024.0, "{f:?}");
        // 60 GiB - 1 h of growth used at the end: 40 GiB + 1/24 GiB left at 1 GiB/day.
        let days = f.days_until_full.unwrap();
        assert!((days - (40.0 + 1.0 / 24.0)).abs() < 0.01, "{days}");
        assert_eq!(f.samples, 7 * 24);
    }

    #[test]
    fn flat_and_shrinking_never_fill() {
        let clock = ManualClock::new(datetime!(2026-11-01 00:00 UTC));
        let flat = record(&clock, 72, |_| 10.0 * GIB);
        let f = forecast(&flat, clock.now(), WEEK).unwrap();
        assert_eq!(f.growth_bytes_per_day, 0.0);
        assert_eq!(f.days_until_full, None);

        let clock = ManualClock::new(datetime!(2026-11-01 00:00 UTC));
        let shrinking = record(&clock, 72, |h| 80.0 * GIB - h as f64 * GIB / 12.0);
        let f = forecast(&shrinking, clock.now(), WEEK).unwrap();
        assert!((f.growth_bytes_per_day + 2.0 * GIB).abs() < 1024.0, "{f:?}");
        assert_eq!(f.days_until_full, None);
    }

    #[test]
    fn noise_and_a_garbage_collection_do_not_move_the_trend() {
        let clock = ManualClock::new(datetime!(2026-11-01 00:00 UTC));
        // 2 GiB/day, ±0.5 GiB of deterministic noise, and a GC that freed 20 GiB for a day.
        let s = record(&clock, 7 * 24, |h| {
            let noise = ((h * 7919) % 101) as f64 / 100.0 - 0.5;
            let gc = if (100..124).contains(&h) { -20.0 } else { 0.0 };
            (30.0 + h as f64 * 2.0 / 24.0 + noise + gc) * GIB
        });
        let f = forecast(&s, clock.now(), WEEK).unwrap();
        let rate = f.growth_bytes_per_day / GIB;
        assert!((rate - 2.0).abs() < 0.1, "{rate}");
        assert!(f.days_until_full.unwrap() > 0.0);
    }

    #[test]
    fn needs_history_and_ignores_samples_outside_the_window() {
        let clock = ManualClock::new(datetime!(2026-11-01 00:00 UTC));
        let s = record(&clock, 2, |h| h as f64 * GIB);
        assert_eq!(forecast(&s, clock.now(), WEEK), None);
        // Three samples one minute apart are not an hour of history.
        let mut s = Vec::new();
        for i in 0..3 {
            s.push(Sample {
                time: clock.now() + time::Duration::minutes(i),
                used_bytes: i as u64,
                capacity_bytes: 10,
                available_bytes: 10,
            });
        }
        assert_eq!(
            forecast(&s, clock.now() + time::Duration::minutes(2), WEEK),
            None
        );
        // Old fast growth, then a flat week: only the week counts.
        let clock = ManualClock::new(datetime!(2026-11-01 00:00 UTC));
        let s = record(&clock, 14 * 24, |h| {
            if h < 7 * 24 {
                h as f64 * GIB / 10.0
            } else {
                16.8 * GIB
            }
        });
        let f = forecast(&s, clock.now(), WEEK).unwrap();
        assert_eq!(f.growth_bytes_per_day, 0.0);
    }

    #[test]
    fn many_samples_are_thinned_not_quadratic() {
        let clock = ManualClock::new(datetime!(2026-11-01 00:00 UTC));
        // A week of one-minute samples.
        let mut s = Vec::new();
        for m in 0..7 * 24 * 60 {
            s.push(Sample {
                time: clock.now(),
                used_bytes: 1_000_000 + m as u64 * 1000,
                capacity_bytes: u64::MAX / 2,
                available_bytes: 1 << 40,
            });
            clock.advance(time::Duration::minutes(1));
        }
        let t = std::time::Instant::now();
        let f = forecast(&s, clock.now(), WEEK).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(
            (f.growth_bytes_per_day - 1000.0 * 1440.0).abs() < 1.0,
            "{f:?}"
        );
    }
}
