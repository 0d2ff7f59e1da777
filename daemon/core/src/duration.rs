//! Go-style durations as the API accepts them: `168h`, `30m`, `45s`, `1h30m`, and `90d` for days.

use crate::{Error, Result};

/// Parses a duration into seconds.
///
/// # Errors
/// `invalid_duration` naming the input when it is empty, has an unknown unit, or overflows.
pub fn parse_seconds(s: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(
            "invalid_duration",
            format!("{s:?} is not a duration like 168h, 30m or 90d"),
        )
    };
    // Surrounding whitespace is ignored (stored settings were accepted with it).
    let input = s.trim();
    if input.is_empty() {
        return Err(bad());
    }
    if input.bytes().all(|b| b.is_ascii_digit()) {
        // A bare number is seconds, as Vault accepts.
        return input.parse().map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in input.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        // Digits without a unit after groups with units (`1h0`).
        return Err(bad());
    }
    Ok(total)
}

/// Formats seconds back into the shortest Go-style form (`720h`, `90m`, `45s`).
pub fn format_seconds(secs: u64) -> String {
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_and_days() {
        assert_eq!(parse_seconds("168h").unwrap(), 168 * 3600);
        assert_eq!(parse_seconds("30m").unwrap(), 1800);
        assert_eq!(parse_seconds("90d").unwrap(), 90 * 86_400);
        assert_eq!(parse_seconds("1h30m").unwrap(), 5400);
        assert_eq!(parse_seconds("45").unwrap(), 45);
        assert_eq!(parse_seconds(" 1h\n").unwrap(), 3600);
        for bad in [
            "",
            "h",
            "1y",
            "-1h",
            "1.5h",
            "99999999999999999999h",
            "1h0",
            "1 h",
            "99999999999999999999",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(format_seconds(720 * 3600), "720h");
        assert_eq!(format_seconds(90), "90s");
    }
}
