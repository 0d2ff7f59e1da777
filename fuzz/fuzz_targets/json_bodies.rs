//! The JSON request bodies. Their structs live in the binary crate (`daemon/src/api/*.rs`, not
//! reachable from here), so this target decodes the body with serde_json into field-for-field
//! copies (same names, types, defaults and `deny_unknown_fields`; a refusal there is the daemon's
//! `400 invalid_json`/`unknown_field`), and then calls the core functions the handlers call with
//! the decoded values, in the handlers' order: durations, serials, revocation reasons, key specs,
//! subject names, IP ranges, name constraints, the CA TBS and its lint (signed by the fuzz key),
//! role policies and their name checks, RFC 3339 times, DNS reference names, PEM blocks, CSRs and
//! trust anchors. Every refusal must be a 4xx kind.
//!
//! The input is one JSON body; it is tried against every body type (most bodies reject the
//! others' fields).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scaivault_core::name::DnFields;
use scaivault_core::profile::{self, CaTemplate, Constraints, IpRange, LintExpect};
use scaivault_core::role::{NameRequest, RolePolicy};
use scaivault_core::serial::Serial;
use scaivault_core::{csr, duration, time_util, validate};
use scaivault_fuzz::{client, fixture, AT};
use scaivault_hsm::{KeySpec, Signer};
use serde::de::DeserializeOwned;
use serde::Deserialize;

fn yes() -> bool {
    true
}
fn default_max_ttl() -> String {
    "720h".into()
}
fn default_key_type() -> String {
    "ec".into()
}

/// `api/issue.rs::IssueRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    #[serde(default)]
    common_name: Option<String>,
    #[serde(default)]
    alt_names: Vec<String>,
    #[serde(default)]
    ip_sans: Vec<String>,
    #[serde(default)]
    uri_sans: Vec<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    private_key_format: Option<String>,
}

/// `api/issue.rs::SignRequest` and `api/csr.rs::ImportRequest` (CSR bodies).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsrBody {
    csr_pem: String,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// `api/ca.rs::CreateCaRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCaRequest {
    name: String,
    common_name: String,
    ca_type: String,
    #[serde(default)]
    key_type: Option<String>,
    #[serde(default)]
    key_size: Option<u32>,
    validity_days: i64,
    #[serde(default)]
    parent_ca_id: Option<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    organizational_unit: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    locality: Option<String>,
    #[serde(default)]
    province: Option<String>,
    #[serde(default)]
    max_path_length: Option<u8>,
    #[serde(default)]
    permitted_dns_domains: Vec<String>,
    #[serde(default)]
    excluded_dns_domains: Vec<String>,
    #[serde(default)]
    permitted_ip_ranges: Vec<String>,
    #[serde(default)]
    crl_interval: Option<String>,
    #[serde(default)]
    ocsp_validity: Option<String>,
    #[serde(default)]
    ocsp_signer: Option<String>,
    #[serde(default)]
    ocsp_signer_lifetime: Option<String>,
}

/// `api/revoke.rs::RevokeRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    serial_number: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `api/trust.rs::ValidateRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateRequest {
    certificate_pem: String,
    #[serde(default)]
    chain_pem: Option<String>,
    #[serde(default)]
    purpose: Option<String>,
    #[serde(default)]
    dns_name: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    at_time: Option<String>,
    #[serde(default)]
    check_revocation: bool,
    #[serde(default)]
    crls_pem: Option<String>,
}

/// `api/trust.rs::CreateRequest` (a trust anchor), and the certificate bodies of `api/ca.rs`
/// (`SignedCertificateRequest`, `ImportRequest`) reduced to what the core sees.
#[derive(Debug, Deserialize)]
struct CertificateBody {
    certificate_pem: String,
    #[serde(default)]
    chain_pem: Option<String>,
}

/// `api/tokens.rs::CreateTokenRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenRequest {
    #[allow(dead_code)]
    policies: Vec<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

/// `api/tidy.rs::TidyRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TidyRequest {
    #[serde(default)]
    retention: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    dry_run: bool,
}

/// `roles.rs::RoleSpec` (`POST /v1/pki/roles`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleSpec {
    #[serde(default)]
    #[allow(dead_code)]
    name: String,
    #[allow(dead_code)]
    ca_id: String,
    #[serde(default)]
    allowed_domains: Vec<String>,
    #[serde(default)]
    allow_subdomains: bool,
    #[serde(default)]
    allow_wildcard_certificates: bool,
    #[serde(default)]
    allow_ip_sans: bool,
    #[serde(default)]
    allowed_ip_ranges: Vec<String>,
    #[serde(default)]
    allowed_uri_sans: Vec<String>,
    #[serde(default)]
    allow_any_name: bool,
    #[serde(default = "yes")]
    require_cn: bool,
    #[serde(default = "default_max_ttl")]
    max_ttl: String,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default = "default_key_type")]
    key_type: String,
    #[serde(default)]
    key_bits: Option<u32>,
    #[serde(default = "yes")]
    #[allow(dead_code)]
    server_flag: bool,
    #[serde(default = "yes")]
    #[allow(dead_code)]
    client_flag: bool,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    store_private_key: bool,
}

fn decode<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

fuzz_target!(|data: &[u8]| {
    if let Some(b) = decode::<IssueRequest>(data) {
        issue(&b);
    }
    if let Some(b) = decode::<CsrBody>(data) {
        if let Some(t) = &b.ttl {
            client("sign ttl", duration::parse_seconds(t));
        }
        let _ = b.note;
        client("csr_pem", csr::parse_pem(&b.csr_pem));
    }
    if let Some(b) = decode::<CreateCaRequest>(data) {
        create_ca(b);
    }
    if let Some(b) = decode::<RevokeRequest>(data) {
        client("serial_number", Serial::parse(&b.serial_number));
        if let Some(r) = &b.reason {
            let _ = scaivault_core::crl::reason_code(r);
        }
    }
    if let Some(b) = decode::<ValidateRequest>(data) {
        validate_body(&b);
    }
    if let Some(b) = decode::<CertificateBody>(data) {
        if let Ok(blocks) = validate::pem_blocks(&b.certificate_pem, "CERTIFICATE") {
            for der in blocks {
                client("check_anchor", validate::check_anchor(&der));
            }
        }
        client(
            "parse_certificate",
            scaivault_core::pem::parse_certificate(&b.certificate_pem),
        );
        if let Some(c) = &b.chain_pem {
            client(
                "parse_certificates",
                scaivault_core::pem::parse_certificates(c),
            );
        }
    }
    if let Some(b) = decode::<CreateTokenRequest>(data) {
        if let Some(t) = &b.ttl {
            client("token ttl", duration::parse_seconds(t));
        }
    }
    if let Some(b) = decode::<TidyRequest>(data) {
        if let Some(t) = &b.retention {
            client("retention", duration::parse_seconds(t));
        }
    }
    if let Some(b) = decode::<RoleSpec>(data) {
        role(&b);
    }
});

/// The `svc` role of the system tests.
fn svc_policy() -> RolePolicy {
    RolePolicy {
        allowed_domains: vec!["*.svc.cluster.local".into(), "*.internal".into()],
        allow_subdomains: true,
        allow_ip_sans: true,
        allowed_ip_ranges: vec![IpRange::parse("10.0.0.0/8").expect("range")],
        allowed_uri_sans: vec!["spiffe://cluster.local/ns/*/sa/*".into()],
        require_cn: true,
        ..Default::default()
    }
}

fn issue(b: &IssueRequest) {
    let _ = &b.private_key_format;
    let policy = svc_policy();
    let names = client(
        "issue names",
        policy.check(&NameRequest {
            common_name: b.common_name.as_deref(),
            dns_names: &b.alt_names,
            ip_sans: &b.ip_sans,
            uri_sans: &b.uri_sans,
        }),
    );
    if let Some(n) = names {
        if let Some(cn) = n
            .common_name
            .or_else(|| n.dns_names.first().cloned())
            .or_else(|| n.ips.first().map(ToString::to_string))
            .or_else(|| n.uris.first().cloned())
        {
            client(
                "issue subject",
                DnFields {
                    common_name: cn,
                    ..Default::default()
                }
                .to_name(),
            );
        }
    }
    if let Some(t) = &b.ttl {
        client("issue ttl", duration::parse_seconds(t));
    }
}

fn create_ca(b: CreateCaRequest) {
    let _ = (&b.name, &b.parent_ca_id, &b.ocsp_signer);
    let key_type = b.key_type.as_deref().unwrap_or("ec");
    if let Err(e) = KeySpec::from_api(key_type, b.key_size) {
        // The handler maps this to 400 invalid_key_type itself.
        assert!(matches!(e, scaivault_hsm::Error::UnsupportedKey(_)), "{e}");
        return;
    }
    for d in [&b.crl_interval, &b.ocsp_validity, &b.ocsp_signer_lifetime]
        .into_iter()
        .flatten()
    {
        client("ca duration", duration::parse_seconds(d));
    }
    let Some(ranges) = b
        .permitted_ip_ranges
        .iter()
        .map(|r| client("permitted_ip_ranges", IpRange::parse(r)))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let constraints = Constraints {
        permitted_dns_domains: b.permitted_dns_domains,
        excluded_dns_domains: b.excluded_dns_domains,
        permitted_ip_ranges: ranges,
    };
    if client("name constraints", profile::check_constraints(&constraints)).is_none() {
        return;
    }
    let subject = DnFields {
        common_name: b.common_name,
        organization: b.organization,
        organizational_unit: b.organizational_unit,
        country: b.country,
        locality: b.locality,
        province: b.province,
    }
    .to_name();
    let Some(subject) = client("ca subject", subject) else {
        return;
    };
    if !(1..=36_500).contains(&b.validity_days) || b.ca_type != "root" {
        return; // 400 invalid_validity / invalid_ca_type; intermediates need a stored parent
    }
    // A root as `ca.rs::create` builds it, with the fuzz key standing in for the token's.
    let f = fixture();
    let alg = f.key.algorithm_der();
    let t = CaTemplate {
        subject,
        spki_der: f.key.public_key_der().to_vec(),
        serial: Serial::from_bytes(&[0x51; 16]).expect("serial"),
        not_before: AT,
        not_after: AT + time::Duration::days(b.validity_days),
        max_path_length: b.max_path_length,
        constraints,
        issuer_urls: None,
    };
    let Some(tbs) = client("ca_tbs", profile::ca_tbs(&t, None, &alg)) else {
        return;
    };
    let expect = LintExpect {
        issuer: None,
        ca: true,
        algorithm_der: &alg,
    };
    client(
        "sign CA certificate",
        scaivault_core::sign::sign_certificate(tbs, expect, &f.key),
    );
}

fn validate_body(b: &ValidateRequest) {
    let _ = (&b.purpose, b.check_revocation);
    if let Some(d) = &b.dns_name {
        client("dns_name", validate::PeerName::dns(d));
    }
    if let Some(t) = &b.at_time {
        client("at_time", time_util::parse_rfc3339(t));
    }
    let _ = b.ip.as_deref().map(str::parse::<std::net::IpAddr>);
    let Ok(mut leaf) = validate::pem_blocks(&b.certificate_pem, "CERTIFICATE") else {
        return;
    };
    let chain = b
        .chain_pem
        .as_deref()
        .map(|c| validate::pem_blocks(c, "CERTIFICATE").unwrap_or_default())
        .unwrap_or_default();
    let crls = b
        .crls_pem
        .as_deref()
        .map(|c| validate::pem_blocks(c, "X509 CRL").unwrap_or_default())
        .unwrap_or_default();
    if leaf.len() != 1 || chain.len() > 32 || crls.len() > validate::MAX_CRLS {
        return;
    }
    let leaf = leaf.pop().unwrap_or_default();
    let f = fixture();
    let anchors = [validate::Anchor {
        der: f.ca_der.clone(),
        kind: validate::AnchorKind::TrustAnchor,
        id: "ta_fuzz".into(),
    }];
    let out = validate::validate(&validate::Request {
        leaf: &leaf,
        intermediates: &chain,
        anchors: &anchors,
        purpose: validate::Purpose::Any,
        names: &[],
        key_usage: &[],
        time: AT,
        max_intermediates: None,
        revocation: b.check_revocation.then_some(validate::Revocation {
            crls: &crls,
            source: None,
        }),
    });
    assert_eq!(out.valid, out.errors.is_empty() && out.anchor.is_some());
}

fn role(b: &RoleSpec) {
    if KeySpec::from_api(&b.key_type, b.key_bits).is_err() {
        return; // 400 invalid_key_type, mapped by the handler
    }
    client("max_ttl", duration::parse_seconds(&b.max_ttl));
    if let Some(t) = &b.ttl {
        client("role ttl", duration::parse_seconds(t));
    }
    let Some(ranges) = b
        .allowed_ip_ranges
        .iter()
        .map(|r| client("allowed_ip_ranges", IpRange::parse(r)))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    if let Some(o) = &b.organization {
        client(
            "role organization",
            DnFields {
                common_name: "x".into(),
                organization: Some(o.clone()),
                ..Default::default()
            }
            .to_name(),
        );
    }
    let policy = RolePolicy {
        allowed_domains: b.allowed_domains.clone(),
        allow_subdomains: b.allow_subdomains,
        allow_wildcard_certificates: b.allow_wildcard_certificates,
        allow_ip_sans: b.allow_ip_sans,
        allowed_ip_ranges: ranges,
        allowed_uri_sans: b.allowed_uri_sans.clone(),
        allow_any_name: b.allow_any_name,
        require_cn: b.require_cn,
    };
    // The fuzzed policy against a fixed set of requests, and the domain patterns against
    // themselves.
    let dns: Vec<String> = b.allowed_domains.iter().take(8).cloned().collect();
    let requests = [
        NameRequest {
            common_name: Some("billing.svc.cluster.local"),
            dns_names: &dns,
            ip_sans: &["10.1.2.3".into(), "::1".into()],
            uri_sans: &["spiffe://cluster.local/ns/prod/sa/billing".into()],
        },
        NameRequest {
            common_name: dns.first().map(String::as_str),
            ..Default::default()
        },
    ];
    for r in &requests {
        client("role check", policy.check(r));
    }
}
