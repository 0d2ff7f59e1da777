//! An in-memory software token for unit tests of the CA core (feature `test-util`).
//!
//! [`SoftToken`] keeps its keys in process memory (RustCrypto `p256`, `p384`, `rsa`,
//! `ed25519-dalek`) and produces exactly the same public-key, algorithm-identifier and signature
//! encodings as the PKCS#11 backend, so code tested against it works unchanged against a token.
//! It reports the attributes a compliant token reports for a CA key (sensitive, never extractable,
//! value unreadable). Its key-encryption keys are random in-memory AES-256 keys used with the
//! `aes-gcm` crate, in the same `IV || ciphertext || tag` layout as the token's. It offers no
//! protection at all and is never used by the daemon.

use crate::encoding;
use crate::{Error, KeyAttributes, KeySpec, Result, Signer, Token};
use crate::{KEK_IV_LEN, KEK_TAG_LEN};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use signature::{SignatureEncoding, Signer as _};
use spki::EncodePublicKey;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use zeroize::Zeroizing;

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

/// An in-memory [`Token`] for tests: keys live in maps keyed by label.
#[derive(Default)]
pub struct SoftToken {
    state: Mutex<State>,
}

/// The keys of a [`SoftToken`]; one label names a signing key or a KEK, not both.
#[derive(Default)]
struct State {
    keys: HashMap<String, Arc<SoftSigner>>,
    keks: HashMap<String, Zeroizing<[u8; 32]>>,
}

impl State {
    fn contains_key(&self, label: &str) -> bool {
        self.keys.contains_key(label) || self.keks.contains_key(label)
    }

    fn get(&self, label: &str) -> Option<&Arc<SoftSigner>> {
        self.keys.get(label)
    }

    fn remove(&mut self, label: &str) {
        self.keys.remove(label);
    }

    fn insert(&mut self, label: String, signer: Arc<SoftSigner>) {
        self.keys.insert(label, signer);
    }

    /// The AES-256-GCM cipher of the KEK labelled `label`.
    fn kek(&self, label: &str) -> Result<Aes256Gcm> {
        let key = self.keks.get(label).ok_or_else(|| Error::KeyNotFound {
            label: label.to_owned(),
        })?;
        Aes256Gcm::new_from_slice(key.as_slice())
            .map_err(|e| Error::Encoding(format!("KEK {label:?}: {e}")))
    }
}

impl fmt::Debug for SoftToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        let labels: Vec<&String> = state.keys.keys().collect();
        let keks: Vec<&String> = state.keks.keys().collect();
        f.debug_struct("SoftToken")
            .field("labels", &labels)
            .field("keks", &keks)
            .finish()
    }
}

impl SoftToken {
    /// An empty token.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key maps; a poisoned lock is taken over (the maps themselves stay consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
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
        if self.lock().get(label).is_none() {
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
            wrap_with_trusted: false,
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

    fn ensure_kek(&self, label: &str) -> Result<()> {
        let mut state = self.lock();
        if state.keks.contains_key(label) {
            return Ok(());
        }
        if state.keys.contains_key(label) {
            return Err(Error::DuplicateLabel(label.to_owned()));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(key.as_mut_slice())
            .map_err(|e| Error::Unavailable(format!("host random generator: {e}")))?;
        state.keks.insert(label.to_owned(), key);
        Ok(())
    }

    fn kek_encrypt(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let cipher = self.lock().kek(label)?;
        let mut iv = [0u8; KEK_IV_LEN];
        OsRng
            .try_fill_bytes(&mut iv)
            .map_err(|e| Error::Unavailable(format!("host random generator: {e}")))?;
        let sealed = cipher
            .encrypt(&Nonce::from(iv), plaintext)
            .map_err(|e| Error::Encoding(format!("AES-GCM: {e}")))?;
        let mut out = Vec::with_capacity(KEK_IV_LEN + sealed.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn kek_decrypt(&self, label: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let cipher = self.lock().kek(label)?;
        if ciphertext.len() < KEK_IV_LEN + KEK_TAG_LEN {
            return Err(Error::Decrypt(format!(
                "{} bytes are shorter than IV and tag",
                ciphertext.len()
            )));
        }
        let (iv, sealed) = ciphertext.split_at(KEK_IV_LEN);
        let mut nonce = [0u8; KEK_IV_LEN];
        nonce.copy_from_slice(iv);
        cipher.decrypt(&Nonce::from(nonce), sealed).map_err(|_| {
            Error::Decrypt(format!(
                "the ciphertext does not authenticate under KEK {label:?}"
            ))
        })
    }

    fn kek_attributes(&self, label: &str) -> Result<KeyAttributes> {
        if !self.lock().keks.contains_key(label) {
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
            sign: false,
            wrap_with_trusted: false,
            value_read_refused: true,
        })
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

    #[test]
    fn kek_seals_and_refuses_tampering() {
        let token = SoftToken::new();
        assert!(matches!(
            token.kek_encrypt("kek", b"x"),
            Err(Error::KeyNotFound { .. })
        ));
        token.ensure_kek("kek").unwrap();
        token.ensure_kek("kek").unwrap();
        let data_key = [9u8; 32];
        let a = token.kek_encrypt("kek", &data_key).unwrap();
        let b = token.kek_encrypt("kek", &data_key).unwrap();
        assert_eq!(a.len(), KEK_IV_LEN + 32 + KEK_TAG_LEN);
        assert_ne!(a[..KEK_IV_LEN], b[..KEK_IV_LEN]);
        assert_eq!(token.kek_decrypt("kek", &a).unwrap(), data_key);
        assert_eq!(token.kek_decrypt("kek", &b).unwrap(), data_key);
        for i in [0, KEK_IV_LEN, a.len() - 1] {
            let mut bad = a.clone();
            bad[i] ^= 0x01;
            let err = token.kek_decrypt("kek", &bad).unwrap_err();
            assert!(matches!(err, Error::Decrypt(_)) && !err.is_unavailable());
        }
        assert!(matches!(
            token.kek_decrypt("kek", &a[..20]),
            Err(Error::Decrypt(_))
        ));
        token.ensure_kek("other").unwrap();
        assert!(matches!(
            token.kek_decrypt("other", &a),
            Err(Error::Decrypt(_))
        ));
        let attrs = token.kek_attributes("kek").unwrap();
        assert!(attrs.sensitive && !attrs.extractable && !attrs.sign);
        // One label names a signing key or a KEK.
        token.generate(KeySpec::EcP256, "ca").unwrap();
        assert!(matches!(
            token.ensure_kek("ca"),
            Err(Error::DuplicateLabel(_))
        ));
        assert!(matches!(
            token.generate(KeySpec::EcP256, "kek"),
            Err(Error::DuplicateLabel(_))
        ));
    }
}
