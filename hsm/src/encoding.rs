//! DER encodings shared by every backend: signature `AlgorithmIdentifier`s, public keys as
//! `SubjectPublicKeyInfo`, curve parameters and the ECDSA `r||s` → `ECDSA-Sig-Value` conversion.
//!
//! Keeping them in one place guarantees that the PKCS#11 token and the software stand-in produce
//! byte-identical algorithm identifiers and the same signature encodings.

#![cfg_attr(not(feature = "pkcs11"), allow(dead_code))]

use crate::{Error, KeySpec, Result};
use spki::EncodePublicKey;

/// `AlgorithmIdentifier { ecdsa-with-SHA256 }` (RFC 5758: parameters absent).
pub(crate) const ALG_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// `AlgorithmIdentifier { ecdsa-with-SHA384 }` (RFC 5758: parameters absent).
pub(crate) const ALG_ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
/// `AlgorithmIdentifier { sha256WithRSAEncryption, NULL }` (RFC 4055: parameters NULL).
pub(crate) const ALG_SHA256_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
/// `AlgorithmIdentifier { id-Ed25519 }` (RFC 8410: parameters absent).
pub(crate) const ALG_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// `CKA_EC_PARAMS` for P-256: the DER OID `prime256v1`.
pub(crate) const PARAMS_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `CKA_EC_PARAMS` for P-384: the DER OID `secp384r1`.
pub(crate) const PARAMS_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// `CKA_EC_PARAMS` for Ed25519: the DER OID `id-Ed25519`.
pub(crate) const PARAMS_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// `CKA_EC_PARAMS` for Ed25519 as some tokens report it: PrintableString `edwards25519`.
pub(crate) const PARAMS_ED25519_NAME: &[u8] = &[
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];

/// The signature `AlgorithmIdentifier` (DER) a key of `spec` produces.
pub(crate) fn signature_algorithm(spec: KeySpec) -> &'static [u8] {
    match spec {
        KeySpec::EcP256 => ALG_ECDSA_SHA256,
        KeySpec::EcP384 => ALG_ECDSA_SHA384,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => ALG_SHA256_RSA,
        KeySpec::Ed25519 => ALG_ED25519,
    }
}

fn spki_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Encoding(format!("{what}: {e}"))
}

/// SPKI (`id-ecPublicKey` + named curve) of an EC point in SEC1 encoding; checks the point is on
/// the curve.
///
/// # Errors
/// [`Error::Encoding`] when the point is not a valid point of the curve of `spec`, or `spec` is
/// not an EC spec.
pub(crate) fn ec_spki(spec: KeySpec, sec1_point: &[u8]) -> Result<Vec<u8>> {
    let doc = match spec {
        KeySpec::EcP256 => p256::PublicKey::from_sec1_bytes(sec1_point)
            .map_err(|e| spki_error("P-256 public point", e))?
            .to_public_key_der(),
        KeySpec::EcP384 => p384::PublicKey::from_sec1_bytes(sec1_point)
            .map_err(|e| spki_error("P-384 public point", e))?
            .to_public_key_der(),
        other => return Err(Error::Encoding(format!("{other:?} is not an EC key"))),
    };
    Ok(doc
        .map_err(|e| spki_error("EC SubjectPublicKeyInfo", e))?
        .into_vec())
}

/// SPKI (`rsaEncryption`, NULL parameters) of an RSA public key given as big-endian modulus and
/// public exponent.
///
/// # Errors
/// [`Error::Encoding`] when the numbers do not form an RSA public key.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>> {
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from_bytes_be(exponent),
    )
    .map_err(|e| spki_error("RSA public key", e))?;
    Ok(key
        .to_public_key_der()
        .map_err(|e| spki_error("RSA SubjectPublicKeyInfo", e))?
        .into_vec())
}

/// SPKI (`id-Ed25519`, parameters absent) of a 32-byte Ed25519 public key.
///
/// # Errors
/// [`Error::Encoding`] when the bytes are not an Ed25519 point.
pub(crate) fn ed25519_spki(point: &[u8]) -> Result<Vec<u8>> {
    let bytes: [u8; 32] = point
        .try_into()
        .map_err(|_| Error::Encoding(format!("Ed25519 public key of {} bytes", point.len())))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|e| spki_error("Ed25519 public key", e))?;
    Ok(key
        .to_public_key_der()
        .map_err(|e| spki_error("Ed25519 SubjectPublicKeyInfo", e))?
        .into_vec())
}

/// Converts a raw ECDSA signature `r||s` (what PKCS#11 `CKM_ECDSA` returns) to the DER
/// `ECDSA-Sig-Value` X.509 needs.
///
/// # Errors
/// [`Error::Encoding`] when `raw` has the wrong length or `r`/`s` are out of range.
pub(crate) fn ecdsa_raw_to_der(spec: KeySpec, raw: &[u8]) -> Result<Vec<u8>> {
    match spec {
        KeySpec::EcP256 => Ok(p256::ecdsa::Signature::from_slice(raw)
            .map_err(|e| spki_error("P-256 raw signature", e))?
            .to_der()
            .as_bytes()
            .to_vec()),
        KeySpec::EcP384 => Ok(p384::ecdsa::Signature::from_slice(raw)
            .map_err(|e| spki_error("P-384 raw signature", e))?
            .to_der()
            .as_bytes()
            .to_vec()),
        other => Err(Error::Encoding(format!("{other:?} is not an EC key"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use const_oid::db::{rfc5912, rfc8410};
    use der::asn1::{Any, ObjectIdentifier};
    use der::Encode;
    use spki::AlgorithmIdentifierOwned;

    fn alg(oid: ObjectIdentifier, null: bool) -> Vec<u8> {
        AlgorithmIdentifierOwned {
            oid,
            parameters: null.then(Any::null),
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn algorithm_identifiers_match_der_encoder() {
        assert_eq!(ALG_ECDSA_SHA256, alg(rfc5912::ECDSA_WITH_SHA_256, false));
        assert_eq!(ALG_ECDSA_SHA384, alg(rfc5912::ECDSA_WITH_SHA_384, false));
        assert_eq!(
            ALG_SHA256_RSA,
            alg(rfc5912::SHA_256_WITH_RSA_ENCRYPTION, true)
        );
        assert_eq!(ALG_ED25519, alg(rfc8410::ID_ED_25519, false));
    }

    #[test]
    fn curve_parameters_match_der_encoder() {
        assert_eq!(PARAMS_P256, rfc5912::SECP_256_R_1.to_der().unwrap());
        assert_eq!(PARAMS_P384, rfc5912::SECP_384_R_1.to_der().unwrap());
        assert_eq!(PARAMS_ED25519, rfc8410::ID_ED_25519.to_der().unwrap());
    }

    #[test]
    fn raw_signature_of_wrong_length_is_refused() {
        assert!(matches!(
            ecdsa_raw_to_der(KeySpec::EcP256, &[1u8; 63]),
            Err(Error::Encoding(_))
        ));
        assert!(ecdsa_raw_to_der(KeySpec::Rsa2048, &[1u8; 64]).is_err());
    }
}
