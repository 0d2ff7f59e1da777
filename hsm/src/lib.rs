//! # scaivault-hsm
//!
//! The one place in ScaiVault that touches PKCS#11. CA private keys are generated inside a token
//! (SoftHSM2 in development and CI, a hardware module in production) and never leave it: the
//! private-key objects are `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, and
//! may only `CKA_SIGN`. For speed the PKCS#11 signers sign with a session-object copy of the key
//! made inside the token, which keeps those protections (see the `pkcs11` module).
//!
//! The crate always declares the [`Token`] and [`Signer`] traits. The PKCS#11 backend
//! ([`pkcs11::Pkcs11Token`], feature `pkcs11`, on by default) is the only code that depends on
//! `cryptoki`; the in-memory [`soft::SoftToken`] (feature `test-util`) exists for unit tests of the
//! CA core and is never used by the daemon.
//!
//! Who hashes: [`Signer::sign`] always takes the whole message (the DER of a TBSCertificate,
//! TBSCertList or ResponseData) and returns the signature exactly as it goes into the X.509
//! `BIT STRING`: a DER `ECDSA-Sig-Value` for ECDSA, the PKCS#1 v1.5 block for RSA, the 64 raw bytes
//! for Ed25519. Where the token mechanism needs a digest (`CKM_ECDSA`), the backend hashes on the
//! host.
//!
//! Key-encryption keys: besides signing keys a token holds AES-256 key-encryption keys (KEKs,
//! [`Token::ensure_kek`]) that never leave it. [`Token::kek_encrypt`] / [`Token::kek_decrypt`]
//! seal small secrets with AES-256-GCM on the token; callers use them to wrap a random data key,
//! and seal the bulk data (for example an issued leaf private key) in software with that data key.
//! The sealed form is `IV (12 bytes) || ciphertext || tag (16 bytes)`, with no associated data.
//!
//! Backup: [`backup`] wraps a CA key made for backup under a trusted AES key and unwraps it into
//! another token (the ceremony tooling splits the AES key into shares). Non-goals: any other key
//! export, symmetric keys other than KEKs and backup wrapping keys, PKCS#11 v3 profiles.

#[cfg(feature = "pkcs11")]
pub mod backup;
mod encoding;
mod error;
mod key;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
#[cfg(feature = "pkcs11")]
pub mod provision;
#[cfg(any(test, feature = "test-util"))]
pub mod soft;
mod x509;

pub use error::{Error, Result};
pub use key::{KeyAttributes, KeySpec, KeyType};
pub use x509::{X509Signature, X509Signer, X509VerifyingKey};

use std::fmt::Debug;
use std::sync::Arc;

/// A private key that signs, wherever it lives.
///
/// Implementations are cheap to clone behind an `Arc` and safe to share between threads.
pub trait Signer: Debug + Send + Sync {
    /// What kind of key this is.
    fn spec(&self) -> KeySpec;

    /// The public key as a DER `SubjectPublicKeyInfo`.
    fn public_key_der(&self) -> &[u8];

    /// The signature `AlgorithmIdentifier` this key produces, as DER (for example
    /// `ecdsa-with-SHA256` for P-256, `sha256WithRSAEncryption` for RSA, `id-Ed25519`).
    fn algorithm_der(&self) -> Vec<u8>;

    /// Signs `message` (the whole to-be-signed DER; the backend hashes where the mechanism needs
    /// it) and returns the signature encoded as it goes into an X.509 `BIT STRING`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the token cannot be reached, [`Error::Pkcs11`] for other token
    /// failures.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
}

/// A key store able to generate and find signing keys: a PKCS#11 token or a software stand-in.
pub trait Token: Debug + Send + Sync {
    /// Generates a new key pair of `spec` on the token, labelled `label` (CKA_LABEL and CKA_ID).
    ///
    /// # Errors
    /// [`Error::DuplicateLabel`] when a key with that label exists; token failures otherwise.
    fn generate(&self, spec: KeySpec, label: &str) -> Result<Arc<dyn Signer>>;

    /// Finds the private key labelled `label` and its public half.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] when no private key carries that label.
    fn find(&self, label: &str) -> Result<Arc<dyn Signer>>;

    /// Reads the security attributes of the private key labelled `label` (for checks and tests).
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] when no private key carries that label.
    fn attributes(&self, label: &str) -> Result<KeyAttributes>;

    /// Whether the key pair labelled `label` (its private and its public key object) is on the
    /// token: a lookup only, nothing is read from the keys.
    ///
    /// # Errors
    /// Token failures (an unreachable token is not an answer).
    fn key_present(&self, label: &str) -> Result<bool> {
        match self.find(label) {
            Ok(_) => Ok(true),
            Err(Error::KeyNotFound { .. } | Error::PublicKeyMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops what this process keeps of the key labelled `label` to sign faster (its session
    /// copy), so that a key gone from the token signs no more. Best effort.
    fn forget_copies(&self, _label: &str) {}

    /// Destroys the key pair labelled `label`, if any (used to undo a half-finished creation).
    ///
    /// # Errors
    /// Token failures.
    fn destroy(&self, label: &str) -> Result<()>;

    /// Checks that the token answers and the login is alive (cheap; for health checks).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it does not.
    fn ping(&self) -> Result<()>;

    /// Creates, unless it exists, the AES-256 key-encryption key labelled `label`: a private,
    /// sensitive, never extractable token object that may only encrypt and decrypt (no wrap,
    /// unwrap, sign, verify or derive). Idempotent; concurrent callers of one process create one
    /// key.
    ///
    /// # Errors
    /// [`Error::DuplicateLabel`] when a signing key (or other object) carries `label`;
    /// [`Error::UnsupportedKey`] when a secret key labelled `label` exists but is not a sensitive,
    /// non-extractable AES-256 key; token failures otherwise.
    fn ensure_kek(&self, label: &str) -> Result<()>;

    /// Encrypts `plaintext` (typically a 32-byte data key) under the KEK labelled `label` with
    /// AES-256-GCM: a fresh random 12-byte IV from the host CSPRNG, a 128-bit tag, no associated
    /// data. Returns `IV || ciphertext || tag` (`plaintext.len() + 28` bytes).
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] when no KEK carries `label`; [`Error::Unavailable`] when the token
    /// (or the host CSPRNG) cannot be reached; token failures otherwise.
    fn kek_encrypt(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>>;

    /// Decrypts and authenticates what [`Token::kek_encrypt`] returned. The plaintext is a
    /// secret: callers keep it in zeroizing memory.
    ///
    /// # Errors
    /// [`Error::Decrypt`] when the ciphertext is too short, was tampered with or was made under
    /// another key; [`Error::KeyNotFound`] when no KEK carries `label`; token failures otherwise.
    fn kek_decrypt(&self, label: &str, ciphertext: &[u8]) -> Result<Vec<u8>>;

    /// Reads the security attributes of the KEK labelled `label` (`sign` is always false).
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] when no KEK carries `label`.
    fn kek_attributes(&self, label: &str) -> Result<KeyAttributes>;
}

/// Length of the GCM IV at the start of a KEK ciphertext.
pub const KEK_IV_LEN: usize = 12;
/// Length of the GCM tag at the end of a KEK ciphertext.
pub const KEK_TAG_LEN: usize = 16;
