//! Go-style durations as the API accepts them: `168h`, `30m`, `45s`, `1h30m`, `1.5h`, `500ms`
//! (Go's `time.ParseDuration` grammar), and `90d` for days.

use crate::{Error, Result};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A unit's length in nanoseconds, and the rest of the input after it (the longest unit name
/// first: `ms` before `m`).
fn unit(rest: &str) -> Option<(u128, &str)> {
    const UNITS: [(&str, u128); 9] = [
        ("ns", 1),
        ("us", 1_000),
        ("\u{b5}s", 1_000),
        ("\u{3bc}s", 1_000),
        ("ms", 1_000_000),
        ("s", NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("h", 3_600 * NANOS_PER_SEC),
        ("d", 86_400 * NANOS_PER_SEC),
    ];
    UNITS
        .iter()
        .find_map(|(name, ns)| rest.strip_prefix(name).map(|r| (*ns, r)))
}

/// Parses a duration into seconds.
///
/// The grammar is Go's (`time.ParseDuration`): one or more groups of a decimal number (a
/// fraction allowed: `1.5h`, `.5h`) and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), plus `d`
/// for days; a bare number of digits means seconds, as Vault reads it. No sign: every duration
/// of the API is positive or zero.
///
/// # Errors
/// `invalid_duration` naming the input when it is empty, does not follow the grammar, overflows,
/// or is not a whole number of seconds (`1500ms`: certificate times have seconds precision, and
/// a duration is never rounded silently).
pub fn parse_seconds(s: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(
            "invalid_duration",
            format!("{s:?} is not a duration like 168h, 30m, 1.5h or 90d"),
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
    // Nanoseconds, plus the sub-nanosecond part of fractions as a numerator over `den`.
    let mut total: u128 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        // Go: a number needs a digit before or after its point. At most 18 fraction digits
        // (their value times a day in nanoseconds stays within u128).
        if (int.is_empty() && frac.is_empty()) || frac.len() > 18 || int.len() > 30 {
            return Err(bad());
        }
        let (per_unit, after) = unit(after).ok_or_else(bad)?;
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(per_unit).ok_or_else(bad)?;
        if !frac.is_empty() {
            let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
            let digits: u128 = frac.parse().map_err(|_| bad())?;
            let scaled = digits.checked_mul(per_unit).ok_or_else(bad)?;
            if !scaled.is_multiple_of(scale) {
                // Not a whole number of nanoseconds, so not of seconds either.
                return Err(not_whole(s));
            }
            part = part.checked_add(scaled / scale).ok_or_else(bad)?;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = after;
    }
    if !total.is_multiple_of(NANOS_PER_SEC) {
        return Err(not_whole(s));
    }
    u64::try_from(total / NANOS_PER_SEC).map_err(|_| bad())
}

fn not_whole(s: &str) -> Error {
    Error::invalid(
        "invalid_duration",
        format!("{s:?} is not a whole number of seconds"),
    )
}

/// `s` as it is stored: unchanged when it uses only whole numbers and the units `d`, `h`, `m`,
/// `s` (what every earlier version reads), otherwise the same length of time in that form
/// (`1.5h` → `90m`, `2000ms` → `2s`), so that a node of an earlier version sharing the database
/// during a rolling upgrade, or a rollback, reads it.
///
/// # Errors
/// As [`parse_seconds`].
pub fn portable(s: &str) -> Result<String> {
    let secs = parse_seconds(s)?;
    let classic = !s.contains(['.', '\u{b5}', '\u{3bc}'])
        && !["ns", "us", "ms"].iter().any(|u| s.contains(u));
    Ok(if classic {
        // Surrounding whitespace is ignored by the parser, so it is not kept either.
        s.trim().to_owned()
    } else {
        format_seconds(secs)
    })
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
    fn the_portable_form_drops_surrounding_whitespace() {
        assert_eq!(portable(" 2h ").unwrap(), "2h");
        assert_eq!(portable("\t90m\n").unwrap(), "90m");
        assert_eq!(portable(" 1.5h ").unwrap(), "90m");
    }

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
            "+1h",
            "99999999999999999999h",
            "1h0",
            "1 h",
            "99999999999999999999",
            ".h",
            "1.5",
            "1..5h",
            "1.5.h",
            "h1",
            "1hh",
            "1x",
            "500ms",
            "1500ms",
            "1.5s",
            "1ns",
            "0.0000000001h",
            "1.0000000000000000001s",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        // Go's fractions and small units, as long as the total is whole seconds.
        for (good, secs) in [
            ("1.5h", 5400),
            (".5h", 1800),
            ("1.h", 3600),
            ("0.25m", 15),
            ("1h0.5m", 3630),
            ("2000ms", 2),
            ("1s500ms500000us", 2),
            ("3000000\u{b5}s", 3),
            ("1000000000ns", 1),
            ("1.5d", 129_600),
            ("0s", 0),
            ("0", 0),
        ] {
            assert_eq!(parse_seconds(good).unwrap(), secs, "{good}");
        }
        for (given, stored) in [
            ("1.5h", "90m"),
            ("2000ms", "2s"),
            ("1h30m", "1h30m"),
            ("90d", "90d"),
            (" 2h", "2h"),
            ("0.5m", "30s"),
        ] {
            assert_eq!(portable(given).unwrap(), stored, "{given}");
        }
        assert!(portable("500ms").is_err());
        let e = parse_seconds("500ms").unwrap_err().to_string();
        assert!(e.contains("whole number of seconds"), "{e}");
        assert_eq!(format_seconds(720 * 3600), "720h");
        assert_eq!(format_seconds(90), "90s");
    }
}
