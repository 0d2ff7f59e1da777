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
use x509_cert::crl::RevokedCert;
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

/// Builds and signs a CRL for `issuer`. `next_chunk` is called until it returns an empty chunk.
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
    // revokedCertificates content, entry by entry.
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0usize;
    loop {
        let chunk = next_chunk()?;
        if chunk.is_empty() {
            break;
        }
        for e in chunk {
            let reason = e
                .reason
                .as_deref()
                .and_then(reason_code)
                .filter(|r| *r != CrlReason::Unspecified);
            let exts = match reason {
                Some(r) => Some(vec![extension(&r, false)?]),
                None => None,
            };
            let entry = RevokedCert {
                serial_number: Serial::parse(&e.serial)?.to_x509()?,
                revocation_date: time_util::to_x509(e.revoked_at)?,
                crl_entry_extensions: exts,
            };
            entry.encode_to_vec(&mut entries)?;
            count += 1;
        }
    }
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
    // TBSCertList, assembled by hand around the entries buffer.
    let mut body = Vec::new();
    1u8.encode_to_vec(&mut body)?; // version v2
    algorithm.encode_to_vec(&mut body)?;
    issuer.name.encode_to_vec(&mut body)?;
    time_util::to_x509(p.this_update)?.encode_to_vec(&mut body)?;
    time_util::to_x509(p.next_update)?.encode_to_vec(&mut body)?;
    let body_head_len = body.len();
    let mut ext_seq = Vec::new();
    crl_exts.encode_to_vec(&mut ext_seq)?;
    let ext_explicit = [header(0xa0, ext_seq.len()), ext_seq].concat();
    let entries_header = if count > 0 {
        header(0x30, entries.len())
    } else {
        Vec::new()
    };
    let tbs_len = body_head_len
        + entries_header.len()
        + if count > 0 { entries.len() } else { 0 }
        + ext_explicit.len();
    let mut tbs = header(0x30, tbs_len);
    tbs.reserve(tbs_len);
    tbs.extend_from_slice(&body);
    if count > 0 {
        tbs.extend_from_slice(&entries_header);
        tbs.append(&mut entries);
    }
    drop(entries);
    tbs.extend_from_slice(&ext_explicit);

    let sig = signer.sign(&tbs)?;
    verify::verify_signature(&issuer.spki_der, &algorithm, &tbs, &sig)
        .map_err(|e| Error::TokenSignatureInvalid(e.to_string()))?;
    let mut tail = Vec::new();
    algorithm.encode_to_vec(&mut tail)?;
    BitString::from_bytes(&sig)?.encode_to_vec(&mut tail)?;
    let mut crl = header(0x30, tbs.len() + tail.len());
    crl.reserve(tbs.len() + tail.len());
    crl.append(&mut tbs);
    crl.extend_from_slice(&tail);
    Ok((crl, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::DnFields;
    use crate::profile::{ca_tbs, CaTemplate, Constraints, LintExpect};
    use scaivault_hsm::soft::SoftToken;
    use scaivault_hsm::{KeySpec, Token};

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
