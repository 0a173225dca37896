//! `[[maintenance]]`: recurring maintenance windows, during which notifications for
//! matching alerts are held back. The raw table as written, and the checked window with its
//! schedule parsed; whether a window is open at a given time is decided here (pure).

use super::diagnose::{Errors, KeyPath};
use super::duration;
use super::schedule::{self, Schedule};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// `[[maintenance]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaintenance {
    name: String,
    schedule: String,
    #[serde(deserialize_with = "duration::required")]
    duration: Duration,
    #[serde(default)]
    matchers: BTreeMap<String, String>,
}

/// A recurring maintenance window.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    pub name: String,
    /// When it opens: a 5-field crontab expression in UTC, e.g. "0 2 * * SUN".
    pub schedule: Schedule,
    /// How long it stays open (more than 0).
    pub duration: Duration,
    /// Labels the alerts must have (`alertname` = the rule, `registry`, `address`, …;
    /// `*` globs); none: every alert.
    pub matchers: BTreeMap<String, String>,
}

impl MaintenanceConfig {
    /// True while a window that started at one of the schedule's times has not ended:
    /// some start lies in `(now - duration, now]`.
    pub fn active(&self, now: OffsetDateTime) -> bool {
        schedule::next_after(&self.schedule, now - self.duration).is_some_and(|start| start <= now)
    }
}

/// Checks every `[[maintenance]]` and parses its schedule.
pub(super) fn maintenance(
    raw: Vec<RawMaintenance>,
    errs: &mut Errors<'_>,
) -> Option<Vec<MaintenanceConfig>> {
    let checked: Vec<Option<MaintenanceConfig>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let at = KeyPath::default().key("maintenance").index(i);
            let schedule = schedule::parse(&m.schedule)
                .map_err(|e| errs.at_key(&at, "schedule", e))
                .ok();
            if m.duration.is_zero() {
                errs.at_key(&at, "duration", "must be greater than 0");
            }
            Some(MaintenanceConfig {
                name: m.name,
                schedule: schedule?,
                duration: m.duration,
                matchers: m.matchers,
            })
        })
        .collect();
    checked.into_iter().collect()
}
