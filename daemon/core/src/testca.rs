//! Test support: a self-signed CA on a software token, for the unit tests of the CRL and OCSP
//! modules.
#![allow(clippy::unwrap_used)]

use crate::name::DnFields;
use crate::profile::{ca_tbs, CaTemplate, Constraints, IssuerInfo, LintExpect};
use crate::serial::Serial;
use crate::time_util;
use scaivault_hsm::soft::SoftToken;
use scaivault_hsm::{KeySpec, Signer, Token};
use std::sync::Arc;
use x509_cert::Certificate;

/// A CA for tests: its key, certificate (parsed and DER) and issuer data.
pub(crate) struct TestCa {
    pub key: Arc<dyn Signer>,
    pub cert: Certificate,
    pub der: Vec<u8>,
    pub info: IssuerInfo,
}

/// A self-signed CA named `cn`, valid 30 days, with a `spec` key labelled `label` on `token`.
pub(crate) fn self_signed(token: &SoftToken, spec: KeySpec, label: &str, cn: &str) -> TestCa {
    self_signed_constrained(token, spec, label, cn, Constraints::default())
}

/// [`self_signed`] with name constraints.
pub(crate) fn self_signed_constrained(
    token: &SoftToken,
    spec: KeySpec,
    label: &str,
    cn: &str,
    constraints: Constraints,
) -> TestCa {
    let key = token.generate(spec, label).unwrap();
    let alg = key.algorithm_der();
    let now = time_util::now();
    let t = CaTemplate {
        subject: DnFields {
            common_name: cn.into(),
            ..Default::default()
        }
        .to_name()
        .unwrap(),
        spki_der: key.public_key_der().to_vec(),
        serial: Serial::fresh(),
        not_before: now,
        not_after: now + time::Duration::days(30),
        max_path_length: None,
        constraints,
        issuer_urls: None,
    };
    let der = crate::sign::sign_certificate(
        ca_tbs(&t, None, &alg).unwrap(),
        LintExpect {
            issuer: None,
            ca: true,
            algorithm_der: &alg,
        },
        key.as_ref(),
    )
    .unwrap();
    let cert = crate::pem::from_der(&der).unwrap();
    let info = crate::sign::issuer_info(&cert, alg).unwrap();
    TestCa {
        key,
        cert,
        der,
        info,
    }
}
