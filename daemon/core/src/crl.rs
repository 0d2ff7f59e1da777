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

/// What [`check_external`] learnt from a CRL that was signed elsewhere (an offline root's CRL from
/// a key ceremony).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCrl {
    /// Its CRL number.
    pub number: i64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// How many certificates it lists.
    pub entries: usize,
    /// The serials it lists (canonical hex, as stored).
    pub revoked: Vec<String>,
}

/// How far in the future a CRL's thisUpdate may lie (clock skew between the ceremony host and us).
pub const EXTERNAL_SKEW: time::Duration = time::Duration::minutes(5);

/// Checks a CRL signed outside this daemon before it is published as `issuer`'s CRL: DER of a v2
/// CRL, issued by `issuer`'s subject, signed by `issuer`'s key, with a non-critical CRL number
/// (RFC 5280 §5.2.3), a nextUpdate, thisUpdate not in the future and nextUpdate not past, and an
/// AuthorityKeyIdentifier (when present) that names `issuer`'s key.
///
/// # Errors
/// [`Error::Invalid`] with codes `invalid_crl` (DER that is not a CRL), `crl_issuer_mismatch`,
/// `crl_signature_invalid`, `crl_number_missing`, `crl_number_too_large`, `crl_not_v2`,
/// `crl_next_update_missing`, `crl_not_yet_valid`, `crl_expired`, `crl_aki_mismatch`,
/// `crl_critical_extension`.
pub fn check_external(
    der: &[u8],
    issuer: &x509_cert::Certificate,
    now: OffsetDateTime,
) -> Result<ExternalCrl> {
    use const_oid::db::rfc5280 as oids;
    let list = x509_cert::crl::CertificateList::from_der(der)
        .map_err(|e| Error::invalid("invalid_crl", format!("the CRL does not decode: {e}")))?;
    let tbs = &list.tbs_cert_list;
    if tbs.issuer.to_der()? != issuer.tbs_certificate.subject.to_der()? {
        return Err(Error::invalid(
            "crl_issuer_mismatch",
            format!(
                "the CRL is issued by {}, not by this CA ({})",
                tbs.issuer, issuer.tbs_certificate.subject
            ),
        ));
    }
    if list.signature_algorithm != tbs.signature {
        return Err(Error::invalid(
            "crl_signature_invalid",
            "the CRL's outer and inner signature algorithms differ",
        ));
    }
    let sig = list
        .signature
        .as_bytes()
        .ok_or_else(|| Error::invalid("crl_signature_invalid", "signature has unused bits"))?;
    let spki = issuer.tbs_certificate.subject_public_key_info.to_der()?;
    verify::verify_signature(&spki, &list.signature_algorithm, &tbs.to_der()?, sig).map_err(
        |e| {
            Error::invalid(
                "crl_signature_invalid",
                format!("the CRL is not signed by this CA's key: {e}"),
            )
        },
    )?;
    if tbs.version != x509_cert::Version::V2 {
        return Err(Error::invalid("crl_not_v2", "the CRL is not version 2"));
    }
    let exts = tbs.crl_extensions.as_deref().unwrap_or(&[]);
    let mut number = None;
    for e in exts {
        if e.extn_id == oids::ID_CE_CRL_NUMBER {
            if e.critical {
                return Err(Error::invalid(
                    "crl_number_missing",
                    "the CRL number is marked critical (RFC 5280 §5.2.3)",
                ));
            }
            let n = CrlNumber::from_der(e.extn_value.as_bytes())
                .map_err(|e| Error::decode("CRL number", e))?;
            let bytes = n.0.as_bytes();
            if bytes.len() > 8 {
                return Err(Error::invalid(
                    "crl_number_too_large",
                    "CRL numbers above 2^63 are not supported",
                ));
            }
            let mut v = [0u8; 8];
            if let Some(dst) = v.get_mut(8 - bytes.len()..) {
                dst.copy_from_slice(bytes);
            }
            number = Some(i64::try_from(u64::from_be_bytes(v)).map_err(|_| {
                Error::invalid(
                    "crl_number_too_large",
                    "CRL numbers above 2^63 are not supported",
                )
            })?);
        } else if e.extn_id == oids::ID_CE_AUTHORITY_KEY_IDENTIFIER {
            let aki = AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes())
                .map_err(|e| Error::decode("authority key identifier", e))?;
            let ski = issuer
                .tbs_certificate
                .extensions
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .find(|x| x.extn_id == oids::ID_CE_SUBJECT_KEY_IDENTIFIER)
                .map(|x| x.extn_value.as_bytes().to_vec());
            if let (Some(kid), Some(ski)) = (aki.key_identifier, ski) {
                let ski = OctetString::from_der(&ski)
                    .map_err(|e| Error::decode("subject key identifier", e))?;
                if kid.as_bytes() != ski.as_bytes() {
                    return Err(Error::invalid(
                        "crl_aki_mismatch",
                        "the CRL's authority key identifier does not name this CA's key",
                    ));
                }
            }
        } else if e.critical {
            return Err(Error::invalid(
                "crl_critical_extension",
                format!(
                    "the CRL has a critical extension {} we do not process",
                    e.extn_id
                ),
            ));
        }
    }
    let number = number.ok_or_else(|| {
        Error::invalid(
            "crl_number_missing",
            "the CRL has no CRL number (RFC 5280 §5.2.3)",
        )
    })?;
    let this_update = time_util::from_x509(&tbs.this_update);
    let next_update = tbs
        .next_update
        .as_ref()
        .map(time_util::from_x509)
        .ok_or_else(|| Error::invalid("crl_next_update_missing", "the CRL has no nextUpdate"))?;
    if this_update > now + EXTERNAL_SKEW {
        return Err(Error::invalid(
            "crl_not_yet_valid",
            format!(
                "the CRL's thisUpdate {} is in the future",
                time_util::rfc3339(this_update)
            ),
        ));
    }
    if next_update <= now {
        return Err(Error::invalid(
            "crl_expired",
            format!(
                "the CRL's nextUpdate {} has passed",
                time_util::rfc3339(next_update)
            ),
        ));
    }
    let revoked = tbs
        .revoked_certificates
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|r| Serial::from_bytes(r.serial_number.as_bytes()).map(|s| s.key()))
        .collect::<Result<Vec<_>>>()?;
    Ok(ExternalCrl {
        number,
        this_update,
        next_update,
        entries: revoked.len(),
        revoked,
    })
}

/// What a CRL this daemon published says: its number and its entries (reason names as the API
/// writes them, `None` for none). Read after a database restore, to find a published CRL newer
/// than the database (no signature check: the file is the daemon's own).
///
/// # Errors
/// `invalid_crl` for DER that is not a CRL, `crl_number_missing` without a number.
pub fn read_published(der: &[u8]) -> Result<(i64, Vec<RevokedEntry>)> {
    use const_oid::db::rfc5280 as oids;
    let list = x509_cert::crl::CertificateList::from_der(der)
        .map_err(|e| Error::invalid("invalid_crl", format!("the CRL does not decode: {e}")))?;
    let tbs = &list.tbs_cert_list;
    let number = tbs
        .crl_extensions
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|e| e.extn_id == oids::ID_CE_CRL_NUMBER)
        .and_then(|e| CrlNumber::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|n| {
            let bytes = n.0.as_bytes();
            let mut v = [0u8; 8];
            v.get_mut(8usize.checked_sub(bytes.len())?..)?
                .copy_from_slice(bytes);
            i64::try_from(u64::from_be_bytes(v)).ok()
        })
        .ok_or_else(|| Error::invalid("crl_number_missing", "the CRL has no usable CRL number"))?;
    let mut entries = Vec::new();
    for r in tbs.revoked_certificates.as_deref().unwrap_or(&[]) {
        let reason = r
            .crl_entry_extensions
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .find(|e| e.extn_id == oids::ID_CE_CRL_REASONS)
            .and_then(|e| CrlReason::from_der(e.extn_value.as_bytes()).ok())
            .and_then(|code| {
                REASONS
                    .iter()
                    .find(|name| reason_code(name) == Some(code))
                    .map(|name| (*name).to_owned())
            });
        entries.push(RevokedEntry {
            serial: Serial::from_bytes(r.serial_number.as_bytes())?.key(),
            revoked_at: time_util::from_x509(&r.revocation_date),
            reason,
        });
    }
    Ok((number, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scaivault_hsm::soft::SoftToken;
    use scaivault_hsm::KeySpec;
    use std::sync::Arc;

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

    /// A test CA on a software token: its key, certificate and issuer data.
    fn test_ca(cn: &str) -> (Arc<dyn Signer>, x509_cert::Certificate, IssuerInfo) {
        let c = crate::testca::self_signed(&SoftToken::new(), KeySpec::EcP256, cn, cn);
        (c.key, c.cert, c.info)
    }

    #[test]
    fn external_crls_are_checked_before_publication() {
        let (key, cert, issuer) = test_ca("Offline Root");
        let (_, other_cert, _) = test_ca("Other Root");
        let now = time_util::now();
        let make = |issuer: &IssuerInfo, key: &dyn Signer, number, this: OffsetDateTime, next| {
            let mut left = vec![RevokedEntry {
                serial: "0A0B0C".into(),
                revoked_at: now,
                reason: Some("key_compromise".into()),
            }];
            let p = CrlParams {
                number,
                this_update: this,
                next_update: next,
            };
            build(issuer, key, &p, || Ok(std::mem::take(&mut left)))
                .unwrap()
                .0
        };
        let day = time::Duration::days(1);
        let good = make(&issuer, key.as_ref(), 42, now, now + day);
        let got = check_external(&good, &cert, now).unwrap();
        assert_eq!(got.number, 42);
        assert_eq!(got.entries, 1);
        assert_eq!(got.revoked, ["0A0B0C"]);
        assert_eq!(
            got.next_update.unix_timestamp(),
            (now + day).unix_timestamp()
        );

        let code = |der: &[u8], c: &x509_cert::Certificate| match check_external(der, c, now) {
            Err(Error::Invalid { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // Another CA's CRL, or ours checked against another CA.
        assert_eq!(code(&good, &other_cert), "crl_issuer_mismatch");
        // Same subject name, different key: the signature is what tells.
        let (forger_key, _, forger_issuer) = test_ca("Offline Root");
        let forged = make(&forger_issuer, forger_key.as_ref(), 43, now, now + day);
        assert_eq!(code(&forged, &cert), "crl_signature_invalid");
        // One flipped byte in the signed part.
        let mut tampered = good.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        assert!(check_external(&tampered, &cert, now).is_err());
        // Expired and future CRLs.
        let old = make(&issuer, key.as_ref(), 44, now - day - day, now - day);
        assert_eq!(code(&old, &cert), "crl_expired");
        let future = make(&issuer, key.as_ref(), 45, now + day, now + day + day);
        assert_eq!(code(&future, &cert), "crl_not_yet_valid");
        // Garbage.
        assert_eq!(code(b"not a crl", &cert), "invalid_crl");
    }

    #[test]
    fn crls_parse_back_and_verify_with_openssl() {
        let (key, cert, issuer) = test_ca("CRL CA");
        let der = crate::pem::to_der(&cert).unwrap();
        let now = time_util::now();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, crate::pem::certificate(&der).unwrap()).unwrap();
        for n in [0usize, 1, 300] {
            let mut left: Vec<RevokedEntry> = (0..n)
                .map(|i| RevokedEntry {
                    serial: Serial::fresh().key(),
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
