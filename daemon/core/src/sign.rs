//! Signing: lint, ask the signer, check the signature with the issuer's public key, assemble.
//! The gap between encoding the TBS and the signer call is where the lint runs, so a certificate
//! that breaks the profile is never shown to the token.

use crate::profile::{self, IssuerInfo, LintExpect};
use crate::{pem, time_util, verify, Error, Result};
use der::asn1::{BitString, SetOfVec};
use der::{Decode, Encode};
use scaivault_hsm::Signer;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version as CsrVersion};
use x509_cert::Certificate;

/// A to-be-signed certificate together with its DER encoding, made once: what is recorded before
/// signing (the serial reservation keeps the DER), what the lint checks and what the token signs
/// are the same value by construction, and the encoding is not repeated on the issuance path.
#[derive(Debug, Clone)]
pub struct EncodedTbs {
    tbs: TbsCertificate,
    der: Vec<u8>,
}

impl EncodedTbs {
    /// Encodes `tbs`.
    ///
    /// # Errors
    /// Encoder errors.
    pub fn new(tbs: TbsCertificate) -> Result<Self> {
        let der = tbs.to_der()?;
        Ok(EncodedTbs { tbs, der })
    }

    /// The value.
    pub fn tbs(&self) -> &TbsCertificate {
        &self.tbs
    }

    /// Its DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

/// Lints `tbs`, has `signer` sign it, verifies the signature with the issuer's public key
/// (`expect.issuer`, or the subject's own key for a self-signed certificate) and returns the DER
/// certificate.
///
/// # Errors
/// [`Error::ProfileViolation`] before signing; token errors; [`Error::BadSignature`] when the
/// token's signature does not verify (nothing is returned then).
pub fn sign_certificate(
    tbs: TbsCertificate,
    expect: LintExpect<'_>,
    signer: &dyn Signer,
) -> Result<Vec<u8>> {
    sign_encoded(&EncodedTbs::new(tbs)?, expect, signer)
}

/// [`sign_certificate`] for a TBS already encoded.
///
/// # Errors
/// As [`sign_certificate`].
pub fn sign_encoded(
    tbs: &EncodedTbs,
    expect: LintExpect<'_>,
    signer: &dyn Signer,
) -> Result<Vec<u8>> {
    let (value, tbs_der) = (tbs.tbs(), tbs.der());
    profile::lint(value, expect)?;
    let sig = signer.sign(tbs_der)?;
    let verify_key = match expect.issuer {
        Some(i) => i.spki_der.clone(),
        None => value.subject_public_key_info.to_der()?,
    };
    verify::verify_signature(&verify_key, &value.signature, tbs_der, &sig)
        .map_err(|e| Error::TokenSignatureInvalid(e.to_string()))?;
    assemble(tbs_der, &value.signature.to_der()?, &sig)
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }` (RFC 5280
/// §4.1) around the TBS bytes that were signed, without encoding the TBS a second time: the same
/// bytes `Certificate::to_der` would give (checked in the tests).
fn assemble(tbs_der: &[u8], algorithm_der: &[u8], sig: &[u8]) -> Result<Vec<u8>> {
    let sig_der = BitString::from_bytes(sig)?.to_der()?;
    let body = tbs_der.len() + algorithm_der.len() + sig_der.len();
    let header = der::Header::new(der::Tag::Sequence, der::Length::try_from(body)?)?;
    let mut out = Vec::with_capacity(body + 8);
    header.encode_to_vec(&mut out)?;
    out.extend_from_slice(tbs_der);
    out.extend_from_slice(algorithm_der);
    out.extend_from_slice(&sig_der);
    Ok(out)
}

/// Builds a PKCS#10 CSR (RFC 2986) for `subject` signed by `signer`, as PEM.
///
/// # Errors
/// Token errors; encoder bugs.
pub fn build_csr(subject: &Name, signer: &dyn Signer) -> Result<String> {
    let info = CertReqInfo {
        version: CsrVersion::V1,
        subject: subject.clone(),
        public_key: SubjectPublicKeyInfoOwned::from_der(signer.public_key_der())
            .map_err(|e| Error::decode("public key", e))?,
        attributes: SetOfVec::new(),
    };
    let info_der = info.to_der()?;
    let sig = signer.sign(&info_der)?;
    let algorithm = AlgorithmIdentifierOwned::from_der(&signer.algorithm_der())
        .map_err(|e| Error::decode("algorithm", e))?;
    verify::verify_signature(signer.public_key_der(), &algorithm, &info_der, &sig)
        .map_err(|e| Error::TokenSignatureInvalid(e.to_string()))?;
    let req = CertReq {
        info,
        algorithm,
        signature: BitString::from_bytes(&sig)?,
    };
    pem::encode("CERTIFICATE REQUEST", &req.to_der()?)
}

/// The issuer data of a CA from its certificate and the algorithm its key signs with.
///
/// # Errors
/// `invalid_certificate` when the certificate lacks what an issuer needs.
pub fn issuer_info(cert: &Certificate, algorithm_der: Vec<u8>) -> Result<IssuerInfo> {
    let spki_der = cert.tbs_certificate.subject_public_key_info.to_der()?;
    let key_id = match subject_key_id(cert) {
        Some(k) => k,
        None => profile::key_identifier(&spki_der)?,
    };
    Ok(IssuerInfo {
        name: cert.tbs_certificate.subject.clone(),
        key_id,
        not_before: time_util::from_x509(&cert.tbs_certificate.validity.not_before),
        not_after: time_util::from_x509(&cert.tbs_certificate.validity.not_after),
        spki_der,
        algorithm_der,
        name_rules: crate::constraints::NameRules::from_certs([cert]),
    })
}

/// The pathLenConstraint of a CA certificate's BasicConstraints, if any (RFC 5280 §4.2.1.9).
pub fn path_len_constraint(cert: &Certificate) -> Option<u8> {
    use const_oid::AssociatedOid;
    use x509_cert::ext::pkix::BasicConstraints;
    cert.tbs_certificate
        .extensions
        .as_deref()?
        .iter()
        .find(|e| e.extn_id == BasicConstraints::OID)
        .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|bc| bc.path_len_constraint)
}

/// The SubjectKeyIdentifier extension's value, if present.
pub fn subject_key_id(cert: &Certificate) -> Option<Vec<u8>> {
    use const_oid::AssociatedOid;
    cert.tbs_certificate
        .extensions
        .as_deref()?
        .iter()
        .find(|e| e.extn_id == SubjectKeyIdentifier::OID)
        .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
        .map(|s| s.0.as_bytes().to_vec())
}

#[cfg(test)]
mod tests;
