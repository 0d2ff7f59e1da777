//! Trust: the tenant's trust anchors and certificate validation against them and the tenant's own
//! CAs (`/v1/pki/trust-anchors`, `POST /v1/pki/certificates/validate`). The validator itself is
//! `scaivault_core::validate`; this module loads the trust store and the revocation data.

pub mod anchors;
pub mod validation;
