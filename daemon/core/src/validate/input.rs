//! Intake: PEM blocks, and the checks on a certificate offered as a trust anchor.

use super::parsed::Parsed;
use super::MAX_CERT_BYTES;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// What is recorded about a certificate accepted as a trust anchor.
#[derive(Debug, Clone)]
pub struct AnchorCandidate {
    /// RFC 4514 subject.
    pub subject: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint_sha256: String,
    /// notAfter.
    pub not_after: OffsetDateTime,
}

/// Whether `der` decodes as a certificate the way the path search reads its candidates (an
/// offered intermediate that does not is never used, so the caller refuses it up front).
///
/// # Errors
/// The decoder's message.
pub fn check_decodes(der: &[u8]) -> Result<(), String> {
    Parsed::new(der).map(|_| ())
}

/// Checks that `der` can serve as a trust anchor: a certificate webpki can take as an anchor, and
/// a CA certificate (BasicConstraints cA=TRUE; KeyUsage, when present, with keyCertSign).
///
/// # Errors
/// `invalid_certificate` when it does not decode; `not_a_ca_certificate` for an end-entity
/// certificate.
pub fn check_anchor(der: &[u8]) -> crate::Result<AnchorCandidate> {
    let bad = |why: String| crate::Error::invalid("invalid_certificate", why);
    if der.len() > MAX_CERT_BYTES {
        return Err(bad(format!(
            "the certificate is larger than {MAX_CERT_BYTES} octets"
        )));
    }
    let p = Parsed::new(der).map_err(|e| bad(format!("the certificate does not decode: {e}")))?;
    webpki::anchor_from_trusted_cert(&CertificateDer::from(der)).map_err(|e| {
        bad(format!(
            "the certificate cannot serve as a trust anchor: {e:?}"
        ))
    })?;
    if !p.is_ca() {
        return Err(crate::Error::invalid(
            "not_a_ca_certificate",
            format!(
                "{} is not a CA certificate (no BasicConstraints with cA=TRUE): only CA certificates can be trust anchors",
                p.describe()
            ),
        ));
    }
    if p.key_usage.value().is_some_and(|k| !k.key_cert_sign()) {
        return Err(crate::Error::invalid(
            "not_a_ca_certificate",
            format!(
                "{} may not sign certificates (KeyUsage without keyCertSign)",
                p.describe()
            ),
        ));
    }
    Ok(AnchorCandidate {
        subject: p.subject_text.clone(),
        fingerprint_sha256: p.fingerprint(),
        not_after: OffsetDateTime::from_unix_timestamp(
            i64::try_from(p.not_after).unwrap_or(i64::MAX),
        )
        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    })
}

/// The DER SubjectPublicKeyInfo of a certificate (the key [`RevocationSource::status`] is asked
/// about), or `None` when it does not decode.
pub fn subject_public_key_info(der: &[u8]) -> Option<Vec<u8>> {
    Parsed::new(der).ok().map(|p| p.spki_der)
}

/// The DER of every PEM block labelled `label` in `text`, in order (RFC 7468; surrounding text
/// and other blocks are ignored).
///
/// # Errors
/// A message naming the block that does not decode.
pub fn pem_blocks(text: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((_, from_begin)) = rest.split_once(&begin) {
        let n = out.len() + 1;
        let Some((body, after)) = from_begin.split_once(&end) else {
            return Err(format!("block {n} has no END line"));
        };
        let block = format!("{begin}{body}{end}\n");
        let (got, der) = crate::pem::decode_lax(&block)
            .map_err(|e| format!("block {n} does not decode: {e}"))?;
        if got != label {
            return Err(format!("block {n} is a {got}"));
        }
        out.push(der);
        rest = after;
    }
    Ok(out)
}
