//! CSR import: `POST /v1/pki/csr/import` and `POST /v1/pki/sign/<role>` (`csr::parse_pem`), and the
//! re-parse of a stored CSR at approval (`csr::parse_der`). An accepted CSR then goes the way
//! `daemon/src/issue.rs::sign_csr` takes it: the role's name policy, the subject, the leaf TBS, the
//! leaf lint and a signature by the fuzz CA, where nothing may fail with a 5xx either.
//!
//! The input is tried as DER, as DER wrapped in PEM, and (when UTF-8) as the PEM text itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scaivault_core::csr::{self, ParsedCsr};
use scaivault_core::leaf::{self, LeafNames, LeafTemplate, LeafUrls};
use scaivault_core::name::DnFields;
use scaivault_core::role::{NameRequest, RolePolicy};
use scaivault_core::serial::Serial;
use scaivault_fuzz::{client, fixture, AT};
use scaivault_hsm::KeyType;

fuzz_target!(|data: &[u8]| {
    check("parse_der", csr::parse_der(data));
    if let Ok(pem) = scaivault_core::pem::encode("CERTIFICATE REQUEST", data) {
        check("parse_pem(DER as PEM)", csr::parse_pem(&pem));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check("parse_pem", csr::parse_pem(text));
    }
});

fn check(ctx: &str, r: scaivault_core::Result<ParsedCsr>) {
    let Some(p) = client(ctx, r) else { return };
    let total = p.dns.len() + p.ips.len() + p.uris.len() + p.emails.len();
    assert!(total <= csr::MAX_NAMES, "{ctx}: {total} names accepted");
    assert_eq!(p.fingerprint_sha256.len(), 64);
    let again = csr::key_info(&p.spki_der).expect("the accepted key classifies again");
    assert_eq!(again, p.key);
    // What import stores (the DER) must parse again when the CSR is approved.
    let stored = csr::parse_der(&p.der).expect("a stored CSR parses again at approval");
    assert_eq!(stored.spki_der, p.spki_der);
    assert_eq!(stored.dns, p.dns);
    for policy in policies() {
        issue(ctx, &policy, &p);
    }
}

fn policies() -> [RolePolicy; 2] {
    [
        // The system tests' `svc` role.
        RolePolicy {
            allowed_domains: vec!["*.svc.cluster.local".into(), "*.internal".into()],
            allow_subdomains: true,
            allow_ip_sans: true,
            allowed_uri_sans: vec!["spiffe://cluster.local/ns/*/sa/*".into()],
            require_cn: true,
            ..Default::default()
        },
        // As permissive as a role gets.
        RolePolicy {
            allow_subdomains: true,
            allow_wildcard_certificates: true,
            allow_ip_sans: true,
            allowed_uri_sans: vec!["*".into(), "*/*".into(), "*/*/*".into(), "*/*/*/*".into()],
            allow_any_name: true,
            ..Default::default()
        },
    ]
}

/// `issue::sign_csr` after the parse, with the fuzz CA as the issuer.
fn issue(ctx: &str, policy: &RolePolicy, p: &ParsedCsr) {
    if !p.emails.is_empty() {
        return; // refused with 400 name_not_allowed by the daemon
    }
    let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
    let names = client(
        ctx,
        policy.check(&NameRequest {
            common_name: p.common_name.as_deref(),
            dns_names: &p.dns,
            ip_sans: &ips,
            uri_sans: &p.uris,
        }),
    );
    let Some(names) = names else { return };
    if names.dns_names.is_empty() && names.ips.is_empty() && names.uris.is_empty() {
        return; // 400 no_names
    }
    let cn = names
        .common_name
        .clone()
        .or_else(|| names.dns_names.first().cloned())
        .or_else(|| names.ips.first().map(ToString::to_string))
        .or_else(|| names.uris.first().cloned())
        .unwrap_or_default();
    let subject = DnFields {
        common_name: cn,
        organization: Some("ScaiVault fuzz".into()),
        ..Default::default()
    }
    .to_name();
    let Some(subject) = client(ctx, subject) else {
        return;
    };
    let key_type = match p.key.key_type {
        "rsa" => KeyType::Rsa,
        "ed25519" => KeyType::Ed25519,
        _ => KeyType::Ec,
    };
    let f = fixture();
    let template = LeafTemplate {
        subject,
        spki_der: p.spki_der.clone(),
        key_type,
        serial: Serial::from_bytes(&[0x42; 16]).expect("serial"),
        not_before: AT,
        not_after: AT + time::Duration::days(1),
        names: LeafNames {
            dns: names.dns_names.clone(),
            ips: names.ips.clone(),
            uris: names.uris.clone(),
        },
        server_auth: true,
        client_auth: true,
        urls: LeafUrls::for_ca("https://pki.example.com", "ca_fuzz"),
    };
    let Some(tbs) = client(ctx, leaf::leaf_tbs(&template, &f.issuer)) else {
        return;
    };
    let Some(tbs) = client(ctx, scaivault_core::sign::EncodedTbs::new(tbs)) else {
        return;
    };
    let der = client(ctx, leaf::sign_leaf(&tbs, &f.issuer, &f.key));
    if let Some(der) = der {
        scaivault_core::pem::from_der(&der).expect("the signed leaf decodes");
    }
}
