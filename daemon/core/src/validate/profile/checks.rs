//! The rules, grouped by extension, for a certificate in its role on the path.

use super::super::failure::{Code, Failure};
use super::super::parsed::{Ext, Parsed};
use super::keys::key;
use super::syntax::{
    ambiguous_cn, dns_name_ok, ip_constraint_ok, mail_constraint_ok, mailbox_ok,
    wildcard_on_public_suffix,
};
use const_oid::db::rfc5280 as oids;
use const_oid::ObjectIdentifier;
use x509_cert::ext::pkix::constraints::name::GeneralSubtrees;
use x509_cert::ext::pkix::name::GeneralName;

/// Where a certificate sits on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end-entity certificate being validated.
    Leaf,
    /// A CA between the leaf and the anchor.
    Intermediate,
    /// The trust anchor's certificate.
    Anchor,
}

impl Role {
    fn is_ca(self) -> bool {
        !matches!(self, Role::Leaf)
    }
}

/// Extensions webpki processes; anything else marked critical is refused (RFC 5280 §4.2: "A
/// certificate-using system MUST reject the certificate if it encounters a critical extension it
/// does not recognize"). webpki applies this to leaves and intermediates; we apply the same list
/// to anchors.
const PROCESSED: &[ObjectIdentifier] = &[
    oids::ID_CE_KEY_USAGE,
    oids::ID_CE_SUBJECT_ALT_NAME,
    oids::ID_CE_BASIC_CONSTRAINTS,
    oids::ID_CE_NAME_CONSTRAINTS,
    oids::ID_CE_CRL_DISTRIBUTION_POINTS,
    oids::ID_CE_EXT_KEY_USAGE,
];

/// Every violation of the profile by `c` in `role`.
pub fn check(c: &Parsed, role: Role) -> Vec<Failure> {
    let mut out = Vec::new();
    let mut v = |section: &str, what: String| {
        out.push(Failure::new(
            Code::ProfileViolation,
            format!("{}: {what} ({section})", c.describe()),
        ))
    };
    extensions(c, role, &mut v);
    names(c, role, &mut v);
    key_ids(c, role, &mut v);
    ca_bits(c, role, &mut v);
    constraints(c, role, &mut v);
    if role == Role::Anchor {
        for (oid, critical) in &c.ext_ids {
            if *critical && !PROCESSED.contains(oid) {
                out.push(Failure::new(
                    Code::UnsupportedCriticalExtension,
                    format!(
                        "{}: critical extension {oid} is not supported",
                        c.describe()
                    ),
                ));
            }
        }
    }
    if let Some(f) = key(c) {
        out.push(f);
    }
    if role == Role::Leaf {
        out.extend(ambiguous_cn(c));
    }
    out
}

fn extensions(c: &Parsed, role: Role, v: &mut impl FnMut(&str, String)) {
    for (i, (oid, _)) in c.ext_ids.iter().enumerate() {
        if c.ext_ids.iter().skip(i + 1).any(|(o, _)| o == oid) {
            v(
                "RFC 5280 §4.2",
                format!("extension {oid} appears more than once"),
            );
        }
    }
    let broken = [
        ("BasicConstraints", broken(&c.basic_constraints)),
        ("KeyUsage", broken(&c.key_usage)),
        ("ExtendedKeyUsage", broken(&c.eku)),
        ("SubjectKeyIdentifier", broken(&c.ski)),
        ("AuthorityKeyIdentifier", broken(&c.aki)),
        ("SubjectAltName", broken(&c.san)),
        ("NameConstraints", broken(&c.name_constraints)),
        ("AuthorityInfoAccess", broken(&c.aia)),
        ("PolicyConstraints", broken(&c.policy_constraints)),
    ];
    for (name, err) in broken {
        if let Some(e) = err {
            v(
                "RFC 5280 §4.2",
                format!("the {name} extension does not decode: {e}"),
            );
        }
    }
    if c.aia.is_critical() {
        v(
            "RFC 5280 §4.2.2.1",
            "AuthorityInfoAccess is marked critical".into(),
        );
    }
    if role == Role::Anchor {
        // An anchor is trusted as configured; its serial identifies it only to its own issuer,
        // which plays no part (real roots with serial 0 exist, e.g. Starfield G2).
        return;
    }
    let serial = c.serial_der();
    let negative = serial.first().is_some_and(|b| b & 0x80 != 0);
    let zero = serial.iter().all(|b| *b == 0);
    let magnitude = serial.iter().skip_while(|b| **b == 0).count();
    if negative {
        v("RFC 5280 §4.1.2.2", "the serial number is negative".into());
    } else if zero {
        v("RFC 5280 §4.1.2.2", "the serial number is zero".into());
    } else if magnitude > 20 {
        v(
            "RFC 5280 §4.1.2.2",
            format!("the serial number has {magnitude} octets (at most 20)"),
        );
    }
}

fn broken<T>(e: &Ext<T>) -> Option<&str> {
    match e {
        Ext::Broken(s) => Some(s),
        _ => None,
    }
}

fn names(c: &Parsed, role: Role, v: &mut impl FnMut(&str, String)) {
    if c.cert.tbs_certificate.issuer.0.is_empty() {
        v("RFC 5280 §4.1.2.4", "the issuer name is empty".into());
    }
    if c.subject_empty() {
        if role.is_ca() {
            v(
                "RFC 5280 §4.1.2.6",
                "a CA certificate has an empty subject".into(),
            );
        }
        match &c.san {
            Ext::Absent => v(
                "RFC 5280 §4.1.2.6",
                "the subject is empty and there is no SubjectAltName".into(),
            ),
            Ext::Present(false, _) => v(
                "RFC 5280 §4.2.1.6",
                "the subject is empty but SubjectAltName is not critical".into(),
            ),
            _ => {}
        }
    }
    if c.san.is_critical() && !c.subject_empty() {
        v(
            "RFC 5280 §4.2.1.6 SHOULD, CA/B BR §7.1.2.7.12 MUST",
            "SubjectAltName is critical although the subject is not empty".into(),
        );
    }
    if let Some(san) = c.san.value() {
        if san.0.is_empty() {
            v("RFC 5280 §4.2.1.6", "SubjectAltName is empty".into());
        }
        for n in &san.0 {
            match n {
                GeneralName::DnsName(d) if !dns_name_ok(d.as_str(), false) => v(
                    "RFC 5280 §4.2.1.6",
                    format!(
                        "SubjectAltName dNSName {:?} is not a valid DNS name",
                        d.as_str()
                    ),
                ),
                GeneralName::DnsName(d) if wildcard_on_public_suffix(d.as_str()) => v(
                    "CA/B BR §3.2.2.6",
                    format!(
                        "SubjectAltName {:?} is a wildcard over a whole public suffix",
                        d.as_str()
                    ),
                ),
                GeneralName::IpAddress(ip) if !matches!(ip.as_bytes().len(), 4 | 16) => v(
                    "RFC 5280 §4.2.1.6",
                    format!(
                        "SubjectAltName iPAddress has {} octets (4 or 16)",
                        ip.as_bytes().len()
                    ),
                ),
                GeneralName::Rfc822Name(m) if !mailbox_ok(m.as_str()) => v(
                    "RFC 5280 §4.2.1.6",
                    format!(
                        "SubjectAltName rfc822Name {:?} is not a mailbox",
                        m.as_str()
                    ),
                ),
                _ => {}
            }
        }
    }
}

fn key_ids(c: &Parsed, role: Role, v: &mut impl FnMut(&str, String)) {
    if c.aki.is_critical() {
        v(
            "RFC 5280 §4.2.1.1",
            "AuthorityKeyIdentifier is marked critical".into(),
        );
    }
    if c.ski.is_critical() {
        v(
            "RFC 5280 §4.2.1.2",
            "SubjectKeyIdentifier is marked critical".into(),
        );
    }
    if role.is_ca() && !c.ski.is_present() {
        v(
            "RFC 5280 §4.2.1.2",
            "a CA certificate has no SubjectKeyIdentifier".into(),
        );
    }
    match c.aki.value() {
        None if !c.aki.is_present() && !c.self_issued() && role != Role::Anchor => v(
            "RFC 5280 §4.2.1.1",
            "no AuthorityKeyIdentifier (required in every certificate that is not self-signed)"
                .into(),
        ),
        Some(aki) => {
            if aki.key_identifier.is_none() {
                v(
                    "RFC 5280 §4.2.1.1",
                    "AuthorityKeyIdentifier has no keyIdentifier".into(),
                );
            }
            if c.self_issued() && role == Role::Anchor {
                // A self-signed root: the AKI, when present, names the root's own key and
                // nothing else (CA/B BR §7.1.2.1.3 spells out what RFC 5280 §4.2.1.1 implies).
                if aki.authority_cert_issuer.is_some() || aki.authority_cert_serial_number.is_some()
                {
                    v(
                        "RFC 5280 §4.2.1.1",
                        "a self-signed root's AuthorityKeyIdentifier names an issuer or serial"
                            .into(),
                    );
                }
                let ski = c.ski.value().map(|s| s.0.as_bytes());
                if let (Some(k), Some(s)) = (aki.key_identifier.as_ref(), ski) {
                    if k.as_bytes() != s {
                        v(
                            "RFC 5280 §4.2.1.1",
                            "a self-signed root's AuthorityKeyIdentifier differs from its SubjectKeyIdentifier".into(),
                        );
                    }
                }
            }
        }
        None => {}
    }
}

fn ca_bits(c: &Parsed, role: Role, v: &mut impl FnMut(&str, String)) {
    let bc = &c.basic_constraints;
    let ku = c.key_usage.value();
    if role.is_ca() {
        match bc {
            Ext::Absent => v(
                "RFC 5280 §4.2.1.9",
                "a CA certificate has no BasicConstraints".into(),
            ),
            Ext::Present(critical, b) => {
                if !b.ca {
                    v("RFC 5280 §4.2.1.9", "a CA certificate has cA=FALSE".into());
                }
                if !critical {
                    v(
                        "RFC 5280 §4.2.1.9",
                        "a CA certificate's BasicConstraints is not critical".into(),
                    );
                }
            }
            Ext::Broken(_) => {}
        }
        if let Some(k) = ku {
            if !k.key_cert_sign() {
                v(
                    "RFC 5280 §4.2.1.3",
                    "a CA certificate's KeyUsage does not assert keyCertSign".into(),
                );
            }
        }
    }
    if let Some(b) = bc.value() {
        if b.path_len_constraint.is_some() && role.is_ca() && !b.ca {
            v(
                "RFC 5280 §4.2.1.9",
                "pathLenConstraint without cA=TRUE".into(),
            );
        }
    }
    if let Some(k) = ku {
        if k.0.bits() == 0 {
            v("RFC 5280 §4.2.1.3", "KeyUsage asserts no bit".into());
        }
        if k.key_cert_sign() && !c.is_ca() {
            v(
                "RFC 5280 §4.2.1.3",
                "KeyUsage asserts keyCertSign but BasicConstraints does not assert cA".into(),
            );
        }
    }
}

fn constraints(c: &Parsed, role: Role, v: &mut impl FnMut(&str, String)) {
    if c.name_constraints.is_present() && !c.is_ca() {
        v(
            "RFC 5280 §4.2.1.10",
            "NameConstraints in a certificate that is not a CA".into(),
        );
    }
    if let Some(nc) = c.name_constraints.value() {
        if nc.permitted_subtrees.is_none() && nc.excluded_subtrees.is_none() {
            v(
                "RFC 5280 §4.2.1.10",
                "NameConstraints has neither permittedSubtrees nor excludedSubtrees".into(),
            );
        }
        for (kind, subtrees) in [
            ("permittedSubtrees", &nc.permitted_subtrees),
            ("excludedSubtrees", &nc.excluded_subtrees),
        ] {
            if let Some(s) = subtrees {
                subtrees_ok(kind, s, v);
            }
        }
    }
    if role.is_ca() && c.policy_constraints.is_present() && !c.policy_constraints.is_critical() {
        v(
            "RFC 5280 §4.2.1.11",
            "PolicyConstraints is not critical".into(),
        );
    }
    if let Some(pc) = c.policy_constraints.value() {
        if pc.require_explicit_policy.is_none() && pc.inhibit_policy_mapping.is_none() {
            v("RFC 5280 §4.2.1.11", "PolicyConstraints is empty".into());
        }
    }
}

fn subtrees_ok(kind: &str, s: &GeneralSubtrees, v: &mut impl FnMut(&str, String)) {
    if s.is_empty() {
        v("RFC 5280 §4.2.1.10", format!("{kind} is an empty sequence"));
    }
    for t in s {
        if t.minimum != 0 || t.maximum.is_some() {
            v(
                "RFC 5280 §4.2.1.10",
                format!("{kind} uses minimum/maximum, which MUST be absent"),
            );
        }
        match &t.base {
            GeneralName::DnsName(d) if !d.as_str().is_empty() && !dns_name_ok(d.as_str(), true) => {
                v(
                    "RFC 5280 §4.2.1.10",
                    format!("{kind} dNSName {:?} is not a DNS name", d.as_str()),
                )
            }
            GeneralName::IpAddress(ip) if !ip_constraint_ok(ip.as_bytes()) => v(
                "RFC 5280 §4.2.1.10",
                format!(
                    "{kind} iPAddress of {} octets is not an address and a contiguous mask",
                    ip.as_bytes().len()
                ),
            ),
            GeneralName::Rfc822Name(m) if !mail_constraint_ok(m.as_str()) => v(
                "RFC 5280 §4.2.1.10",
                format!(
                    "{kind} rfc822Name {:?} is not a mailbox, host or domain",
                    m.as_str()
                ),
            ),
            _ => {}
        }
    }
}
