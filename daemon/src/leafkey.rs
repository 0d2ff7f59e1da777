//! Leaf key pairs made in memory for `POST /v1/pki/issue/{role}`: EC P-256/P-384, RSA
//! 2048/3072/4096 and Ed25519 from the RustCrypto crates and the OS CSPRNG. Private keys live only
//! in zeroizing memory and are never written to disk or logged. RSA generation is slow (tens to
//! hundreds of milliseconds), so a background thread keeps a small pool of RSA keys per size: a
//! burst of RSA issuances takes pre-made keys instead of waiting for one generation each.

use crate::error::ApiError;
use rand::rngs::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use scaivault_hsm::KeySpec;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

/// A fresh key pair: the private key as PEM, and the public key as DER SubjectPublicKeyInfo.
pub struct LeafKey {
    /// The private key, PEM (SEC1 for EC, PKCS#1 for RSA, PKCS#8 for Ed25519, or PKCS#8 on request).
    pub private_pem: Zeroizing<String>,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

fn enc(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("key encoding: {e}"))
}

/// SEC1 `EC PRIVATE KEY` PEM (RFC 5915) *with* the named-curve parameters and the public key,
/// as OpenSSL and most TLS stacks expect (the RustCrypto encoder leaves the curve out).
fn sec1_pem(
    secret: &[u8],
    public_point: &[u8],
    curve: der::oid::ObjectIdentifier,
) -> Result<Zeroizing<String>, ApiError> {
    use der::Encode;
    let key = sec1::EcPrivateKey {
        private_key: secret,
        parameters: Some(sec1::EcParameters::NamedCurve(curve)),
        public_key: Some(public_point),
    };
    let der = Zeroizing::new(key.to_der().map_err(enc)?);
    der::pem::encode_string("EC PRIVATE KEY", der::pem::LineEnding::LF, &der)
        .map(Zeroizing::new)
        .map_err(enc)
}

/// An EC key pair from `ring` (its P-256 key generation is several times faster than a software
/// scalar multiplication in RustCrypto, and the public point comes with it). The PKCS#8 document
/// is decoded, never re-derived.
fn ec_key(
    alg: &'static ring::signature::EcdsaSigningAlgorithm,
    curve: der::oid::ObjectIdentifier,
    pkcs8: bool,
) -> Result<LeafKey, ApiError> {
    use der::{Decode, Encode};
    let rng = ring::rand::SystemRandom::new();
    let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng)
        .map_err(|_| ApiError::internal("EC key generation failed"))?;
    let info = rsa::pkcs8::PrivateKeyInfo::from_der(doc.as_ref()).map_err(enc)?;
    let inner = sec1::EcPrivateKey::from_der(info.private_key).map_err(enc)?;
    let point = inner
        .public_key
        .ok_or_else(|| ApiError::internal("generated EC key without its public point"))?;
    let spki = spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: info.algorithm.oid,
            parameters: Some(der::asn1::Any::from(&curve)),
        },
        subject_public_key: der::asn1::BitString::from_bytes(point).map_err(enc)?,
    };
    let spki_der = spki.to_der().map_err(enc)?;
    let private_pem = if pkcs8 {
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, doc.as_ref())
            .map(Zeroizing::new)
            .map_err(enc)?
    } else {
        sec1_pem(inner.private_key, point, curve)?
    };
    Ok(LeafKey {
        private_pem,
        spki_der,
    })
}

/// RSA sizes the pool keeps ready (3072 and 4096 are rare and slow to make: generated on demand).
pub const POOLED_SIZES: &[usize] = &[2048];

/// Pre-generated RSA keys, for the sizes in use: a size joins the pool when a role asks for it or
/// a key of that size is first taken, so a daemon that issues no RSA spends no CPU on it.
#[derive(Default)]
pub struct RsaPool {
    keys: Mutex<HashMap<usize, Vec<rsa::RsaPrivateKey>>>,
    wake: Condvar,
    target: usize,
}

impl RsaPool {
    /// Starts the filler thread (it runs for the process's life) and returns the pool.
    pub fn start(target: usize) -> Arc<RsaPool> {
        let pool = Arc::new(RsaPool {
            target,
            ..Default::default()
        });
        let filler = pool.clone();
        let spawned = std::thread::Builder::new()
            .name("rsa-pool".into())
            .spawn(move || filler.fill_forever());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "RSA key pool thread did not start; RSA keys are made on demand");
        }
        pool
    }

    fn fill_forever(&self) {
        loop {
            let wanted = match self.keys.lock() {
                Ok(k) => k
                    .iter()
                    .find(|(_, v)| v.len() < self.target)
                    .map(|(s, _)| *s),
                Err(_) => return,
            };
            match wanted {
                Some(bits) => {
                    if let Ok(key) = rsa::RsaPrivateKey::new(&mut OsRng, bits) {
                        if let Ok(mut k) = self.keys.lock() {
                            k.entry(bits).or_default().push(key);
                        }
                    }
                }
                None => {
                    let Ok(guard) = self.keys.lock() else { return };
                    let _ = self.wake.wait_timeout(guard, Duration::from_secs(5));
                }
            }
        }
    }

    /// Starts keeping keys of `bits` ready.
    pub fn want(&self, bits: usize) {
        if !POOLED_SIZES.contains(&bits) || self.target == 0 {
            return;
        }
        if let Ok(mut k) = self.keys.lock() {
            k.entry(bits).or_default();
        }
        self.wake.notify_one();
    }

    /// Starts keeping keys ready for leaves of `key` when it is a pooled RSA size (a role's key
    /// spec, checked or not: anything else is ignored).
    pub fn want_for<E>(&self, key: Result<KeySpec, E>) {
        if let Ok(KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096) = key {
            let bits = key.map_or(0, |k| k.bits());
            self.want(usize::try_from(bits).unwrap_or(0));
        }
    }

    /// Keys of `bits` ready now, and how many the pool keeps ready for that size (0 while no role
    /// or request has asked for the size).
    pub fn level(&self, bits: usize) -> (usize, usize) {
        match self.keys.lock() {
            Ok(k) => k.get(&bits).map_or((0, 0), |v| (v.len(), self.target)),
            Err(_) => (0, 0),
        }
    }

    /// A key of `bits`: from the pool when one is ready, else generated now.
    fn take(&self, bits: usize) -> Result<rsa::RsaPrivateKey, ApiError> {
        self.want(bits);
        let ready = match self.keys.lock() {
            Ok(mut k) => k.get_mut(&bits).and_then(Vec::pop),
            Err(_) => None,
        };
        self.wake.notify_one();
        match ready {
            Some(k) => Ok(k),
            None => rsa::RsaPrivateKey::new(&mut OsRng, bits).map_err(enc),
        }
    }
}

/// Generates a key pair of `spec`; `pkcs8` asks for PKCS#8 PEM whatever the type.
///
/// # Errors
/// Only on an encoder failure (internal).
pub fn generate(spec: KeySpec, pkcs8: bool, pool: &RsaPool) -> Result<LeafKey, ApiError> {
    match spec {
        KeySpec::EcP256 => ec_key(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der::oid::db::rfc5912::SECP_256_R_1,
            pkcs8,
        ),
        KeySpec::EcP384 => ec_key(
            &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            der::oid::db::rfc5912::SECP_384_R_1,
            pkcs8,
        ),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let bits = usize::try_from(spec.bits()).unwrap_or(2048);
            let sk = pool.take(bits)?;
            let private_pem = if pkcs8 {
                sk.to_pkcs8_pem(LineEnding::LF).map_err(enc)?
            } else {
                sk.to_pkcs1_pem(LineEnding::LF).map_err(enc)?
            };
            let spki_der = sk
                .to_public_key()
                .to_public_key_der()
                .map_err(enc)?
                .into_vec();
            Ok(LeafKey {
                private_pem,
                spki_der,
            })
        }
        KeySpec::Ed25519 => {
            let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
            // PKCS#8 v1 (no embedded public key): what OpenSSL 3.0 reads.
            let pair = ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: sk.to_bytes(),
                public_key: None,
            };
            let private_pem = pair.to_pkcs8_pem(LineEnding::LF).map_err(enc)?;
            let spki_der = sk
                .verifying_key()
                .to_public_key_der()
                .map_err(enc)?
                .into_vec();
            Ok(LeafKey {
                private_pem,
                spki_der,
            })
        }
    }
}
