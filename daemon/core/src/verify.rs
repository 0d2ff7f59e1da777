//! Signature verification in software: after the token signs (a wrong signature never leaves
//! the daemon) and for certificates and CSRs that arrive from outside.
//!
//! Supported: ECDSA P-256/P-384 with SHA-256/384/512, RSA PKCS#1 v1.5 with SHA-256/384/512,
//! Ed25519.

use crate::{Error, Result};
use const_oid::db::{rfc5912, rfc8410};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384, Sha512};
use signature::hazmat::PrehashVerifier;
use signature::Verifier;
use spki::{AlgorithmIdentifierOwned, DecodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(msg).to_vec(),
            Hash::Sha384 => Sha384::digest(msg).to_vec(),
            Hash::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }
}

/// Verifies `sig` over `msg` under the public key `spki_der` with signature algorithm `alg`.
///
/// # Errors
/// [`Error::BadSignature`] when it does not verify or the algorithm does not fit the key;
/// `unsupported_algorithm` for algorithms this module does not know.
pub fn verify_signature(
    spki_der: &[u8],
    alg: &AlgorithmIdentifierOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<()> {
    let bad = |e: &dyn std::fmt::Display| Error::BadSignature(e.to_string());
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|e| Error::decode("public key", e))?;
    if let Some(r) = ring_verify(&spki, alg.oid, msg, sig) {
        return r;
    }
    let key_alg = spki.algorithm.oid;
    let oid = alg.oid;
    let ecdsa_hash = match oid {
        o if o == rfc5912::ECDSA_WITH_SHA_256 => Some(Hash::Sha256),
        o if o == rfc5912::ECDSA_WITH_SHA_384 => Some(Hash::Sha384),
        o if o == rfc5912::ECDSA_WITH_SHA_512 => Some(Hash::Sha512),
        _ => None,
    };
    let rsa_hash = match oid {
        o if o == rfc5912::SHA_256_WITH_RSA_ENCRYPTION => Some(Hash::Sha256),
        o if o == rfc5912::SHA_384_WITH_RSA_ENCRYPTION => Some(Hash::Sha384),
        o if o == rfc5912::SHA_512_WITH_RSA_ENCRYPTION => Some(Hash::Sha512),
        _ => None,
    };
    if let Some(h) = ecdsa_hash {
        if key_alg != rfc5912::ID_EC_PUBLIC_KEY {
            return Err(Error::BadSignature(
                "ECDSA signature with a non-EC key".into(),
            ));
        }
        let curve: Option<ObjectIdentifier> = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        let digest = h.digest(msg);
        return match curve {
            Some(c) if c == rfc5912::SECP_256_R_1 => {
                let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                    .map_err(|e| bad(&e))?;
                let s = p256::ecdsa::Signature::from_der(sig).map_err(|e| bad(&e))?;
                vk.verify_prehash(&digest, &s).map_err(|e| bad(&e))
            }
            Some(c) if c == rfc5912::SECP_384_R_1 => {
                let vk = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                    .map_err(|e| bad(&e))?;
                let s = p384::ecdsa::Signature::from_der(sig).map_err(|e| bad(&e))?;
                vk.verify_prehash(&digest, &s).map_err(|e| bad(&e))
            }
            _ => Err(Error::invalid(
                "unsupported_algorithm",
                "EC curve other than P-256 or P-384",
            )),
        };
    }
    if let Some(h) = rsa_hash {
        if key_alg != rfc5912::RSA_ENCRYPTION {
            return Err(Error::BadSignature(
                "RSA signature with a non-RSA key".into(),
            ));
        }
        let pk = rsa_public_key(spki_der).map_err(|e| bad(&e))?;
        let digest = h.digest(msg);
        let scheme = match h {
            Hash::Sha256 => rsa::Pkcs1v15Sign::new::<Sha256>(),
            Hash::Sha384 => rsa::Pkcs1v15Sign::new::<Sha384>(),
            Hash::Sha512 => rsa::Pkcs1v15Sign::new::<Sha512>(),
        };
        return pk.verify(scheme, &digest, sig).map_err(|e| bad(&e));
    }
    if oid == rfc8410::ID_ED_25519 {
        if key_alg != rfc8410::ID_ED_25519 {
            return Err(Error::BadSignature(
                "Ed25519 signature with a non-Ed25519 key".into(),
            ));
        }
        let vk = ed25519_dalek::VerifyingKey::from_public_key_der(spki_der).map_err(|e| bad(&e))?;
        let s = ed25519_dalek::Signature::from_slice(sig).map_err(|e| bad(&e))?;
        return vk.verify(msg, &s).map_err(|e| bad(&e));
    }
    Err(Error::invalid(
        "unsupported_algorithm",
        format!("signature algorithm {oid} is not supported"),
    ))
}

/// An ECDSA signature (DER) by the EC key `spki_der` in its low-S form: `(r, s)` and `(r, n − s)`
/// both verify, so a record that must change whenever a byte of it changes (a ceremony
/// transcript) keeps only the form with `s ≤ n/2`, as Bitcoin's BIP 62 does. `None` when it was
/// low-S already, or the key is not ECDSA P-256/P-384 (RSA PKCS#1 v1.5 and Ed25519 signatures are
/// not malleable).
///
/// # Errors
/// A signature that does not decode for the key's curve.
pub fn ecdsa_high_s_normalized(spki_der: &[u8], sig: &[u8]) -> Result<Option<Vec<u8>>> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    if spki.algorithm.oid != rfc5912::ID_EC_PUBLIC_KEY {
        return Ok(None);
    }
    let curve: Option<ObjectIdentifier> = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let bad = |e: &dyn std::fmt::Display| Error::BadSignature(e.to_string());
    Ok(match curve {
        Some(c) if c == rfc5912::SECP_256_R_1 => p256::ecdsa::Signature::from_der(sig)
            .map_err(|e| bad(&e))?
            .normalize_s()
            .map(|s| s.to_der().as_bytes().to_vec()),
        Some(c) if c == rfc5912::SECP_384_R_1 => p384::ecdsa::Signature::from_der(sig)
            .map_err(|e| bad(&e))?
            .normalize_s()
            .map(|s| s.to_der().as_bytes().to_vec()),
        _ => None,
    })
}

/// The largest RSA modulus accepted in a client's key (a CSR's, a trust anchor's).
pub const MAX_RSA_BITS: usize = 8192;

/// An RSA public key from its DER SubjectPublicKeyInfo, up to [`MAX_RSA_BITS`]
/// (`RsaPublicKey::from_public_key_der` stops at 4096 and calls a larger key malformed).
///
/// # Errors
/// The decoder's reason, or the modulus is over [`MAX_RSA_BITS`].
pub fn rsa_public_key(spki_der: &[u8]) -> std::result::Result<rsa::RsaPublicKey, String> {
    use der::Decode as _;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| e.to_string())?;
    if spki.algorithm.oid != rfc5912::RSA_ENCRYPTION {
        return Err("not an RSA key".into());
    }
    let key = rsa::pkcs1::RsaPublicKey::from_der(spki.subject_public_key.raw_bytes())
        .map_err(|e| e.to_string())?;
    let n = rsa::BigUint::from_bytes_be(key.modulus.as_bytes());
    let e = rsa::BigUint::from_bytes_be(key.public_exponent.as_bytes());
    rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS).map_err(|e| e.to_string())
}

/// The common algorithms through `ring` (several times faster than the portable RustCrypto
/// arithmetic for P-256); `None` for what `ring` does not cover, which the RustCrypto paths
/// handle.
fn ring_verify(
    spki: &SubjectPublicKeyInfoOwned,
    sig_alg: ObjectIdentifier,
    msg: &[u8],
    sig: &[u8],
) -> Option<Result<()>> {
    use ring::signature as rs;
    let key = spki.subject_public_key.as_bytes()?;
    let curve: Option<ObjectIdentifier> = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as().ok());
    let algorithm: &dyn rs::VerificationAlgorithm = match (spki.algorithm.oid, curve, sig_alg) {
        (k, Some(c), s)
            if k == rfc5912::ID_EC_PUBLIC_KEY
                && c == rfc5912::SECP_256_R_1
                && s == rfc5912::ECDSA_WITH_SHA_256 =>
        {
            &rs::ECDSA_P256_SHA256_ASN1
        }
        (k, Some(c), s)
            if k == rfc5912::ID_EC_PUBLIC_KEY
                && c == rfc5912::SECP_256_R_1
                && s == rfc5912::ECDSA_WITH_SHA_384 =>
        {
            &rs::ECDSA_P256_SHA384_ASN1
        }
        (k, Some(c), s)
            if k == rfc5912::ID_EC_PUBLIC_KEY
                && c == rfc5912::SECP_384_R_1
                && s == rfc5912::ECDSA_WITH_SHA_384 =>
        {
            &rs::ECDSA_P384_SHA384_ASN1
        }
        (k, Some(c), s)
            if k == rfc5912::ID_EC_PUBLIC_KEY
                && c == rfc5912::SECP_384_R_1
                && s == rfc5912::ECDSA_WITH_SHA_256 =>
        {
            &rs::ECDSA_P384_SHA256_ASN1
        }
        (k, _, s) if k == rfc5912::RSA_ENCRYPTION && s == rfc5912::SHA_256_WITH_RSA_ENCRYPTION => {
            &rs::RSA_PKCS1_2048_8192_SHA256
        }
        (k, _, s) if k == rfc5912::RSA_ENCRYPTION && s == rfc5912::SHA_384_WITH_RSA_ENCRYPTION => {
            &rs::RSA_PKCS1_2048_8192_SHA384
        }
        (k, _, s) if k == rfc5912::RSA_ENCRYPTION && s == rfc5912::SHA_512_WITH_RSA_ENCRYPTION => {
            &rs::RSA_PKCS1_2048_8192_SHA512
        }
        (k, _, s) if k == rfc8410::ID_ED_25519 && s == rfc8410::ID_ED_25519 => &rs::ED25519,
        _ => return None,
    };
    match rs::UnparsedPublicKey::new(algorithm, key).verify(msg, sig) {
        Ok(()) => Some(Ok(())),
        // ring refuses RSA keys under 2048 bits: let the RustCrypto path decide those.
        Err(_) if spki.algorithm.oid == rfc5912::RSA_ENCRYPTION => None,
        Err(_) => Some(Err(Error::BadSignature("signature does not verify".into()))),
    }
}

/// Verifies that `cert` was signed by the key `issuer_spki_der`.
///
/// # Errors
/// As [`verify_signature`].
pub fn verify_certificate(cert: &Certificate, issuer_spki_der: &[u8]) -> Result<()> {
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(Error::BadSignature(
            "outer and inner signature algorithms differ".into(),
        ));
    }
    let tbs = cert.tbs_certificate.to_der()?;
    let sig = cert
        .signature
        .as_bytes()
        .ok_or_else(|| Error::BadSignature("signature has unused bits".into()))?;
    verify_signature(issuer_spki_der, &cert.signature_algorithm, &tbs, sig)
}

/// Whether two SubjectPublicKeyInfos hold the same key (same algorithm and key bits; parameters
/// compared too).
pub fn same_key(a: &SubjectPublicKeyInfoOwned, b: &SubjectPublicKeyInfoOwned) -> bool {
    a.algorithm.oid == b.algorithm.oid
        && a.subject_public_key == b.subject_public_key
        && a.algorithm.parameters.as_ref().map(|p| p.to_der().ok())
            == b.algorithm.parameters.as_ref().map(|p| p.to_der().ok())
}
