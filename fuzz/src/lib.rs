//! Shared fixtures and contract checks of ScaiVault's fuzz targets (docs/FUZZING.md).
//!
//! The contract every target checks, beyond "no panic, no hang, no OOM": input from outside that
//! is refused is refused with a core [`Error`] whose [`ErrorKind`] is `Invalid`, which the daemon
//! maps to `400` (`daemon/src/error.rs`). Any other kind on a parse path (`Internal` is a `500`)
//! is a finding, reported by a panic so that libFuzzer records the input.

use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use scaivault_core::profile::IssuerInfo;
use scaivault_core::{Error, ErrorKind};
use scaivault_hsm::{KeySpec, Signer};
use std::sync::OnceLock;
use time::macros::datetime;
use time::OffsetDateTime;
use x509_cert::Certificate;

/// The fuzz CA (self-signed, P-256), the issuer of the seed certificates and OCSP requests.
pub const CA_PEM: &str = include_str!("../fixtures/ca.pem");
/// An intermediate CA under [`CA_PEM`].
pub const INT_PEM: &str = include_str!("../fixtures/int.pem");
/// The fuzz CA's key: a throwaway test key used by nothing else (see fuzz/seed.sh).
const CA_KEY_PEM: &str = include_str!("../fixtures/ca.key");
/// `ecdsa-with-SHA256` (RFC 5758 §3.2), no parameters.
const ECDSA_WITH_SHA256: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// The fixed time validations and OCSP responses use (inside every fixture's validity), so that
/// a crashing input reproduces on any day.
pub const AT: OffsetDateTime = datetime!(2027-06-01 00:00 UTC);

/// The fuzz CA's key as a [`Signer`], in software (deterministic ECDSA, RFC 6979).
#[derive(Debug)]
pub struct FixtureKey {
    key: SigningKey,
    spki: Vec<u8>,
}

impl Signer for FixtureKey {
    fn spec(&self) -> KeySpec {
        KeySpec::EcP256
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn algorithm_der(&self) -> Vec<u8> {
        ECDSA_WITH_SHA256.to_vec()
    }

    fn sign(&self, message: &[u8]) -> scaivault_hsm::Result<Vec<u8>> {
        let sig: DerSignature = p256::ecdsa::signature::Signer::sign(&self.key, message);
        Ok(sig.to_bytes().to_vec())
    }
}

/// Everything the targets need about the fixture CAs.
#[derive(Debug)]
pub struct Fixture {
    /// The root's key.
    pub key: FixtureKey,
    /// The root, parsed.
    pub ca: Certificate,
    /// The root, DER.
    pub ca_der: Vec<u8>,
    /// The intermediate, DER.
    pub int_der: Vec<u8>,
    /// The root as an issuer.
    pub issuer: IssuerInfo,
}

/// The fixture, built once per process.
///
/// # Panics
/// When the committed fixtures do not load (a broken checkout, not a finding).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = SigningKey::from_pkcs8_pem(CA_KEY_PEM).expect("fixtures/ca.key");
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .expect("public key")
            .into_vec();
        let key = FixtureKey { key, spki };
        let ca = scaivault_core::pem::parse_certificate(CA_PEM).expect("fixtures/ca.pem");
        let ca_der = scaivault_core::pem::to_der(&ca).expect("ca der");
        let int = scaivault_core::pem::parse_certificate(INT_PEM).expect("fixtures/int.pem");
        let int_der = scaivault_core::pem::to_der(&int).expect("int der");
        let issuer =
            scaivault_core::sign::issuer_info(&ca, key.algorithm_der()).expect("issuer info");
        assert_eq!(
            issuer.spki_der, key.spki,
            "fixtures/ca.key does not belong to fixtures/ca.pem"
        );
        Fixture {
            key,
            ca,
            ca_der,
            int_der,
            issuer,
        }
    })
}

/// Panics unless `e` is an error the daemon answers with a `4xx`.
pub fn assert_client_error(ctx: &str, e: &Error) {
    let kind = e.kind();
    assert!(
        kind == ErrorKind::Invalid,
        "{ctx}: refused with {kind:?} (code {}), which is not a 4xx: {e}",
        e.code()
    );
    assert!(
        !e.code().is_empty()
            && e.code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'),
        "{ctx}: problem code {:?} is not snake_case",
        e.code()
    );
}

/// [`assert_client_error`] on the error of `r`, if any; the value otherwise.
pub fn client<T>(ctx: &str, r: scaivault_core::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert_client_error(ctx, &e);
            None
        }
    }
}
