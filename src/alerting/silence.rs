//! Keeping quiet on purpose: time-boxed silences (created over the API) and recurring
//! maintenance windows (config). Both match alerts by their labels; a silenced alert still
//! changes state (and shows in `/api/v1/alerts`), only its notifications are not sent.
//!
//! Maintenance schedules are 5-field crontab expressions in UTC (see
//! [`crate::config::schedule`]); when a window is open is decided by
//! [`MaintenanceConfig::active`].

use crate::config::maintenance::MaintenanceConfig;
use crate::model::glob;
pub use crate::store::Silence;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Every matcher names a label (`alertname` is the rule) and a value or glob; an alert
/// matches when all do. No matchers: every alert.
pub fn matches(matchers: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    matchers
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|l| glob::matches(v, l)))
}

/// Why notifications for `labels` are held back at `now`, if they are.
pub fn suppressed(
    labels: &BTreeMap<String, String>,
    now: OffsetDateTime,
    silences: &[Silence],
    windows: &[MaintenanceConfig],
) -> Option<String> {
    if let Some(s) = silences
        .iter()
        .find(|s| s.active(now) && matches(&s.matchers, labels))
    {
        return Some(format!("silence {}", s.id));
    }
    windows
        .iter()
        .find(|w| matches(&w.matchers, labels) && w.active(now))
        .map(|w| format!("maintenance window {}", w.name))
}

/// The silences in force or scheduled, shared by the API (which adds) and the evaluator.
pub type Silences = std::sync::Arc<std::sync::RwLock<Vec<Silence>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::macros::datetime;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn globs_and_matchers() {
        let l = labels(&[("alertname", "guessing"), ("address", "10.0.0.5")]);
        assert!(matches(&labels(&[("alertname", "guessing")]), &l));
        assert!(!matches(&labels(&[("user", "bob")]), &l));
        assert!(matches(&BTreeMap::new(), &l));
    }

    #[test]
    fn sunday_night_window_is_active_for_its_duration_only() {
        // Sundays 02:00 UTC for 2 hours. 2026-11-29 is a Sunday.
        let w = MaintenanceConfig {
            name: "patching".into(),
            schedule: crate::config::schedule::parse("0 2 * * SUN").unwrap(),
            duration: Duration::from_secs(7200),
            matchers: BTreeMap::new(),
        };
        assert!(!w.active(datetime!(2026-11-29 01:59:59 UTC)));
        assert!(w.active(datetime!(2026-11-29 02:00:00 UTC)));
        assert!(w.active(datetime!(2026-11-29 03:59:59 UTC)));
        assert!(!w.active(datetime!(2026-11-29 04:00:00 UTC)));
        assert!(!w.active(datetime!(2026-11-30 02:30:00 UTC)), "Monday");
    }

    #[test]
    fn silences_hold_back_matching_alerts_while_active() {
        let s = Silence {
            id: 7,
            matchers: labels(&[("address", "10.0.*")]),
            starts_at: datetime!(2026-11-28 10:00 UTC),
            ends_at: datetime!(2026-11-28 11:00 UTC),
            created_by: "ops".into(),
            comment: "pentest".into(),
        };
        let l = labels(&[("alertname", "guessing"), ("address", "10.0.0.5")]);
        assert_eq!(
            suppressed(
                &l,
                datetime!(2026-11-28 10:30 UTC),
                std::slice::from_ref(&s),
                &[]
            ),
            Some("silence 7".into())
        );
        assert_eq!(
            suppressed(&l, datetime!(2026-11-28 11:00 UTC), &[s], &[]),
            None
        );
    }
}
