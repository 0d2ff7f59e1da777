//! A decoded view of one certificate, for the RFC 5280 checks that run beside webpki
//! ([`super::profile`]) and for reporting (subject, serial, fingerprint).
//!
//! Decoding uses `x509-cert` with a lenient serial-number profile, so that a negative, zero or
//! over-long serial reaches the profile check and is reported as such instead of as "malformed".
//! Every extension is decoded here exactly once; a known extension whose value does not decode is
//! remembered as broken, not silently skipped.

use const_oid::db::rfc5280 as oids;
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::certificate::{CertificateInner, Profile};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage,
    KeyUsage, NameConstraints, PolicyConstraints, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::serial_number::SerialNumber;

/// Decodes serial numbers without the RFC 5280 length check: [`super::profile`] judges them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lenient;

impl Profile for Lenient {
    fn check_serial_number(_serial: &SerialNumber<Self>) -> der::Result<()> {
        Ok(())
    }
}

/// A decoded extension value, or the fact that it did not decode.
#[derive(Debug, Clone)]
pub enum Ext<T> {
    /// Absent.
    Absent,
    /// Present: criticality and value.
    Present(bool, T),
    /// Present but undecodable (the decoder's message).
    Broken(String),
}

impl<T> Ext<T> {
    /// The value, when present and decodable.
    pub fn value(&self) -> Option<&T> {
        match self {
            Ext::Present(_, v) => Some(v),
            _ => None,
        }
    }

    /// Whether the extension is there at all (decodable or not).
    pub fn is_present(&self) -> bool {
        !matches!(self, Ext::Absent)
    }

    /// Whether it is present and marked critical.
    pub fn is_critical(&self) -> bool {
        matches!(self, Ext::Present(true, _))
    }
}

/// One certificate, decoded.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The DER as given.
    pub der: Vec<u8>,
    /// The decoded structure.
    pub cert: CertificateInner<Lenient>,
    /// `subject` as RFC 4514 text.
    pub subject_text: String,
    /// DER of the subject name.
    pub subject_der: Vec<u8>,
    /// DER of the issuer name.
    pub issuer_der: Vec<u8>,
    /// DER of the SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// notBefore / notAfter, seconds since the Unix epoch.
    pub not_before: u64,
    /// See `not_before`.
    pub not_after: u64,
    /// Extension OIDs in order, with criticality (duplicates kept).
    pub ext_ids: Vec<(ObjectIdentifier, bool)>,
    /// BasicConstraints.
    pub basic_constraints: Ext<BasicConstraints>,
    /// KeyUsage.
    pub key_usage: Ext<KeyUsage>,
    /// ExtendedKeyUsage.
    pub eku: Ext<ExtendedKeyUsage>,
    /// SubjectKeyIdentifier.
    pub ski: Ext<SubjectKeyIdentifier>,
    /// AuthorityKeyIdentifier.
    pub aki: Ext<AuthorityKeyIdentifier>,
    /// SubjectAltName.
    pub san: Ext<SubjectAltName>,
    /// NameConstraints.
    pub name_constraints: Ext<NameConstraints>,
    /// AuthorityInfoAccess.
    pub aia: Ext<AuthorityInfoAccessSyntax>,
    /// PolicyConstraints.
    pub policy_constraints: Ext<PolicyConstraints>,
}

fn ext<'a, T: Decode<'a>>(exts: &'a [x509_cert::ext::Extension], oid: ObjectIdentifier) -> Ext<T> {
    match exts.iter().find(|e| e.extn_id == oid) {
        None => Ext::Absent,
        Some(e) => match T::from_der(e.extn_value.as_bytes()) {
            Ok(v) => Ext::Present(e.critical, v),
            Err(err) => Ext::Broken(err.to_string()),
        },
    }
}

impl Parsed {
    /// Decodes `der`.
    ///
    /// # Errors
    /// The decoder's message when it is not a certificate.
    pub fn new(der: &[u8]) -> Result<Self, String> {
        let cert = CertificateInner::<Lenient>::from_der(der).map_err(|e| e.to_string())?;
        let tbs = &cert.tbs_certificate;
        let enc = |r: der::Result<Vec<u8>>| r.map_err(|e| e.to_string());
        let subject_der = enc(tbs.subject.to_der())?;
        let issuer_der = enc(tbs.issuer.to_der())?;
        let spki_der = enc(tbs.subject_public_key_info.to_der())?;
        let exts: &[x509_cert::ext::Extension] = tbs.extensions.as_deref().unwrap_or(&[]);
        let parsed = Parsed {
            der: der.to_vec(),
            subject_text: tbs.subject.to_string(),
            subject_der,
            issuer_der,
            spki_der,
            not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
            ext_ids: exts.iter().map(|e| (e.extn_id, e.critical)).collect(),
            basic_constraints: ext(exts, oids::ID_CE_BASIC_CONSTRAINTS),
            key_usage: ext(exts, oids::ID_CE_KEY_USAGE),
            eku: ext(exts, oids::ID_CE_EXT_KEY_USAGE),
            ski: ext(exts, oids::ID_CE_SUBJECT_KEY_IDENTIFIER),
            aki: ext(exts, oids::ID_CE_AUTHORITY_KEY_IDENTIFIER),
            san: ext(exts, oids::ID_CE_SUBJECT_ALT_NAME),
            name_constraints: ext(exts, oids::ID_CE_NAME_CONSTRAINTS),
            aia: ext(exts, oids::ID_PE_AUTHORITY_INFO_ACCESS),
            policy_constraints: ext(exts, oids::ID_CE_POLICY_CONSTRAINTS),
            cert,
        };
        Ok(parsed)
    }

    /// The serial's DER INTEGER content octets (two's complement, as encoded).
    pub fn serial_der(&self) -> &[u8] {
        self.cert.tbs_certificate.serial_number.as_bytes()
    }

    /// The serial as uppercase hex pairs joined by `:` (the octets as encoded).
    pub fn serial_text(&self) -> String {
        let parts: Vec<String> = self
            .serial_der()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        parts.join(":")
    }

    /// SHA-256 of the DER, lowercase hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// Subject and issuer are the same name (RFC 5280 §3.2 "self-issued").
    pub fn self_issued(&self) -> bool {
        self.subject_der == self.issuer_der
    }

    /// BasicConstraints present with `cA` asserted.
    pub fn is_ca(&self) -> bool {
        self.basic_constraints.value().is_some_and(|b| b.ca)
    }

    /// The subject is an empty sequence of RDNs.
    pub fn subject_empty(&self) -> bool {
        self.cert.tbs_certificate.subject.0.is_empty()
    }

    /// The DNS names and e-mail addresses in the SAN, if it decodes.
    pub fn san_names(&self) -> Vec<&GeneralName> {
        self.san
            .value()
            .map(|s| s.0.iter().collect())
            .unwrap_or_default()
    }

    /// A short way to name this certificate in messages.
    pub fn describe(&self) -> String {
        if self.subject_text.is_empty() {
            format!("certificate with serial {}", self.serial_text())
        } else {
            format!("\"{}\"", self.subject_text)
        }
    }
}
