//! Glue between a [`Signer`] and the `x509-cert` 0.2 builders.
//!
//! [`X509Signer`] wraps any `Arc<dyn Signer>` (a PKCS#11 key or a software key) so it can be passed
//! to `x509_cert::builder::CertificateBuilder` (and the other `x509-cert` builders): it implements
//! `signature::Keypair` (the public key as SPKI DER), `spki::DynSignatureAlgorithmIdentifier`
//! (taken from [`Signer::algorithm_der`]) and `signature::Signer<X509Signature>`, where
//! [`X509Signature`] is the finished `BIT STRING` content.
//!
//! ```ignore
//! let signer = X509Signer(token.find("ca-key")?);
//! let spki = SubjectPublicKeyInfoOwned::from_der(signer.0.public_key_der())?;
//! let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)?;
//! let cert = builder.build::<X509Signature>()?;
//! ```

use crate::Signer;
use der::asn1::BitString;
use der::Decode;
use spki::{AlgorithmIdentifierOwned, Document, EncodePublicKey, SignatureBitStringEncoding};
use std::sync::Arc;

/// A [`Signer`] usable with the `x509-cert` builders (`build::<X509Signature>()`).
#[derive(Debug, Clone)]
pub struct X509Signer(pub Arc<dyn Signer>);

/// The public half of an [`X509Signer`]: the DER `SubjectPublicKeyInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509VerifyingKey(pub Vec<u8>);

/// A signature from an [`X509Signer`], encoded as it goes into the X.509 `BIT STRING`
/// (DER `ECDSA-Sig-Value`, PKCS#1 v1.5 block, or the 64 Ed25519 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Signature(pub Vec<u8>);

impl signature::Keypair for X509Signer {
    type VerifyingKey = X509VerifyingKey;

    fn verifying_key(&self) -> X509VerifyingKey {
        X509VerifyingKey(self.0.public_key_der().to_vec())
    }
}

impl EncodePublicKey for X509VerifyingKey {
    fn to_public_key_der(&self) -> spki::Result<Document> {
        Ok(Document::try_from(self.0.as_slice())?)
    }
}

impl spki::DynSignatureAlgorithmIdentifier for X509Signer {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned::from_der(&self.0.algorithm_der())?)
    }
}

impl signature::Signer<X509Signature> for X509Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<X509Signature, signature::Error> {
        self.0
            .sign(msg)
            .map(X509Signature)
            .map_err(signature::Error::from_source)
    }
}

impl SignatureBitStringEncoding for X509Signature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl AsRef<[u8]> for X509Signature {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soft::SoftToken;
    use crate::{KeySpec, Token};
    use der::EncodePem;
    use spki::SubjectPublicKeyInfoOwned;
    use std::process::Command;
    use std::str::FromStr;
    use std::time::Duration;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::time::Validity;

    fn self_signed_pem(signer: &X509Signer, cn: &str) -> String {
        let spki = SubjectPublicKeyInfoOwned::from_der(signer.0.public_key_der()).unwrap();
        let subject = Name::from_str(&format!("CN={cn},O=ScaiVault Test")).unwrap();
        let builder = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::from(42u32),
            Validity::from_now(Duration::from_secs(3600)).unwrap(),
            subject,
            spki,
            signer,
        )
        .unwrap();
        let cert = builder.build::<X509Signature>().unwrap();
        cert.to_pem(der::pem::LineEnding::LF).unwrap()
    }

    fn openssl_accepts(pem: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pem");
        std::fs::write(&path, pem).unwrap();
        let verify = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&path)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "openssl verify: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(text.status.success());
    }

    #[test]
    fn soft_keys_make_self_signed_roots_openssl_accepts() {
        let token = SoftToken::new();
        for spec in [
            KeySpec::EcP256,
            KeySpec::EcP384,
            KeySpec::Rsa2048,
            KeySpec::Ed25519,
        ] {
            let signer = X509Signer(token.generate(spec, &format!("{spec:?}")).unwrap());
            let pem = self_signed_pem(&signer, &format!("soft {spec:?}"));
            openssl_accepts(&pem);
        }
    }

    #[test]
    fn verifying_key_is_the_spki() {
        let token = SoftToken::new();
        let signer = X509Signer(token.generate(KeySpec::EcP256, "k").unwrap());
        let vk = signature::Keypair::verifying_key(&signer);
        assert_eq!(
            vk.to_public_key_der().unwrap().as_bytes(),
            signer.0.public_key_der()
        );
        let alg =
            spki::DynSignatureAlgorithmIdentifier::signature_algorithm_identifier(&signer).unwrap();
        assert_eq!(alg.oid, const_oid::db::rfc5912::ECDSA_WITH_SHA_256);
        assert!(alg.parameters.is_none());
    }
}
