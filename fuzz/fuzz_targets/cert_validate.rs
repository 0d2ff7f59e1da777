//! Certificate input to validation: `POST /v1/pki/certificates/validate` (PEM blocks of
//! `certificate_pem`, `chain_pem` and `crls_pem` through `validate::pem_blocks`, then
//! `validate::validate` with a trust store and the tenant's revocation data), trust-anchor intake
//! (`validate::check_anchor`) and the PEM/DER helpers CA install and import use (`pem::*`,
//! `verify::verify_certificate`).
//!
//! Raw input is a DER leaf, validated against the fuzz CA with its intermediate on offer. Input
//! that holds `-----BEGIN` is taken as the endpoint's PEM text: the first certificate block is the
//! leaf, the others the chain, the CRL blocks the CRLs.
//!
//! `validate` never fails (every problem is a reason in the outcome); its outcome must be
//! consistent. The helpers must refuse with 4xx kinds only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scaivault_core::validate::{
    self, Anchor, AnchorKind, PeerName, Purpose, Request, Revocation, RevocationSource, Status,
};
use scaivault_fuzz::{client, fixture, AT};

/// The fuzz CA's inventory: serial 0x2003 is revoked, 0x2001..=0x2007 good, others unknown.
struct Inventory;

impl RevocationSource for Inventory {
    fn status(&self, _issuer_spki: &[u8], serial: &[u8]) -> Option<Status> {
        Some(match serial {
            [0x20, 0x03] => Status::Revoked {
                reason: "key_compromise".into(),
                revoked_at: Some("2026-11-28T00:00:00Z".into()),
            },
            [0x20, 0x01..=0x07] => Status::Good,
            _ => Status::Unknown,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let pick = data.len() % 4;
    run(data, &[], None, pick);
    der_helpers(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if text.contains("-----BEGIN") {
            pem_input(text, pick);
        }
    }
});

fn der_helpers(der: &[u8]) {
    if let Some(a) = client("check_anchor", validate::check_anchor(der)) {
        assert_eq!(a.fingerprint_sha256.len(), 64);
    }
    if let Some(cert) = client("pem::from_der", scaivault_core::pem::from_der(der)) {
        parsed_cert("pem::from_der", &cert);
    }
    let _ = validate::subject_public_key_info(der);
}

/// What install and import do with a certificate that parsed: none of it may be a 5xx.
fn parsed_cert(ctx: &str, cert: &x509_cert::Certificate) {
    let der = scaivault_core::pem::to_der(cert);
    let der = der.unwrap_or_else(|e| panic!("{ctx}: a parsed certificate does not re-encode: {e}"));
    client(ctx, scaivault_core::pem::certificate(&der));
    let f = fixture();
    client(
        ctx,
        scaivault_core::verify::verify_certificate(cert, &f.issuer.spki_der),
    );
    client(
        ctx,
        scaivault_core::serial::Serial::from_bytes(cert.tbs_certificate.serial_number.as_bytes()),
    );
    let _ = scaivault_core::time_util::from_x509(&cert.tbs_certificate.validity.not_after);
}

fn pem_input(text: &str, pick: usize) {
    if let Some(certs) = client(
        "pem::parse_certificates",
        scaivault_core::pem::parse_certificates(text),
    ) {
        for c in &certs {
            parsed_cert("pem::parse_certificates", c);
        }
    }
    // The endpoint's intake (`trust/validation.rs::prepare`): refusals there are 400s by
    // construction (`String` errors), so only the blocks that decode go on.
    let Ok(mut blocks) = validate::pem_blocks(text, "CERTIFICATE") else {
        return;
    };
    if blocks.is_empty() {
        return;
    }
    let leaf = blocks.remove(0);
    blocks.truncate(32);
    let crls = match validate::pem_blocks(text, "X509 CRL") {
        Ok(mut c) => {
            c.truncate(validate::MAX_CRLS);
            c
        }
        Err(_) => Vec::new(),
    };
    run(&leaf, &blocks, Some(&crls), pick);
}

fn run(leaf: &[u8], chain: &[Vec<u8>], crls: Option<&[Vec<u8>]>, pick: usize) {
    let f = fixture();
    let anchors = [Anchor {
        der: f.ca_der.clone(),
        kind: AnchorKind::TrustAnchor,
        id: "ta_fuzz".into(),
    }];
    let mut intermediates = chain.to_vec();
    intermediates.push(f.int_der.clone());
    let names = match pick {
        1 => vec![PeerName::dns("billing.svc.cluster.local").expect("dns name")],
        2 => vec![PeerName::Ip("10.0.5.100".parse().expect("ip"))],
        _ => Vec::new(),
    };
    let purpose = [
        Purpose::Any,
        Purpose::ServerAuth,
        Purpose::ClientAuth,
        Purpose::Any,
    ][pick];
    let inventory = Inventory;
    let req = Request {
        leaf,
        intermediates: &intermediates,
        anchors: &anchors,
        purpose,
        names: &names,
        key_usage: &[],
        time: AT,
        max_intermediates: None,
        revocation: crls.map(|crls| Revocation {
            crls,
            source: Some(&inventory),
        }),
    };
    let out = validate::validate(&req);
    if out.valid {
        assert!(out.errors.is_empty(), "valid with errors: {:?}", out.errors);
        assert!(out.anchor.is_some(), "valid without an anchor");
        assert!(
            out.chain.len() >= 2,
            "valid with a chain of {}",
            out.chain.len()
        );
    } else {
        assert!(!out.errors.is_empty(), "invalid without a reason");
    }
    for e in &out.errors {
        assert!(
            !e.message.is_empty(),
            "a reason without a message: {:?}",
            e.code
        );
    }
}
