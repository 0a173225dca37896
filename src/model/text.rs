//! Text helpers shared by every layer: the stored timestamp format.

/// The fixed-width UTC timestamp stored in `audit_events.time`: sorts as text, readable in the
/// `sqlite3` CLI, microsecond resolution.
pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .expect("formatting a UTC timestamp with a fixed description cannot fail")
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_is_fixed_width_utc() {
        let t = time::macros::datetime!(2026-11-28 19:59:36.609187805 +01:00);
        assert_eq!(super::format_time(t), "2026-11-28T18:59:36.609187Z");
        let t = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(super::format_time(t), "2026-01-02T03:04:05.000000Z");
    }
}
