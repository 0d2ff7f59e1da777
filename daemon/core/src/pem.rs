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

/// Decodes one PEM block leniently — every PEM input of the API goes through it (CSRs,
/// certificates and chains, CRLs, validation input): the base64 text may be wrapped at any width (RFC 7468 §3 asks
/// parsers to accept lines of any length; Python's `base64.encodebytes` and Java's MIME encoder
/// wrap at 76 columns, where the strict decoder of `pem-rfc7468` wants 64), with CRLF or LF line
/// ends and whitespace around the block. Returns the label and the DER.
///
/// # Errors
/// A reason when a boundary is missing, the labels differ, text follows the block or the base64
/// does not decode.
pub fn decode_lax(text: &str) -> std::result::Result<(String, Vec<u8>), String> {
    use base64::Engine as _;
    let text = text.trim();
    let rest = text
        .strip_prefix("-----BEGIN ")
        .ok_or("PEM preencapsulation boundary missing")?;
    let (label, body) = rest
        .split_once("-----")
        .ok_or("PEM preencapsulation boundary malformed")?;
    if label.is_empty() || !label.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err("PEM label malformed".into());
    }
    let end = format!("-----END {label}-----");
    let (b64, after) = body
        .split_once(end.as_str())
        .ok_or("PEM postencapsulation boundary missing")?;
    if !after.trim().is_empty() {
        return Err("text after the PEM block".into());
    }
    let compact: Vec<u8> = b64.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("invalid Base64: {e}"))?;
    Ok((label.to_owned(), der))
}

/// A certificate's DER as PEM.
///
/// # Errors
/// Only on an encoder bug.
pub fn certificate(der: &[u8]) -> Result<String> {
    encode("CERTIFICATE", der)
}

/// Parses one or more PEM certificates (a chain), in order. Whitespace after the last block is
/// ignored; other text around the blocks is an error.
///
/// Each block is decoded to DER in one piece and then parsed: `der` 0.7's streaming PEM reader
/// (behind `Certificate::load_pem_chain` and `from_pem`) loops forever on a block whose DER
/// header runs past the end of its body (found by fuzzing, docs/FUZZING.md), and
/// `load_pem_chain` computes `len - 1` of an empty text (an overflow panic in debug builds).
///
/// # Errors
/// `invalid_certificate` when the text holds no certificate or one that does not decode.
pub fn parse_certificates(pem: &str) -> Result<Vec<Certificate>> {
    const END: &str = "-----END CERTIFICATE-----";
    let bad = |detail: String| Error::invalid("invalid_certificate", detail);
    let mut certs = Vec::new();
    let mut rest = pem.trim_end();
    while !rest.is_empty() {
        let Some(end) = rest.find(END).map(|i| i + END.len()) else {
            return Err(bad(
                "certificate PEM does not decode: PEM postencapsulation boundary missing".into(),
            ));
        };
        let (block, after) = rest.split_at(end);
        let (label, der) =
            decode_lax(block).map_err(|e| bad(format!("certificate PEM does not decode: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(bad(format!(
                "certificate PEM does not decode: a {label:?} block"
            )));
        }
        let cert = Certificate::from_der(&der)
            .map_err(|e| bad(format!("certificate PEM does not decode: {e}")))?;
        certs.push(cert);
        rest = after;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use scaivault_hsm::soft::SoftToken;
    use scaivault_hsm::KeySpec;
    use std::time::Duration;

    /// Runs `f` on its own thread and fails the test when it does not return within 5 seconds.
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("returns within 5 s (no endless loop)")
    }

    fn code(r: Result<Vec<Certificate>>) -> &'static str {
        r.err().map(|e| e.code()).unwrap_or("ok")
    }

    #[test]
    fn chains_parse_with_whitespace_between_and_after() {
        let token = SoftToken::new();
        let a = crate::testca::self_signed(&token, KeySpec::EcP256, "a", "A");
        let b = crate::testca::self_signed(&token, KeySpec::EcP256, "b", "B");
        let text = format!(
            "{}\n{}\r\n \n",
            certificate(&a.der).unwrap(),
            certificate(&b.der).unwrap().replace('\n', "\r\n")
        );
        let certs = parse_certificates(&text).unwrap();
        assert_eq!(certs, vec![a.cert.clone(), b.cert]);
        assert_eq!(
            parse_certificate(&certificate(&a.der).unwrap()).unwrap(),
            a.cert
        );
    }

    /// A chain as Python's `base64.encodebytes` or Java's MIME encoder writes it (76 columns), or
    /// on one line, reads like the 64-column form; broken base64 is still refused.
    #[test]
    fn certificates_wrapped_at_any_width_parse() {
        use base64::Engine as _;
        let token = SoftToken::new();
        let a = crate::testca::self_signed(&token, KeySpec::EcP256, "a", "A");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&a.der);
        for width in [76, 10_000] {
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(width)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            let block = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            );
            let two = format!("{block}{block}");
            assert_eq!(
                parse_certificates(&two).unwrap(),
                vec![a.cert.clone(), a.cert.clone()]
            );
            let broken = block.replacen('M', "!", 1);
            assert_eq!(code(parse_certificates(&broken)), "invalid_certificate");
        }
    }

    /// Fuzzing regression (fuzz/corpus/cert_validate/regression-pem-truncated-header): a body
    /// whose DER length octets run past its end made `der`'s PEM reader loop forever.
    #[test]
    fn truncated_blocks_and_empty_texts_are_refused_quickly() {
        for text in [
            "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----",
            "",
            "\r\n",
            "-----BEGIN CERTIFICATE-----\n",
            "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n-----END CERTIFICATE-----",
        ] {
            let r = within_5s(move || code(parse_certificates(text)));
            assert_eq!(r, "invalid_certificate", "{text:?}");
        }
    }
}
