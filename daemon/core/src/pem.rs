//! PEM in and out (RFC 7468).

use crate::{Error, Result};
use der::{Decode, Encode};
use x509_cert::Certificate;

/// Encodes DER as PEM with `label` and LF line endings.
///
/// # Errors
/// Only on an encoder bug.
pub fn encode(label: &str, der: &[u8]) -> Result<String> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der)
        .map_err(|e| Error::Encode(e.to_string()))
}

/// A certificate's DER as PEM.
///
/// # Errors
/// Only on an encoder bug.
pub fn certificate(der: &[u8]) -> Result<String> {
    encode("CERTIFICATE", der)
}

/// Parses one or more PEM certificates (a chain), in order.
///
/// # Errors
/// `invalid_certificate` when the text holds no certificate or one that does not decode.
pub fn parse_certificates(pem: &str) -> Result<Vec<Certificate>> {
    let certs = Certificate::load_pem_chain(pem.as_bytes()).map_err(|e| {
        Error::invalid(
            "invalid_certificate",
            format!("certificate PEM does not decode: {e}"),
        )
    })?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "invalid_certificate",
            "no certificate in the PEM text",
        ));
    }
    Ok(certs)
}

/// Parses exactly one PEM certificate.
///
/// # Errors
/// `invalid_certificate` when there is not exactly one.
pub fn parse_certificate(pem: &str) -> Result<Certificate> {
    let mut certs = parse_certificates(pem)?;
    if certs.len() != 1 {
        return Err(Error::invalid(
            "invalid_certificate",
            format!("expected one certificate, got {}", certs.len()),
        ));
    }
    certs
        .pop()
        .ok_or_else(|| Error::invalid("invalid_certificate", "no certificate"))
}

/// Re-encodes a parsed certificate.
///
/// # Errors
/// Only on an encoder bug.
pub fn to_der(cert: &Certificate) -> Result<Vec<u8>> {
    cert.to_der().map_err(Error::from)
}

/// Decodes a DER certificate.
///
/// # Errors
/// `invalid_certificate`.
pub fn from_der(der: &[u8]) -> Result<Certificate> {
    Certificate::from_der(der).map_err(|e| Error::invalid("invalid_certificate", e.to_string()))
}
