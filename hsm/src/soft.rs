//! An in-memory software token for unit tests of the CA core (feature `test-util`).
//!
//! [`SoftToken`] keeps its keys in process memory (RustCrypto `p256`, `p384`, `rsa`,
//! `ed25519-dalek`) and produces exactly the same public-key, algorithm-identifier and signature
//! encodings as the PKCS#11 backend, so code tested against it works unchanged against a token.
//! It reports the attributes a compliant token reports for a CA key (sensitive, never extractable,
//! value unreadable). It offers no protection at all and is never used by the daemon.

use crate::encoding;
use crate::{Error, KeyAttributes, KeySpec, Result, Signer, Token};
use rand_core::OsRng;
use sha2::Sha256;
use signature::{SignatureEncoding, Signer as _};
use spki::EncodePublicKey;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// The software key material of one key.
enum SoftKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// A software signing key handed out by [`SoftToken`].
pub struct SoftSigner {
    spec: KeySpec,
    label: String,
    key: SoftKey,
    spki: Vec<u8>,
}

impl fmt::Debug for SoftSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftSigner")
            .field("spec", &self.spec)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl SoftSigner {
    fn generate(spec: KeySpec, label: &str) -> Result<Self> {
        let enc = |e: spki::Error| Error::Encoding(format!("public key of {label:?}: {e}"));
        let (key, spki) = match spec {
            KeySpec::EcP256 => {
                let key = p256::ecdsa::SigningKey::random(&mut OsRng);
                let spki = key.verifying_key().to_public_key_der().map_err(enc)?;
                (SoftKey::P256(key), spki)
            }
            KeySpec::EcP384 => {
                let key = p384::ecdsa::SigningKey::random(&mut OsRng);
                let spki = key.verifying_key().to_public_key_der().map_err(enc)?;
                (SoftKey::P384(key), spki)
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let bits = usize::try_from(spec.bits())
                    .map_err(|e| Error::UnsupportedKey(format!("rsa {}: {e}", spec.bits())))?;
                let private = rsa::RsaPrivateKey::new(&mut OsRng, bits)
                    .map_err(|e| Error::UnsupportedKey(format!("rsa {bits}: {e}")))?;
                let spki = private.to_public_key().to_public_key_der().map_err(enc)?;
                (
                    SoftKey::Rsa(Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(private))),
                    spki,
                )
            }
            KeySpec::Ed25519 => {
                let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
                let spki = key.verifying_key().to_public_key_der().map_err(enc)?;
                (SoftKey::Ed25519(Box::new(key)), spki)
            }
        };
        Ok(SoftSigner {
            spec,
            label: label.to_owned(),
            key,
            spki: spki.into_vec(),
        })
    }
}

impl Signer for SoftSigner {
    fn spec(&self) -> KeySpec {
        self.spec
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn algorithm_der(&self) -> Vec<u8> {
        encoding::signature_algorithm(self.spec).to_vec()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let failed = |e: signature::Error| Error::Pkcs11 {
            function: "soft sign".to_owned(),
            rv: e.to_string(),
        };
        let sig = match &self.key {
            // The RustCrypto ECDSA signers hash with the curve's digest (SHA-256 / SHA-384),
            // exactly as the PKCS#11 backend does on the host before CKM_ECDSA.
            SoftKey::P256(key) => {
                let sig: p256::ecdsa::Signature = key.try_sign(message).map_err(failed)?;
                sig.to_der().as_bytes().to_vec()
            }
            SoftKey::P384(key) => {
                let sig: p384::ecdsa::Signature = key.try_sign(message).map_err(failed)?;
                sig.to_der().as_bytes().to_vec()
            }
            SoftKey::Rsa(key) => key.try_sign(message).map_err(failed)?.to_vec(),
            SoftKey::Ed25519(key) => key.try_sign(message).map_err(failed)?.to_bytes().to_vec(),
        };
        Ok(sig)
    }
}

/// An in-memory [`Token`] for tests: keys live in a map keyed by label.
#[derive(Default)]
pub struct SoftToken {
    keys: Mutex<HashMap<String, Arc<SoftSigner>>>,
}

impl fmt::Debug for SoftToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("SoftToken")
            .field("labels", &labels)
            .finish()
    }
}

impl SoftToken {
    /// An empty token.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key map; a poisoned lock is taken over (the map itself stays consistent).
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<SoftSigner>>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Token for SoftToken {
    fn generate(&self, spec: KeySpec, label: &str) -> Result<Arc<dyn Signer>> {
        if self.lock().contains_key(label) {
            return Err(Error::DuplicateLabel(label.to_owned()));
        }
        // Generated outside the lock: RSA key generation takes a while.
        let signer = Arc::new(SoftSigner::generate(spec, label)?);
        let mut keys = self.lock();
        if keys.contains_key(label) {
            return Err(Error::DuplicateLabel(label.to_owned()));
        }
        keys.insert(label.to_owned(), Arc::clone(&signer));
        Ok(signer)
    }

    fn find(&self, label: &str) -> Result<Arc<dyn Signer>> {
        match self.lock().get(label) {
            Some(signer) => Ok(Arc::clone(signer) as Arc<dyn Signer>),
            None => Err(Error::KeyNotFound {
                label: label.to_owned(),
            }),
        }
    }

    fn attributes(&self, label: &str) -> Result<KeyAttributes> {
        if !self.lock().contains_key(label) {
            return Err(Error::KeyNotFound {
                label: label.to_owned(),
            });
        }
        Ok(KeyAttributes {
            token: true,
            private: true,
            sensitive: true,
            always_sensitive: true,
            extractable: false,
            never_extractable: true,
            sign: true,
            value_read_refused: true,
        })
    }

    fn destroy(&self, label: &str) -> Result<()> {
        self.lock().remove(label);
        Ok(())
    }

    fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier;
    use spki::DecodePublicKey;

    const ALL: [KeySpec; 4] = [
        KeySpec::EcP256,
        KeySpec::EcP384,
        KeySpec::Rsa2048,
        KeySpec::Ed25519,
    ];

    pub(crate) fn verify(spec: KeySpec, spki: &[u8], msg: &[u8], sig: &[u8]) {
        match spec {
            KeySpec::EcP256 => {
                let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
                let sig = p256::ecdsa::Signature::from_der(sig).unwrap();
                vk.verify(msg, &sig).unwrap();
            }
            KeySpec::EcP384 => {
                let vk = p384::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
                let sig = p384::ecdsa::Signature::from_der(sig).unwrap();
                vk.verify(msg, &sig).unwrap();
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let pk = rsa::RsaPublicKey::from_public_key_der(spki).unwrap();
                let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(pk);
                let sig = rsa::pkcs1v15::Signature::try_from(sig).unwrap();
                vk.verify(msg, &sig).unwrap();
            }
            KeySpec::Ed25519 => {
                let vk = ed25519_dalek::VerifyingKey::from_public_key_der(spki).unwrap();
                let sig = ed25519_dalek::Signature::from_slice(sig).unwrap();
                vk.verify(msg, &sig).unwrap();
            }
        }
    }

    #[test]
    fn every_spec_signs_verifiably() {
        let token = SoftToken::new();
        for spec in ALL {
            let label = format!("k-{spec:?}");
            let signer = token.generate(spec, &label).unwrap();
            assert_eq!(signer.spec(), spec);
            let msg = b"to be signed";
            let sig = signer.sign(msg).unwrap();
            verify(spec, signer.public_key_der(), msg, &sig);
            let found = token.find(&label).unwrap();
            assert_eq!(found.public_key_der(), signer.public_key_der());
            assert_eq!(
                found.algorithm_der(),
                encoding::signature_algorithm(spec).to_vec()
            );
        }
    }

    #[test]
    fn labels_are_unique_and_destroy_forgets() {
        let token = SoftToken::new();
        token.generate(KeySpec::EcP256, "a").unwrap();
        assert!(matches!(
            token.generate(KeySpec::EcP256, "a"),
            Err(Error::DuplicateLabel(_))
        ));
        let attrs = token.attributes("a").unwrap();
        assert!(attrs.sensitive && attrs.never_extractable && !attrs.extractable);
        assert!(attrs.value_read_refused);
        token.destroy("a").unwrap();
        assert!(matches!(token.find("a"), Err(Error::KeyNotFound { .. })));
        assert!(matches!(
            token.attributes("a"),
            Err(Error::KeyNotFound { .. })
        ));
        token.ping().unwrap();
    }
}
