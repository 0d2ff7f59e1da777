//! Time conversions: RFC 3339 for the API (UTC, `Z`, whole seconds) and X.509 `Time` (UTCTime
//! through 2049, GeneralizedTime from 2050, RFC 5280 §4.1.2.5).

use crate::{Error, Result};
use der::asn1::{GeneralizedTime, UtcTime};
use der::DateTime;
use time::OffsetDateTime;
use x509_cert::time::Time;

/// Current time truncated to whole seconds.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// RFC 3339 with `Z` and seconds precision, e.g. `2026-04-30T20:00:00Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses RFC 3339.
///
/// # Errors
/// `invalid_time` naming the input.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| Error::invalid("invalid_time", format!("{s:?} is not an RFC 3339 time")))
}

/// To an X.509 `Time`.
///
/// # Errors
/// `invalid_validity` for times before 1970 or after 9999.
pub fn to_x509(t: OffsetDateTime) -> Result<Time> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| Error::invalid("invalid_validity", "time before 1970"))?;
    let dt = DateTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_err(|_| Error::invalid("invalid_validity", "time after 9999"))?;
    if dt.year() < 2050 {
        Ok(Time::UtcTime(UtcTime::from_date_time(dt)?))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    }
}

/// From an X.509 `Time`.
pub fn from_x509(t: &Time) -> OffsetDateTime {
    let secs = t.to_unix_duration().as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_switches_encoding_in_2050() {
        let t = parse_rfc3339("2026-04-30T20:00:00Z").unwrap();
        assert_eq!(rfc3339(t), "2026-04-30T20:00:00Z");
        assert!(matches!(to_x509(t).unwrap(), Time::UtcTime(_)));
        assert_eq!(from_x509(&to_x509(t).unwrap()), t);
        let late = parse_rfc3339("2050-01-01T00:00:00Z").unwrap();
        assert!(matches!(to_x509(late).unwrap(), Time::GeneralTime(_)));
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
