//! Schedules as operators write them: 5-field crontab lines (minute hour day-of-month month
//! day-of-week), in UTC, for maintenance windows and reports. Parsed with `croner`, which
//! reads them as written; the `cron` crate insists on a seconds field (6-7 fields), so every
//! crontab line users copy would need rewriting, and getting that rewrite wrong shifts a
//! window silently.

use std::fmt;
use time::OffsetDateTime;

/// A parsed schedule and the expression as the user wrote it (croner keeps only its own
/// normalised copy: upper case, weekday names replaced), which `regwatch check` prints.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl Schedule {
    /// The expression as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a 5-field crontab expression.
pub fn parse(expr: &str) -> Result<Schedule, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "expected a 5-field crontab expression (minute hour day-of-month month day-of-week), e.g. \"0 2 * * SUN\"; {expr:?} has {fields} fields"
        ));
    }
    let cron = expr
        .parse::<croner::Cron>()
        .map_err(|e| format!("invalid crontab expression {expr:?}: {e}"))?;
    Ok(Schedule {
        text: expr.to_string(),
        cron,
    })
}

/// The first time the schedule fires strictly after `after`, if any.
pub fn next_after(schedule: &Schedule, after: OffsetDateTime) -> Option<OffsetDateTime> {
    let from = chrono::DateTime::<chrono::Utc>::from_timestamp(after.unix_timestamp(), 0)?;
    let next = schedule.cron.find_next_occurrence(&from, false).ok()?;
    OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn five_fields_only() {
        assert!(parse("0 2 * * SUN").is_ok());
        assert!(parse("0 0 2 * * SUN").is_err(), "6 fields");
        assert!(parse("61 2 * * *").is_err());
    }

    #[test]
    fn next_is_strictly_after() {
        let monday_six = parse("0 6 * * MON").unwrap();
        // 2026-11-30 is a Monday.
        let at = datetime!(2026-11-30 06:00:00 UTC);
        assert_eq!(
            next_after(&monday_six, at - time::Duration::seconds(1)),
            Some(at)
        );
        assert_eq!(
            next_after(&monday_six, at),
            Some(datetime!(2026-12-07 06:00:00 UTC))
        );
        let every_minute = parse("* * * * *").unwrap();
        assert_eq!(
            next_after(&every_minute, datetime!(2026-11-29 10:15:42.5 UTC)),
            Some(datetime!(2026-11-29 10:16:00 UTC))
        );
    }
}
