//! Certificate path validation: is this leaf trustworthy, by this tenant's rules, for this
//! purpose and name, at this time?
//!
//! One pure function, [`validate`], over DER inputs: the HTTP endpoint
//! (`POST /v1/pki/certificates/validate`) and the x509-limbo harness (`tests/tests/limbo.rs`) call
//! exactly this code.
//!
//! - **Path building, signatures, validity, EKU, names, name constraints, path length, CRLs**:
//!   `rustls-webpki` ([`webpki::EndEntityCert::verify_for_usage`]). Its budgets bound the work on
//!   untrusted input (100 signature checks, 200 000 path-building steps, 250 000 name-constraint
//!   comparisons, at most 6 intermediates on a path); we cap the input sizes before it runs
//!   ([`MAX_INTERMEDIATES`], [`MAX_CERT_BYTES`], [`MAX_CRLS`]).
//! - **RFC 5280 rules webpki does not enforce** (`profile`): checked on every candidate path
//!   webpki finds, through its `verify_path` hook, so a path that breaks them is rejected and path
//!   building goes on to the next candidate. The trust anchor's own certificate is checked too
//!   (webpki uses only its name, key and name constraints).
//! - **Revocation** (`revocation`): supplied CRLs through webpki; our own CAs through
//!   [`RevocationSource`] (the daemon's inventory), in the same hook.
//!
//! Every reason found is reported ([`Failure`], stable [`Code`]s). webpki stops at the first
//! failure on a path, so the leaf's own properties (validity, purpose, names, profile) are checked
//! separately as well; "every reason" means every reason these checks find, not a full search.
//! docs/ARCHITECTURE.md ("Certificate validation") lists where webpki departs from RFC 5280.
//!
//! Modules: `types` (the request and the verdict), `engine` (the run), `leaf` (checks of the
//! leaf alone), `path` (the `verify_path` hook and the report), `profile` (RFC 5280 rules),
//! `revocation`, `parsed` (the decoded view of a certificate), `failure` (codes), `input` (PEM
//! and trust-anchor intake).

mod engine;
mod failure;
mod input;
mod leaf;
mod parsed;
mod path;
mod profile;
mod revocation;
#[cfg(test)]
mod tests;
mod types;

pub use engine::validate;
pub use failure::{Code, Failure};
pub use input::{
    check_anchor, check_decodes, pem_blocks, subject_public_key_info, AnchorCandidate,
};
pub use revocation::{RevocationSource, Status};
pub use types::{
    Anchor, AnchorKind, AnchorRef, ChainCert, Outcome, PeerName, Purpose, Request, Revocation,
    MAX_CERT_BYTES, MAX_CRLS, MAX_INTERMEDIATES, MAX_PATH_INTERMEDIATES,
};
pub use x509_cert::ext::pkix::KeyUsages;
