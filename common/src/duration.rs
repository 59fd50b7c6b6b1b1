//! Durations in settings: `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds.

use std::time::Duration;

use crate::error::InvalidInput;

pub fn parse_duration(field: &str, text: &str) -> Result<Duration, InvalidInput> {
    let t = text.trim();
    let bad = || {
        InvalidInput::new(
            field,
            format!("{text:?} is not a duration (use e.g. 500ms, 10s, 2m)"),
        )
    };
    let (number, unit) = crate::resources::split_number(t);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Writes a duration, to the millisecond, as [`parse_duration`] reads it back: `10s`, `500ms`.
/// Settings show their defaults this way (`--help`'s `[default: 10s]`).
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("t", "10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("t", "500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("t", "2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("t", "3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("t", "3x").is_err());
        assert!(parse_duration("t", "-1s").is_err());
    }

    #[test]
    fn formatted_durations_read_back() {
        for (duration, text) in [
            (Duration::from_secs(10), "10s"),
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
        ] {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration("t", text), Ok(duration));
        }
    }
}
