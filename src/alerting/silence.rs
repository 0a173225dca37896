//! Keeping quiet on purpose: time-boxed silences (created over the API) and recurring
//! maintenance windows (config). Both match alerts by their labels; a silenced alert still
//! changes state (and shows in `/api/v1/alerts`), only its notifications are not sent.
//!
//! Maintenance schedules are 5-field crontab expressions in UTC (see
//! [`crate::config::schedule`]); when a window is open is decided by
//! [`MaintenanceConfig::active`].

use crate::config::maintenance::MaintenanceConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// `*` in a matcher value matches any run of characters (`prod/*`, `10.0.*`).
pub fn glob(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, rest)) => {
            let Some(tail) = value.strip_prefix(head) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// Every matcher names a label (`alertname` is the rule) and a value or glob; an alert
/// matches when all do. No matchers: every alert.
pub fn matches(matchers: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    matchers
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|l| glob(v, l)))
}

/// A silence created over the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    pub matchers: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    pub fn active(&self, now: OffsetDateTime) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
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

/// Silences that have not ended at `now`.
pub fn load(conn: &rusqlite::Connection, now: OffsetDateTime) -> rusqlite::Result<Vec<Silence>> {
    let rfc = &time::format_description::well_known::Rfc3339;
    let mut stmt = conn.prepare(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM alert_silences
         WHERE ends_at > ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([crate::store::format_time(now)], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, matchers, starts, ends, created_by, comment) = row?;
        let (Ok(matchers), Ok(starts_at), Ok(ends_at)) = (
            serde_json::from_str(&matchers),
            OffsetDateTime::parse(&starts, rfc),
            OffsetDateTime::parse(&ends, rfc),
        ) else {
            tracing::warn!(id, "unreadable silence ignored");
            continue;
        };
        out.push(Silence {
            id,
            matchers,
            starts_at,
            ends_at,
            created_by,
            comment,
        });
    }
    Ok(out)
}

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
        assert!(glob("prod/*", "prod/app"));
        assert!(!glob("prod/*", "staging/app"));
        assert!(glob("10.0.*.5", "10.0.3.5"));
        assert!(glob("*", ""));
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
