//! The end-entity (leaf) certificate profile, RFC 5280 §4.2 and CA/B Forum BR §7.1.2.7:
//! SubjectKeyIdentifier, AuthorityKeyIdentifier (the issuer's SKI), KeyUsage (critical:
//! digitalSignature, plus keyEncipherment for RSA), ExtendedKeyUsage (serverAuth and/or
//! clientAuth), BasicConstraints `CA:FALSE` (critical), SubjectAltName (always present; the CN is
//! repeated in it), CRL distribution point and Authority Information Access (OCSP and CA issuers)
//! URLs built from the public base URL.

use crate::profile::{extension, key_identifier, IssuerInfo};
use crate::serial::Serial;
use crate::{time_util, Error, Result};
use const_oid::db::rfc5280::{ID_AD_CA_ISSUERS, ID_AD_OCSP, ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use der::asn1::{Ia5String, OctetString};
use der::Decode;
use scaivault_hsm::KeyType;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use std::net::IpAddr;
use time::OffsetDateTime;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::time::Validity;

/// The names that go into the SubjectAltName, already approved by the role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafNames {
    /// DNS names (the CN first when it is one).
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
    /// URIs (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
}

impl LeafNames {
    fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty() && self.uris.is_empty()
    }
}

/// Where relying parties find revocation data and the issuer certificate.
#[derive(Debug, Clone)]
pub struct LeafUrls {
    /// CRL distribution point.
    pub crl: String,
    /// OCSP responder.
    pub ocsp: String,
    /// The issuer's certificate (DER).
    pub ca_issuers: String,
}

impl LeafUrls {
    /// The CRL distribution point and the authority information access (OCSP, CA issuers) of a
    /// certificate the CA signs: its leaves, and the intermediates it certifies.
    ///
    /// # Errors
    /// `invalid_*` when a URL is not IA5 text.
    pub fn extensions(&self) -> Result<[x509_cert::ext::Extension; 2]> {
        Ok([
            extension(
                &CrlDistributionPoints(vec![DistributionPoint {
                    distribution_point: Some(DistributionPointName::FullName(vec![
                        uri(&self.crl)?,
                    ])),
                    reasons: None,
                    crl_issuer: None,
                }]),
                false,
            )?,
            extension(
                &AuthorityInfoAccessSyntax(vec![
                    AccessDescription {
                        access_method: ID_AD_OCSP,
                        access_location: uri(&self.ocsp)?,
                    },
                    AccessDescription {
                        access_method: ID_AD_CA_ISSUERS,
                        access_location: uri(&self.ca_issuers)?,
                    },
                ]),
                false,
            )?,
        ])
    }

    /// The URLs for CA `ca_id` under `base` (no trailing slash), matching the daemon's routes.
    pub fn for_ca(base: &str, ca_id: &str) -> Self {
        LeafUrls {
            crl: format!("{base}/v1/pki/ca/{ca_id}/crl"),
            ocsp: format!("{base}/v1/pki/ocsp/{ca_id}"),
            ca_issuers: format!("{base}/v1/pki/ca/{ca_id}/certificate?format=der"),
        }
    }
}

/// Everything that goes into a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafTemplate {
    /// Subject (CN and optional O).
    pub subject: Name,
    /// The subject's public key, DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The key family (decides KeyUsage).
    pub key_type: KeyType,
    /// Serial.
    pub serial: Serial,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SubjectAltName contents.
    pub names: LeafNames,
    /// EKU serverAuth.
    pub server_auth: bool,
    /// EKU clientAuth.
    pub client_auth: bool,
    /// Revocation and issuer URLs.
    pub urls: LeafUrls,
}

fn ia5(s: &str, what: &str) -> Result<Ia5String> {
    Ia5String::new(s)
        .map_err(|_| Error::invalid("invalid_name", format!("{what} {s:?} is not ASCII")))
}

fn uri(s: &str) -> Result<GeneralName> {
    Ok(GeneralName::UniformResourceIdentifier(ia5(s, "URL")?))
}

/// Builds a leaf TBSCertificate signed by `issuer`.
///
/// # Errors
/// `invalid_*` for names that cannot be encoded; `profile_violation` when no SAN or no EKU would
/// result.
pub fn leaf_tbs(t: &LeafTemplate, issuer: &IssuerInfo) -> Result<TbsCertificate> {
    if t.names.is_empty() {
        return Err(Error::ProfileViolation(
            "a leaf needs at least one subjectAltName".into(),
        ));
    }
    if !t.server_auth && !t.client_auth {
        return Err(Error::ProfileViolation(
            "a leaf needs serverAuth or clientAuth".into(),
        ));
    }
    let spki = SubjectPublicKeyInfoOwned::from_der(&t.spki_der)
        .map_err(|e| Error::decode("public key", e))?;
    let mut sans = Vec::with_capacity(t.names.dns.len() + t.names.ips.len() + t.names.uris.len());
    for d in &t.names.dns {
        sans.push(GeneralName::DnsName(ia5(d, "DNS name")?));
    }
    for ip in &t.names.ips {
        let bytes = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        sans.push(GeneralName::IpAddress(OctetString::new(bytes)?));
    }
    for u in &t.names.uris {
        sans.push(GeneralName::UniformResourceIdentifier(ia5(u, "URI")?));
    }
    let mut usage = KeyUsages::DigitalSignature.into();
    if t.key_type == KeyType::Rsa {
        usage |= KeyUsages::KeyEncipherment;
    }
    let mut eku = Vec::new();
    if t.server_auth {
        eku.push(ID_KP_SERVER_AUTH);
    }
    if t.client_auth {
        eku.push(ID_KP_CLIENT_AUTH);
    }
    let mut exts = vec![
        extension(
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
            true,
        )?,
        extension(&KeyUsage(usage), true)?,
        extension(&ExtendedKeyUsage(eku), false)?,
        extension(
            &SubjectKeyIdentifier(OctetString::new(key_identifier(&t.spki_der)?)?),
            false,
        )?,
        extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(issuer.key_id.clone())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            false,
        )?,
        // RFC 5280 §4.2.1.6: critical when the subject is empty (a request without a CN whose
        // names cannot be one, e.g. only URIs).
        extension(&SubjectAltName(sans), t.subject.0.is_empty())?,
    ];
    exts.extend(t.urls.extensions()?);
    Ok(TbsCertificate {
        version: Version::V3,
        serial_number: t.serial.to_x509()?,
        signature: AlgorithmIdentifierOwned::from_der(&issuer.algorithm_der)
            .map_err(|e| Error::decode("algorithm", e))?,
        issuer: issuer.name.clone(),
        validity: Validity {
            not_before: time_util::to_x509(t.not_before)?,
            not_after: time_util::to_x509(t.not_after)?,
        },
        subject: t.subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(exts),
    })
}

/// Leaf-specific checks run before signing, on top of [`crate::profile::lint`]: a SAN is present,
/// a DNS-looking CN is among the SAN DNS names, an EKU is present, and KeyUsage fits the subject
/// key (keyEncipherment only for RSA, never keyCertSign or cRLSign).
///
/// # Errors
/// [`Error::ProfileViolation`] listing every failed check.
pub fn lint_leaf(tbs: &TbsCertificate) -> Result<()> {
    use const_oid::AssociatedOid;
    let mut failures = Vec::new();
    let exts = tbs.extensions.as_deref().unwrap_or(&[]);
    let find = |oid| exts.iter().find(|e| e.extn_id == oid);
    let sans: Vec<GeneralName> = match find(SubjectAltName::OID)
        .map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()))
    {
        Some(Ok(s)) if !s.0.is_empty() => s.0,
        _ => {
            failures.push("subjectAltName missing or empty".to_owned());
            Vec::new()
        }
    };
    if tbs.subject.0.is_empty() && !find(SubjectAltName::OID).is_some_and(|e| e.critical) {
        failures.push("empty subject with a non-critical subjectAltName".to_owned());
    }
    if !tbs.subject.0.is_empty()
        && tbs.subject.0.len() == tbs.issuer.0.len()
        && crate::name::same_name(&tbs.subject, &tbs.issuer)
    {
        failures.push("subject equal to the issuer's name (self-issued)".to_owned());
    }
    if let Some(cn) = crate::name::common_name(&tbs.subject) {
        let looks_dns = cn.contains('.') && !cn.contains(' ');
        let listed = sans.iter().any(|g| match g {
            GeneralName::DnsName(d) => d.as_str().eq_ignore_ascii_case(&cn),
            GeneralName::IpAddress(o) => cn.parse::<IpAddr>().is_ok_and(|ip| match ip {
                IpAddr::V4(a) => o.as_bytes() == a.octets(),
                IpAddr::V6(a) => o.as_bytes() == a.octets(),
            }),
            _ => false,
        });
        if looks_dns && !listed {
            failures.push(format!(
                "common name {cn:?} is not among the subjectAltNames"
            ));
        }
    }
    match find(ExtendedKeyUsage::OID).map(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes())) {
        Some(Ok(eku)) if !eku.0.is_empty() => {}
        _ => failures.push("extendedKeyUsage missing or empty".to_owned()),
    }
    let rsa = tbs.subject_public_key_info.algorithm.oid == const_oid::db::rfc5912::RSA_ENCRYPTION;
    match find(KeyUsage::OID).map(|e| KeyUsage::from_der(e.extn_value.as_bytes())) {
        Some(Ok(ku)) => {
            if !ku.digital_signature() {
                failures.push("keyUsage lacks digitalSignature".to_owned());
            }
            if ku.key_encipherment() && !rsa {
                failures.push("keyEncipherment on a non-RSA key".to_owned());
            }
            if ku.key_cert_sign() || ku.crl_sign() {
                failures.push("leaf keyUsage allows certificate or CRL signing".to_owned());
            }
        }
        _ => failures.push("keyUsage missing".to_owned()),
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::ProfileViolation(failures.join("; ")))
    }
}

/// A leaf named like its issuer would be self-issued in RFC 5280's sense (§6.1: subject equal to
/// issuer), which path builders treat as a CA's own rollover certificate: refused.
///
/// # Errors
/// `invalid` `invalid_subject`.
pub fn check_subject(t: &LeafTemplate, issuer: &IssuerInfo) -> Result<()> {
    // (RDN counts first: `same_name` canonicalizes every value, ~1 µs.)
    if !t.subject.0.is_empty()
        && t.subject.0.len() == issuer.name.0.len()
        && crate::name::same_name(&t.subject, &issuer.name)
    {
        return Err(Error::invalid(
            "invalid_subject",
            format!(
                "the subject {} is the issuing CA's own name; a leaf must be named otherwise",
                t.subject
            ),
        ));
    }
    Ok(())
}

/// The template's names against the name constraints of its issuer and the issuer's chain
/// ([`IssuerInfo::name_rules`]), before a serial is reserved.
///
/// # Errors
/// `invalid` `name_constraint_violation` naming the name, the constraint and the CA.
pub fn check_name_constraints(t: &LeafTemplate, issuer: &IssuerInfo) -> Result<()> {
    if issuer.name_rules.is_empty() {
        return Ok(());
    }
    let dns: Vec<&str> = t.names.dns.iter().map(String::as_str).collect();
    let uris: Vec<&str> = t.names.uris.iter().map(String::as_str).collect();
    issuer
        .name_rules
        .check_leaf(&t.subject, &dns, &t.names.ips, &uris)
        .map_err(|d| Error::invalid("name_constraint_violation", d))
}

/// The finished TBS's names against the issuer's name constraints (the lint's copy of
/// [`check_name_constraints`]).
fn lint_name_constraints(tbs: &TbsCertificate, issuer: &IssuerInfo) -> Result<()> {
    use const_oid::AssociatedOid;
    if issuer.name_rules.is_empty() {
        return Ok(());
    }
    let sans = match tbs
        .extensions
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|e| e.extn_id == SubjectAltName::OID)
        .map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()))
    {
        Some(Ok(s)) => s.0,
        Some(Err(e)) => return Err(Error::ProfileViolation(format!("subjectAltName: {e}"))),
        None => Vec::new(),
    };
    let (mut dns, mut ips, mut uris) = (Vec::new(), Vec::new(), Vec::new());
    for g in &sans {
        match g {
            GeneralName::DnsName(d) => dns.push(d.as_str()),
            GeneralName::UniformResourceIdentifier(u) => uris.push(u.as_str()),
            GeneralName::IpAddress(o) => {
                let b = o.as_bytes();
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
                    _ => None,
                };
                match ip {
                    Some(ip) => ips.push(ip),
                    None => {
                        return Err(Error::ProfileViolation(format!(
                            "an iPAddress of {} octets",
                            b.len()
                        )))
                    }
                }
            }
            _ => {}
        }
    }
    issuer
        .name_rules
        .check_leaf(&tbs.subject, &dns, &ips, &uris)
        .map_err(Error::ProfileViolation)
}

/// Lints `tbs` as a leaf of `issuer`, then signs through [`crate::sign::sign_certificate`] (which
/// runs the common lint, signs, and verifies the signature). Returns the DER certificate.
///
/// # Errors
/// [`Error::ProfileViolation`] before anything is signed; token and verification errors.
pub fn sign_leaf(
    tbs: &crate::sign::EncodedTbs,
    issuer: &IssuerInfo,
    signer: &dyn scaivault_hsm::Signer,
) -> Result<Vec<u8>> {
    lint_leaf(tbs.tbs())?;
    lint_name_constraints(tbs.tbs(), issuer)?;
    let expect = crate::profile::LintExpect {
        issuer: Some(issuer),
        ca: false,
        algorithm_der: &issuer.algorithm_der,
    };
    crate::sign::sign_encoded(tbs, expect, signer)
}
