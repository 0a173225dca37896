//! Humane durations in the config file: `"30s"`, `"5m"`, `"1h 30m"`, `"400d"`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

const EXPECTED: &str = "a duration such as \"30s\", \"5m\", \"1h\" or \"7d\"";

/// The longest duration any key takes (100 years): longer ones are typos, and date
/// arithmetic with them would leave the calendar.
pub const MAX_DAYS: u64 = 36_500;

fn parse(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}): expected {EXPECTED}"))?;
    if d > Duration::from_secs(MAX_DAYS * 86_400) {
        return Err(format!(
            "duration {text:?} is too long: at most {MAX_DAYS}d (100 years)"
        ));
    }
    Ok(d)
}

/// `#[serde(deserialize_with = "duration::required")]`
pub fn required<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)
        .map_err(|_| serde::de::Error::custom(format!("expected {EXPECTED} (a string)")))?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Like [`required`], for an `Option<Duration>` field that is `None` only when the key is
/// absent (with `#[serde(default)]`).
pub fn given<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    required(de).map(Some)
}

/// Like [`required`], for `Option<Duration>` fields; `"0"`/`"off"` mean none.
pub fn optional<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(de)
        .map_err(|_| serde::de::Error::custom(format!("expected {EXPECTED} or \"off\"")))?;
    match text.trim() {
        "off" | "0" | "never" => Ok(None),
        other => parse(other).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Prints a duration the way users write them: the largest unit that divides it evenly
/// (`5m`, `400d`, `90s`), not humantime's calendar breakdown (`1year 1month 4days 7h…`).
pub fn humane(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("400d").unwrap(), Duration::from_secs(400 * 86400));
        assert!(parse("5 minutes please").is_err());
        assert!(parse("").is_err());
        assert!(parse("10").unwrap_err().contains("expected a duration"));
        assert!(parse("9999999999d").unwrap_err().contains("at most 36500d"));
        assert!(parse("36500d").is_ok());
    }

    #[test]
    fn prints_humanely() {
        assert_eq!(humane(Duration::from_secs(300)), "5m");
        assert_eq!(humane(Duration::from_secs(400 * 86400)), "400d");
        assert_eq!(humane(Duration::from_secs(90)), "90s");
        assert_eq!(humane(Duration::from_millis(1500)), "1500ms");
    }
}
