//! Certificate serial numbers.
//!
//! RFC 5280 §4.1.2.2: a positive integer of at most 20 octets. CA/Browser Forum BR §7.1: at least
//! 64 bits of CSPRNG output. A fresh serial is 16 octets: the issuing time in milliseconds since
//! the Unix epoch (6 octets, big-endian) followed by 80 bits from the OS CSPRNG. The time prefix
//! makes serials increase with issuance, so the database indexes keyed by serial grow at their
//! end (one page touched per group commit instead of one random page per certificate); the time it
//! reveals is the certificate's own `notBefore` (plus the 30 s back-dating). The first octet is
//! 0x01 until 2039 and below 0x80 for millennia, so the INTEGER is positive without a sign octet
//! and every serial has exactly 16 significant octets.

use crate::{Error, Result};
use rand::RngCore;

/// A serial number as its big-endian magnitude bytes (no sign octet, no leading zeros).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh serial: issuing time in milliseconds (6 octets), then 80 CSPRNG bits.
    pub fn fresh() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Self::at_millis(ms)
    }

    /// [`Serial::fresh`] for a given time (milliseconds since the Unix epoch).
    fn at_millis(ms: u128) -> Self {
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b[6..]);
        let ms = u64::try_from(ms).unwrap_or(u64::MAX).to_be_bytes();
        b[..6].copy_from_slice(&ms[2..]);
        // A clock before 2004 (first octet 0) or past year 6429 (top bit set) would break the
        // 16-octet positive form: clamp the first octet rather than emit a shorter serial.
        b[0] = b[0].clamp(1, 0x7f);
        Serial(b.to_vec())
    }

    /// From the magnitude bytes of a DER INTEGER (as `x509_cert::serial_number::SerialNumber`
    /// holds them, possibly with a leading 0x00 sign octet).
    ///
    /// # Errors
    /// `invalid_serial` for an empty, zero or over-long value.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        if bytes.is_empty() {
            return Err(Error::invalid("invalid_serial", "the serial is empty"));
        }
        if trimmed.is_empty() {
            return Err(Error::invalid(
                "invalid_serial",
                "a serial is a positive number (RFC 5280 §4.1.2.2): 0 is none",
            ));
        }
        if trimmed.len() > 20 {
            return Err(Error::invalid(
                "invalid_serial",
                format!(
                    "a serial is at most 20 octets (RFC 5280 §4.1.2.2); this one has {}",
                    trimmed.len()
                ),
            ));
        }
        Ok(Serial(trimmed))
    }

    /// Parses the API form: hex, any case, with or without `:` between pairs.
    ///
    /// # Errors
    /// `invalid_serial` when it is not hex, not 1..=20 octets, or has a `:` anywhere but
    /// between pairs of digits (`01::A2`, `:01`, `1:A2`, `01:A2:` name no serial).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.contains(':') && !t.split(':').all(|pair| pair.len() == 2) {
            return Err(Error::invalid(
                "invalid_serial",
                format!("serial {s:?} is not hex (with ':', only between pairs of digits)"),
            ));
        }
        let hex_digits: String = t.chars().filter(|c| *c != ':').collect();
        let padded = if hex_digits.len() % 2 == 1 {
            format!("0{hex_digits}")
        } else {
            hex_digits
        };
        let bytes = hex::decode(&padded)
            .map_err(|_| Error::invalid("invalid_serial", format!("serial {s:?} is not hex")))?;
        Serial::from_bytes(&bytes)
    }

    /// The magnitude bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The DER INTEGER content octets (a 0x00 sign octet when the top bit is set).
    pub fn der_bytes(&self) -> Vec<u8> {
        match self.0.first() {
            Some(b) if b & 0x80 != 0 => {
                let mut v = Vec::with_capacity(self.0.len() + 1);
                v.push(0);
                v.extend_from_slice(&self.0);
                v
            }
            _ => self.0.clone(),
        }
    }

    /// As an `x509-cert` serial number.
    ///
    /// # Errors
    /// Never for serials made by this module; `invalid_serial` otherwise.
    pub fn to_x509(&self) -> Result<x509_cert::serial_number::SerialNumber> {
        x509_cert::serial_number::SerialNumber::new(&self.der_bytes())
            .map_err(|e| Error::invalid("invalid_serial", e.to_string()))
    }

    /// The canonical key used for storage and lookups: uppercase hex without separators.
    pub fn key(&self) -> String {
        hex::encode_upper(&self.0)
    }
}

/// A stored serial key (uppercase hex) in the API form (`1A:2B:3C`); anything that is not a serial
/// comes back unchanged.
pub fn api_form(key: &str) -> String {
    Serial::parse(key).map_or_else(|_| key.to_owned(), |s| s.to_string())
}

impl std::fmt::Display for Serial {
    /// Uppercase hex pairs joined by `:` (`1A:2B:3C`), the API form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&parts.join(":"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_serials_are_positive_16_octets_and_distinct() {
        let a = Serial::fresh();
        let b = Serial::fresh();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 16);
        assert!(a.as_bytes()[0] & 0x80 == 0 && a.as_bytes()[0] != 0);
        assert_eq!(a.der_bytes(), a.as_bytes());
        // 80 random bits: two serials of the same millisecond differ after the time prefix.
        let (c, d) = (
            Serial::at_millis(1_800_000_000_000),
            Serial::at_millis(1_800_000_000_000),
        );
        assert_eq!(c.as_bytes()[..6], d.as_bytes()[..6]);
        assert_ne!(c.as_bytes()[6..], d.as_bytes()[6..]);
    }

    #[test]
    fn fresh_serials_increase_with_time_in_their_storage_key() {
        let keys: Vec<String> = [
            1_100_000_000_000u128,
            1_800_000_000_000,
            1_800_000_000_001,
            2_300_000_000_000,
        ]
        .iter()
        .map(|ms| Serial::at_millis(*ms).key())
        .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(keys.iter().all(|k| k.len() == 32));
        // Clocks outside 2004..6429 still give 16 positive octets.
        for ms in [0, u128::MAX] {
            let s = Serial::at_millis(ms);
            assert_eq!(s.as_bytes().len(), 16);
            assert!(s.as_bytes()[0] & 0x80 == 0 && s.as_bytes()[0] != 0);
        }
    }

    #[test]
    fn parse_accepts_any_case_and_colons() {
        let s = Serial::parse("1a:2B:3c").unwrap();
        for odd in ["01::A2", ":01", "1:A2", "01:A2:", ":"] {
            assert!(Serial::parse(odd).is_err(), "{odd}");
        }
        assert_eq!(s.to_string(), "1A:2B:3C");
        assert_eq!(Serial::parse("1A2B3C").unwrap(), s);
        assert!(Serial::parse("").is_err());
        assert!(Serial::parse("zz").is_err());
        assert!(Serial::parse(&"ab".repeat(21)).is_err());
        assert!(Serial::parse("00").is_err());
    }

    #[test]
    fn high_bit_gets_a_sign_octet() {
        let s = Serial::from_bytes(&[0x00, 0x80, 0x01]).unwrap();
        assert_eq!(s.as_bytes(), &[0x80, 0x01]);
        assert_eq!(s.der_bytes(), vec![0, 0x80, 0x01]);
        assert_eq!(s.to_string(), "80:01");
    }
}
