//! Certificate revocation lists (RFC 5280 §5): CRL v2 with AuthorityKeyIdentifier and CRLNumber,
//! thisUpdate/nextUpdate, per-entry reason codes (omitted for `unspecified`, §5.3.1), and no
//! `revokedCertificates` field at all when nothing is revoked (§5.1.2.6).
//!
//! Built for size: entries arrive in chunks from a callback (the daemon reads them in short
//! transactions) and are DER-encoded one by one straight into a single buffer, so a CRL with a
//! million entries needs the TBS buffer and the final CRL, not a structure per entry.

use crate::profile::{extension, IssuerInfo};
use crate::serial::Serial;
use crate::{time_util, verify, Error, Result};
use der::asn1::{BitString, OctetString, Uint};
use der::{Decode, Encode};
use scaivault_hsm::Signer;
use spki::AlgorithmIdentifierOwned;
use time::OffsetDateTime;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber, CrlReason};

/// One revoked certificate.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// Serial (canonical hex).
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// API reason name.
    pub reason: Option<String>,
}

/// The RFC 5280 reason for an API reason name (`None` for unknown names).
pub fn reason_code(name: &str) -> Option<CrlReason> {
    Some(match name {
        "unspecified" => CrlReason::Unspecified,
        "key_compromise" => CrlReason::KeyCompromise,
        "ca_compromise" => CrlReason::CaCompromise,
        "affiliation_changed" => CrlReason::AffiliationChanged,
        "superseded" => CrlReason::Superseded,
        "cessation_of_operation" => CrlReason::CessationOfOperation,
        "certificate_hold" => CrlReason::CertificateHold,
        "privilege_withdrawn" => CrlReason::PrivilegeWithdrawn,
        "aa_compromise" => CrlReason::AaCompromise,
        _ => return None,
    })
}

/// The API reason names, as the product page lists them.
pub const REASONS: &[&str] = &[
    "unspecified",
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
    "aa_compromise",
];

/// A DER tag and length header.
fn header(tag: u8, len: usize) -> Vec<u8> {
    let mut h = vec![tag];
    if len < 0x80 {
        h.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let n = bytes.len() - skip;
        h.push(0x80 | u8::try_from(n).unwrap_or(0));
        h.extend_from_slice(bytes.get(skip..).unwrap_or(&[]));
    }
    h
}

/// What a CRL says besides its entries.
#[derive(Debug, Clone)]
pub struct CrlParams {
    /// CRL number.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
}

/// The DER of one `revokedCertificates` entry (RFC 5280 §5.1.2.6), appended to `out`:
/// `SEQUENCE { serial INTEGER, revocationDate Time, [Extensions { reasonCode }] }`.
///
/// Written by hand because it runs a million times for a large CRL: the generic encoder
/// (x509-cert's `RevokedCert`) costs several allocations per entry. A unit test checks it
/// byte for byte against that encoder.
///
/// # Errors
/// `invalid_serial` for a malformed serial; `invalid_validity` for a time before 1970 or after
/// 9999.
pub fn encode_entry(out: &mut Vec<u8>, e: &RevokedEntry) -> Result<()> {
    // Serial: canonical upper-case hex (the store's key), up to 20 octets; anything else goes
    // through the general parser.
    let mut raw = [0u8; 21];
    let hex = e.serial.as_bytes();
    let parsed;
    let magnitude: &[u8] = if !hex.is_empty() && hex.len().is_multiple_of(2) && hex.len() <= 40 {
        let n = hex.len() / 2;
        let mut ok = true;
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1]), raw.get_mut(i + 1)) {
                (Some(h), Some(l), Some(slot)) => *slot = (h << 4) | l,
                _ => ok = false,
            }
        }
        if ok && raw.get(1).is_some_and(|b| *b != 0) {
            raw.get(1..=n).unwrap_or(&[])
        } else {
            parsed = Serial::parse(&e.serial)?;
            parsed.as_bytes()
        }
    } else {
        parsed = Serial::parse(&e.serial)?;
        parsed.as_bytes()
    };
    let pad = magnitude.first().is_some_and(|b| b & 0x80 != 0);
    let int_len = magnitude.len() + usize::from(pad);
    if magnitude.is_empty() || int_len > 20 {
        return Err(Error::invalid(
            "invalid_serial",
            "a serial number is 1 to 20 octets in DER (RFC 5280 §4.1.2.2)",
        ));
    }

    let t = e.revoked_at.to_offset(time::UtcOffset::UTC);
    let year = t.year();
    if !(1970..=9999).contains(&year) {
        return Err(Error::invalid(
            "invalid_validity",
            "revocation time outside 1970..9999",
        ));
    }
    let utc = year < 2050;
    let time_len = if utc { 13 } else { 15 };
    let reason = e
        .reason
        .as_deref()
        .and_then(reason_code)
        .filter(|r| *r != CrlReason::Unspecified);
    let ext_len = if reason.is_some() { 14 } else { 0 };
    let body = 2 + int_len + 2 + time_len + ext_len; // < 128: short-form lengths throughout
    out.push(0x30);
    out.push(u8::try_from(body).unwrap_or(0));
    out.push(0x02);
    out.push(u8::try_from(int_len).unwrap_or(0));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(magnitude);
    let two = |out: &mut Vec<u8>, v: u8| {
        out.push(b'0' + v / 10);
        out.push(b'0' + v % 10);
    };
    if utc {
        out.extend_from_slice(&[0x17, 13]);
        two(out, u8::try_from(year % 100).unwrap_or(0));
    } else {
        out.extend_from_slice(&[0x18, 15]);
        two(out, u8::try_from(year / 100).unwrap_or(0));
        two(out, u8::try_from(year % 100).unwrap_or(0));
    }
    two(out, u8::from(t.month()));
    two(out, t.day());
    two(out, t.hour());
    two(out, t.minute());
    two(out, t.second());
    out.push(b'Z');
    if let Some(r) = reason {
        // Extensions { Extension { id-ce-cRLReasons, OCTET STRING { ENUMERATED r } } }
        out.extend_from_slice(&[
            0x30, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01, r as u8,
        ]);
    }
    Ok(())
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Room kept in front of the entries for the CRL's outer header and the TBS prefix, which are
/// only known once the entries are counted (tags and lengths of at most 6 bytes each, plus the
/// version, algorithm, issuer name and dates).
fn prefix_room(body_len: usize) -> usize {
    3 * 6 + body_len
}

/// Builds and signs a CRL for `issuer`. `next_chunk` is called until it returns an empty chunk.
///
/// One buffer holds the whole CRL: entries are encoded into it after some reserved room, the TBS
/// prefix and then the outer header are written into that room once the lengths are known, so the
/// peak is about one CRL's size (plus the growth slack of the buffer) rather than one copy per
/// stage.
///
/// # Errors
/// Encoding errors, token errors, [`Error::TokenSignatureInvalid`] when the signature does not
/// verify under the issuer's key.
pub fn build(
    issuer: &IssuerInfo,
    signer: &dyn Signer,
    p: &CrlParams,
    mut next_chunk: impl FnMut() -> Result<Vec<RevokedEntry>>,
) -> Result<(Vec<u8>, usize)> {
    let algorithm = AlgorithmIdentifierOwned::from_der(&issuer.algorithm_der)
        .map_err(|e| Error::decode("algorithm", e))?;
    let mut number_bytes = p.number.to_be_bytes().to_vec();
    while number_bytes.len() > 1 && number_bytes.first() == Some(&0) {
        number_bytes.remove(0);
    }
    let crl_exts = vec![
        extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(issuer.key_id.clone())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            false,
        )?,
        extension(&CrlNumber(Uint::new(&number_bytes)?), false)?,
    ];
    // TBSCertList fields before revokedCertificates.
    let mut body = Vec::new();
    1u8.encode_to_vec(&mut body)?; // version v2
    algorithm.encode_to_vec(&mut body)?;
    issuer.name.encode_to_vec(&mut body)?;
    time_util::to_x509(p.this_update)?.encode_to_vec(&mut body)?;
    time_util::to_x509(p.next_update)?.encode_to_vec(&mut body)?;
    let mut ext_seq = Vec::new();
    crl_exts.encode_to_vec(&mut ext_seq)?;
    let ext_explicit = [header(0xa0, ext_seq.len()), ext_seq].concat();

    // revokedCertificates content, entry by entry, after the reserved room.
    let room = prefix_room(body.len());
    let mut buf = vec![0u8; room];
    let mut count = 0usize;
    loop {
        let chunk = next_chunk()?;
        if chunk.is_empty() {
            break;
        }
        for e in &chunk {
            encode_entry(&mut buf, e)?;
            count += 1;
        }
    }
    let entries_len = buf.len() - room;
    let entries_header = if count > 0 {
        header(0x30, entries_len)
    } else {
        Vec::new()
    };
    let tbs_len = body.len() + entries_header.len() + entries_len + ext_explicit.len();
    let tbs_header = header(0x30, tbs_len);
    let prefix = [tbs_header, body, entries_header].concat();
    let tbs_start = room
        .checked_sub(prefix.len())
        .ok_or_else(|| Error::Encode("CRL prefix larger than its room".into()))?;
    buf.get_mut(tbs_start..room)
        .ok_or_else(|| Error::Encode("CRL prefix out of range".into()))?
        .copy_from_slice(&prefix);
    buf.extend_from_slice(&ext_explicit);
    let tbs = buf
        .get(tbs_start..)
        .ok_or_else(|| Error::Encode("CRL TBS out of range".into()))?;

    let sig = signer.sign(tbs)?;
    verify::verify_signature(&issuer.spki_der, &algorithm, tbs, &sig)
        .map_err(|e| Error::TokenSignatureInvalid(e.to_string()))?;
    let tbs_total = tbs.len();
    let mut tail = Vec::new();
    algorithm.encode_to_vec(&mut tail)?;
    BitString::from_bytes(&sig)?.encode_to_vec(&mut tail)?;
    buf.extend_from_slice(&tail);
    let outer = header(0x30, tbs_total + tail.len());
    let start = tbs_start
        .checked_sub(outer.len())
        .ok_or_else(|| Error::Encode("CRL header larger than its room".into()))?;
    buf.get_mut(start..tbs_start)
        .ok_or_else(|| Error::Encode("CRL header out of range".into()))?
        .copy_from_slice(&outer);
    buf.drain(..start);
    Ok((buf, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::DnFields;
    use crate::profile::{ca_tbs, CaTemplate, Constraints, LintExpect};
    use scaivault_hsm::soft::SoftToken;
    use scaivault_hsm::{KeySpec, Token};

    /// The generic encoder the hand-written one must match byte for byte.
    fn reference(e: &RevokedEntry) -> Vec<u8> {
        let reason = e
            .reason
            .as_deref()
            .and_then(reason_code)
            .filter(|r| *r != CrlReason::Unspecified);
        x509_cert::crl::RevokedCert {
            serial_number: Serial::parse(&e.serial).unwrap().to_x509().unwrap(),
            revocation_date: time_util::to_x509(e.revoked_at).unwrap(),
            crl_entry_extensions: reason.map(|r| vec![extension(&r, false).unwrap()]),
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn hand_encoded_entries_match_the_generic_encoder() {
        let times = [
            time::macros::datetime!(1970-01-01 00:00:00 UTC),
            time::macros::datetime!(2026-11-28 19:07:47 UTC),
            time::macros::datetime!(2049-12-31 23:59:59 UTC),
            time::macros::datetime!(2050-01-01 00:00:00 UTC),
            time::macros::datetime!(2026-06-01 12:00:00 +02:00),
        ];
        let serials = [
            "01",
            "7F",
            "80",
            "00FF",
            "0a1b",
            "DEADBEEF",
            "5F3A9C0012345678ABCDEF0123456789",
            "7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            "de:ad:be:ef",
            "123",
        ];
        let mut reasons: Vec<Option<String>> = vec![None, Some("bogus".into())];
        reasons.extend(REASONS.iter().map(|r| Some((*r).to_owned())));
        let mut n = 0;
        for s in serials {
            for t in times {
                for r in &reasons {
                    let e = RevokedEntry {
                        serial: s.into(),
                        revoked_at: t,
                        reason: r.clone(),
                    };
                    let mut mine = Vec::new();
                    encode_entry(&mut mine, &e).unwrap();
                    assert_eq!(mine, reference(&e), "{e:?}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 10 * 5 * 11);
        let bad = |serial: &str| RevokedEntry {
            serial: serial.into(),
            revoked_at: times[1],
            reason: None,
        };
        for s in [
            "",
            "00",
            "zz",
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", // 21 octets with the sign byte
            "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        ] {
            assert!(encode_entry(&mut Vec::new(), &bad(s)).is_err(), "{s:?}");
        }
    }

    #[test]
    fn crls_parse_back_and_verify_with_openssl() {
        let token = SoftToken::new();
        let key = token.generate(KeySpec::EcP256, "ca").unwrap();
        let alg = key.algorithm_der();
        let now = time_util::now();
        let t = CaTemplate {
            subject: DnFields {
                common_name: "CRL CA".into(),
                ..Default::default()
            }
            .to_name()
            .unwrap(),
            spki_der: key.public_key_der().to_vec(),
            serial: Serial::random(),
            not_before: now,
            not_after: now + time::Duration::days(30),
            max_path_length: None,
            constraints: Constraints::default(),
        };
        let der = crate::sign::sign_certificate(
            ca_tbs(&t, None, &alg).unwrap(),
            LintExpect {
                issuer: None,
                ca: true,
                algorithm_der: &alg,
            },
            key.as_ref(),
        )
        .unwrap();
        let cert = crate::pem::from_der(&der).unwrap();
        let issuer = crate::sign::issuer_info(&cert, alg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, crate::pem::certificate(&der).unwrap()).unwrap();
        for n in [0usize, 1, 300] {
            let mut left: Vec<RevokedEntry> = (0..n)
                .map(|i| RevokedEntry {
                    serial: Serial::random().key(),
                    revoked_at: now,
                    reason: Some(REASONS[(i + 1) % REASONS.len()].to_owned()),
                })
                .collect();
            let params = CrlParams {
                number: 7 + n as u64,
                this_update: now,
                next_update: now + time::Duration::hours(2),
            };
            let (crl, count) = build(&issuer, key.as_ref(), &params, || {
                Ok(left.drain(..left.len().min(64)).collect())
            })
            .unwrap();
            assert_eq!(count, n);
            let parsed = x509_cert::crl::CertificateList::from_der(&crl).unwrap();
            assert_eq!(
                parsed
                    .tbs_cert_list
                    .revoked_certificates
                    .as_ref()
                    .map_or(0, Vec::len),
                n
            );
            let p = dir.path().join(format!("crl{n}.der"));
            std::fs::write(&p, &crl).unwrap();
            let out = std::process::Command::new("openssl")
                .args([
                    "crl",
                    "-inform",
                    "DER",
                    "-in",
                    p.to_str().unwrap(),
                    "-CAfile",
                    ca_pem.to_str().unwrap(),
                    "-noout",
                    "-text",
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stderr).contains("verify OK"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let number = text
                .split("CRL Number:")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .unwrap_or("");
            assert_eq!(number, (7 + n).to_string(), "{text}");
            if n == 0 {
                assert!(text.contains("No Revoked Certificates"), "{text}");
            } else {
                assert!(
                    text.contains("Key Compromise") && !text.contains("Unspecified"),
                    "{text}"
                );
            }
        }
    }
}
