//! Durations on the command line: `2s`, `500ms`, `1500us`, `1m`.

use std::time::Duration;

use crate::error::TuneError;

/// Parses a number followed by a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`).
/// A bare number is refused: `2` could mean seconds or milliseconds.
pub fn parse(input: &str) -> Result<Duration, TuneError> {
    let bad = |reason: &str| TuneError::BadDuration {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| bad("missing unit"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad("not a number"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(bad("unknown unit")),
    };
    let seconds = value * scale;
    if !seconds.is_finite() || seconds > 86_400.0 {
        return Err(bad("too long"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1500us").unwrap(), Duration::from_micros(1500));
        assert_eq!(parse("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1m").unwrap(), Duration::from_secs(60));
    }

    #[test]
    fn refuses_ambiguous_or_absurd_input() {
        for input in ["2", "s", "2 weeks", "1e9s", "-1s", "99999999s"] {
            assert!(parse(input).is_err(), "{input}");
        }
    }
}
