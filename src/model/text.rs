//! Text helpers shared by every layer: the stored timestamp format, the time arguments
//! people type (`--since 7d`, `?since=2026-11-28`) and byte sizes as people read them.

use time::OffsetDateTime;

/// The fixed-width UTC timestamp stored in `audit_events.time`: sorts as text, readable in the
/// `sqlite3` CLI, microsecond resolution.
///
/// Written digit by digit: the store formats one per audit row, and `time`'s formatter (it
/// interprets the description per call) was 1.4 % of the daemon's CPU catching up a log.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let Ok(year) = u32::try_from(t.year()) else {
        return format_time_described(t);
    };
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let fields = [
        (0..4, year),
        (5..7, u32::from(u8::from(t.month()))),
        (8..10, u32::from(t.day())),
        (11..13, u32::from(t.hour())),
        (14..16, u32::from(t.minute())),
        (17..19, u32::from(t.second())),
        (20..26, t.microsecond()),
    ];
    for (range, mut n) in fields {
        for d in b[range].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    String::from_utf8(b.to_vec()).expect("ASCII digits and separators")
}

/// The same format through `time`'s formatter: the reference, and years before 0.
fn format_time_described(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .expect("formatting a UTC timestamp with a fixed description cannot fail")
}

/// Parses a time argument: `2026-11-28`, `2026-11-28T10:00:00Z` (RFC 3339), or a duration
/// back from `now` (`24h`, `7d`).
pub fn parse_time(arg: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let arg = arg.trim();
    if let Ok(t) = OffsetDateTime::parse(arg, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    if let Ok(d) = time::Date::parse(
        arg,
        time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        return Ok(d.midnight().assume_utc());
    }
    if let Ok(d) = humantime::parse_duration(arg) {
        // Checked: `since=9999999999d` is a user's typo or an attacker's probe, not a panic.
        return time::Duration::try_from(d)
            .ok()
            .and_then(|d| now.checked_sub(d))
            .filter(|t| t.year() >= 1)
            .ok_or_else(|| format!("invalid time {arg:?}: that is before the year 1"));
    }
    Err(format!(
        "invalid time {arg:?}: expected a date (2026-11-28), an RFC 3339 time (2026-11-28T10:00:00Z) or a duration back from now (24h, 7d)"
    ))
}

/// What a path is, for messages that refuse it: "a directory", "a FIFO".
pub fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Sizes as people read them, in binary units as `df -h` and `du -h` print them:
/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn time_arguments() {
        let now = datetime!(2026-11-28 12:00 UTC);
        assert_eq!(
            parse_time("2026-11-27", now).unwrap(),
            datetime!(2026-11-27 0:00 UTC)
        );
        assert_eq!(
            parse_time("24h", now).unwrap(),
            datetime!(2026-11-27 12:00 UTC)
        );
        assert_eq!(
            parse_time("2026-11-28T10:00:00+02:00", now).unwrap(),
            datetime!(2026-11-28 8:00 UTC)
        );
        assert!(parse_time("last tuesday", now).is_err());
        assert!(
            parse_time("9999999999d", now)
                .unwrap_err()
                .contains("before the year 1")
        );
    }

    #[test]
    fn time_is_fixed_width_utc() {
        let t = time::macros::datetime!(2026-11-28 19:59:36.609187805 +01:00);
        assert_eq!(super::format_time(t), "2026-11-28T18:59:36.609187Z");
        let t = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(super::format_time(t), "2026-01-02T03:04:05.000000Z");
    }

    #[test]
    fn format_time_writes_what_the_described_format_does() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut times = vec![
            time::macros::datetime!(0000-01-01 00:00:00 UTC),
            time::macros::datetime!(9999-12-31 23:59:59.999_999_999 UTC),
            time::macros::datetime!(2026-11-28 10:00:00 +05:30),
        ];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 253_402_300_800) as i64; // 1970 to 9999
            let nanos = (x >> 20) % 1_000_000_000;
            times.push(
                OffsetDateTime::from_unix_timestamp(secs).unwrap()
                    + time::Duration::nanoseconds(nanos as i64),
            );
        }
        for t in times {
            let utc = t.to_offset(time::UtcOffset::UTC);
            assert_eq!(
                super::format_time(t),
                super::format_time_described(utc),
                "{t}"
            );
        }
        let bc = time::macros::datetime!(-0001-06-01 00:00:00 UTC);
        assert_eq!(super::format_time(bc), "-0001-06-01T00:00:00.000000Z");
    }
}
