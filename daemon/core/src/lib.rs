//! # scaivault-core
//!
//! The certificate-authority core of ScaiVault: everything that decides what goes into a
//! certificate, and nothing that talks HTTP, SQL or PKCS#11. Keys are reached only through the
//! [`scaivault_hsm::Signer`] trait, so the whole module is testable with the in-memory
//! `SoftToken` and a fixed clock.
//!
//! - [`serial`]: serial numbers (RFC 5280 §4.1.2.2: positive, at most 20 octets; CA/B BR §7.1: at
//!   least 64 bits from a CSPRNG).
//! - [`name`]: distinguished names from API fields.
//! - [`duration`]: Go-style durations (`168h`, `30m`, `90d`).
//! - [`profile`]: the CA certificate profile (RFC 5280 §4.2) and its lint before signing.
//! - [`leaf`]: the end-entity profile and its extra lint.
//! - [`role`]: what names a role allows.
//! - [`sign`]: assembling and checking signed objects (certificates, CSRs).
//! - [`verify`]: signature verification in software, for checks after the token has signed and for
//!   certificates that arrive from outside.
//! - [`pem`]: PEM helpers.
//! - [`validate`]: certificate path validation (rustls-webpki plus the RFC 5280 rules it leaves
//!   out), for the validate endpoint and the x509-limbo harness.
//!
//! Non-goals here: storage, authorization, audit (the daemon owns those).

pub mod constraints;
pub mod crl;
pub mod csr;
pub mod duration;
mod error;
pub mod ids;
pub mod leaf;
pub mod name;
pub mod ocsp;
pub mod pem;
pub mod profile;
pub mod role;
pub mod serial;
pub mod sign;
#[cfg(test)]
mod testca;
pub mod time_util;
pub mod validate;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
